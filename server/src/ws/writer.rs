//! The writing side of one connection: moves frames from its bounded queue
//! (and the server's own replies) onto the socket, and closes it.
//!
//! Nothing here awaits a socket write inside the connection loop. The loop
//! polls `poll_write` next to the close signal, the timer and the reader, so
//! a socket that stops taking bytes never pins the task: the close signal
//! (a slow consumer's overflow, a kick, shutdown) and the heartbeat deadline
//! are always seen. The bytes in flight are bounded twice: the socket's
//! buffer (`socket.rs`) holds at most about `WRITE_BUFFER` (16 KiB) beyond
//! what the kernel took, and everything else waits in the connection's
//! queue, whose overflow closes the connection.

use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hub_core::{Connection, Disconnect, Frame, Stats};
use protocol::ServerFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::config::{Ws, WRITE_BUFFER};
use super::ended::Ended;
use super::socket::Socket;

/// Most queued frames handed to the socket in one turn of the loop before
/// the reader and the timer get theirs: a group that never goes quiet must
/// not starve pongs and heartbeats.
const MAX_BATCH: usize = 256;

/// Most queued frames taken under one lock of the queue.
const TAKE: usize = 16;

#[derive(Debug, Default)]
pub struct Writer {
    /// The socket did not take a full buffer (`WRITE_BUFFER`); until it
    /// has taken all of it, nothing more is taken from the queue.
    blocked: bool,
    /// A reply was buffered while blocked: until the buffer drains the
    /// client is not read, since its next frame could add another. Reading
    /// stops only then, so the pongs of a client that reads slowly under a
    /// busy queue still get through.
    replied_while_blocked: bool,
    /// Since when the writer has been blocked without a break: the socket
    /// did not take even one buffer's worth in that time.
    stalled_since: Option<Instant>,
    /// Frames that go before anything queued: a resume's replay and its
    /// ack (§10). While it holds anything, our own replies wait behind it,
    /// so nothing overtakes the replay.
    front: VecDeque<Frame>,
}

impl Writer {
    /// Writes one frame of our own (welcome, ack, error, pong) at once, or
    /// behind what is buffered; what the socket does not take goes out at
    /// the next `poll_write`.
    pub fn send_own(&mut self, ws: &mut Ws, frame: &ServerFrame, stats: &Stats) {
        if !self.front.is_empty() {
            self.front.push_back(Frame::encode(frame));
            return;
        }
        self.replied_while_blocked |= self.blocked;
        let text = frame.to_json();
        stats.frames_out(1, text.len() as u64);
        ws.get_mut().send_text_now(text.as_bytes());
    }

    /// `send_own` for a frame encoded already (the welcome).
    pub fn send_encoded(&mut self, ws: &mut Ws, frame: Frame, stats: &Stats) {
        if !self.front.is_empty() {
            self.front.push_back(frame);
            return;
        }
        self.replied_while_blocked |= self.blocked;
        stats.frames_out(1, frame.len() as u64);
        ws.get_mut().send_text_now(frame.bytes());
    }

    /// Puts frames ahead of the connection's queue (a resume's replay, then
    /// its ack); written as the socket takes them, like queued frames.
    pub fn send_first(&mut self, frames: impl IntoIterator<Item = Frame>) {
        self.front.extend(frames);
    }

    /// What `send_first` put ahead of the queue and is not written yet,
    /// for the close to write first.
    pub fn take_front(&mut self) -> VecDeque<Frame> {
        std::mem::take(&mut self.front)
    }

    /// Writes a heartbeat ping, like `send_own`.
    pub fn send_ping(&mut self, ws: &mut Ws) {
        ws.get_mut().send_ping_now();
    }

    /// Whether the client may be read now (see `replied_while_blocked`).
    pub fn may_read(&self) -> bool {
        !self.replied_while_blocked
    }

