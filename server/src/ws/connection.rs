//! One WebSocket connection after the upgrade: the welcome, the read loop
//! that turns client frames into hub calls (PROTOCOL.md §3), the writer that
//! drains the connection's queue onto the socket (§4), and the limits of §5:
//! frame size, rate, heartbeat, token expiry, slow consumer and shutdown.
//!
//! One task per connection does both reading and writing, selecting over
//! the socket, the outbound queue and the close signals. One task instead of
//! a reader and a writer saves a task and a split lock per connection, and a
//! write that stalls is raced against the close signal, so a stuck socket
//! never pins the task.

use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hub_core::{Connection, Disconnect, Frame, RateDecision, RateLimiter};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use protocol::{ClientFrame, ErrorCode, GroupId, ServerFrame, UserId};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::state::SharedState;

type Ws = WebSocketStream<TcpStream>;

/// Initial read buffer per connection. Chat frames are small and an idle
/// connection should cost little (tungstenite's default is 128 KiB, eagerly
/// allocated and zero-filled): 2 KiB holds a typical frame in one read, and
/// tungstenite grows the buffer on demand for a larger one, up to
/// `--max-frame`.
const READ_BUFFER: usize = 2 * 1024;
/// Bytes of frames fed to tungstenite before it writes to the socket; we
/// flush at the end of every batch anyway, so this only caps one write.
const WRITE_BUFFER: usize = 16 * 1024;
/// Most queued frames written per batch before looking at the socket again.
const MAX_BATCH: usize = 256;
/// How long a closing handshake may take before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn websocket_config(max_frame: usize) -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.read_buffer_size = READ_BUFFER;
    c.write_buffer_size = WRITE_BUFFER;
    c.max_frame_size = Some(max_frame);
    c.max_message_size = Some(max_frame);
    c
}

/// Who is on the other end, decided at the upgrade.
pub struct Session {
    pub user: UserId,
    pub token_groups: Vec<GroupId>,
    pub expires_at: Option<Instant>,
}

/// What woke the connection's loop.
enum Event {
    Close(Disconnect),
    Queued(Frame),
    Received(Option<Result<Message, WsError>>),
    Heartbeat,
}

/// How the loop ended.
enum End {
    /// We close, with this reason.
    Close(Disconnect),
    /// The client closed or the socket failed.
    Gone(&'static str),
}

pub async fn serve(upgraded: Upgraded, session: Session, state: SharedState) {
    // Unwrap hyper's boxed IO back to the TcpStream: one less indirection
    // on every read and write, and the few bytes read past the request
    // go to tungstenite.
    let ws = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            WebSocketStream::from_partially_read(
                parts.io.into_inner(),
                parts.read_buf.to_vec(),
                Role::Server,
                Some(state.ws_config),
            )
            .await
        }
        Err(_) => {
            tracing::error!("upgraded connection is not a TcpStream");
            return;
        }
    };

    let (conn, groups) = state
        .node
        .connect(session.user.clone(), &session.token_groups);
    // Shutdown closes every registered connection; one that registered as
    // it began closes itself (see `server::run` for the order).
    if state.is_shutting_down() {
        conn.close(Disconnect::Shutdown);
    }
    let label = state.node.conn_label(conn.id);
    tracing::info!(user = %conn.user, conn = %label, "connection opened");
    let heartbeat = Duration::from_secs(u64::from(state.config.heartbeat.get()));
    let welcome = ServerFrame::Welcome {
        user: conn.user.clone(),
        conn: label.clone(),
        groups,
        heartbeat: heartbeat.as_secs(),
    };
    let now = Instant::now();
    let mut handler = Handler {
        rate: RateLimiter::new(state.config.rate.get(), state.config.rate_burst(), now),
        last_seen: now,
        heartbeat,
        ws,
        conn,
        session,
        state,
    };
    let end = handler.run(welcome).await;
    let reason = match end {
        End::Close(d) => {
            handler.close(d).await;
            d.reason()
        }
        End::Gone(why) => why,
    };
    // Unregister before saying so: whoever reads the log line may rely on
    // the connection being gone from stats and presence.
    let user = handler.conn.user.clone();
    drop(handler);
    tracing::info!(user = %user, conn = %label, reason, "connection closed");
}

