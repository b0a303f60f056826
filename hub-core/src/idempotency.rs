//! Idempotent pushes (PROTOCOL.md §6) on one process: the first push of a
//! key to a target is remembered for `--idempotency-window`, and a repeat
//! within it is answered with the first push's id and seq instead of being
//! delivered again.
//!
//! Keys are remembered in arrival order, so forgetting the expired ones
//! costs what expires, not what is held.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;

use crate::history::{Position, StreamName};
use crate::publication::Target;

/// What a repeat of a key answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstPush {
    pub id: String,
    pub place: Option<(StreamName, Position)>,
}

type Key = (Target, String);

#[derive(Debug, Default)]
struct Remembered {
    pushes: HashMap<Key, (FirstPush, Instant), RandomState>,
    /// (when, key) in the order keys were remembered.
    order: VecDeque<(Instant, Key)>,
}

/// The keys of the last `window`.
#[derive(Debug)]
pub struct Idempotency {
    window: Duration,
    inner: Mutex<Remembered>,
}

/// A held look at the keys: a push with a key checks, routes and
/// remembers under one hold, so two racing repeats of a key deliver once.
pub struct Check<'a> {
    window: Duration,
    guard: MutexGuard<'a, Remembered>,
    now: Instant,
}

impl Idempotency {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            inner: Mutex::default(),
        }
    }

    /// Locks the keys at `now`, forgetting those past the window.
    pub fn check(&self, now: Instant) -> Check<'_> {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window;
        while let Some((at, _)) = guard.order.front() {
            if now
                .checked_duration_since(*at)
                .is_none_or(|age| age < window)
            {
                break;
            }
            if let Some((at, key)) = guard.order.pop_front() {
                // A key remembered again since keeps its newer entry.
                if guard.pushes.get(&key).is_some_and(|(_, t)| *t == at) {
                    guard.pushes.remove(&key);
                }
            }
        }
        Check { window, guard, now }
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |g| g.pushes.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Check<'_> {
    /// The first push of `key` to `target`, when it is within the window.
    pub fn first(&self, target: &Target, key: &str) -> Option<FirstPush> {
        let k = (target.clone(), key.to_owned());
        let (first, at) = self.guard.pushes.get(&k)?;
        let fresh = self
            .now
            .checked_duration_since(*at)
            .is_none_or(|age| age < self.window);
        fresh.then(|| first.clone())
    }

    /// Remembers a push that was just delivered.
    pub fn remember(&mut self, target: &Target, key: &str, first: FirstPush) {
        let k = (target.clone(), key.to_owned());
        self.guard.pushes.insert(k.clone(), (first, self.now));
        self.guard.order.push_back((self.now, k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{GroupId, UserId};

    fn first(id: &str) -> FirstPush {
        FirstPush {
            id: id.into(),
            place: None,
        }
    }

    #[test]
    fn a_key_is_per_target_and_forgotten_after_the_window() {
        let idem = Idempotency::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let u = Target::User(UserId::new("u").unwrap());
        let g = Target::Group(GroupId::new("u").unwrap());
        {
            let mut c = idem.check(t0);
            assert_eq!(c.first(&u, "k"), None);
            c.remember(&u, "k", first("m1"));
        }
        let c = idem.check(t0 + Duration::from_secs(9));
        assert_eq!(c.first(&u, "k"), Some(first("m1")));
        assert_eq!(c.first(&g, "k"), None);
        assert_eq!(c.first(&Target::All, "k"), None);
        assert_eq!(c.first(&u, "other"), None);
        drop(c);
        let c = idem.check(t0 + Duration::from_secs(10));
        assert_eq!(c.first(&u, "k"), None);
        drop(c);
        assert!(idem.is_empty());
    }
}
