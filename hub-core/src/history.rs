//! History (PROTOCOL.md §10): the in-memory streams of one process. Rules
//! are applied at `now`, by every call, to the stream it touches, so no
//! answer depends on when `expire` last ran; `expire` only hands memory
//! back, visiting streams in the order they fall due, so its cost follows
//! what expires, not how many streams exist.
//!
//! A stream is numbered and its frame built in one step under its shard
//! lock (`append`), and it keeps the very `Frame`s routing shares (a clone
//! is a reference-count increment), so a replay sends the bytes the live
//! path sent. A stream nobody has appended to since it was last forgotten
//! has no entry at all: its position is seq 0 under the epoch its first
//! message will carry, derived from its name (`history/epoch.rs`), so
//! reading positions (every `welcome`) never allocates.
//!
//! Time is passed in, as in `rate_limit.rs`.

mod epoch;
mod name;

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;

use crate::frame::Frame;

pub use epoch::{Epoch, EPOCH_LEN};
use epoch::{EpochKeys, Incarnations};
pub use name::{StreamName, StreamNameError};

/// `--history` and `--history-ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Messages kept per stream; 0 numbers messages but keeps none.
    pub max_messages: usize,
    /// How long a message is kept, and how long a stream with no new
    /// message is remembered.
    pub ttl: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            max_messages: 100,
            ttl: Duration::from_secs(86_400),
        }
    }
}

/// A place in a stream: the last message seen (seq 0: none yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub epoch: Epoch,
    pub seq: u64,
}

/// One retained message. The seq travels beside the frame so a caller can
/// merge a replay with live delivery without parsing JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub seq: u64,
    pub frame: Frame,
}

/// The answer to a resume of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Every message after the position, in order (possibly none), and
    /// the stream's position after the last of them.
    Recovered {
        replay: Vec<StreamEntry>,
        current: Position,
    },
    /// The client cannot be brought up to date from here; it starts over
    /// at `current`.
    Reset {
        reason: ResetReason,
        current: Position,
    },
}

impl Recovery {
    pub fn is_recovered(&self) -> bool {
        matches!(self, Recovery::Recovered { .. })
    }

    /// Where the stream stands now.
    pub fn current(&self) -> Position {
        match self {
            Recovery::Recovered { current, .. } | Recovery::Reset { current, .. } => *current,
        }
    }
}

/// Why a resume answers `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// Another numbering: the stream was forgotten, the process restarted,
    /// or the epoch is not one this hub gave.
    EpochChanged,
    /// Messages after the position were dropped (`--history`, ttl).
    Dropped,
    /// The position is past the stream's last message.
    Ahead,
    /// More messages after the position than the caller's limit.
    TooMany,
}

/// The answer of the history API (§6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The stream's epoch and last seq.
    pub current: Position,
    /// False when messages after `since` were already dropped. Messages
    /// left out only because of `limit` do not make it false: the caller
    /// pages on with `since` = the last seq it got.
    pub complete: bool,
    /// Oldest first.
    pub messages: Vec<StreamEntry>,
}

/// What one `expire` call gave back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// Messages dropped, including those of forgotten streams.
    pub messages: usize,
    /// Streams forgotten.
    pub streams: usize,
}

impl Expired {
    fn add(&mut self, other: Expired) {
        self.messages += other.messages;
        self.streams += other.streams;
    }
}

const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

/// Due streams handled per hold of a shard lock in `expire`: a mass expiry
/// lets appends and reads of that shard in between batches.
const EXPIRE_BATCH: usize = 256;

/// The streams of one process, shared by every thread (sharded std
/// mutexes, as in `hub.rs`: the critical sections are short and never
/// wait on anything).
pub struct Streams {
    config: HistoryConfig,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    epochs: EpochKeys,
    incarnations: Incarnations,
    /// Messages held over all streams (`wshub_history_messages`).
    held: AtomicUsize,
}

