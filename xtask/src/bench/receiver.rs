//! The load side's run loop after "go": one thread, one level-triggered
//! epoll set over all of the process's sockets, polled rather than slept on.
//!
//! Why poll: on loopback, the server's `send` runs the receiving socket's
//! side too, and when a load thread is asleep in `epoll_wait` that includes
//! waking it (on a VM, an inter-processor interrupt and a context switch).
//! Clients on other machines never cost the server that. So this loop asks
//! epoll with a zero timeout, handles whatever is ready, and when nothing is
//! ready sleeps for `--poll-us` instead of waiting in epoll. A send to a
//! socket nobody waits on wakes no one. The price is measured, not hidden:
//! every latency includes up to one poll interval of the load side's own
//! delay (a real NIC's interrupt coalescing adds the same kind of delay).
//!
//! The receive path walks frame headers and finds the `"t":` timestamp in
//! each body, with no JSON parsing; latencies go straight into this
//! process's histogram, merged with the other processes' at the end.

use std::io::{ErrorKind, IoSliceMut, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};

use super::lines::Order;
use super::load_args::{LoadArgs, Mode};
use super::report::latency_histogram;
use super::wire::{masked_text_frame, now_ns};

/// What one load process saw after "go".
pub struct Outcome {
    /// Send time to the kernel's receive timestamp on the client socket, in
    /// microseconds: when the bytes reached the client, whenever it ran.
    pub hist: Histogram<u64>,
    /// Send time to when this process read the frame, in microseconds.
    pub read_hist: Histogram<u64>,
    pub received: u64,
    /// Frames that arrived in one read with a later frame and so carry the
    /// later frame's receive timestamp (the kernel gives one per read).
    pub shared_stamp: u64,
    pub last_ns: u64,
    /// Bytes of the data frames received, headers included.
    pub frame_bytes: u64,
    /// The run ended on "stop" or a closed stdin, not by itself.
    pub stopped: bool,
}

impl Outcome {
    pub fn empty() -> anyhow::Result<Self> {
        Ok(Self {
            hist: latency_histogram()?,
            read_hist: latency_histogram()?,
            received: 0,
            shared_stamp: 0,
            last_ns: 0,
            frame_bytes: 0,
            stopped: false,
        })
    }
}

struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet a whole frame.
    buf: Vec<u8>,
    /// Bytes the socket would not take yet (direct sends, pongs).
    outbox: Vec<u8>,
    received: u64,
    open: bool,
}

/// Runs until every connection has its `--expect` messages, or "stop"
/// arrives on `commands` (or stdin closes). In direct mode connection k
/// sends to `partners[k]`. Returns the sockets too, still open.
pub fn run(
    args: &LoadArgs,
    streams: Vec<TcpStream>,
    partners: &[String],
    commands: &Receiver<Order>,
) -> anyhow::Result<(Outcome, Vec<TcpStream>)> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create")?;
    let mut conns = Vec::with_capacity(streams.len());
    for (i, stream) in streams.into_iter().enumerate() {
        stream.set_nonblocking(true)?;
        setsockopt(&stream, sockopt::ReceiveTimestampns, &true)?;
        // Level-triggered: one read per ready socket, no read to find it empty.
        epoll.add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
        conns.push(Conn {
            stream,
            buf: Vec::new(),
            outbox: Vec::new(),
            received: 0,
            open: true,
        });
    }
    let mut out = Outcome::empty()?;
    let mut open = conns.len();
    let mut sender = (args.mode == Mode::Direct).then(|| DirectSender::new(args, conns.len()));
    let mut events = vec![EpollEvent::empty(); 1024];
    let mut chunk = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let idle_sleep = Duration::from_micros(args.tuning.poll_us.max(1));
    loop {
        match commands.try_recv() {
            Ok(Order::Stop) | Err(TryRecvError::Disconnected) => {
                out.stopped = true;
                break;
            }
            Ok(Order::Go) | Err(TryRecvError::Empty) => {}
        }
        if let Some(s) = sender.as_mut() {
            s.send_due(&mut conns, partners);
        }
        let ready = match epoll.wait(&mut events, EpollTimeout::ZERO) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(e).context("epoll_wait"),
        };
        if ready == 0 {
            if open == 0 {
                break;
            }
            std::thread::sleep(idle_sleep);
            continue;
        }
        for ev in &events[..ready] {
            let Some(c) = conns.get_mut(ev.data() as usize) else {
                continue;
            };
            if !c.open {
                continue;
            }
            let finished = match read_stamped(&c.stream, &mut chunk, &mut cmsg) {
                Ok((0, _)) => true,
                Ok((n, stamp)) => {
                    c.buf.extend_from_slice(&chunk[..n]);
                    walk_frames(c, stamp, &mut out)
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                Err(e) if e.kind() == ErrorKind::Interrupted => false,
                Err(_) => true,
            };
            let satisfied = args.tuning.expect > 0 && c.received >= args.tuning.expect;
            if finished || satisfied {
                c.open = false;
                open -= 1;
                let _ = epoll.delete(&c.stream);
            }
        }
        if open == 0 && sender.is_none() {
            break;
        }
    }
    Ok((out, conns.into_iter().map(|c| c.stream).collect()))
}

