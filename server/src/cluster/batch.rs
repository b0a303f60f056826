//! Direct pushes travel to Redis in batches: one `PUSH_USER` call numbers,
//! keeps and publishes every direct message that waited while the previous
//! calls were out. Redis spends about as long entering a script (argument
//! passing, the call itself) as running one message's commands, so at a
//! high rate of direct messages a call per message was most of Redis's
//! work (issue 11: 43 µs per message, of which the commands ~17 µs).
//!
//! At a low rate nothing waits: a push finds no call out and is sent at
//! once, alone. Under load, pushes queue behind the calls in flight (at most
//! `IN_FLIGHT`) and the next call takes up to `MAX_BATCH` of them, so the
//! batch grows with the load and the wait for it stays about one round
//! trip.
//!
//! Each push keeps the deadline it would have had as a call of its own
//! (taken when it is queued; after it, on Redis's clock, the script leaves
//! it alone and answers "late"), so a push that waited too long behind a
//! slow call is refused alone, and under overload the late ones cost Redis
//! almost nothing: the queue sheds instead of growing. A push still queued
//! after `MAX_WAIT` is refused without being sent (it is past its deadline
//! anyway), which keeps every answer within the contract's seconds. A
//! batch's answer is one list, an answer per push in order; a batch that
//! is not answered leaves every push in it unknown, and each is then
//! settled on its own against its own deadline.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hub_core::Unavailable;
use redis::aio::ConnectionManager;
use redis::Script;
use tokio::sync::oneshot;

use super::backplane::{PushAnswer, REPLY_TIMEOUT};

/// Calls of `PUSH_USER` out at once per process. One: the batches are
/// then as large as the load makes them (at 20,000 direct messages/s over
/// two processes, about three per call), and Redis's time per message is
/// what counts here. Two calls out gave smaller batches and a p99 two to
/// five times longer in the same bench (BENCHMARKS.md). One call out is
/// also the backpressure a slow link needs: letting more out when one
/// stalled (up to four after 200 ms) piled more onto a shaped link in the
/// soak's drill, which then took 5 s instead of under 1 s to heal.
const IN_FLIGHT: usize = 1;
/// Pushes per call, at most: bounds one call's time in Redis (every other
/// client of Redis waits for a script to finish).
const MAX_BATCH: usize = 64;
/// How long a push may wait here for the call before it: past this it is
/// refused (`unavailable`) without being sent (its deadline, 0.7 s, has
/// passed). With `REPLY_TIMEOUT` and `settle`, every direct push is
/// answered within 9 s (§11 allows 10).
const MAX_WAIT: Duration = Duration::from_secs(1);

/// One direct message's own arguments to `PUSH_USER` (scripts.rs).
#[derive(Debug, Clone, Default)]
pub struct UserPush {
    pub to: String,
    pub from: String,
    /// "1" when the push comes from a connection (the sender's own
    /// connection is then not counted in `delivered` for a send to self).
    pub from_connection: &'static str,
    pub to_channel: String,
    pub to_header: String,
    /// The sender's inbox channel and header, "" for no sender's copy.
    pub from_channel: String,
    pub from_header: String,
    pub frame_prefix: String,
    pub origin_conn: String,
    pub idempotency_key: String,
    pub message_id: String,
    /// The epoch of a stream this push starts (a fresh one per push, so a
    /// stream forgotten and started again never reuses a numbering's
    /// name); a batch uses its first push's.
    pub epoch_candidate: String,
}

/// What every call shares: the key prefix and the history settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub prefix: String,
    pub ttl_ms: u64,
    pub max_messages: usize,
    pub window_ms: u64,
}

/// A push's answer; `None` when its fate is unknown (no answer in time,
/// or the link failed once the call may have been sent).
pub type Outcome = Option<Result<PushAnswer, Unavailable>>;

struct Waiting {
    since: Instant,
    deadline: i64,
    push: UserPush,
    answer: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    running: usize,
}

impl Queue {
    /// Takes the next batch for a call going out now.
    fn next_batch(&mut self) -> Vec<Waiting> {
        let n = self.waiting.len().min(MAX_BATCH);
        let rest = self.waiting.split_off(n);
        std::mem::replace(&mut self.waiting, rest)
    }
}

