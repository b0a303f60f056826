//! The baselines `xtask bench` measures wshub against, run as their own
//! processes (`xtask baseline --kind flush-each|careful|raw`) under the
//! same load. None has auth or an envelope: a push's request body is what
//! every member of its group gets, as a text frame. Each group (the path's
//! `/groups/{group}/`, and `?group=` on a connection's URL, which the load
//! processes add when they subscribe) has a tokio broadcast channel; a
//! pushed body is checked as UTF-8 once, not once per socket.
//!
//! - `careful`, the careful hub (`careful-hub`): tokio-tungstenite with an
//!   8 KiB read buffer and a 16 KiB write buffer; a connection woken by a
//!   message `feed`s it and up to 63 more already waiting, then `flush`es
//!   once. The baseline worth beating.
//! - `flush-each` (`minimal-hub-flush-each`): tokio-tungstenite with its
//!   default buffers (128 KiB each), one `send` (write and flush) per
//!   message. The first baseline the bench had.
//! - `raw` (`raw-limit`): each push is framed once as a WebSocket text frame
//!   and the same bytes are written straight to every socket, what is
//!   queued for a socket (up to 64 frames) in one write.
//!
//! Like for like: the bench pads the bodies it pushes to a baseline so that
//! each frame a baseline writes is exactly as long as the frame wshub
//! writes for the same push, with the send time the load reads at the same
//! byte (`wire::push_body`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// Which baseline a process serves (the module doc describes each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// The careful hub.
    Careful,
    /// The minimal hub that flushes every frame.
    FlushEach,
    /// The raw limit.
    Raw,
}

/// The careful hub's buffers and the most frames it writes per flush.
const CAREFUL_READ_BUFFER: usize = 8 * 1024;
const CAREFUL_WRITE_BUFFER: usize = 16 * 1024;
const CAREFUL_BATCH: usize = 64;

#[derive(Debug, Clone, clap::Args)]
pub struct BaselineArgs {
    #[arg(long, value_enum)]
    pub kind: Kind,
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

pub fn run(args: BaselineArgs) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args))
}

/// One broadcast channel per group, made when first named.
#[derive(Default)]
struct Groups(Mutex<HashMap<String, broadcast::Sender<Message>>>);

impl Groups {
    fn sender(&self, group: &str) -> broadcast::Sender<Message> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(group.to_owned())
            .or_insert_with(|| broadcast::channel(4096).0)
            .clone()
    }
}

async fn serve(args: BaselineArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    let groups = Arc::new(Groups::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let groups = groups.clone();
        let kind = args.kind;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let groups = groups.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &groups, kind).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

/// `group=` in a query string.
fn query_group(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("group="))
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
}

/// The group of `/api/v1/groups/{group}/messages`.
fn path_group(path: &str) -> &str {
    path.split_once("/groups/")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""))
}