#[derive(Default)]
struct Shard {
    streams: HashMap<StreamName, Stream, RandomState>,
    /// When each stream next has something to drop; at most one live
    /// entry per stream incarnation, plus stale ones of incarnations
    /// forgotten by a read, skipped when they come up.
    due: BinaryHeap<Due>,
    /// Tells incarnations of one name apart in `due`.
    next_serial: u64,
}

/// One incarnation of a stream: from its first message until it is
/// forgotten.
struct Stream {
    incarnation: u32,
    epoch: Epoch,
    /// Last seq handed out.
    top: u64,
    /// The last messages, oldest first, ending at `top`: seqs are
    /// contiguous, so only the count is needed to know which are held.
    held: VecDeque<Held>,
    /// Never goes back, even if callers' clocks disagree a little.
    last_append: Instant,
    serial: u64,
}

struct Held {
    added_at: Instant,
    frame: Frame,
}

/// `now - since >= ttl`, without overflow and with a clock that may lag
/// behind `since` (then: not yet).
fn has_lasted(since: Instant, ttl: Duration, now: Instant) -> bool {
    now.checked_duration_since(since)
        .is_some_and(|age| age >= ttl)
}

impl Stream {
    /// Seq of the oldest message held (`top + 1` when none is).
    fn first_held(&self) -> u64 {
        self.top + 1 - self.held.len() as u64
    }

    fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.top,
        }
    }

    /// When something of this stream is next due: its oldest message, or,
    /// with none held, the stream itself. `None` when that is past what an
    /// `Instant` can hold, i.e. never.
    fn due(&self, ttl: Duration) -> Option<Instant> {
        let oldest = self.held.front().map_or(self.last_append, |h| h.added_at);
        oldest.checked_add(ttl)
    }

    fn entries(&self, from_seq: u64, count: usize) -> Vec<StreamEntry> {
        let skip = from_seq.saturating_sub(self.first_held());
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        self.held
            .iter()
            .skip(skip)
            .take(count)
            .zip(from_seq.max(self.first_held())..)
            .map(|(h, seq)| StreamEntry {
                seq,
                frame: h.frame.clone(),
            })
            .collect()
    }
}

/// Min-heap order on (when, serial) for `BinaryHeap`, a max-heap.
struct Due {
    at: Instant,
    serial: u64,
    name: StreamName,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.serial) == (other.at, other.serial)
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.serial).cmp(&(self.at, self.serial))
    }
}

/// Locks a mutex, ignoring poisoning: a shard is consistent at every step
/// (a panicking `make_frame` runs before anything changes).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Streams {
    fn default() -> Self {
        Self::new(HistoryConfig::default())
    }
}

impl fmt::Debug for Streams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streams")
            .field("config", &self.config)
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

impl Streams {
    pub fn new(config: HistoryConfig) -> Self {
        Self {
            config,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::default(),
            epochs: EpochKeys::default(),
            incarnations: Incarnations::default(),
            held: AtomicUsize::new(0),
        }
    }

    pub fn config(&self) -> HistoryConfig {
        self.config
    }

    /// Messages held over all streams.
    pub fn held(&self) -> usize {
        self.held.load(Relaxed)
    }

    /// Streams that have an entry (had a message within ttl, up to the
    /// last `expire`). Locks every shard in turn: for stats and tests.
    pub fn stream_count(&self) -> usize {
        self.shards.iter().map(|s| lock(s).streams.len()).sum()
    }

    /// One hash of the name: its top bits pick the shard, its low 56 the
    /// incarnation cells, so names of one shard do not crowd the same cells.
    fn hash(&self, name: &StreamName) -> u64 {
        self.hasher.hash_one(name)
    }

