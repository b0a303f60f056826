//! The per-connection outbound queue: bounded, never waited on by a sender.
//!
//! Routing pushes with `QueueSender::push`; a full queue closes that one
//! connection with `slow_consumer` instead of making the publisher wait, so
//! one slow phone never stalls a fan-out. The close travels on the same
//! shared state as a flag the task checks before the queue, because the
//! queue that would carry it is full.
//!
//! Why not a tokio channel: a fan-out touches one queue per recipient, and
//! with 10,000 recipients none of those queues is in the CPU cache. A
//! channel plus a separate close signal cost several allocations and a
//! dozen cache lines per delivery (sender and receiver halves, a block of
//! slots, a semaphore whose release takes a lock). Here a connection's
//! frames, close reason and waker live in one small allocation, and an idle
//! connection holds no buffer at all.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;

use crate::disconnect::Disconnect;
use crate::frame::Frame;

/// Id of one node (server process): random at start, so ids made by
/// different processes, or by one process before and after a restart, differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl NodeId {
    /// A random id from the standard library's randomly seeded hasher:
    /// enough to tell processes (and runs of one) apart, with no extra
    /// dependency.
    pub fn random() -> NodeId {
        use std::hash::{BuildHasher, RandomState};
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        NodeId(RandomState::new().hash_one((std::process::id(), nanos)))
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Id of one connection, unique across a cluster: its node and a number
/// the node counts up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub node: NodeId,
    pub n: u64,
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.node, self.n)
    }
}

/// What a connection's sender side and its task share.
#[derive(Debug)]
struct Shared {
    frames: Mutex<Frames>,
    /// Set once, by whoever first asks the connection to close.
    reason: OnceLock<Disconnect>,
    /// The connection task's waker: only that task ever waits, on frames
    /// and on the close reason alike.
    waker: AtomicWaker,
}

#[derive(Debug)]
struct Frames {
    queue: VecDeque<Frame>,
    capacity: usize,
    /// The receiving task is gone; pushes are refused.
    receiver_gone: bool,
}

impl Shared {
    fn frames(&self) -> MutexGuard<'_, Frames> {
        // Nothing panics while holding this lock; recover rather than
        // spread a poison through every fan-out.
        self.frames.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self, reason: Disconnect) -> bool {
        let first = self.reason.set(reason).is_ok();
        if first {
            self.waker.wake();
        }
        first
    }
}

/// The sending half, kept in the registry.
/// Where a fan-out's wake-ups go: to each writer at once, or collected
/// and handed over a few hundred at a time to the runtime that runs the
/// writers (`Hub::run_fanout`): from a thread of its own, a wake-up costs
/// a turn of the runtime's shared queue per writer; from inside it, a
/// place in a worker's own queue.
pub(crate) enum Wakes<'a> {
    Now,
    Collect {
        wakers: Vec<Waker>,
        hand_off: &'a dyn Fn(Vec<Waker>),
    },
}

