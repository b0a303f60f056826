//! Counters and gauges of one node, read by `/api/v1/stats` and `/metrics`.
//!
//! Plain atomics with relaxed ordering: each number is exact on its own, and
//! a reader wants a recent picture, not a consistent cut across them.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

/// Stripes of the counters every writer bumps, one per thread (threads
/// take them in turn), each on its own cache line. Bumped by one shared
/// counter pair, every write on one core took the line from the other:
/// in a large fan-out that is once per recipient.
const STRIPES: usize = 8;

#[derive(Debug, Default)]
#[repr(align(128))]
struct OutStripe {
    frames: AtomicU64,
    bytes: AtomicU64,
}

fn my_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

#[derive(Debug)]
pub struct Stats {
    started: Instant,
    pub(crate) connections: AtomicI64,
    pub(crate) users: AtomicI64,
    pub(crate) groups: AtomicI64,
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    out: [OutStripe; STRIPES],
    pub(crate) messages_delivered: AtomicU64,
    pub(crate) slow_consumer_closes: AtomicU64,
    auth_failures: AtomicU64,
    /// Streams named in a `resume`: recovered, and answered `false`.
    pub(crate) recovered: AtomicU64,
    pub(crate) reset: AtomicU64,
}

/// A copy of the numbers at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub connections: u64,
    pub users: u64,
    pub groups: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Message frames queued to connections, copies to a sender's other
    /// connections included.
    pub messages_delivered: u64,
    pub slow_consumer_closes: u64,
    pub auth_failures: u64,
    pub uptime_seconds: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            connections: AtomicI64::new(0),
            users: AtomicI64::new(0),
            groups: AtomicI64::new(0),
            frames_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            out: Default::default(),
            messages_delivered: AtomicU64::new(0),
            slow_consumer_closes: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            reset: AtomicU64::new(0),
        }
    }
}

impl Stats {
    /// Streams named in a `resume` so far: (recovered, reset).
    pub fn recoveries(&self) -> (u64, u64) {
        (self.recovered.load(Relaxed), self.reset.load(Relaxed))
    }

    /// A frame received from a client.
    pub fn frame_in(&self, bytes: usize) {
        self.frames_in.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Relaxed);
    }

    /// Frames written to a client's socket.
    pub fn frames_out(&self, frames: u64, bytes: u64) {
        let stripe = &self.out[my_stripe()];
        stripe.frames.fetch_add(frames, Relaxed);
        stripe.bytes.fetch_add(bytes, Relaxed);
    }

    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let gauge = |a: &AtomicI64| a.load(Relaxed).max(0) as u64;
        let (frames_out, bytes_out) = self.out.iter().fold((0, 0), |(f, b), s| {
            (f + s.frames.load(Relaxed), b + s.bytes.load(Relaxed))
        });
        StatsSnapshot {
            connections: gauge(&self.connections),
            users: gauge(&self.users),
            groups: gauge(&self.groups),
            frames_in: self.frames_in.load(Relaxed),
            frames_out,
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out,
            messages_delivered: self.messages_delivered.load(Relaxed),
            slow_consumer_closes: self.slow_consumer_closes.load(Relaxed),
            auth_failures: self.auth_failures.load(Relaxed),
            uptime_seconds: self.started.elapsed().as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_written_on_more_threads_than_stripes_all_add_up() {
        let stats = Stats::default();
        std::thread::scope(|scope| {
            for t in 0..(2 * STRIPES as u64 + 3) {
                let stats = &stats;
                scope.spawn(move || {
                    for _ in 0..1000 {
                        stats.frames_out(2, t);
                    }
                });
            }
        });
        let threads = 2 * STRIPES as u64 + 3;
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.frames_out, threads * 2000);
        assert_eq!(snapshot.bytes_out, (0..threads).sum::<u64>() * 1000);
    }
}
