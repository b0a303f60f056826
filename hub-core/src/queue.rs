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
//!
//! That allocation is laid out for the fan-out: everything both sides touch
//! per frame (the lock, the ring's bookkeeping, the waker, the close
//! reason) sits in one 64-byte cache line, so a push and the writer's take
//! move one line between cores, not three. The frames themselves are in a
//! ring of slots allocated apart, only while there are frames to hold.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

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

/// What a connection's sender side and its task share: one cache line
/// (see the module doc; a test holds it to that).
#[derive(Debug)]
#[repr(align(64))]
struct Shared {
    frames: Mutex<Frames>,
    /// `OPEN`, then set once, by whoever first asks the connection to
    /// close, to the reason's place in `Disconnect::ALL` plus one. Read
    /// without the lock: a fan-out looks at it before it locks.
    reason: AtomicU8,
}

const OPEN: u8 = 0;

/// The frames, a bounded FIFO in a ring of slots, and who waits for them.
/// (`VecDeque` would do for the ring, but its bookkeeping is four words
/// where this needs two and a half, and those words decide whether the
/// shared state fits one cache line.)
#[derive(Debug)]
struct Frames {
    /// Empty (no allocation) until a frame is queued, and again once a
    /// ring that grew large is drained.
    slots: Box<[Option<Frame>]>,
    head: u32,
    len: u32,
    /// Most frames held at once (the queue's capacity).
    bound: u32,
    /// The receiving task is gone; pushes are refused.
    receiver_gone: bool,
    /// The connection task's waker: only that task ever waits, on frames
    /// and on the close reason alike. A wake-up takes it; the task puts it
    /// back (`watch`) before it looks again.
    waker: Option<Waker>,
}