    /// How long the writer has been blocked without a break.
    pub fn stalled_for(&self, now: Instant) -> Duration {
        self.stalled_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    /// Moves up to `MAX_BATCH` queued frames into the socket's buffer, a
    /// buffer's worth (`WRITE_BUFFER`) at a time, and writes them while the
    /// socket takes them. The caller has registered the task for the queue
    /// in this turn (`Connection::watch`); this registers it for the socket
    /// when the socket is full. When frames are left over with the socket
    /// still willing, it asks to be polled again at once.
    pub fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        ws: &mut Ws,
        conn: &mut Connection,
        stats: &Stats,
    ) -> Result<(), Ended> {
        let socket = ws.get_mut();
        let mut frames = 0;
        let mut more = false;
        loop {
            if self.blocked {
                match socket.poll_send(cx) {
                    Poll::Ready(Ok(())) => self.unblock(),
                    Poll::Ready(Err(_)) => return Err(Ended::SocketError),
                    Poll::Pending => break,
                }
            }
            let (mut full, mut taken, mut bytes) = (false, 0u64, 0u64);
            let mut emptied = false;
            while !emptied {
                if socket.pending() >= WRITE_BUFFER {
                    full = true;
                    break;
                }
                if frames == MAX_BATCH {
                    more = true;
                    break;
                }
                if let Some(frame) = self.front.pop_front() {
                    frames += 1;
                    taken += 1;
                    bytes += frame.len() as u64;
                    socket.put_text(frame.bytes());
                    continue;
                }
                // Up to `TAKE` frames under one lock of the queue, no more
                // than the socket's buffer has room for: what it would not
                // take stays queued, where it counts against the bound.
                let mut batch: [Option<Frame>; TAKE] = Default::default();
                let want = TAKE.min(MAX_BATCH - frames);
                let n;
                (n, emptied) =
                    conn.try_recv_into(&mut batch[..want], WRITE_BUFFER - socket.pending());
                if n == 0 {
                    break;
                }
                for frame in batch[..n].iter_mut().filter_map(Option::take) {
                    frames += 1;
                    taken += 1;
                    bytes += frame.len() as u64;
                    socket.put_text(frame.bytes());
                }
            }
            // The take that emptied the queue may have filled the buffer.
            full |= socket.pending() >= WRITE_BUFFER;
            // Counted before they are written: a client that has a frame
            // finds it in the stats.
            if taken > 0 {
                stats.frames_out(taken, bytes);
            }
            if socket.pending() == 0 {
                break;
            }
            match socket.poll_send(cx) {
                // A whole buffer went out: there may be more to take.
                Poll::Ready(Ok(())) if full => continue,
                Poll::Ready(Ok(())) => break,
                Poll::Ready(Err(_)) => return Err(Ended::SocketError),
                // The socket is full. Up to a buffer's worth may wait
                // here (the next turn adds frames up to it); past that the
                // writer is blocked: nothing more from the queue, and
                // after one reply no more reading, until it drains.
                Poll::Pending if full => {
                    self.blocked = true;
                    self.stalled_since.get_or_insert_with(Instant::now);
                    break;
                }
                Poll::Pending => break,
            }
        }
        if more && !self.blocked {
            cx.waker().wake_by_ref();
        }
        Ok(())
    }

    fn unblock(&mut self) {
        self.blocked = false;
        self.replied_while_blocked = false;
        self.stalled_since = None;
    }
}

/// How long a closing handshake may take before the socket is dropped.
/// The same for every reason: a slow consumer is behind by definition, and
/// holding its socket longer only delays what its client must do anyway
/// (reconnect); it left the routing already, so until then it costs no one
/// else anything.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Closes with `reason`'s code, bounded by `CLOSE_TIMEOUT`: on shutdown
/// what was already queued is written first, after `front` (what a resume
/// put ahead of the queue, `Writer::take_front`) and before `last` (the
/// answer to a frame finished at shutdown). When even the close frame
/// cannot be written in that time the socket is dropped.
pub async fn close(
    ws: &mut Ws,
    conn: &mut Connection,
    reason: Disconnect,
    front: VecDeque<Frame>,
    last: Option<Frame>,
    stats: &Stats,
) {
    let handshake = close_handshake(ws, conn, reason, front, last, stats);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, handshake).await;
}

/// Sends the close reply tungstenite queued when the client closed, bounded
/// like every other write.
pub async fn answer_close(ws: &mut Ws) {
    let answer = async {
        let _ = ws.flush().await;
        // tungstenite hands the reply to the socket's buffer and then, its
        // side of the handshake done, returns before flushing the socket:
        // send the reply, and whatever was buffered ahead of it, here.
        let _ = std::future::poll_fn(|cx| ws.get_mut().poll_send(cx)).await;
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, answer).await;
}

async fn close_handshake(
    ws: &mut Ws,
    conn: &mut Connection,
    reason: Disconnect,
    mut front: VecDeque<Frame>,
    mut last: Option<Frame>,
    stats: &Stats,
) {
    if reason == Disconnect::Shutdown {
        let (mut frames, mut bytes) = (0u64, 0u64);
        // A resume's replay and its ack first, as the loop would have
        // written them: the queue holds what comes after.
        while let Some(frame) = front
            .pop_front()
            .or_else(|| conn.try_recv())
            .or_else(|| last.take())
        {
            frames += 1;
            bytes += frame.len() as u64;
            let socket = ws.get_mut();
            socket.put_text(frame.bytes());
            if socket.pending() >= WRITE_BUFFER
                && std::future::poll_fn(|cx| socket.poll_send(cx))
                    .await
                    .is_err()
            {
                return;
            }
        }
        stats.frames_out(frames, bytes);
    }
    let close = CloseFrame {
        code: CloseCode::from(reason.code()),
        reason: Utf8Bytes::from_static(reason.reason()),
    };
    if ws.send(Message::Close(Some(close))).await.is_err() {
        return;
    }
    if reason == Disconnect::TooLarge {
        // The rest of the oversized frame may still be arriving and cannot
        // be parsed; read and discard raw bytes until the client hangs up,
        // so our close frame is not lost to a reset.
        drain_raw(ws.get_mut()).await;
        return;
    }
    // Wait for the client's close reply, then drop the socket.
    while let Some(Ok(msg)) = ws.next().await {
        if msg.is_close() {
            break;
        }
    }
}

async fn drain_raw(stream: &mut Socket) {
    use tokio::io::AsyncReadExt;
    // On the heap: a buffer here would sit in every connection's future.
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}
