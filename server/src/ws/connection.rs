//! One WebSocket connection after the upgrade: the welcome, then one loop
//! that watches five things at once — the close signal, the timer
//! (heartbeat and token expiry), the writer, the client frame being carried
//! out and the reader — and handles whichever is ready (PROTOCOL.md §3–5).
//!
//! One task per connection does both reading and writing. Instead of
//! awaiting a read, a write or a frame's work, the loop polls all of them
//! in one `poll_fn` and handles events synchronously: a reply is handed to
//! the writer, not awaited. So no single socket operation can keep the task
//! from seeing a close or a deadline, and under a queue that never empties
//! the writer takes one bounded batch per turn while the reader and the
//! timer still get theirs. A frame whose work waits (in a cluster: on
//! Redis, and for its own message to come back over pub/sub; a `resume`
//! reading the streams' logs) does not stop the connection's deliveries,
//! its pings or a kick; the next frame is read only when it is done, so one
//! client's frames take effect in the order they were sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hub_core::{
    Connection, Disconnect, Frame, NodeError, RateDecision, RateLimiter, Resumed, Session,
};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use protocol::{ClientFrame, ErrorCode, ServerFrame};
use socket2::SockRef;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::config::{Ws, SEND_BUFFER};
use super::dispatch::dispatch;
use super::ended::Ended;
use super::held_upgrade::HeldUpgrade;
use super::socket::Socket;
use super::writer::{self, Writer};
use crate::state::SharedState;

/// How long a `resume=1` connection's delivery waits for its first frame
/// before it goes on as after an empty resume (§10).
const RESUME_WAIT: Duration = Duration::from_secs(10);

/// What the welcome frame says besides who and which connection.
pub struct Welcome {
    pub groups: Vec<protocol::GroupId>,
    pub streams: protocol::Positions,
}

/// What woke the loop.
enum Event {
    Close(Disconnect),
    Received(Option<Result<Message, WsError>>),
    /// The frame in `Handler::doing` is done.
    Done(Outcome),
    Tick,
}

/// A client frame's work, owning all it needs, so the loop can poll it
/// beside the socket. Boxed: the future of a node call is large, and
/// inline it would sit in every idle connection's task; a frame pays one
/// allocation instead.
type Doing = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// What a client frame's work comes to.
enum Outcome {
    /// Its reply, if any.
    Reply(Option<ServerFrame>),
    /// A `resume` worked out (or refused): the connection takes it.
    Resumed {
        id: Option<protocol::CorrelationId>,
        answer: Result<Resumed, NodeError>,
    },
}