struct Handler {
    ws: Ws,
    conn: Connection,
    session: Session,
    state: SharedState,
    rate: RateLimiter,
    last_seen: Instant,
    heartbeat: Duration,
}

impl Handler {
    async fn run(&mut self, welcome: ServerFrame) -> End {
        if let Err(end) = self.write_now(&welcome).await {
            return end;
        }
        // One timer per connection, set to the earlier of the next
        // heartbeat and the token's expiry: every timer and waker a
        // connection holds is paid for by every idle connection.
        let mut next_ping = Instant::now() + self.heartbeat;
        let timer = tokio::time::sleep_until(self.next_deadline(next_ping).into());
        tokio::pin!(timer);
        let signal = self.conn.signal();
        // Pinned once, not re-made per event: a fresh wait would register
        // and unregister with the signal on every message delivered.
        let closed = signal.closed();
        tokio::pin!(closed);

        loop {
            // Wait for one event, then handle it with the waits dropped, so
            // the handler may borrow the connection mutably. Shutdown comes
            // through `signal` too (`Node::disconnect_all`).
            let event = tokio::select! {
                biased;
                reason = &mut closed => Event::Close(reason),
                frame = self.conn.recv() => Event::Queued(frame),
                msg = self.ws.next() => Event::Received(msg),
                _ = &mut timer => {
                    let now = Instant::now();
                    if self.session.expires_at.is_some_and(|at| at <= now) {
                        Event::Close(Disconnect::TokenExpired)
                    } else if now >= next_ping {
                        next_ping = now + self.heartbeat;
                        timer.as_mut().reset(self.next_deadline(next_ping).into());
                        Event::Heartbeat
                    } else {
                        timer.as_mut().reset(self.next_deadline(next_ping).into());
                        continue;
                    }
                }
            };
            let step = match event {
                Event::Close(reason) => Err(End::Close(reason)),
                Event::Queued(frame) => self.write_batch(frame).await,
                Event::Received(msg) => self.on_message(msg).await,
                Event::Heartbeat => self.on_heartbeat().await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    fn next_deadline(&self, next_ping: Instant) -> Instant {
        match self.session.expires_at {
            Some(at) if at < next_ping => at,
            _ => next_ping,
        }
    }

    async fn on_heartbeat(&mut self) -> Result<(), End> {
        if self.last_seen.elapsed() > self.heartbeat * 2 {
            return Err(End::Close(Disconnect::HeartbeatTimeout));
        }
        self.ws
            .feed(Message::Ping(Default::default()))
            .await
            .map_err(|_| End::Gone("write failed"))?;
        self.flush().await
    }

    async fn on_message(&mut self, msg: Option<Result<Message, WsError>>) -> Result<(), End> {
        let msg = match msg {
            None => return Err(End::Gone("client disconnected")),
            Some(Ok(msg)) => msg,
            Some(Err(WsError::Capacity(_))) => return Err(End::Close(Disconnect::TooLarge)),
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                return Err(End::Gone("client closed"))
            }
            Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                return Err(End::Gone("client went away without closing"))
            }
            Some(Err(WsError::Protocol(_))) => return Err(End::Gone("protocol error")),
            Some(Err(_)) => return Err(End::Gone("socket error")),
        };
        self.last_seen = Instant::now();
        match msg {
            Message::Text(text) => {
                self.state.node.stats().frame_in(text.len());
                self.on_text(text.as_str()).await
            }
            Message::Binary(data) => {
                self.state.node.stats().frame_in(data.len());
                if !self.within_rate(None).await? {
                    return Ok(());
                }
                let e = ServerFrame::error(
                    None,
                    ErrorCode::BadRequest,
                    "binary frames are not accepted; send JSON text",
                );
                self.write_now(&e).await
            }
            // tungstenite answers pings itself; a pong is a sign of life.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => self.flush().await,
            Message::Close(_) => {
                // tungstenite queued the close reply; send it.
                let _ = self.ws.flush().await;
                Err(End::Gone("client closed"))
            }
        }
    }

    /// Applies the rate limit to one frame: `Ok(true)` to handle it,
    /// `Ok(false)` when it was refused (and answered with `rate_limited`).
    async fn within_rate(&mut self, text: Option<&str>) -> Result<bool, End> {
        match self.rate.check(Instant::now()) {
            RateDecision::Allow => Ok(true),
            RateDecision::Disconnect => Err(End::Close(Disconnect::RateLimited)),
            RateDecision::Refuse => {
                // Tell the client which frame it was, when it can be told.
                let id = text
                    .and_then(|t| ClientFrame::parse(t).ok())
                    .and_then(|f| f.id().cloned());
                let message = format!(
                    "over {} frames/s; retry in {} ms",
                    self.state.config.rate,
                    self.rate.retry_after().as_millis().max(1)
                );
                let e = ServerFrame::error(id, ErrorCode::RateLimited, message);
                self.write_now(&e).await?;
                Ok(false)
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        if !self.within_rate(Some(text)).await? {
            return Ok(());
        }
        let reply = match ClientFrame::parse(text) {
            Ok(frame) => self.dispatch(frame),
            Err(e) => Some(ServerFrame::error(e.id, e.code, e.message)),
        };
        match reply {
            Some(reply) => self.write_now(&reply).await,
            None => Ok(()),
        }
    }

    /// Carries out one client frame; returns the reply, if any.
    fn dispatch(&mut self, frame: ClientFrame) -> Option<ServerFrame> {
        let node = &self.state.node;
        let user = &self.conn.user;
        match frame {
            ClientFrame::Send { to, body, id } => {
                let d = node.send(&self.conn, to, body);
                id.map(|id| ServerFrame::Ack {
                    id,
                    delivered: Some(d.delivered),
                })
            }
            ClientFrame::Publish { group, body, id } => {
                if !node.is_member(&group, user) {
                    return Some(ServerFrame::error(
                        id,
                        ErrorCode::Forbidden,
                        format!("not a member of group {group}"),
                    ));
                }
                let d = node.publish(&self.conn, group, body);
                id.map(|id| ServerFrame::Ack {
                    id,
                    delivered: Some(d.delivered),
                })
            }
            ClientFrame::Join { group, id } => {
                let allowed = self.state.config.insecure_dev
                    || self.session.token_groups.contains(&group)
                    || self.state.config.is_public_group(group.as_str())
                    || node.is_member(&group, user);
                if !allowed {
                    return Some(ServerFrame::error(
                        id,
                        ErrorCode::Forbidden,
                        format!("may not join group {group}: not in the token and not public"),
                    ));
                }
                node.join(&group, user);
                id.map(|id| ServerFrame::Ack {
                    id,
                    delivered: None,
                })
            }
            ClientFrame::Leave { group, id } => {
                node.leave(&group, user);
                id.map(|id| ServerFrame::Ack {
                    id,
                    delivered: None,
                })
            }
            ClientFrame::Ping { id } => Some(ServerFrame::Pong { id }),
        }
    }

    /// Writes one frame of our own (welcome, ack, error, pong) and flushes.
    async fn write_now(&mut self, frame: &ServerFrame) -> Result<(), End> {
        let text = frame.to_json();
        let len = text.len() as u64;
        self.ws
            .feed(Message::Text(Utf8Bytes::from(text)))
            .await
            .map_err(|_| End::Gone("write failed"))?;
        self.state.node.stats().frames_out(1, len);
        self.flush().await
    }

    /// Writes `first` and whatever else is already queued, then flushes once:
    /// a burst of messages becomes a few large socket writes.
    async fn write_batch(&mut self, first: Frame) -> Result<(), End> {
        self.feed_queued(Some(first), MAX_BATCH).await?;
        self.flush().await
    }

    /// Feeds `first` and then up to `max` frames in all from the queue to
    /// tungstenite (written at the next flush), counting them in the stats.
    async fn feed_queued(&mut self, first: Option<Frame>, max: usize) -> Result<(), End> {
        let (mut frames, mut bytes) = (0u64, 0u64);
        let mut next = first.or_else(|| self.conn.try_recv());
        let result = loop {
            let Some(frame) = next else { break Ok(()) };
            frames += 1;
            bytes += frame.len() as u64;
            if let Err(end) = self.feed_frame(frame).await {
                break Err(end);
            }
            next = if frames < max as u64 {
                self.conn.try_recv()
            } else {
                None
            };
        };
        self.state.node.stats().frames_out(frames, bytes);
        result
    }

    async fn feed_frame(&mut self, frame: Frame) -> Result<(), End> {
        // The shared bytes go to the socket as they are; checking UTF-8 is
        // the only per-recipient work (tungstenite's text type requires it).
        let text = Utf8Bytes::try_from(frame.into_bytes()).map_err(|_| End::Gone("bad frame"))?;
        self.ws
            .feed(Message::Text(text))
            .await
            .map_err(|_| End::Gone("write failed"))
    }

    /// Flushes, but gives up when the connection is told to close (its queue
    /// overflowed while we waited, or it was kicked) or the socket has not
    /// taken our bytes for two heartbeat intervals.
    async fn flush(&mut self) -> Result<(), End> {
        // Nearly every flush completes at once (the socket has room); only a
        // stalled one needs the guards below, and with them a timer and a
        // waiter registered per flush, which would be paid per message.
        let first = std::future::poll_fn(|cx| Poll::Ready(self.ws.poll_flush_unpin(cx))).await;
        if let Poll::Ready(r) = first {
            return r.map_err(|_| End::Gone("write failed"));
        }
        tokio::select! {
            r = self.ws.flush() => r.map_err(|_| End::Gone("write failed")),
            reason = self.conn.closed() => Err(End::Close(reason)),
            _ = tokio::time::sleep(self.heartbeat * 2) => Err(End::Close(Disconnect::HeartbeatTimeout)),
        }
    }

    /// Closes with `reason`'s code. On shutdown, what was already queued is
    /// written first. A slow consumer gets up to two heartbeat intervals for
    /// its backlog and the close frame to get through (it is already out of
    /// the routing, so this costs no one else anything); other closes get
    /// `CLOSE_TIMEOUT`.
    async fn close(&mut self, reason: Disconnect) {
        let limit = match reason {
            Disconnect::SlowConsumer => self.heartbeat * 2,
            _ => CLOSE_TIMEOUT,
        };
        let _ = tokio::time::timeout(limit, self.close_handshake(reason)).await;
    }

    async fn close_handshake(&mut self, reason: Disconnect) {
        if reason == Disconnect::Shutdown && self.feed_queued(None, usize::MAX).await.is_err() {
            return;
        }
        let close = CloseFrame {
            code: CloseCode::from(reason.code()),
            reason: Utf8Bytes::from_static(reason.reason()),
        };
        if self.ws.send(Message::Close(Some(close))).await.is_err() {
            return;
        }
        if reason == Disconnect::TooLarge {
            // The rest of the oversized frame may still be arriving and
            // cannot be parsed; read and discard raw bytes until the client
            // hangs up, so our close frame is not lost to a reset.
            drain_raw(self.ws.get_mut()).await;
            return;
        }
        // Wait for the client's close reply, then drop the socket.
        while let Some(Ok(msg)) = self.ws.next().await {
            if msg.is_close() {
                break;
            }
        }
    }
}

async fn drain_raw(stream: &mut TcpStream) {
    use tokio::io::AsyncReadExt;
    // On the heap: a buffer here would sit in every connection's future.
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}