impl Frames {
    fn new(bound: usize) -> Frames {
        Frames {
            slots: Box::default(),
            head: 0,
            len: 0,
            bound: u32::try_from(bound).unwrap_or(u32::MAX).max(1),
            receiver_gone: false,
            waker: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn room(&self) -> usize {
        self.bound.saturating_sub(self.len) as usize
    }

    /// Queues `frame`; the caller has checked `room`.
    fn push_back(&mut self, frame: Frame) {
        if self.len as usize == self.slots.len() {
            self.grow();
        }
        let at = self.slot(self.len as usize);
        self.slots[at] = Some(frame);
        self.len += 1;
    }

    fn pop_front(&mut self) -> Option<Frame> {
        if self.len == 0 {
            return None;
        }
        let at = self.head as usize;
        let frame = self.slots[at].take();
        self.head = self.slot(1) as u32;
        self.len -= 1;
        frame
    }

    /// The slot of the `i`th frame from the front (`i` ≤ the slots).
    fn slot(&self, i: usize) -> usize {
        let at = self.head as usize + i;
        if at >= self.slots.len() {
            at - self.slots.len()
        } else {
            at
        }
    }

    /// Twice the slots (four at first, never many past the bound), the
    /// frames moved to the front in order.
    fn grow(&mut self) {
        let cap = self.slots.len();
        let new_cap = (cap * 2).max(4).min(self.bound as usize).max(cap + 1);
        let mut slots = Vec::with_capacity(new_cap);
        for i in 0..self.len as usize {
            let at = self.slot(i);
            slots.push(self.slots[at].take());
        }
        slots.resize_with(new_cap, || None);
        self.slots = slots.into_boxed_slice();
        self.head = 0;
    }

    /// Drops every frame and the slots.
    fn clear(&mut self) {
        self.slots = Box::default();
        self.head = 0;
        self.len = 0;
    }

    /// Gives back the slots of a drained ring that grew past `KEEP_SLOTS`.
    fn shrink_if_drained(&mut self) {
        if self.len == 0 && self.slots.len() > KEEP_SLOTS {
            self.clear();
        }
    }
}

impl Shared {
    fn frames(&self) -> MutexGuard<'_, Frames> {
        // Nothing panics while holding this lock; recover rather than
        // spread a poison through every fan-out.
        self.frames.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reason(&self) -> Option<Disconnect> {
        match self.reason.load(Ordering::Acquire) {
            OPEN => None,
            n => Disconnect::ALL.get(usize::from(n) - 1).copied(),
        }
    }

    fn is_closing(&self) -> bool {
        self.reason.load(Ordering::Acquire) != OPEN
    }

    /// Sets the reason, then takes the waker under the lock. A task that
    /// put its waker back before this lock is woken; one that does it
    /// after finds the reason already set when it looks.
    fn close(&self, reason: Disconnect) -> bool {
        debug_assert_eq!(
            Disconnect::ALL.get(reason as usize),
            Some(&reason),
            "a reason missing from Disconnect::ALL would read back as none"
        );
        let code = reason as u8 + 1;
        let first = self
            .reason
            .compare_exchange(OPEN, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            let waker = self.frames().waker.take();
            if let Some(waker) = waker {
                waker.wake();
            }
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

    fn wake(&mut self, waker: Waker) {
        match self {
            Wakes::Now => waker.wake(),
            Wakes::Collect { wakers, .. } => {
                wakers.push(waker);
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
        if self.shared.is_closing() {
            return Pushed::Gone;
        }
        let mut frames = self.shared.frames();
        if frames.receiver_gone {
            return Pushed::Gone;
        }
        if frames.room() == 0 {
            drop(frames);
            return if self.shared.close(Disconnect::SlowConsumer) {
                Pushed::Overflowed
            } else {
                Pushed::Gone
            };
        }
        let was_empty = frames.is_empty();
        frames.push_back(frame.clone());
        // The task parks only after it has seen the queue empty, so a push
        // onto a non-empty queue finds it already woken by an earlier one.
        let waker = if was_empty { frames.waker.take() } else { None };
        drop(frames);
        if let Some(waker) = waker {
            waker.wake();
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
        if self.shared.is_closing() {
            return (Pushed::Gone, 0);
        }
        let mut queued = self.shared.frames();
        if queued.receiver_gone {
            return (Pushed::Gone, 0);
        }
        let was_empty = queued.is_empty();
        let n = frames.len().min(queued.room());
        for frame in &frames[..n] {
            queued.push_back(frame.clone());
        }
        let waker = if was_empty && n > 0 {
            queued.waker.take()
        } else {
            None
        };
        drop(queued);
        if let Some(waker) = waker {
            wakes.wake(waker);
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
        self.shared.is_closing()
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
        let frame = frames.pop_front();
        frames.shrink_if_drained();
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
            let Some(frame) = frames.pop_front() else {
                break;
            };
            sum += frame.len();
            out[n] = Some(frame);
            n += 1;
        }
        let emptied = frames.is_empty();
        frames.shrink_if_drained();
        (n, emptied)
    }

    /// Resolves once something asked the connection to close. Shares the
    /// one waker slot with `poll_recv`: both are polled by the same task.
    pub(crate) fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<Disconnect> {
        self.check_then_register(cx, |rx| rx.reason())
    }

    /// Registers the task's waker for the next frame and the close alike.
    pub(crate) fn watch(&self, cx: &mut Context<'_>) {
        let mut frames = self.shared.frames();
        // Put back by an earlier turn and not taken since: nothing to do.
        if let Some(waker) = &frames.waker {
            if waker.will_wake(cx.waker()) {
                return;
            }
        }
        let replaced = frames.waker.replace(cx.waker().clone());
        // Dropped after the lock, which stays a leaf whatever a waker's
        // drop does.
        drop(frames);
        drop(replaced);
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
        self.watch(cx);
        match look(self) {
            Some(t) => Poll::Ready(t),
            None => Poll::Pending,
        }
    }

    pub(crate) fn reason(&self) -> Option<Disconnect> {
        self.shared.reason()
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
        let slots = std::mem::take(&mut frames.slots);
        frames.clear();
        let waker = frames.waker.take();
        drop(frames);
        // Frames and the waker go after the lock.
        drop((slots, waker));
    }
}

/// Makes one connection's queue: the registry keeps the sender, the
/// connection's task keeps the receiver.
pub(crate) fn channel(id: ConnId, capacity: usize) -> (QueueSender, QueueReceiver) {
    let shared = Arc::new(Shared {
        frames: Mutex::new(Frames::new(capacity)),
        reason: AtomicU8::new(OPEN),
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
        assert!(rx.shared.frames().slots.len() >= 500);
        while rx.try_recv().is_some() {}
        assert!(rx.shared.frames().slots.len() <= KEEP_SLOTS);
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

    // std's `Mutex` is a 4-byte futex on Linux; elsewhere its size differs.
    #[cfg(target_os = "linux")]
    #[test]
    fn what_a_push_and_a_take_share_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Shared>(), 64);
        assert_eq!(std::mem::align_of::<Shared>(), 64);
    }

    #[test]
    fn every_close_reason_reads_back_as_itself() {
        for (i, reason) in Disconnect::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, i, "Disconnect::ALL is out of order");
            let (_tx, rx) = channel(
                ConnId {
                    node: NodeId(7),
                    n: i as u64,
                },
                4,
            );
            assert_eq!(rx.reason(), None);
            assert!(rx.close(reason));
            assert!(!rx.close(Disconnect::Kicked), "the first reason wins");
            assert_eq!(rx.reason(), Some(reason));
        }
    }

    #[test]
    fn frames_keep_their_order_as_the_ring_wraps_and_grows() {
        let (tx, mut rx) = channel(
            ConnId {
                node: NodeId(7),
                n: 4,
            },
            10,
        );
        let numbered = |i: usize| {
            Frame::encode(&ServerFrame::Pong {
                id: Some(protocol::CorrelationId::new(&format!("{i}")).unwrap()),
            })
        };
        let (mut next_in, mut next_out) = (0, 0);
        // Fill and drain by different amounts so the front walks round the
        // ring and it grows (4, 8, then the bound, 10) with the front away
        // from its first slot.
        for (add, take) in [(3, 2), (3, 3), (5, 2), (6, 6), (6, 4), (3, 9)] {
            for _ in 0..add {
                assert_eq!(tx.push(&numbered(next_in)), Pushed::Queued);
                next_in += 1;
            }
            for _ in 0..take {
                let frame = rx.try_recv().map(|f| f.bytes().clone());
                assert_eq!(frame, Some(numbered(next_out).bytes().clone()));
                next_out += 1;
            }
        }
        assert!(rx.try_recv().is_none());
        assert!(rx.shared.frames().slots.len() <= 10, "grew past the bound");
    }

    #[test]
    fn a_close_wakes_a_task_waiting_on_its_queue() {
        let (tx, mut rx) = channel(
            ConnId {
                node: NodeId(7),
                n: 5,
            },
            4,
        );
        let woken = Arc::new(Counted(Default::default()));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        // The task looks, finds nothing and waits.
        assert_eq!(rx.poll_closed(&mut cx), Poll::Pending);
        let closer = std::thread::spawn(move || tx.close(Disconnect::Kicked));
        assert!(matches!(closer.join(), Ok(true)));
        assert_eq!(woken.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(rx.poll_closed(&mut cx), Poll::Ready(Disconnect::Kicked));
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