/// Serves one upgraded connection until it ends. `conn` was admitted under
/// the caps before the upgrade and is registered already; `slot` is its
/// place under `--max-connections`, given back as it leaves the registry.
pub async fn serve(
    upgraded: Upgraded,
    conn: Connection,
    welcome: Welcome,
    session: Session,
    slot: Option<OwnedSemaphorePermit>,
    state: SharedState,
) {
    let label = state.node.conn_label(conn.id);
    let user = conn.user.clone();
    let heartbeat = Duration::from_secs(u64::from(state.config.heartbeat.get()));
    // Encoded at once: the frame, with a position per stream, would
    // otherwise sit in this task's state for the life of the connection.
    let welcome = Frame::encode(&ServerFrame::Welcome {
        user: user.clone(),
        conn: label.clone(),
        groups: welcome.groups,
        heartbeat: heartbeat.as_secs(),
        streams: welcome.streams,
    });
    // Unwrap hyper's boxed IO back to the TcpStream: one less indirection
    // on every read and write. The 101 it held (held_upgrade.rs) goes out
    // ahead of the welcome, and the few bytes read past the request go to
    // tungstenite.
    let ws = match upgraded.downcast::<TokioIo<HeldUpgrade>>() {
        Ok(parts) => {
            let (stream, unsent) = parts.io.into_inner().into_parts();
            if let Err(e) = SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER) {
                tracing::debug!(error = %e, "cannot size the send buffer");
            }
            WebSocketStream::from_partially_read(
                Socket::new(stream, unsent),
                parts.read_buf.to_vec(),
                Role::Server,
                Some(state.ws_config),
            )
            .await
        }
        Err(_) => {
            tracing::error!("upgraded connection is not ours");
            return;
        }
    };
    // Shutdown closes every registered connection; one that registered as
    // it began closes itself (see `server::run` for the order).
    if state.is_shutting_down() {
        conn.close(Disconnect::Shutdown);
    }
    tracing::info!(user = %user, conn = %label, "connection opened");
    let now = Instant::now();
    let mut handler = Handler {
        hold_until: conn.is_held().then(|| now + RESUME_WAIT),
        reader_idle: false,
        rate: RateLimiter::new(state.config.rate.get(), state.config.rate_burst(), now),
        last_seen: now,
        next_ping: now + heartbeat,
        heartbeat,
        writer: Writer::default(),
        doing: None,
        resuming: false,
        unqueued: None,
        ws,
        conn,
        session: Arc::new(session),
        state,
    };
    let ended = handler.run(welcome).await;
    // Out of presence and stats first, so the numbers are exact while the
    // close handshake (bounded, below) is still under way, and so whoever
    // reads the log line may rely on the connection being gone.
    handler.conn.unregister().await;
    drop(slot);
    match ended {
        Ended::Closed(reason) => {
            let last = match handler.doing.take() {
                Some(doing) => finish(doing).await,
                None => handler.unqueued.take(),
            };
            let stats = handler.state.node.stats();
            let front = handler.writer.take_front();
            writer::close(
                &mut handler.ws,
                &mut handler.conn,
                reason,
                front,
                last,
                stats,
            )
            .await;
        }
        Ended::ClientClosed => writer::answer_close(&mut handler.ws).await,
        _ => {}
    }
    tracing::info!(user = %user, conn = %label, reason = ended.reason(), "connection closed");
}

/// How long a frame under way when shutdown starts may take to finish: a
/// cluster script sent before shutdown began has run or timed out on
/// Redis's side by then (`SCRIPT_DEADLINE`, 700 ms). (One sent later, after
/// a slow membership read, or one whose answer is lost and must be
/// settled, can outlast it: then no answer, as before.)
const FINISH_AT_SHUTDOWN: Duration = Duration::from_secs(1);

/// Finishes the frame that was under way when shutdown closed its
/// connection, and gives its answer to write after the queue.
///
/// Given up, a frame that had taken effect went unanswered: the client
/// sent it again after reconnecting, and its recipients got it twice. The
/// answer leaves out the ack's position: the connection's queue was closed
/// when shutdown began (and the node stops reading pub/sub right after),
/// so messages before that position may never have reached it, and a
/// client that took the position would skip them on resume. Without it,
/// the resume replays the sender's own copy instead: a copy seen twice
/// by its sender, not a message lost or sent twice.
async fn finish(doing: Doing) -> Option<Frame> {
    let Outcome::Reply(reply) = tokio::time::timeout(FINISH_AT_SHUTDOWN, doing).await.ok()? else {
        return None;
    };
    Some(Frame::encode(&positionless(reply?)))
}

/// An answer with its ack's position left out (see `finish`).
fn positionless(reply: ServerFrame) -> ServerFrame {
    match reply {
        ServerFrame::Ack {
            id,
            delivered,
            recovered,
            ..
        } => ServerFrame::Ack {
            id,
            delivered,
            stream: None,
            epoch: None,
            seq: None,
            recovered,
        },
        other => other,
    }
}

