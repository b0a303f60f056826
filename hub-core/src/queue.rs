//! The per-connection outbound queue: bounded, never waited on by a sender.
//!
//! Routing pushes with `try_send`; a full queue closes that one connection
//! with `slow_consumer` instead of making the publisher wait, so one slow
//! phone never stalls a fan-out. The close itself travels on a separate
//! signal (`ConnSignal`), because the queue that would carry it is full.

use std::sync::{Arc, OnceLock};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use tokio::sync::mpsc;

use crate::disconnect::Disconnect;
use crate::frame::Frame;

/// Node-unique id of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// The close signal of one connection: set once, observed by its task.
///
/// Lock-free: the task's waker sits in an `AtomicWaker`, so waiting on the
/// signal costs no mutex per event in the connection loop (tokio's `Notify`
/// takes one each time a registered wait is polled). Only the connection's
/// own task waits on it.
#[derive(Debug, Default)]
pub struct ConnSignal {
    reason: OnceLock<Disconnect>,
    waker: AtomicWaker,
}

impl ConnSignal {
    /// Asks the connection to close. Returns true for the first call only.
    pub fn close(&self, reason: Disconnect) -> bool {
        let first = self.reason.set(reason).is_ok();
        if first {
            self.waker.wake();
        }
        first
    }

    pub fn reason(&self) -> Option<Disconnect> {
        self.reason.get().copied()
    }

    /// Resolves once `close` has been called.
    pub async fn closed(&self) -> Disconnect {
        std::future::poll_fn(|cx| {
            if let Some(reason) = self.reason() {
                return Poll::Ready(reason);
            }
            self.waker.register(cx.waker());
            // Checked again: a close between the first check and the
            // registration would otherwise go unseen.
            match self.reason() {
                Some(reason) => Poll::Ready(reason),
                None => Poll::Pending,
            }
        })
        .await
    }
}

/// The sending half, kept in the registry.
#[derive(Debug, Clone)]
pub(crate) struct QueueSender {
    pub(crate) id: ConnId,
    tx: mpsc::Sender<Frame>,
    pub(crate) signal: Arc<ConnSignal>,
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
        if self.signal.reason().is_some() {
            return Pushed::Gone;
        }
        match self.tx.try_send(frame.clone()) {
            Ok(()) => Pushed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.signal.close(Disconnect::SlowConsumer) {
                    Pushed::Overflowed
                } else {
                    Pushed::Gone
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Pushed::Gone,
        }
    }
}

/// Makes one connection's queue: the registry keeps the sender, the
/// connection's task keeps the receiver.
pub(crate) fn channel(
    id: ConnId,
    capacity: usize,
) -> (QueueSender, mpsc::Receiver<Frame>, Arc<ConnSignal>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let signal = Arc::new(ConnSignal::default());
    (
        QueueSender {
            id,
            tx,
            signal: signal.clone(),
        },
        rx,
        signal,
    )
}