impl Wakes<'_> {
    /// Wake-ups handed over at once, at most: the writers of a large group
    /// start while the rest of it is still being queued.
    const HAND_OFF: usize = 512;

    fn wake(&mut self, waker: &AtomicWaker) {
        match self {
            Wakes::Now => waker.wake(),
            Wakes::Collect { wakers, .. } => {
                wakers.extend(waker.take());
                if wakers.len() >= Self::HAND_OFF {
                    self.flush();
                }
            }
        }
    }

    /// Hands over what is collected.
    pub(crate) fn flush(&mut self) {
        if let Wakes::Collect { wakers, hand_off } = self {
            if !wakers.is_empty() {
                hand_off(std::mem::take(wakers));
            }
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct QueueSender {
    pub(crate) id: ConnId,
    shared: Arc<Shared>,
}

/// Outcome of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// The queue was full; the connection has just been told to close.
    Overflowed,
    /// The connection is already closing or gone.
    Gone,
}

impl QueueSender {
    pub(crate) fn push(&self, frame: &Frame) -> Pushed {
        if self.shared.reason.get().is_some() {
            return Pushed::Gone;
        }
        let mut frames = self.shared.frames();
        if frames.receiver_gone {
            return Pushed::Gone;
        }
        if frames.queue.len() >= frames.capacity {
            drop(frames);
            return if self.shared.close(Disconnect::SlowConsumer) {
                Pushed::Overflowed
            } else {
                Pushed::Gone
            };
        }
        frames.queue.push_back(frame.clone());
        let was_empty = frames.queue.len() == 1;
        drop(frames);
        // The task parks only after it has seen the queue empty, so a push
        // onto a non-empty queue finds it already woken by an earlier one.
        if was_empty {
            self.shared.waker.wake();
        }
        Pushed::Queued
    }

    /// `push` for several frames in a row, under one lock and with at
    /// most one wake-up: what fits is queued, and a queue that cannot take
    /// them all overflows as it would one push at a time. Also returns how
    /// many were queued.
    #[cfg(test)]
    pub(crate) fn push_many(&self, frames: &[Frame]) -> (Pushed, usize) {
        self.push_many_then(frames, &mut Wakes::Now)
    }

    /// `push_many` with the wake-up, if one is due, left to `wakes`.
    pub(crate) fn push_many_then(&self, frames: &[Frame], wakes: &mut Wakes) -> (Pushed, usize) {
        if self.shared.reason.get().is_some() {
            return (Pushed::Gone, 0);
        }
        let mut queued = self.shared.frames();
        if queued.receiver_gone {
            return (Pushed::Gone, 0);
        }
        let was_empty = queued.queue.is_empty();
        let room = queued.capacity.saturating_sub(queued.queue.len());
        let n = frames.len().min(room);
        queued.queue.extend(frames[..n].iter().cloned());
        drop(queued);
        if was_empty && n > 0 {
            wakes.wake(&self.shared.waker);
        }
        if n < frames.len() {
            let pushed = if self.shared.close(Disconnect::SlowConsumer) {
                Pushed::Overflowed
            } else {
                Pushed::Gone
            };
            return (pushed, n);
        }
        (Pushed::Queued, n)
    }

    /// Asks the connection to close. Returns true for the first call only.
    pub(crate) fn close(&self, reason: Disconnect) -> bool {
        self.shared.close(reason)
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.shared.reason.get().is_some()
    }
}

/// The receiving half, owned by the connection's task.
#[derive(Debug)]
pub(crate) struct QueueReceiver {
    shared: Arc<Shared>,
}

/// A drained queue whose buffer has grown past this many slots gives it
/// back: a burst should not leave every connection it reached holding
/// room for the burst.
const KEEP_SLOTS: usize = 64;

impl QueueReceiver {
    pub(crate) fn try_recv(&mut self) -> Option<Frame> {
        let mut frames = self.shared.frames();
        let frame = frames.queue.pop_front();
        if frames.queue.is_empty() && frames.queue.capacity() > KEEP_SLOTS {
            frames.queue = VecDeque::new();
        }
        frame
    }

    /// Takes queued frames into `out`, in order, until `out` is full or
    /// they add up to `bytes` (the last may pass it), under one lock.
    /// Returns how many, and whether that emptied the queue: a task that
    /// registered its waker before (`watch`) then need not look again, as
    /// the next push wakes it.
    pub(crate) fn take_into(&mut self, out: &mut [Option<Frame>], bytes: usize) -> (usize, bool) {
        let mut frames = self.shared.frames();
        let (mut n, mut sum) = (0, 0);
        while n < out.len() && sum < bytes {
            let Some(frame) = frames.queue.pop_front() else {
                break;
            };
            sum += frame.len();
            out[n] = Some(frame);
            n += 1;
        }
        let emptied = frames.queue.is_empty();
        if emptied && frames.queue.capacity() > KEEP_SLOTS {
            frames.queue = VecDeque::new();
        }
        (n, emptied)
    }

    /// Resolves once something asked the connection to close. Shares the
    /// one waker slot with `poll_recv`: both are polled by the same task.
    pub(crate) fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<Disconnect> {
        self.check_then_register(cx, |rx| rx.reason())
    }

    /// Registers the task's waker for the next frame and the close alike.
    pub(crate) fn watch(&self, cx: &mut Context<'_>) {
        self.shared.waker.register(cx.waker());
    }

    /// Looks, and when there is nothing registers the task's waker and
    /// looks again: a push or close between the first look and the
    /// registration would otherwise go unseen.
    fn check_then_register<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut look: impl FnMut(&mut Self) -> Option<T>,
    ) -> Poll<T> {
        if let Some(t) = look(self) {
            return Poll::Ready(t);
        }
        self.shared.waker.register(cx.waker());
        match look(self) {
            Some(t) => Poll::Ready(t),
            None => Poll::Pending,
        }
    }

    pub(crate) fn reason(&self) -> Option<Disconnect> {
        self.shared.reason.get().copied()
    }

    /// Queues a frame of the connection's own behind what routing queued:
    /// the same bound and the same overflow rule as any push.
    pub(crate) fn push_own(&self, frame: &Frame) -> bool {
        QueueSender {
            id: ConnId {
                node: NodeId(0),
                n: 0,
            },
            shared: self.shared.clone(),
        }
        .push(frame)
            == Pushed::Queued
    }

    /// Asks the connection to close. Returns true for the first call only.
    pub(crate) fn close(&self, reason: Disconnect) -> bool {
        self.shared.close(reason)
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        let mut frames = self.shared.frames();
        frames.receiver_gone = true;
        frames.queue = VecDeque::new();
    }
}