    fn shard(&self, h: u64) -> MutexGuard<'_, Shard> {
        lock(&self.shards[(h >> (64 - SHARD_BITS)) as usize])
    }

    /// Applies the rules at `now` to `name`'s stream and returns it, or
    /// `None` when the name has no incarnation now (never seen, or just
    /// forgotten). What it drops is added to `out`.
    fn live<'s>(
        &self,
        shard: &'s mut Shard,
        name: &StreamName,
        h: u64,
        now: Instant,
        out: &mut Expired,
    ) -> Option<&'s mut Stream> {
        let ttl = self.config.ttl;
        let forgotten = {
            let stream = shard.streams.get_mut(name)?;
            if has_lasted(stream.last_append, ttl, now) {
                true
            } else {
                let before = stream.held.len();
                while stream
                    .held
                    .front()
                    .is_some_and(|m| has_lasted(m.added_at, ttl, now))
                {
                    stream.held.pop_front();
                }
                let dropped = before - stream.held.len();
                self.held.fetch_sub(dropped, Relaxed);
                out.messages += dropped;
                false
            }
        };
        if forgotten {
            // Its entry in `due` stays, stale, until it comes up.
            let stream = shard.streams.remove(name)?;
            self.incarnations.retire(h, stream.incarnation);
            self.held.fetch_sub(stream.held.len(), Relaxed);
            out.messages += stream.held.len();
            out.streams += 1;
            return None;
        }
        shard.streams.get_mut(name)
    }

    /// Where a name with no incarnation stands: seq 0, under the epoch its
    /// next first message will carry. Called under the name's shard lock,
    /// which orders it with the `retire` of that name.
    fn unseen(&self, name: &StreamName, h: u64) -> Position {
        Position {
            epoch: self.epochs.epoch(name, self.incarnations.current(h)),
            seq: 0,
        }
    }

    /// Keeps one frame, within `max_messages`.
    fn keep(&self, stream: &mut Stream, added_at: Instant, frame: Frame) {
        let max = self.config.max_messages;
        if max == 0 {
            return;
        }
        stream.held.push_back(Held { added_at, frame });
        let mut change = 1isize;
        while stream.held.len() > max {
            stream.held.pop_front();
            change -= 1;
        }
        if change > 0 {
            self.held.fetch_add(1, Relaxed);
        } else if change < 0 {
            self.held.fetch_sub(change.unsigned_abs(), Relaxed);
        }
    }

    /// Appends one message to `name`: takes the next seq (1 for a stream
    /// new or forgotten, under its new epoch), builds the frame for that
    /// position with `make_frame` and keeps it, all in one step, so the
    /// frame's own `stream`/`epoch`/`seq` always agree with where it is.
    ///
    /// `make_frame` runs under the shard lock: it should only encode. The
    /// store orders seqs, not deliveries; a caller that delivers after this
    /// returns must itself keep deliveries of one stream in seq order.
    pub fn append(
        &self,
        name: &StreamName,
        now: Instant,
        make_frame: impl FnOnce(Position) -> Frame,
    ) -> Position {
        self.append_frame(name, now, make_frame).0
    }

    /// `append`, also handing back the frame it built (kept or not: with
    /// `max_messages` 0 it is numbered and delivered but not kept).
    pub fn append_frame(
        &self,
        name: &StreamName,
        now: Instant,
        make_frame: impl FnOnce(Position) -> Frame,
    ) -> (Position, Frame) {
        let h = self.hash(name);
        let mut guard = self.shard(h);
        let shard = &mut *guard;
        if let Some(stream) = self.live(shard, name, h, now, &mut Expired::default()) {
            let at = Position {
                epoch: stream.epoch,
                seq: stream.top + 1,
            };
            // Before any change, so a panic leaves the stream as it was.
            let frame = make_frame(at);
            stream.top = at.seq;
            stream.last_append = stream.last_append.max(now);
            let added_at = stream.last_append;
            self.keep(stream, added_at, frame.clone());
            return (at, frame);
        }
        let incarnation = self.incarnations.current(h);
        let epoch = self.epochs.epoch(name, incarnation);
        let at = Position { epoch, seq: 1 };
        let frame = make_frame(at);
        shard.next_serial += 1;
        let mut stream = Stream {
            incarnation,
            epoch,
            top: 1,
            held: VecDeque::new(),
            last_append: now,
            serial: shard.next_serial,
        };
        self.keep(&mut stream, now, frame.clone());
        if let Some(due) = stream.due(self.config.ttl) {
            shard.due.push(Due {
                at: due,
                serial: stream.serial,
                name: name.clone(),
            });
        }
        shard.streams.insert(name.clone(), stream);
        (at, frame)
    }

    /// The stream's position now. Reading it never creates anything: a
    /// stream with no incarnation answers seq 0 under the epoch its first
    /// message will carry.
    pub fn position(&self, name: &StreamName, now: Instant) -> Position {
        let h = self.hash(name);
        let mut shard = self.shard(h);
        match self.live(&mut shard, name, h, now, &mut Expired::default()) {
            Some(stream) => stream.position(),
            None => self.unseen(name, h),
        }
    }

    /// A resume from `after`: recovered when `after` is in this numbering,
    /// not past its end, every message after it is still held, and there
    /// are at most `limit` of them (§10 has no limit: pass `usize::MAX`;
    /// `--history` bounds a replay anyway).
    pub fn since(
        &self,
        name: &StreamName,
        after: &Position,
        limit: usize,
        now: Instant,
    ) -> Recovery {
        let h = self.hash(name);
        let mut shard = self.shard(h);
        let Some(stream) = self.live(&mut shard, name, h, now, &mut Expired::default()) else {
            let current = self.unseen(name, h);
            return if after.epoch != current.epoch {
                Recovery::Reset {
                    reason: ResetReason::EpochChanged,
                    current,
                }
            } else if after.seq > 0 {
                Recovery::Reset {
                    reason: ResetReason::Ahead,
                    current,
                }
            } else {
                Recovery::Recovered {
                    replay: Vec::new(),
                    current,
                }
            };
        };
        let current = stream.position();
        let reason = if after.epoch != stream.epoch {
            ResetReason::EpochChanged
        } else if after.seq > stream.top {
            ResetReason::Ahead
        } else if after.seq + 1 < stream.first_held() {
            ResetReason::Dropped
        } else if stream.top - after.seq > u64::try_from(limit).unwrap_or(u64::MAX) {
            ResetReason::TooMany
        } else {
            let count = (stream.top - after.seq) as usize;
            return Recovery::Recovered {
                replay: stream.entries(after.seq + 1, count),
                current,
            };
        };
        Recovery::Reset { reason, current }
    }

    /// The history API: held messages with seq > `since`, oldest first, at
    /// most `limit`. A stream with no incarnation answers seq 0, nothing,
    /// complete.
    pub fn history(&self, name: &StreamName, since: u64, limit: usize, now: Instant) -> History {
        let h = self.hash(name);
        let mut shard = self.shard(h);
        let Some(stream) = self.live(&mut shard, name, h, now, &mut Expired::default()) else {
            return History {
                current: self.unseen(name, h),
                complete: true,
                messages: Vec::new(),
            };
        };
        // `since` comes from a query string: any u64.
        let from = since.saturating_add(1);
        History {
            current: stream.position(),
            // Nothing after `since` was dropped (also when `since` is
            // past the top: there is nothing after it).
            complete: from >= stream.first_held(),
            messages: if from > stream.top {
                Vec::new()
            } else {
                stream.entries(from, limit)
            },
        }
    }

    /// Drops every message and forgets every stream whose time is up at
    /// `now`. Only streams due are touched, a batch per lock hold.
    pub fn expire(&self, now: Instant) -> Expired {
        let mut out = Expired::default();
        for shard in self.shards.iter() {
            while self.expire_batch(&mut lock(shard), now, &mut out) {}
        }
        out
    }

    /// One batch of `expire` in one shard; true when more is due.
    fn expire_batch(&self, shard: &mut Shard, now: Instant, out: &mut Expired) -> bool {
        for _ in 0..EXPIRE_BATCH {
            if shard.due.peek().is_none_or(|d| d.at > now) {
                return false;
            }
            let Some(Due { serial, name, .. }) = shard.due.pop() else {
                return false;
            };
            // Stale: that incarnation was forgotten by a read, and any
            // newer one has its own entry.
            if shard.streams.get(&name).is_none_or(|s| s.serial != serial) {
                continue;
            }
            let h = self.hash(&name);
            let mut dropped = Expired::default();
            let next = self
                .live(shard, &name, h, now, &mut dropped)
                .and_then(|s| s.due(self.config.ttl));
            out.add(dropped);
            // Still live, so what it holds is due after `now` (`live`
            // dropped the rest). Never rescheduled at or before `now` all
            // the same: were that rule and `due` ever to disagree, a stream
            // would expire late rather than this loop spin.
            if let Some(at) = next {
                let at = now
                    .checked_add(Duration::from_nanos(1))
                    .map_or(at, |soon| at.max(soon));
                shard.due.push(Due { at, serial, name });
            }
        }
        shard.due.peek().is_some_and(|d| d.at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use protocol::{GroupId, UserId};

    const TTL: Duration = Duration::from_secs(10);

    fn streams(max_messages: usize) -> Streams {
        Streams::new(HistoryConfig {
            max_messages,
            ttl: TTL,
        })
    }

    fn group(s: &str) -> StreamName {
        StreamName::Group(GroupId::new(s).expect("valid test id"))
    }

    fn inbox(s: &str) -> StreamName {
        StreamName::Inbox(UserId::new(s).expect("valid test id"))
    }

    fn frame_for(name: &StreamName, at: Position) -> Frame {
        let text = format!(
            r#"{{"stream":"{name}","epoch":"{}","seq":{}}}"#,
            at.epoch, at.seq
        );
        Frame::from_shared(Bytes::from(text)).expect("utf-8")
    }

    fn append(s: &Streams, name: &StreamName, now: Instant) -> Position {
        s.append(name, now, |at| frame_for(name, at))
    }

    fn seqs(entries: &[StreamEntry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    fn replay(r: Recovery) -> Vec<u64> {
        match r {
            Recovery::Recovered { replay, .. } => seqs(&replay),
            Recovery::Reset { reason, .. } => panic!("not recovered: {reason:?}"),
        }
    }

    fn reset(r: Recovery) -> ResetReason {
        match r {
            Recovery::Reset { reason, .. } => reason,
            Recovery::Recovered { replay, .. } => panic!("recovered {:?}", seqs(&replay)),
        }
    }

    #[test]
    fn numbering_starts_at_one_without_gaps_under_one_epoch() {
        let s = streams(100);
        let t = Instant::now();
        let g = group("g");
        let first = append(&s, &g, t);
        assert_eq!(first.seq, 1);
        for seq in 2..=50 {
            let at = append(&s, &g, t);
            assert_eq!(
                at,
                Position {
                    epoch: first.epoch,
                    seq
                }
            );
        }
        assert_eq!(
            s.position(&g, t),
            Position {
                epoch: first.epoch,
                seq: 50
            }
        );
        // Streams number independently.
        assert_eq!(append(&s, &inbox("g"), t).seq, 1);
        assert_eq!(append(&s, &StreamName::All, t).seq, 1);
    }

    #[test]
    fn the_frame_is_built_for_its_own_position() {
        let s = streams(10);
        let t = Instant::now();
        let g = group("g");
        let mut seen = None;
        let at = s.append(&g, t, |at| {
            seen = Some(at);
            frame_for(&g, at)
        });
        assert_eq!(seen, Some(at));
        let h = s.history(&g, 0, 10, t);
        assert_eq!(h.messages[0].frame, frame_for(&g, at));
    }

    #[test]
    fn an_unseen_stream_is_at_zero_costs_nothing_and_keeps_its_epoch() {
        let s = streams(100);
        let t = Instant::now();
        let g = group("never");
        let p = s.position(&g, t);
        assert_eq!(p.seq, 0);
        assert_eq!(s.position(&g, t + Duration::from_secs(3600)), p);
        assert_eq!(s.stream_count(), 0);
        // Its first message carries the epoch readers were told.
        assert_eq!(
            append(&s, &g, t),
            Position {
                epoch: p.epoch,
                seq: 1
            }
        );
        // An empty resume from there replays that message.
        let g2 = group("other");
        let p2 = s.position(&g2, t);
        assert_eq!(replay(s.since(&g2, &p2, usize::MAX, t)), Vec::<u64>::new());
        append(&s, &g2, t);
        append(&s, &g2, t);
        assert_eq!(replay(s.since(&g2, &p2, usize::MAX, t)), vec![1, 2]);
    }

    #[test]
    fn a_stream_keeps_its_last_max_messages() {
        let s = streams(3);
        let t = Instant::now();
        let g = group("g");
        let p0 = s.position(&g, t);
        let positions: Vec<_> = (0..5).map(|_| append(&s, &g, t)).collect();
        assert_eq!(s.held(), 3);
        let h = s.history(&g, 0, 100, t);
        assert_eq!(seqs(&h.messages), vec![3, 4, 5]);
        assert!(!h.complete);
        assert_eq!(h.current.seq, 5);
        // From 2 on, everything after is held; before, something is gone.
        assert_eq!(
            replay(s.since(&g, &positions[1], usize::MAX, t)),
            vec![3, 4, 5]
        );
        assert_eq!(
            reset(s.since(&g, &positions[0], usize::MAX, t)),
            ResetReason::Dropped
        );
        assert_eq!(reset(s.since(&g, &p0, usize::MAX, t)), ResetReason::Dropped);
        assert!(s.history(&g, 2, 100, t).complete);
        assert!(!s.history(&g, 1, 100, t).complete);
    }

    #[test]
    fn history_zero_numbers_but_keeps_nothing() {
        let s = streams(0);
        let t = Instant::now();
        let g = group("g");
        let p0 = s.position(&g, t);
        let p1 = append(&s, &g, t);
        let p2 = append(&s, &g, t);
        assert_eq!((p1.seq, p2.seq), (1, 2));
        assert_eq!(s.held(), 0);
        assert_eq!(s.position(&g, t), p2);
        // True only for a stream with no message after the position.
        assert_eq!(replay(s.since(&g, &p2, usize::MAX, t)), Vec::<u64>::new());
        assert_eq!(reset(s.since(&g, &p1, usize::MAX, t)), ResetReason::Dropped);
        assert_eq!(reset(s.since(&g, &p0, usize::MAX, t)), ResetReason::Dropped);
        let h = s.history(&g, 0, 100, t);
        assert!(h.messages.is_empty() && !h.complete);
        assert!(s.history(&g, 2, 100, t).complete);
    }

    #[test]
    fn a_message_is_dropped_exactly_ttl_after_it_was_added() {
        let s = streams(100);
        let t = Instant::now();
        let g = group("g");
        let p0 = s.position(&g, t);
        append(&s, &g, t);
        let p1 = s.position(&g, t);
        append(&s, &g, t + Duration::from_secs(4));
        let just_before = t + TTL - Duration::from_nanos(1);
        assert_eq!(
            replay(s.since(&g, &p0, usize::MAX, just_before)),
            vec![1, 2]
        );
        // Lazily, without `expire`.
        let at_ttl = t + TTL;
        assert_eq!(
            reset(s.since(&g, &p0, usize::MAX, at_ttl)),
            ResetReason::Dropped
        );
        assert_eq!(replay(s.since(&g, &p1, usize::MAX, at_ttl)), vec![2]);
        assert_eq!(s.held(), 1);
        let h = s.history(&g, 0, 100, at_ttl);
        assert_eq!((seqs(&h.messages), h.complete), (vec![2], false));
        // The stream itself lives on while its last message is recent.
        assert_eq!(s.position(&g, at_ttl).epoch, p0.epoch);
    }

    #[test]
    fn an_idle_stream_is_forgotten_and_restarts_at_one_under_a_new_epoch() {
        let s = streams(100);
        let t = Instant::now();
        let g = group("g");
        append(&s, &g, t);
        let old = append(&s, &g, t + Duration::from_secs(5));
        let later = t + Duration::from_secs(5) + TTL;
        let now = s.position(&g, later);
        assert_eq!(now.seq, 0);
        assert_ne!(now.epoch, old.epoch);
        assert_eq!(s.stream_count(), 0, "forgotten on read, no expire needed");
        assert_eq!(s.held(), 0);
        assert_eq!(
            reset(s.since(&g, &old, usize::MAX, later)),
            ResetReason::EpochChanged
        );
        let first = append(&s, &g, later);
        assert_eq!(
            first,
            Position {
                epoch: now.epoch,
                seq: 1
            }
        );
    }

    #[test]
    fn every_incarnation_of_a_name_has_its_own_epoch() {
        let s = streams(1);
        let mut t = Instant::now();
        let g = inbox("u");
        let mut epochs = std::collections::HashSet::new();
        for _ in 0..200 {
            let p = append(&s, &g, t);
            assert_eq!(p.seq, 1);
            assert!(epochs.insert(p.epoch), "epoch {} repeated", p.epoch);
            t += TTL;
        }
    }

    #[test]
    fn positions_from_elsewhere_are_not_recovered() {
        let s = streams(100);
        let t = Instant::now();
        let g = group("g");
        let top = append(&s, &g, t);
        let ahead = Position { seq: 2, ..top };
        assert_eq!(
            reset(s.since(&g, &ahead, usize::MAX, t)),
            ResetReason::Ahead
        );
        let foreign = Position {
            epoch: Epoch::parse("zzzzzzzz").expect("valid epoch"),
            seq: 0,
        };
        assert_ne!(foreign.epoch, top.epoch);
        assert_eq!(
            reset(s.since(&g, &foreign, usize::MAX, t)),
            ResetReason::EpochChanged
        );
        // Another stream's position is another numbering.
        let other = s.position(&group("h"), t);
        assert_eq!(
            reset(s.since(&g, &other, usize::MAX, t)),
            ResetReason::EpochChanged
        );
        // And ahead of a stream never seen.
        let unseen = s.position(&group("h"), t);
        let ahead = Position { seq: 1, ..unseen };
        assert_eq!(
            reset(s.since(&group("h"), &ahead, usize::MAX, t)),
            ResetReason::Ahead
        );
    }

    #[test]
    fn a_replay_longer_than_the_limit_is_not_recovered() {
        let s = streams(100);
        let t = Instant::now();
        let g = group("g");
        let p0 = s.position(&g, t);
        for _ in 0..5 {
            append(&s, &g, t);
        }
        assert_eq!(reset(s.since(&g, &p0, 4, t)), ResetReason::TooMany);
        assert_eq!(replay(s.since(&g, &p0, 5, t)), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn history_pages_with_since_and_limit() {
        let s = streams(100);
        let t = Instant::now();
        let g = group("g");
        for _ in 0..7 {
            append(&s, &g, t);
        }
        let h = s.history(&g, 0, 3, t);
        assert_eq!(
            (seqs(&h.messages), h.complete, h.current.seq),
            (vec![1, 2, 3], true, 7)
        );
        assert_eq!(seqs(&s.history(&g, 3, 3, t).messages), vec![4, 5, 6]);
        assert_eq!(seqs(&s.history(&g, 6, 3, t).messages), vec![7]);
        assert!(s.history(&g, 7, 3, t).messages.is_empty());
        let beyond = s.history(&g, u64::MAX, 3, t);
        assert!(beyond.messages.is_empty() && beyond.complete);
        assert!(s.history(&g, 0, 0, t).messages.is_empty());
        let unseen = s.history(&group("none"), 0, 100, t);
        assert_eq!((unseen.current.seq, unseen.complete), (0, true));
        assert!(unseen.messages.is_empty());
    }

    #[test]
    fn expire_drops_only_what_is_due_and_forgets_idle_streams() {
        let s = streams(100);
        let t = Instant::now();
        let (a, b) = (group("a"), group("b"));
        append(&s, &a, t);
        append(&s, &a, t + Duration::from_secs(2));
        append(&s, &b, t + Duration::from_secs(5));
        assert_eq!(s.expire(t + Duration::from_secs(9)), Expired::default());
        assert_eq!(s.held(), 3);
        assert_eq!(
            s.expire(t + TTL),
            Expired {
                messages: 1,
                streams: 0
            }
        );
        assert_eq!(
            s.expire(t + Duration::from_secs(2) + TTL),
            Expired {
                messages: 1,
                streams: 1
            }
        );
        assert_eq!((s.held(), s.stream_count()), (1, 1));
        assert_eq!(
            s.expire(t + Duration::from_secs(5) + TTL),
            Expired {
                messages: 1,
                streams: 1
            }
        );
        assert_eq!((s.held(), s.stream_count()), (0, 0));
        assert_eq!(s.expire(t + Duration::from_secs(1000)), Expired::default());
    }

    #[test]
    fn expire_skips_incarnations_already_forgotten_by_a_read() {
        let s = streams(100);
        let t = Instant::now();
        let g = group("g");
        let old = append(&s, &g, t);
        // Forgotten on this append, which starts a new incarnation.
        let new = append(&s, &g, t + TTL);
        assert_ne!(old.epoch, new.epoch);
        // The old incarnation's due entry comes up and is skipped.
        assert_eq!(s.expire(t + TTL), Expired::default());
        assert_eq!((s.held(), s.stream_count()), (1, 1));
        assert_eq!(s.position(&g, t + TTL), new);
        assert_eq!(
            s.expire(t + TTL + TTL),
            Expired {
                messages: 1,
                streams: 1
            }
        );
    }

    #[test]
    fn expire_works_in_batches() {
        let s = streams(100);
        let t = Instant::now();
        let names: Vec<_> = (0..EXPIRE_BATCH * 3)
            .map(|i| inbox(&format!("u{i}")))
            .collect();
        for n in &names {
            append(&s, n, t);
        }
        assert_eq!(
            s.expire(t + TTL),
            Expired {
                messages: names.len(),
                streams: names.len()
            }
        );
        assert_eq!((s.held(), s.stream_count()), (0, 0));
    }

    #[test]
    fn a_clock_that_lags_does_no_harm() {
        let s = streams(100);
        let t = Instant::now() + Duration::from_secs(100);
        let g = group("g");
        append(&s, &g, t);
        // Another thread's earlier reading of the clock.
        let p = append(&s, &g, t - Duration::from_secs(50));
        assert_eq!(p.seq, 2);
        assert_eq!(s.position(&g, t - Duration::from_secs(90)), p);
        assert_eq!(seqs(&s.history(&g, 0, 10, t).messages), vec![1, 2]);
        // Both count as added at `t`.
        assert_eq!(s.history(&g, 0, 10, t + TTL).current.seq, 0);
    }

    #[test]
    fn a_ttl_too_long_for_the_clock_never_expires() {
        let s = Streams::new(HistoryConfig {
            max_messages: 10,
            ttl: Duration::MAX,
        });
        let t = Instant::now();
        let g = group("g");
        append(&s, &g, t);
        assert_eq!(
            s.expire(t + Duration::from_secs(1 << 40)),
            Expired::default()
        );
        assert_eq!(
            s.history(&g, 0, 10, t + Duration::from_secs(1 << 40))
                .messages
                .len(),
            1
        );
    }

    #[test]
    fn a_panicking_make_frame_changes_nothing() {
        let s = streams(100);
        let t = Instant::now();
        let g = group("g");
        let p1 = append(&s, &g, t);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.append(&g, t, |_| panic!("encoding failed"))
        }));
        assert!(r.is_err());
        assert_eq!(s.position(&g, t), p1);
        assert_eq!(append(&s, &g, t).seq, 2);
        let fresh = group("fresh");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.append(&fresh, t, |_| panic!("encoding failed"))
        }));
        assert!(r.is_err());
        assert_eq!(s.position(&fresh, t).seq, 0);
        assert_eq!(s.stream_count(), 1);
    }
}