/// One `recvmsg`: the bytes, and the kernel's receive timestamp (wall
/// clock, like the send times in the bodies) of the last segment read.
fn read_stamped(
    stream: &TcpStream,
    chunk: &mut [u8],
    cmsg: &mut [u8],
) -> std::io::Result<(usize, Option<u64>)> {
    let mut iov = [IoSliceMut::new(chunk)];
    let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::empty())
        .map_err(std::io::Error::from)?;
    let mut stamp = None;
    for m in msg.cmsgs().into_iter().flatten() {
        if let ControlMessageOwned::ScmTimestampns(ts) = m {
            let ns = i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec());
            stamp = u64::try_from(ns).ok();
        }
    }
    Ok((msg.bytes, stamp))
}

/// Handles every whole frame in `c.buf`, `stamp` being the receive time of
/// the read that completed them; true when the server closed.
fn walk_frames(c: &mut Conn, stamp: Option<u64>, out: &mut Outcome) -> bool {
    let mut at = 0;
    let mut closed = false;
    let now = now_ns();
    let arrived = stamp.unwrap_or(now);
    let mut data_frames = 0u64;
    while let Some((opcode, start, end)) = frame_at(&c.buf[at..]) {
        let payload = &c.buf[at + start..at + end];
        match opcode {
            1 | 2 => {
                if let Some(t0) = find_t(payload) {
                    let _ = out.hist.record((arrived.saturating_sub(t0) / 1000).max(1));
                    let _ = out.read_hist.record((now.saturating_sub(t0) / 1000).max(1));
                    out.last_ns = out.last_ns.max(arrived);
                }
                data_frames += 1;
                out.frame_bytes += end as u64;
                c.received += 1;
                out.received += 1;
            }
            // A ping is answered, so the server's heartbeat keeps us.
            9 if payload.len() <= 125 => {
                let mut pong = masked_text_frame(payload);
                pong[0] = 0x8a;
                c.outbox.extend_from_slice(&pong);
            }
            8 => closed = true,
            _ => {}
        }
        at += end;
    }
    out.shared_stamp += data_frames.saturating_sub(1);
    c.buf.drain(..at);
    flush(c);
    closed
}

/// The opcode and payload bounds of the unmasked server frame at the start
/// of `b`, if all of it is there.
fn frame_at(b: &[u8]) -> Option<(u8, usize, usize)> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    let (len, off): (usize, usize) = match b1 & 0x7f {
        126 => (usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])), 4),
        127 => {
            let n: [u8; 8] = b.get(2..10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(n)).ok()?, 10)
        }
        n => (usize::from(n), 2),
    };
    let end = off.checked_add(len)?;
    (b.len() >= end).then_some((b0 & 0x0f, off, end))
}

/// The `"t":<ns>` value in a frame, found without parsing the JSON.
fn find_t(b: &[u8]) -> Option<u64> {
    let at = b.windows(4).position(|w| w == b"\"t\":")? + 4;
    let mut v = 0u64;
    let mut any = false;
    for &c in b[at..].iter().skip_while(|c| **c == b' ') {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        any = true;
    }
    any.then_some(v)
}

/// Writes what the socket takes of the outbox; the rest waits for the next
/// round (frames here are small, so a full socket buffer is rare).
fn flush(c: &mut Conn) {
    while !c.outbox.is_empty() {
        match c.stream.write(&c.outbox) {
            Ok(0) => return,
            Ok(n) => {
                c.outbox.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Direct mode: every connection sends `--rate` messages a second to its
/// partner (connection k to `partners[k]`) for `--secs`, each carrying its
/// send time.
/// Messages owed are computed from elapsed time, so a late round does not
/// lower the rate.
struct DirectSender {
    start: Instant,
    secs: f64,
    per_sec: f64,
    sent: u64,
    pad: String,
}

impl DirectSender {
    fn new(args: &LoadArgs, conns: usize) -> Self {
        Self {
            start: Instant::now(),
            secs: args.tuning.secs as f64,
            per_sec: args.tuning.rate as f64 * conns as f64,
            sent: 0,
            pad: "x".repeat(60),
        }
    }

    fn send_due(&mut self, conns: &mut [Conn], partners: &[String]) {
        if conns.is_empty() {
            return;
        }
        let due = (self.start.elapsed().as_secs_f64().min(self.secs) * self.per_sec) as u64;
        while self.sent < due {
            let k = self.sent as usize % conns.len();
            self.sent += 1;
            let Some(partner) = partners.get(k).filter(|p| !p.is_empty()) else {
                continue;
            };
            let payload = format!(
                r#"{{"type":"send","to":"{partner}","body":{{"t":{},"p":"{}"}}}}"#,
                now_ns(),
                self.pad
            );
            let c = &mut conns[k];
            c.outbox
                .extend_from_slice(&masked_text_frame(payload.as_bytes()));
            flush(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_found_whole_or_not_at_all() {
        let mut f = vec![0x81, 5];
        f.extend_from_slice(b"hello");
        assert_eq!(frame_at(&f), Some((1, 2, 7)));
        assert_eq!(frame_at(&f[..6]), None);
        let mut long = vec![0x81, 126, 0x01, 0x00];
        long.extend(std::iter::repeat_n(b'x', 256));
        assert_eq!(frame_at(&long), Some((1, 4, 260)));
        assert_eq!(frame_at(&long[..3]), None);
    }

    #[test]
    fn the_send_time_is_read_from_the_body() {
        assert_eq!(find_t(br#"{"body":{"t":1234,"p":"x"}}"#), Some(1234));
        assert_eq!(find_t(br#"{"body":{"t": 77}}"#), Some(77));
        assert_eq!(find_t(br#"{"body":{"x":1}}"#), None);
    }
}