pub struct UserPushBatcher {
    conn: ConnectionManager,
    script: Script,
    settings: Settings,
    queue: Mutex<Queue>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl UserPushBatcher {
    pub fn new(conn: ConnectionManager, script: Script, settings: Settings) -> Arc<Self> {
        Arc::new(UserPushBatcher {
            conn,
            script,
            settings,
            queue: Mutex::default(),
        })
    }

    /// Queues `push`, to take effect in Redis by `deadline` (on Redis's
    /// clock) or not at all, and waits for its answer.
    pub async fn push(self: &Arc<Self>, deadline: i64, push: UserPush) -> Outcome {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut q = lock(&self.queue);
            q.waiting.push(Waiting {
                since: Instant::now(),
                deadline,
                push,
                answer,
            });
            if q.running < IN_FLIGHT {
                q.running += 1;
                Some(q.next_batch())
            } else {
                None
            }
        };
        if let Some(batch) = start {
            // A task of its own: the batch must go on (and answer the
            // others in it) even if this push's caller goes away.
            tokio::spawn(self.clone().run(batch));
        }
        // A batch dropped unanswered: only when the runtime is going away.
        answered.await.unwrap_or(Some(Err(Unavailable)))
    }

    /// Sends `batch`, then whatever queued meanwhile, until nothing waits.
    async fn run(self: Arc<Self>, mut batch: Vec<Waiting>) {
        loop {
            self.send(batch).await;
            let mut q = lock(&self.queue);
            if q.waiting.is_empty() {
                q.running -= 1;
                return;
            }
            batch = q.next_batch();
        }
    }

    async fn send(&self, batch: Vec<Waiting>) {
        // What waited too long is refused unsent.
        let (batch, stale): (Vec<Waiting>, Vec<Waiting>) = batch
            .into_iter()
            .partition(|w| w.since.elapsed() < MAX_WAIT);
        for w in stale {
            let _ = w.answer.send(Some(Err(Unavailable)));
        }
        if batch.is_empty() {
            return;
        }
        let candidate = batch
            .first()
            .map_or("", |w| w.push.epoch_candidate.as_str());
        let s = &self.settings;
        let mut inv = self.script.prepare_invoke();
        inv.arg(&s.prefix)
            .arg(candidate)
            .arg(s.ttl_ms)
            .arg(s.max_messages)
            .arg(s.window_ms);
        for w in &batch {
            let p = &w.push;
            inv.arg(w.deadline)
                .arg(&p.to)
                .arg(&p.from)
                .arg(p.from_connection)
                .arg(&p.to_channel)
                .arg(&p.to_header)
                .arg(&p.from_channel)
                .arg(&p.from_header)
                .arg(&p.frame_prefix)
                .arg(&p.origin_conn)
                .arg(&p.idempotency_key)
                .arg(&p.message_id);
        }
        let mut conn = self.conn.clone();
        let answer: Result<Vec<PushAnswer>, Outcome> =
            match tokio::time::timeout(REPLY_TIMEOUT, inv.invoke_async(&mut conn)).await {
                Ok(Ok(v)) => Ok(v),
                // A script that fails part way has kept and published the
                // messages before the failure: with several in the call,
                // each is looked up (`settle`) rather than refused.
                Ok(Err(e))
                    if e.kind()
                        == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
                {
                    tracing::debug!(error = %e, "push script failed");
                    Err(if batch.len() == 1 {
                        Some(Err(Unavailable))
                    } else {
                        None
                    })
                }
                Ok(Err(_)) | Err(_) => Err(None),
            };
        match answer {
            Ok(answers) if answers.len() == batch.len() => {
                for (w, a) in batch.into_iter().zip(answers) {
                    let _ = w.answer.send(Some(Ok(a)));
                }
            }
            Ok(answers) => {
                // Not an answer this script gives: whether it took effect
                // is unknown.
                tracing::error!(
                    sent = batch.len(),
                    answered = answers.len(),
                    "push script answered a batch with the wrong count"
                );
                for w in batch {
                    let _ = w.answer.send(None);
                }
            }
            Err(outcome) => {
                for w in batch {
                    let _ = w.answer.send(outcome.clone());
                }
            }
        }
    }
}
