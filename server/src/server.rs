//! The accept loop and the shutdown sequence (PROTOCOL.md §5, "Shutdown").
//!
//! The listener stays open during shutdown so late clients get a clear 503
//! instead of a refused connection; the process ends when every WebSocket
//! connection has drained and closed, or when the grace period runs out.

use std::task::Waker;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;

use hub_core::Disconnect;

use crate::http::REQUEST_TIMEOUT;
use crate::state::SharedState;
use crate::ws::held_upgrade::HeldUpgrade;

/// Pending connections the kernel queues before we accept them. The
/// standard library's 128 overflows under a burst of connects (a dropped SYN
/// costs the client a one-second retransmit); the kernel caps this at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// The listening socket. Every connection is to send small frames at once
/// (batching is done above TCP): Linux gives each accepted socket its
/// listener's no-delay (the kernel makes it as a copy), so it is set here
/// once, one system call fewer per connect; elsewhere `tune_accepted` sets
/// it on each connection.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if cfg!(target_os = "linux") {
        socket.set_nodelay(true)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Sets on an accepted connection what `bind` could not give it through
/// the listener.
fn tune_accepted(stream: &TcpStream) {
    if !cfg!(target_os = "linux") {
        let _ = stream.set_nodelay(true);
    }
}

/// Accepts connections until the process ends. Each one is served by its
/// own task: a WebSocket upgrade (`GET /ws`) here, on the WebSocket
/// runtime, and its connection stays here once upgraded; any other request
/// on the HTTP runtime (main.rs), where a backend's keep-alive connection
/// then stays. Telling them apart costs one look at the first bytes
/// (`MSG_PEEK`); moving the upgrades instead cost a wake-up across
/// runtimes per connect (15.4k connects/s fell to 11k on this machine).
pub async fn accept_loop(listener: TcpListener, state: SharedState, http: Handle) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(e) => {
                // Typically EMFILE: wait for descriptors to free up instead
                // of spinning on the error.
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        tune_accepted(&stream);
        let state = state.clone();
        let http = http.clone();
        tokio::spawn(async move {
            match look_at_head(&stream).await {
                Head::Upgrade => {
                    serve_http(stream, state, true).await;
                    return;
                }
                Head::Other => {}
                Head::TooSlow => {
                    request_timeout(stream).await;
                    return;
                }
            }
            // Off this runtime's reactor, onto the HTTP runtime's.
            match stream.into_std() {
                Ok(std) => {
                    http.spawn(async move {
                        match TcpStream::from_std(std) {
                            Ok(stream) => serve_http(stream, state, false).await,
                            Err(e) => tracing::debug!(error = %e, "cannot move a connection"),
                        }
                    });
                }
                Err(e) => tracing::debug!(error = %e, "cannot move a connection"),
            }
        });
    }
}

/// What the first request on a new connection is, seen without reading.
enum Head {
    /// `GET /ws` (the WebSocket endpoint, §2).
    Upgrade,
    /// Anything else, or a head too large to look at whole here: hyper
    /// reads it (with its own 10 s for a head).
    Other,
    /// No whole request head within `REQUEST_TIMEOUT`: answered 408.
    TooSlow,
}