struct Handler {
    ws: Ws,
    conn: Connection,
    /// Shared with the frame being carried out.
    session: Arc<Session>,
    state: SharedState,
    writer: Writer,
    /// The client frame being carried out; no other is read meanwhile.
    doing: Option<Doing>,
    /// `doing` is a `resume`: delivery stays held until it is done, and a
    /// shutdown does not wait for it (nothing queued is handed out).
    resuming: bool,
    /// The answer to a frame that finished as shutdown closed the queue it
    /// would have gone behind: written at the close instead (`on_done`).
    unqueued: Option<Frame>,
    rate: RateLimiter,
    last_seen: Instant,
    next_ping: Instant,
    heartbeat: Duration,
    /// While delivery is held for a `resume`: when to stop waiting for it.
    hold_until: Option<Instant>,
    /// The last read found nothing (see `may_have_input`).
    reader_idle: bool,
}

impl Handler {
    async fn run(&mut self, welcome: Frame) -> Ended {
        self.writer
            .send_encoded(&mut self.ws, welcome, self.state.node.stats());
        // One timer per connection, set to the earliest of the next
        // heartbeat and the token's expiry: every timer a connection holds
        // is paid for by every idle connection.
        let timer = tokio::time::sleep_until(self.next_deadline().into());
        tokio::pin!(timer);
        loop {
            let event = std::future::poll_fn(|cx| self.poll_event(cx, timer.as_mut())).await;
            let step = match event {
                Ok(Event::Close(reason)) => Err(Ended::Closed(reason)),
                Ok(Event::Received(msg)) => self.on_message(msg),
                Ok(Event::Done(reply)) => {
                    self.doing = None;
                    self.last_seen = Instant::now();
                    self.on_done(reply)
                }
                Ok(Event::Tick) => {
                    let step = self.on_tick(Instant::now());
                    timer.as_mut().reset(self.next_deadline().into());
                    step
                }
                Err(ended) => Err(ended),
            };
            if let Err(ended) = step {
                // A frame still being carried out is given up with the
                // connection (see `RedisBackplane`'s guards for what that
                // leaves behind: nothing), except at shutdown, where `serve`
                // finishes and answers it.
                if ended != Ended::Closed(Disconnect::Shutdown) || self.resuming {
                    self.doing = None;
                }
                return ended;
            }
        }
    }

