//! The per-connection rate limit (PROTOCOL.md §5): a token bucket that refills
//! at `rate` frames per second and holds up to `burst`.
//!
//! Time is passed in, so the policy is tested without a clock.

use std::time::{Duration, Instant};

/// What to do with one incoming frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Within the limit: handle it.
    Allow,
    /// Over the limit: answer `rate_limited`, do nothing else.
    Refuse,
    /// Refused `burst` frames in a row: the client keeps going, close (1008).
    Disconnect,
}

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    refused_in_a_row: u32,
    refusals_before_close: u32,
}

impl RateLimiter {
    /// `rate` frames per second with a burst of `burst`. A client is closed
    /// after `burst` refused frames without one allowed in between: enough
    /// slack that a client which backs off on its first `rate_limited` is
    /// never closed, and a bound on how many error frames a runaway client
    /// can make the server write.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let rate = rate.max(1);
        let burst = burst.max(1);
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
            refused_in_a_row: 0,
            refusals_before_close: burst,
        }
    }

    pub fn check(&mut self, now: Instant) -> RateDecision {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            RateDecision::Allow
        } else {
            self.refused_in_a_row += 1;
            if self.refused_in_a_row >= self.refusals_before_close {
                RateDecision::Disconnect
            } else {
                RateDecision::Refuse
            }
        }
    }

    /// How long until one more frame would be allowed.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens).max(0.0)) / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_then_refill() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(100, 200, t0);
        for _ in 0..200 {
            assert_eq!(rl.check(t0), RateDecision::Allow);
        }
        assert_eq!(rl.check(t0), RateDecision::Refuse);
        // 50 ms at 100/s refills 5 frames.
        let t1 = t0 + Duration::from_millis(50);
        for _ in 0..5 {
            assert_eq!(rl.check(t1), RateDecision::Allow);
        }
        assert_eq!(rl.check(t1), RateDecision::Refuse);
    }

    #[test]
    fn a_client_that_keeps_going_is_disconnected() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(10, 20, t0);
        for _ in 0..20 {
            rl.check(t0);
        }
        let decisions: Vec<_> = (0..20).map(|_| rl.check(t0)).collect();
        assert!(decisions[..19].iter().all(|d| *d == RateDecision::Refuse));
        assert_eq!(decisions[19], RateDecision::Disconnect);
    }

    #[test]
    fn an_allowed_frame_resets_the_refusal_count() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(10, 20, t0);
        for _ in 0..20 {
            rl.check(t0);
        }
        for _ in 0..19 {
            assert_eq!(rl.check(t0), RateDecision::Refuse);
        }
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(rl.check(t1), RateDecision::Allow);
        assert_eq!(rl.check(t1), RateDecision::Refuse);
    }
}