/// Looks at a new connection's first request head (`MSG_PEEK`): whether it
/// is `GET /ws`, and whether it arrives whole within `REQUEST_TIMEOUT`
/// (§6: 408 where an answer can still be written; hyper's own timeout
/// would only close the socket). A head comes in one packet in practice,
/// so the first look decides; a client that sends it slowly is looked at
/// again with growing pauses.
async fn look_at_head(stream: &TcpStream) -> Head {
    const WS: &[u8] = b"GET /ws";
    /// Heads longer than this (a large token) are left to hyper whole.
    const LOOK: usize = 8 * 1024;
    let mut head = vec![0u8; LOOK];
    let look = async {
        let mut pause = Duration::from_millis(1);
        loop {
            let n = match stream.peek(&mut head).await {
                // The end or an error: hyper sees it too.
                Ok(0) | Err(_) => return Head::Other,
                Ok(n) => n,
            };
            let seen = &head[..n];
            // Whole as hyper's parser (httparse) reads a head: bare `\n`
            // line ends too. One it cannot parse is hyper's to answer.
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let whole = n == LOOK
                || !matches!(
                    httparse::Request::new(&mut headers).parse(seen),
                    Ok(httparse::Status::Partial)
                );
            if n > WS.len() || whole {
                // `GET /ws`, then `?` or ` `.
                let upgrade =
                    seen.starts_with(WS) && matches!(seen.get(WS.len()), Some(b'?' | b' '));
                if whole {
                    return if upgrade { Head::Upgrade } else { Head::Other };
                }
            }
            // Each look copies what has come so far: a client that sends
            // its head slowly is looked at a few times a second at most.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, look)
        .await
        .unwrap_or(Head::TooSlow)
}

/// Answers a connection whose request head did not arrive in time, then
/// closes it; bounded, since the client may not be reading either.
async fn request_timeout(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = format!(
        r#"{{"error":{{"code":"bad_request","message":"the request head did not arrive within {} s"}}}}"#,
        REQUEST_TIMEOUT.as_secs()
    );
    let answer = format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Serves one HTTP connection with hyper, and its upgrade if it asks for
/// one; `upgrade` when its first request is `GET /ws`.
async fn serve_http(stream: TcpStream, state: SharedState, upgrade: bool) {
    let head_limit = head_limit(state.config.max_user_groups.get());
    let half_close = !upgrade || state.cluster.is_none();
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(crate::http::router::route(req, state).await) }
    });
    // A client gets 10 s to send its request head: sockets that
    // connect and say nothing must not hold descriptors forever.
    //
    // Half-close: a request read in full is answered even when the client
    // has shut its sending side (as `nc` does at the end of its input). It
    // also spares every request hyper's look for an early end: a read into
    // a fresh 8 KiB buffer while the answer is being made, which was 8 % of
    // the server's samples in a burst of connects. Except for an upgrade in
    // cluster mode: its admission waits on Redis, and a client that gave
    // up meanwhile should cancel it rather than be registered, announced
    // present and welcomed with nobody there.
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .half_close(half_close)
        .header_read_timeout(REQUEST_TIMEOUT)
        .max_buf_size(head_limit)
        .serve_connection(TokioIo::new(HeldUpgrade::new(stream)), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}

/// The most bytes a request head may take (hyper answers 431 past it).
/// A token in the query or `Authorization` carries the user's groups
/// (§1): at `--max-user-groups` ids of 128 bytes, base64url, about 176
/// KiB at the default cap. A token with half as many groups again past
/// the cap still fits, so it gets its 401 (§2: a token is answered 101 or
/// 401), not a 431. The buffer grows only as a head needs it.
/// Never more than 1 MiB, whatever the cap: this much is held for a
/// client before it has been authenticated.
fn head_limit(max_user_groups: usize) -> usize {
    const SLACK: usize = 16 * 1024;
    let claims = max_user_groups.saturating_mul(3 * 131) / 2;
    let token = claims.saturating_mul(4) / 3;
    token.saturating_add(SLACK).clamp(64 * 1024, 1024 * 1024)
}

/// SIGINT and SIGTERM, listened for from the moment this is made: made
/// before the server says it is listening, so a signal that comes right
/// after that line is never met by the default action (which would kill
/// the process without a drain, and lose the log lines still buffered).
pub struct ShutdownSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    /// Installs the handlers now. Needs a running tokio runtime.
    pub fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Resolves on the first SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Hands back the memory of expired history once a second, until shutdown.
/// Expiry is exact without it (every read applies the ttl); this only
/// frees what nobody reads any more.
async fn expire_history(state: SharedState) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => state.node.expire_history(),
            _ = state.shutdown.cancelled() => return,
        }
    }
}

/// Runs the server until a shutdown signal, then drains: from the signal on,
/// `/healthz` and new upgrades answer 503 and every open socket gets what was
/// queued for it and a 1001 close, within `--shutdown-grace`.
pub async fn run(
    listener: TcpListener,
    state: SharedState,
    mut signal: ShutdownSignal,
    http: &tokio::runtime::Handle,
) {
    // One process: group fan-outs on a thread of their own, so a push is
    // answered once it is appended (hub-core's fanout.rs). A thread, not a
    // task on this runtime: as a task it waited its turn behind the
    // writers it had woken (burst 0.79x the careful hub against 1.23x,
    // paced p99 1.66x the raw limit against 1.22x, same session). Its
    // wake-ups of the writers are handed to this runtime 512 at a time and
    // made from a worker: one turn of the shared queue per chunk instead of
    // per writer (paced p99 1.00-1.06x the raw limit against 1.06-1.09x).
    if state.cluster.is_none() {
        let node = state.node.clone();
        let ws = tokio::runtime::Handle::current();
        let started = std::thread::Builder::new()
            .name("wshub-fanout".into())
            .spawn(move || {
                node.run_fanout(|wakers| {
                    ws.spawn(async move { wakers.into_iter().for_each(Waker::wake) });
                })
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "no fan-out thread; publishers fan out themselves");
        }
    }
    let accept = tokio::spawn(accept_loop(listener, state.clone(), http.clone()));
    tokio::spawn(expire_history(state.clone()));
    signal.recv().await;
    // First the flag (so /healthz and new upgrades answer 503 and a
    // connection registering right now closes itself), then the log line
    // (whoever reads it may rely on the flag), then the close signal to
    // every registered connection.
    state.shutdown.cancel();
    // Group pushes already answered but not yet queued to their
    // connections: queued now, so the drain below writes them.
    if state.cluster.is_none() {
        state.node.run_fanout_pending();
    }
    let open = state.node.stats_snapshot().connections;
    tracing::info!(connections = open, "shutting down");
    state.node.disconnect_all(Disconnect::Shutdown);
    // Only now: every connection is closed, so a frame that finishes from
    // here on is answered without a position (see `State::broker_stop`).
    state.broker_stop.cancel();
    state.connections.close();
    let grace = Duration::from_secs(state.config.shutdown_grace);
    if tokio::time::timeout(grace, state.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; dropping the remaining connections");
    }
    // A graceful stop leaves the cluster's presence at once, not after
    // the heartbeat's TTL.
    if let Some(cluster) = &state.cluster {
        let _ = cluster.node_down().await;
    }
    accept.abort();
    tracing::info!("stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `bind` sets on the listener must reach the connections it
    /// accepts, or every small frame would wait on Nagle's algorithm.
    #[tokio::test]
    async fn an_accepted_connection_sends_without_delay() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        tune_accepted(&accepted);
        assert!(accepted.nodelay().unwrap(), "Nagle's algorithm is on");
        drop(client);
    }
}