/// Makes one connection's queue: the registry keeps the sender, the
/// connection's task keeps the receiver.
pub(crate) fn channel(id: ConnId, capacity: usize) -> (QueueSender, QueueReceiver) {
    let shared = Arc::new(Shared {
        frames: Mutex::new(Frames {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            receiver_gone: false,
        }),
        reason: OnceLock::new(),
        waker: AtomicWaker::new(),
    });
    (
        QueueSender {
            id,
            shared: shared.clone(),
        },
        QueueReceiver { shared },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ServerFrame;

    fn frame() -> Frame {
        Frame::encode(&ServerFrame::Pong { id: None })
    }

    /// A waker that counts its wake-ups.
    struct Counted(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn collected_wake_ups_are_handed_over_in_chunks_and_each_wakes_its_writer() {
        let woken = Arc::new(Counted(Default::default()));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let conns: Vec<_> = (0..1000u64)
            .map(|n| {
                let (tx, mut rx) = channel(ConnId { node: NodeId(1), n }, 4);
                // The writer registers its waker and finds the queue empty.
                rx.watch(&mut cx);
                assert!(rx.try_recv().is_none());
                (tx, rx)
            })
            .collect();
        let chunks = Mutex::new(Vec::new());
        let hand_off = |wakers: Vec<Waker>| {
            lock_chunks(&chunks).push(wakers.len());
            wakers.into_iter().for_each(Waker::wake);
        };
        let mut wakes = Wakes::Collect {
            wakers: Vec::new(),
            hand_off: &hand_off,
        };
        for (tx, _) in &conns {
            assert_eq!(
                tx.push_many_then(&[frame(), frame()], &mut wakes).0,
                Pushed::Queued
            );
        }
        assert_eq!(*lock_chunks(&chunks), vec![512], "one chunk is full");
        wakes.flush();
        assert_eq!(*lock_chunks(&chunks), vec![512, 488]);
        assert_eq!(woken.0.load(std::sync::atomic::Ordering::SeqCst), 1000);
        // A queue that was not empty needs no second wake-up.
        for (tx, _) in &conns {
            tx.push_many_then(&[frame()], &mut wakes);
        }
        wakes.flush();
        assert_eq!(lock_chunks(&chunks).len(), 2);
    }

    fn lock_chunks(m: &Mutex<Vec<usize>>) -> MutexGuard<'_, Vec<usize>> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn frames_come_out_in_order_and_a_full_queue_closes_the_connection() {
        let (tx, mut rx) = channel(
            ConnId {
                node: NodeId(7),
                n: 1,
            },
            2,
        );
        assert_eq!(tx.push(&frame()), Pushed::Queued);
        assert_eq!(tx.push(&frame()), Pushed::Queued);
        assert_eq!(tx.push(&frame()), Pushed::Overflowed);
        assert_eq!(rx.reason(), Some(Disconnect::SlowConsumer));
        // Once closing, nothing more is queued.
        assert_eq!(tx.push(&frame()), Pushed::Gone);
        assert!(rx.try_recv().is_some());
        assert!(rx.try_recv().is_some());
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn several_frames_at_once_fill_the_room_left_then_overflow_like_one_at_a_time() {
        let (tx, mut rx) = channel(
            ConnId {
                node: NodeId(7),
                n: 2,
            },
            4,
        );
        let three = [frame(), frame(), frame()];
        assert_eq!(tx.push_many(&three), (Pushed::Queued, 3));
        assert_eq!(rx.reason(), None);
        assert_eq!(tx.push_many(&three), (Pushed::Overflowed, 1));
        assert_eq!(rx.reason(), Some(Disconnect::SlowConsumer));
        assert_eq!(tx.push_many(&three), (Pushed::Gone, 0));
        for _ in 0..4 {
            assert!(rx.try_recv().is_some());
        }
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn a_drained_queue_gives_back_the_room_a_burst_took() {
        let (tx, mut rx) = channel(
            ConnId {
                node: NodeId(7),
                n: 1,
            },
            1000,
        );
        for _ in 0..500 {
            assert_eq!(tx.push(&frame()), Pushed::Queued);
        }
        assert!(rx.shared.frames().queue.capacity() >= 500);
        while rx.try_recv().is_some() {}
        assert!(rx.shared.frames().queue.capacity() <= KEEP_SLOTS);
    }

    #[test]
    fn frames_are_taken_in_order_up_to_the_room_given_and_the_last_may_pass_it() {
        let (tx, mut rx) = channel(
            ConnId {
                node: NodeId(7),
                n: 3,
            },
            100,
        );
        let frames: Vec<Frame> = (0..10)
            .map(|i| {
                Frame::encode(&ServerFrame::Pong {
                    id: Some(protocol::CorrelationId::new(&format!("{i}")).unwrap()),
                })
            })
            .collect();
        for f in &frames {
            assert_eq!(tx.push(f), Pushed::Queued);
        }
        let len = frames[0].len();
        let mut out: [Option<Frame>; 4] = Default::default();
        // Room for one and a half: two taken, eight left.
        assert_eq!(rx.take_into(&mut out, len + len / 2), (2, false));
        // Four at most, whatever the room.
        assert_eq!(rx.take_into(&mut out[..], usize::MAX), (4, false));
        assert_eq!(out[3].as_ref().map(Frame::bytes), Some(frames[5].bytes()));
        // The last four empty the queue, and say so.
        assert_eq!(rx.take_into(&mut out, usize::MAX), (4, true));
        assert_eq!(out[0].as_ref().map(Frame::bytes), Some(frames[6].bytes()));
        assert_eq!(rx.take_into(&mut out, usize::MAX), (0, true));
    }

    #[test]
    fn a_push_after_the_receiver_is_gone_is_refused() {
        let (tx, rx) = channel(
            ConnId {
                node: NodeId(7),
                n: 1,
            },
            4,
        );
        drop(rx);
        assert_eq!(tx.push(&frame()), Pushed::Gone);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_push_from_another_thread() {
        let (tx, mut rx) = channel(
            ConnId {
                node: NodeId(7),
                n: 1,
            },
            1000,
        );
        let pusher =
            std::thread::spawn(move || (0..1000).all(|_| tx.push(&frame()) == Pushed::Queued));
        // A lost wake-up leaves the receiver parked: that fails here as a
        // timeout rather than hanging the test run.
        let received = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            for _ in 0..1000 {
                // As the connection loop waits: register, then look.
                std::future::poll_fn(|cx| {
                    rx.watch(cx);
                    rx.try_recv().map_or(Poll::Pending, Poll::Ready)
                })
                .await;
            }
        })
        .await;
        assert!(received.is_ok(), "a push did not wake the receiver");
        assert!(matches!(pusher.join(), Ok(true)));
    }
}