    /// One turn of the loop: each source in a fixed order, every one polled
    /// on every turn, so none can starve the others.
    fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
        timer: Pin<&mut Sleep>,
    ) -> Poll<Result<Event, Ended>> {
        // One registration for the close signal and the queue: the looks
        // below (here and in `poll_write`) then miss nothing.
        self.conn.watch(cx);
        if let Some(reason) = self.conn.close_reason() {
            return Poll::Ready(Ok(Event::Close(reason)));
        }
        if timer.poll(cx).is_ready() {
            return Poll::Ready(Ok(Event::Tick));
        }
        let stats = self.state.node.stats();
        if let Err(ended) = self
            .writer
            .poll_write(cx, &mut self.ws, &mut self.conn, stats)
        {
            return Poll::Ready(Err(ended));
        }
        if let Some(doing) = self.doing.as_mut() {
            return match doing.as_mut().poll(cx) {
                Poll::Ready(reply) => Poll::Ready(Ok(Event::Done(reply))),
                Poll::Pending => Poll::Pending,
            };
        }
        if self.writer.may_read() && self.may_have_input(cx) {
            match self.ws.poll_next_unpin(cx) {
                Poll::Ready(msg) => {
                    self.reader_idle = false;
                    return Poll::Ready(Ok(Event::Received(msg)));
                }
                Poll::Pending => self.reader_idle = true,
            }
        }
        Poll::Pending
    }

    /// Whether a read through tungstenite could find anything. After one
    /// found nothing (no whole frame buffered, the socket empty), only new
    /// bytes on the socket can change that, and the socket's readiness says
    /// so (registering the task for it) without touching tungstenite's
    /// state: in a fan-out the task is woken once per message, for its
    /// queue, and the read it would try each time finds nothing.
    fn may_have_input(&self, cx: &mut Context<'_>) -> bool {
        !self.reader_idle || self.ws.get_ref().poll_read_ready(cx).is_ready()
    }

    fn next_deadline(&self) -> Instant {
        let mut next = self.next_ping;
        for at in [self.session.expires_at, self.hold_until]
            .into_iter()
            .flatten()
        {
            next = next.min(at);
        }
        next
    }

    /// Ends a `resume=1` hold: live delivery goes on from the queue.
    fn release(&mut self) {
        self.hold_until = None;
        self.conn.release();
    }

    /// The timer fired: token expiry, then liveness of the client and of
    /// the socket, then the next ping.
    fn on_tick(&mut self, now: Instant) -> Result<(), Ended> {
        if self.session.expires_at.is_some_and(|at| at <= now) {
            return Err(Ended::Closed(Disconnect::TokenExpired));
        }
        if self.hold_until.is_some_and(|at| at <= now) {
            // No first frame in time: as after an empty resume.
            self.release();
        }
        if now < self.next_ping {
            return Ok(());
        }
        let limit = self.heartbeat * 2;
        // While a frame is under way the client is not read, so its pongs
        // wait unread: silence then says nothing about the client (`Done`
        // starts the count again).
        let silent = self.doing.is_none() && now.saturating_duration_since(self.last_seen) > limit;
        if silent || self.writer.stalled_for(now) > limit {
            return Err(Ended::Closed(Disconnect::HeartbeatTimeout));
        }
        self.next_ping = now + self.heartbeat;
        self.writer.send_ping(&mut self.ws);
        Ok(())
    }

    fn on_message(&mut self, msg: Option<Result<Message, WsError>>) -> Result<(), Ended> {
        let msg = match msg {
            None => return Err(Ended::ClientVanished),
            Some(Ok(msg)) => msg,
            Some(Err(WsError::Capacity(_))) => return Err(Ended::Closed(Disconnect::TooLarge)),
            // A bad frame is answered (§3); this one also ends the
            // connection: tokio-tungstenite reads nothing after an error,
            // and RFC 6455 has the connection failed with 1007.
            Some(Err(WsError::Utf8(_))) => {
                let e = ServerFrame::error(
                    None,
                    ErrorCode::BadRequest,
                    "text frames must be UTF-8; closing with 1007",
                );
                self.reply(&e)?;
                return Err(Ended::Closed(Disconnect::NotUtf8));
            }
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                return Err(Ended::ClientClosed)
            }
            Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                return Err(Ended::ClientVanished)
            }
            Some(Err(WsError::Protocol(_))) => return Err(Ended::ProtocolError),
            Some(Err(_)) => return Err(Ended::SocketError),
        };
        self.last_seen = Instant::now();
        let stats = self.state.node.stats();
        match msg {
            Message::Text(text) => {
                stats.frame_in(text.len());
                self.on_text(text.as_str())
            }
            Message::Binary(data) => {
                stats.frame_in(data.len());
                self.release();
                if !self.within_rate(None)? {
                    return Ok(());
                }
                let e = ServerFrame::error(
                    None,
                    ErrorCode::BadRequest,
                    "binary frames are not accepted; send JSON text",
                );
                self.reply(&e)
            }
            // tungstenite answers pings itself; both are signs of life, and
            // both count toward the rate limit like any frame the client
            // sends.
            Message::Ping(_) | Message::Pong(_) => self.within_rate(None).map(|_| ()),
            Message::Frame(_) => Ok(()),
            // tungstenite queued the close reply; `serve` sends it.
            Message::Close(_) => Err(Ended::ClientClosed),
        }
    }

    /// Applies the rate limit to one frame: `Ok(true)` to handle it,
    /// `Ok(false)` when it was refused (and answered with `rate_limited`).
    fn within_rate(&mut self, text: Option<&str>) -> Result<bool, Ended> {
        match self.rate.check(Instant::now()) {
            RateDecision::Allow => Ok(true),
            RateDecision::Disconnect => Err(Ended::Closed(Disconnect::RateLimited)),
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
                self.reply(&ServerFrame::error(id, ErrorCode::RateLimited, message))?;
                Ok(false)
            }
        }
    }

    fn on_text(&mut self, text: &str) -> Result<(), Ended> {
        if !self.within_rate(Some(text))? {
            return Ok(());
        }
        let frame = ClientFrame::parse(text);
        if let Ok(ClientFrame::Resume { positions, id }) = frame {
            return self.on_resume(id, positions);
        }
        // Any other first frame: handled as usual, after an empty resume.
        self.release();
        match frame {
            Ok(frame) => {
                let node = self.state.node.clone();
                let from = self.conn.origin();
                let session = Arc::clone(&self.session);
                self.doing = Some(Box::pin(async move {
                    Outcome::Reply(dispatch(&node, from, &session, frame).await)
                }));
                Ok(())
            }
            Err(e) => self.reply(&ServerFrame::error(e.id, e.code, e.message)),
        }
    }

    /// A frame's work is done: its reply goes out.
    fn on_done(&mut self, outcome: Outcome) -> Result<(), Ended> {
        let reply = match outcome {
            Outcome::Reply(reply) => reply,
            Outcome::Resumed { id, answer } => return self.on_resumed(id, answer),
        };
        match reply {
            // An ack with a position goes behind what is queued (see
            // `Connection::queue_own`); a full queue has closed the
            // connection, which the loop sees next.
            Some(reply @ ServerFrame::Ack { seq: Some(_), .. }) => {
                if !self.conn.queue_own(&Frame::encode(&reply))
                    && self.conn.close_reason() == Some(Disconnect::Shutdown)
                {
                    // Shutdown closed the queue between the frame's end and
                    // this: answered at the close, as `finish` would have.
                    self.unqueued = Some(Frame::encode(&positionless(reply)));
                }
                Ok(())
            }
            Some(reply) => self.reply(&reply),
            None => Ok(()),
        }
    }

    /// A `resume` (§10): only as the first frame after `resume=1`. Worked
    /// out as the frame's work (in a cluster it reads Redis), while the
    /// connection, still held, goes on watching its close signal and its
    /// heartbeat; `on_resumed` then takes it.
    fn on_resume(
        &mut self,
        id: Option<protocol::CorrelationId>,
        positions: protocol::Positions,
    ) -> Result<(), Ended> {
        if !self.conn.is_held() {
            let e = ServerFrame::error(
                id,
                ErrorCode::BadRequest,
                "resume is only accepted as the first frame after connecting with resume=1",
            );
            return self.reply(&e);
        }
        // The first frame came: the wait for it is over, and delivery
        // stays held until the replay is in place.
        self.hold_until = None;
        self.resuming = true;
        let node = self.state.node.clone();
        let user = self.conn.user.clone();
        self.doing = Some(Box::pin(async move {
            let answer = node.resume(&user, &positions).await;
            Outcome::Resumed { id, answer }
        }));
        Ok(())
    }

    /// The replay and then the ack go ahead of everything queued meanwhile,
    /// which the connection then delivers minus what the replay covered.
    fn on_resumed(
        &mut self,
        id: Option<protocol::CorrelationId>,
        answer: Result<Resumed, NodeError>,
    ) -> Result<(), Ended> {
        self.resuming = false;
        if let Ok(resumed) = &answer {
            self.conn.cover_replay(resumed);
        }
        self.release();
        match answer {
            Ok(resumed) => {
                self.writer.send_first(resumed.replay);
                if let Some(id) = id {
                    let ack = ServerFrame::ack_recovered(id, resumed.recovered);
                    self.writer.send_first([Frame::encode(&ack)]);
                }
                Ok(())
            }
            Err(e) => self.reply(&ServerFrame::error(id, e.code(), e.message())),
        }
    }

    fn reply(&mut self, frame: &ServerFrame) -> Result<(), Ended> {
        self.writer
            .send_own(&mut self.ws, frame, self.state.node.stats());
        Ok(())
    }
}
