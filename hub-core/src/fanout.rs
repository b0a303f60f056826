//! Group fan-out off the publisher's path (issue 13).
//!
//! A push to a group of 10,000 is one append and 10,000 queue pushes. Done
//! by the publisher, an API push is answered only when the last of them is
//! done, and with a burst of pushes in flight each waits for the fan-outs
//! of all the pushes before it: a backend's `POST …/messages` took seconds.
//! With a fan-out thread attached (the server attaches one in a single
//! process), the publisher only appends, takes the member list as it is
//! (a snapshot: who was a member at the append gets the message, whoever
//! joins later does not, whatever the thread gets to first), counts their
//! connections for `delivered` (both kept up to date by membership and
//! registration, hub.rs) and hands the rest to the thread: a push is
//! answered in the same time however large the group.
//!
//! One FIFO for every job, run by one thread, keeps each group's messages
//! in seq order (jobs are queued under the group's lock, in the order of
//! their seqs). A connection's own publish is fanned out by its publisher
//! as before, after running whatever the FIFO still holds (`exclusive`):
//! the ack it queues next must land behind every message of the group
//! with a smaller seq, and it is answered after its fan-out anyway.
//!
//! Without a thread attached (hub-core's tests, a cluster node, whose
//! deliveries come from the broker's subscriber) everything is done inline,
//! as the publisher's own work.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::frame::Frame;
use crate::queue::ConnId;

/// One group message for the fan-out thread: the frame, the connections
/// of the members it was appended for (`C`: the group's member list as it
/// was then), but `skip`.
#[derive(Debug)]
pub(crate) struct Job<C> {
    pub frame: Frame,
    pub members: C,
    pub skip: Option<ConnId>,
}

pub(crate) struct Fanout<C> {
    jobs: Mutex<VecDeque<Job<C>>>,
    ready: Condvar,
    /// Held while jobs run: by the thread, or by a publisher running them
    /// first (`exclusive`), so none runs before one queued earlier.
    turn: Mutex<()>,
    /// A thread runs the jobs (`run`); until then they are run inline.
    attached: AtomicBool,
}

impl<C> Default for Fanout<C> {
    fn default() -> Self {
        Self {
            jobs: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            turn: Mutex::new(()),
            attached: AtomicBool::new(false),
        }
    }
}

impl<C> std::fmt::Debug for Fanout<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("attached", &self.is_attached())
            .finish_non_exhaustive()
    }
}

impl<C> Fanout<C> {
    pub(crate) fn is_attached(&self) -> bool {
        self.attached.load(Ordering::Acquire)
    }

    fn jobs(&self) -> MutexGuard<'_, VecDeque<Job<C>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job for the thread. Only called when one is attached.
    pub(crate) fn submit(&self, job: Job<C>) {
        let mut jobs = self.jobs();
        jobs.push_back(job);
        let first = jobs.len() == 1;
        drop(jobs);
        // The runner only sleeps on an empty FIFO.
        if first {
            self.ready.notify_one();
        }
    }

    /// Runs jobs with `run`, in order, for as long as the process lives:
    /// the fan-out thread's body. Takes whatever is queued at once, so
    /// publishers queue behind one lock acquisition per batch, not per job,
    /// and `run` sees the batch whole.
    pub(crate) fn run(&self, mut run: impl FnMut(&mut VecDeque<Job<C>>)) -> ! {
        self.attached.store(true, Ordering::Release);
        let mut batch = VecDeque::new();
        loop {
            {
                let mut jobs = self.jobs();
                while jobs.is_empty() {
                    jobs = self.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
                }
            }
            // The batch is taken under `turn`: a publisher that ran the
            // FIFO meanwhile has run these jobs, and none is run twice or
            // after a later one.
            let _turn = self.turn();
            std::mem::swap(&mut *self.jobs(), &mut batch);
            // A job that panics (a bug) must not end the thread: every
            // later push would be answered and never delivered live. The
            // job that panicked is lost to live delivery (it is in its
            // stream's history, and the panic hook has printed it); the
            // rest of the batch runs.
            while !batch.is_empty() {
                let ran =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut batch)));
                if ran.is_ok() {
                    break;
                }
            }
            batch.clear();
        }
    }

    fn turn(&self) -> MutexGuard<'_, ()> {
        self.turn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs what the FIFO holds on the calling thread and keeps the turn:
    /// until the guard is dropped, no job runs, so what the caller pushes
    /// meanwhile lands after everything queued before.
    pub(crate) fn exclusive(
        &self,
        mut run: impl FnMut(&mut VecDeque<Job<C>>),
    ) -> MutexGuard<'_, ()> {
        let turn = self.turn();
        let mut pending = std::mem::take(&mut *self.jobs());
        run(&mut pending);
        turn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    #[test]
    fn a_job_that_panics_leaves_the_thread_running_the_rest() {
        let fanout: Arc<Fanout<u32>> = Arc::default();
        let job = |members| Job {
            frame: Frame::from_shared(bytes::Bytes::from_static(b"{}")).expect("a frame"),
            members,
            skip: None,
        };
        // One batch: the job after the one that panics, then a later one.
        for members in [7, 0, 8] {
            fanout.submit(job(members));
        }
        let (done, ran) = mpsc::channel();
        let thread = fanout.clone();
        std::thread::spawn(move || {
            thread.run(|jobs| {
                while let Some(job) = jobs.pop_front() {
                    assert!(job.members != 0, "a bug in a fan-out");
                    let _ = done.send(job.members);
                }
            })
        });
        let next = || {
            ran.recv_timeout(Duration::from_secs(10))
                .expect("a job ran")
        };
        assert_eq!((next(), next()), (7, 8));
        fanout.submit(job(9));
        assert_eq!(next(), 9);
    }
}