async fn handle(req: Request<Incoming>, groups: &Groups, kind: Kind) -> Response<Full<Bytes>> {
    if req.uri().path() == "/ws" {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .map(|k| derive_accept_key(k.as_bytes()))
            .unwrap_or_default();
        let rx = query_group(req.uri().query()).map(|g| groups.sender(&g).subscribe());
        let on_upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
                return;
            };
            let stream = parts.io.into_inner();
            match kind {
                Kind::Raw => raw_writer(stream, rx).await,
                Kind::FlushEach => {
                    let ws = WebSocketStream::from_raw_socket(stream, Role::Server, None).await;
                    flush_each_connection(ws, rx).await;
                }
                Kind::Careful => {
                    let config = WebSocketConfig::default()
                        .read_buffer_size(CAREFUL_READ_BUFFER)
                        .write_buffer_size(CAREFUL_WRITE_BUFFER);
                    let ws =
                        WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
                    careful_connection(ws, rx).await;
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", key)
            .body(Full::default())
            .unwrap_or_default();
    }
    let group = path_group(req.uri().path()).to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = match kind {
        Kind::Raw => Some(Message::Binary(frame_text(&body))),
        Kind::FlushEach | Kind::Careful => Utf8Bytes::try_from(body).ok().map(Message::Text),
    };
    let Some(message) = message else {
        let mut refused = Response::new(Full::new(Bytes::from_static(b"not UTF-8")));
        *refused.status_mut() = StatusCode::BAD_REQUEST;
        return refused;
    };
    let delivered = groups.sender(&group).send(message).unwrap_or(0);
    Response::new(Full::new(Bytes::from(format!(
        r#"{{"id":"0","delivered":{delivered}}}"#
    ))))
}

/// The next message for a connection; a connection in no group waits
/// forever (it only reads until its peer closes).
async fn next(
    rx: &mut Option<broadcast::Receiver<Message>>,
) -> Result<Message, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn flush_each_connection(
    mut ws: WebSocketStream<TcpStream>,
    mut rx: Option<broadcast::Receiver<Message>>,
) {
    loop {
        tokio::select! {
            m = next(&mut rx) => match m {
                Ok(m) => if ws.send(m).await.is_err() { return },
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            },
            m = ws.next() => if !matches!(m, Some(Ok(_))) { return },
        }
    }
}

/// `feed` the message that woke the connection and up to
/// `CAREFUL_BATCH - 1` already queued behind it, then one `flush`.
async fn careful_connection(
    mut ws: WebSocketStream<TcpStream>,
    mut rx: Option<broadcast::Receiver<Message>>,
) {
    loop {
        tokio::select! {
            m = next(&mut rx) => {
                let first = match m {
                    Ok(m) => m,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                if ws.feed(first).await.is_err() {
                    return;
                }
                if let Some(rx) = rx.as_mut() {
                    for _ in 1..CAREFUL_BATCH {
                        match rx.try_recv() {
                            Ok(m) => {
                                if ws.feed(m).await.is_err() {
                                    return;
                                }
                            }
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                            Err(_) => break,
                        }
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
            m = ws.next() => if !matches!(m, Some(Ok(_))) { return },
        }
    }
}

/// Writes each frame that woke it and up to `CAREFUL_BATCH - 1` already
/// queued behind it in one `write` (as the careful hub flushes them): with
/// pushes in flight together, a frame per write would lose to the hub.
async fn raw_writer(mut stream: TcpStream, mut rx: Option<broadcast::Receiver<Message>>) {
    let (mut read, mut write) = stream.split();
    let mut sink = [0u8; 512];
    let mut out = Vec::with_capacity(CAREFUL_WRITE_BUFFER);
    loop {
        tokio::select! {
            m = next(&mut rx) => {
                match m {
                    Ok(m) => out.extend_from_slice(&m.into_data()),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                }
                if let Some(rx) = rx.as_mut() {
                    for _ in 1..CAREFUL_BATCH {
                        match rx.try_recv() {
                            Ok(m) => out.extend_from_slice(&m.into_data()),
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                            Err(_) => break,
                        }
                    }
                }
                if write.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
            n = tokio::io::AsyncReadExt::read(&mut read, &mut sink) => if !matches!(n, Ok(n) if n > 0) { return },
        }
    }
}

/// An unmasked server text frame around `payload` (RFC 6455 §5.2).
fn frame_text(payload: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x81);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= u16::MAX as usize => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    Bytes::from(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_read_from_the_url_and_the_push_path() {
        assert_eq!(
            query_group(Some("userId=p0u1&group=bench")).as_deref(),
            Some("bench")
        );
        assert_eq!(query_group(Some("userId=p0u1")), None);
        assert_eq!(query_group(None), None);
        assert_eq!(path_group("/api/v1/groups/bench/messages"), "bench");
        assert_eq!(path_group("/api/v1/groups/fill-3/messages"), "fill-3");
    }

    #[test]
    fn the_raw_frame_header_matches_a_text_frame_of_that_length() {
        let f = frame_text(&[b'x'; 230]);
        assert_eq!(f[..4], [0x81, 126, 0, 230]);
        assert_eq!(f.len(), 234);
    }
}
