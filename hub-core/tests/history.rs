//! History (PROTOCOL.md §10) checked against a model that is too simple to
//! be wrong: every message ever appended, per stream and per epoch, with the
//! time it was added. What the store must hold, replay or refuse at any
//! moment follows from that list and the two rules (`--history`, ttl), so
//! random interleavings of appends, clock steps, expiry, reads and resumes
//! are compared answer by answer, and a simulated client checks the same
//! thing from outside: no gap, duplicate or reordering, ever.

use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hub_core::history::{
    Epoch, HistoryConfig, Position, Recovery, ResetReason, StreamEntry, StreamName, Streams,
};
use hub_core::Frame;
use proptest::prelude::*;
use proptest::sample::Index;
use protocol::{GroupId, UserId};

fn names() -> [StreamName; 3] {
    [
        StreamName::Inbox(UserId::new("u1").expect("valid id")),
        StreamName::Group(GroupId::new("g1").expect("valid id")),
        StreamName::All,
    ]
}

/// What a server would encode: the frame names its own place.
fn frame_for(name: &StreamName, at: Position) -> Frame {
    let text = format!("{name} {} {}", at.epoch, at.seq);
    Frame::from_shared(Bytes::from(text)).expect("utf-8")
}

fn same_bytes(a: &Frame, b: &Frame) -> bool {
    a.bytes().as_ptr() == b.bytes().as_ptr() && a.len() == b.len()
}

#[derive(Debug, Clone)]
enum From {
    /// A position the store handed out for this stream earlier.
    Seen(Index),
    /// An epoch this store never gave.
    Foreign(String, u64),
    /// The current epoch, past the top.
    Ahead(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Advance(u64),
    Expire,
    Position(usize),
    Resume {
        stream: usize,
        from: From,
        limit: usize,
    },
    History {
        stream: usize,
        since: u64,
        limit: usize,
    },
    Disconnect(usize),
    Reconnect(usize),
}

struct Msg {
    seq: u64,
    at_ms: u64,
    frame: Frame,
}

struct Incarnation {
    epoch: Epoch,
    msgs: Vec<Msg>,
}

impl Incarnation {
    fn top(&self) -> u64 {
        self.msgs.len() as u64
    }

    fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.top(),
        }
    }
}

/// A client reading one stream: live while connected, resuming from its
/// last position when it comes back.
#[derive(Default)]
struct Client {
    connected: bool,
    position: Option<Position>,
}

impl Client {
    /// One message arriving, live or replayed: the next in its numbering,
    /// or the first of a new numbering.
    fn receive(&mut self, at: Position) {
        let pos = self
            .position
            .expect("a client that receives has a position");
        if at.epoch == pos.epoch {
            assert_eq!(at.seq, pos.seq + 1, "gap, duplicate or reorder");
        } else {
            assert_eq!(at.seq, 1, "a new numbering starts at 1");
        }
        self.position = Some(at);
    }
}

#[derive(Default)]
struct ModelStream {
    past: Vec<Incarnation>,
    current: Option<Incarnation>,
    /// The epoch the store reported while the stream had no incarnation;
    /// its next incarnation must carry it.
    unseen_epoch: Option<Epoch>,
    seen: Vec<Position>,
    client: Client,
}

struct Model {
    config: HistoryConfig,
    ttl_ms: u64,
    now_ms: u64,
    streams: Vec<ModelStream>,
}

impl Model {
    /// The ttl rules at `now_ms`: an incarnation idle for ttl is over.
    fn settle(&mut self, i: usize) {
        let now = self.now_ms;
        let ttl = self.ttl_ms;
        let s = &mut self.streams[i];
        let idle = s.current.as_ref().is_some_and(|inc| {
            let last = inc.msgs.last().map_or(0, |m| m.at_ms);
            now - last >= ttl
        });
        if idle {
            s.past.extend(s.current.take());
            s.unseen_epoch = None;
        }
    }

    /// Index in `msgs` of the first message the store must still hold.
    fn first_held(&self, inc: &Incarnation) -> usize {
        let by_count = inc.msgs.len().saturating_sub(self.config.max_messages);
        let by_age = inc
            .msgs
            .iter()
            .position(|m| self.now_ms - m.at_ms < self.ttl_ms)
            .unwrap_or(inc.msgs.len());
        by_count.max(by_age)
    }

    fn held_total(&self) -> usize {
        self.streams
            .iter()
            .filter_map(|s| s.current.as_ref())
            .map(|inc| inc.msgs.len() - self.first_held(inc))
            .sum()
    }

    /// Checks a position the store gave for a stream with no incarnation.
    fn check_unseen(&mut self, i: usize, at: Position) {
        let s = &mut self.streams[i];
        assert_eq!(at.seq, 0);
        assert!(
            s.past.iter().all(|inc| inc.epoch != at.epoch),
            "an old epoch came back"
        );
        assert_eq!(*s.unseen_epoch.get_or_insert(at.epoch), at.epoch);
    }

    fn expect_since(&mut self, i: usize, after: Position, limit: usize, got: &Recovery) {
        let Some(inc) = &self.streams[i].current else {
            let current = got.current();
            self.check_unseen(i, current);
            let expected = if after.epoch != current.epoch {
                Err(ResetReason::EpochChanged)
            } else if after.seq > 0 {
                Err(ResetReason::Ahead)
            } else {
                Ok(&[][..])
            };
            return compare(expected, current, got);
        };
        let first_held = self.first_held(inc);
        let expected = if after.epoch != inc.epoch {
            Err(ResetReason::EpochChanged)
        } else if after.seq > inc.top() {
            Err(ResetReason::Ahead)
        } else if (after.seq as usize) < first_held {
            // Message after.seq + 1 sits at index after.seq: not held.
            Err(ResetReason::Dropped)
        } else if inc.top() - after.seq > limit as u64 {
            Err(ResetReason::TooMany)
        } else {
            Ok(&inc.msgs[after.seq as usize..])
        };
        compare(expected, inc.position(), got);
    }
}

fn compare(expected: Result<&[Msg], ResetReason>, current: Position, got: &Recovery) {
    assert_eq!(got.current(), current);
    match (expected, got) {
        (Ok(msgs), Recovery::Recovered { replay, .. }) => check_entries(msgs, replay),
        (Err(reason), Recovery::Reset { reason: r, .. }) => assert_eq!(reason, *r),
        (e, g) => panic!(
            "expected {:?}, got {g:?}",
            e.map(|m| m.iter().map(|m| m.seq).collect::<Vec<_>>())
        ),
    }
}

/// The same messages, in order, as the very frames built for them.
fn check_entries(msgs: &[Msg], got: &[StreamEntry]) {
    let want: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
    let have: Vec<u64> = got.iter().map(|e| e.seq).collect();
    assert_eq!(have, want);
    for (m, e) in msgs.iter().zip(got) {
        assert!(
            same_bytes(&m.frame, &e.frame),
            "a copy, not the frame built"
        );
    }
}

fn run(config: HistoryConfig, ops: Vec<Op>) {
    let t0 = Instant::now();
    let store = Streams::new(config);
    let names = names();
    let mut model = Model {
        config,
        ttl_ms: config.ttl.as_millis() as u64,
        now_ms: 0,
        streams: (0..names.len()).map(|_| ModelStream::default()).collect(),
    };
    for op in ops {
        let now = t0 + Duration::from_millis(model.now_ms);
        match op {
            Op::Advance(ms) => model.now_ms += ms,
            Op::Append(i) => {
                model.settle(i);
                let name = &names[i];
                let mut built = None;
                let at = store.append(name, now, |at| {
                    let f = frame_for(name, at);
                    built = Some((at, f.clone()));
                    f
                });
                let (built_at, frame) = built.expect("make_frame is called");
                assert_eq!(built_at, at);
                let s = &mut model.streams[i];
                match &s.current {
                    Some(inc) => assert_eq!(
                        at,
                        Position {
                            seq: inc.top() + 1,
                            ..inc.position()
                        }
                    ),
                    None => {
                        assert_eq!(at.seq, 1);
                        assert!(s.past.iter().all(|inc| inc.epoch != at.epoch));
                        if let Some(e) = s.unseen_epoch.take() {
                            assert_eq!(at.epoch, e, "the epoch readers were told");
                        }
                        s.current = Some(Incarnation {
                            epoch: at.epoch,
                            msgs: Vec::new(),
                        });
                    }
                }
                if let Some(inc) = &mut s.current {
                    inc.msgs.push(Msg {
                        seq: at.seq,
                        at_ms: model.now_ms,
                        frame,
                    });
                }
                s.seen.push(at);
                if s.client.connected {
                    s.client.receive(at);
                }
            }
            Op::Expire => {
                for i in 0..names.len() {
                    model.settle(i);
                }
                let (held, count) = (store.held(), store.stream_count());
                let expired = store.expire(now);
                assert_eq!(store.held(), held - expired.messages);
                assert_eq!(store.stream_count(), count - expired.streams);
                // Nothing due is left behind.
                assert_eq!(store.held(), model.held_total());
                let live = model.streams.iter().filter(|s| s.current.is_some());
                assert_eq!(store.stream_count(), live.count());
            }
            Op::Position(i) => {
                model.settle(i);
                let at = store.position(&names[i], now);
                match &model.streams[i].current {
                    Some(inc) => assert_eq!(at, inc.position()),
                    None => model.check_unseen(i, at),
                }
                model.streams[i].seen.push(at);
            }
            Op::Resume {
                stream: i,
                from,
                limit,
            } => {
                model.settle(i);
                let current = store.position(&names[i], now);
                let s = &model.streams[i];
                let after = match from {
                    From::Seen(_) if s.seen.is_empty() => current,
                    From::Seen(ix) => s.seen[ix.index(s.seen.len())],
                    From::Foreign(e, seq) => Position {
                        epoch: Epoch::parse(&e).expect("8 alphanumerics"),
                        seq,
                    },
                    From::Ahead(k) => Position {
                        seq: current.seq + 1 + k,
                        ..current
                    },
                };
                let got = store.since(&names[i], &after, limit, now);
                model.expect_since(i, after, limit, &got);
            }
            Op::History {
                stream: i,
                since,
                limit,
            } => {
                model.settle(i);
                let got = store.history(&names[i], since, limit, now);
                match &model.streams[i].current {
                    None => {
                        model.check_unseen(i, got.current);
                        assert!(got.complete && got.messages.is_empty());
                    }
                    Some(inc) => {
                        assert_eq!(got.current, inc.position());
                        let first_held = model.first_held(inc);
                        let after: Vec<&Msg> = inc.msgs.iter().filter(|m| m.seq > since).collect();
                        let complete = after.iter().all(|m| m.seq as usize > first_held);
                        assert_eq!(got.complete, complete);
                        let want: Vec<Msg> = inc.msgs[first_held..]
                            .iter()
                            .filter(|m| m.seq > since)
                            .take(limit)
                            .map(|m| Msg {
                                seq: m.seq,
                                at_ms: m.at_ms,
                                frame: m.frame.clone(),
                            })
                            .collect();
                        check_entries(&want, &got.messages);
                    }
                }
            }
            Op::Disconnect(i) => model.streams[i].client.connected = false,
            Op::Reconnect(i) => {
                model.settle(i);
                if model.streams[i].client.connected {
                    continue;
                }
                let name = &names[i];
                match model.streams[i].client.position {
                    // First connection: it starts at the welcome position.
                    None => {
                        let at = store.position(name, now);
                        match &model.streams[i].current {
                            Some(inc) => assert_eq!(at, inc.position()),
                            None => model.check_unseen(i, at),
                        }
                        model.streams[i].seen.push(at);
                        model.streams[i].client.position = Some(at);
                    }
                    Some(after) => {
                        let got = store.since(name, &after, usize::MAX, now);
                        model.expect_since(i, after, usize::MAX, &got);
                        let client = &mut model.streams[i].client;
                        match got {
                            Recovery::Recovered { replay, current } => {
                                for e in &replay {
                                    client.receive(Position {
                                        epoch: after.epoch,
                                        seq: e.seq,
                                    });
                                }
                                assert_eq!(client.position, Some(current), "no gap to live");
                            }
                            // Nothing replayed: it starts over where the
                            // stream stands.
                            Recovery::Reset { current, .. } => client.position = Some(current),
                        }
                    }
                }
                model.streams[i].client.connected = true;
            }
        }
    }
}

fn from() -> impl Strategy<Value = From> {
    prop_oneof![
        4 => any::<Index>().prop_map(From::Seen),
        1 => ("[0-9A-Za-z]{8}", 0..4u64).prop_map(|(e, seq)| From::Foreign(e, seq)),
        1 => (0..3u64).prop_map(From::Ahead),
    ]
}

fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![2 => Just(usize::MAX), 1 => 0..8usize]
}

fn op() -> impl Strategy<Value = Op> {
    let stream = 0..names().len();
    prop_oneof![
        6 => stream.clone().prop_map(Op::Append),
        3 => (0..25u64).prop_map(Op::Advance),
        1 => Just(Op::Expire),
        1 => stream.clone().prop_map(Op::Position),
        3 => (stream.clone(), from(), limit())
            .prop_map(|(stream, from, limit)| Op::Resume { stream, from, limit }),
        1 => (stream.clone(), prop_oneof![0..12u64, Just(u64::MAX)], 0..6usize)
            .prop_map(|(stream, since, limit)| Op::History { stream, since, limit }),
        1 => stream.clone().prop_map(Op::Disconnect),
        2 => stream.prop_map(Op::Reconnect),
    ]
}

fn config() -> impl Strategy<Value = HistoryConfig> {
    (0..6usize, 1..60u64).prop_map(|(max_messages, ttl)| HistoryConfig {
        max_messages,
        ttl: Duration::from_millis(ttl),
    })
}

proptest! {
    // Shrinking is bounded so a broken change fails in seconds, still
    // with a short counterexample.
    #![proptest_config(ProptestConfig {
        cases: 2000,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    /// Any interleaving answers exactly what the model says.
    #[test]
    fn history_matches_the_model(config in config(), ops in prop::collection::vec(op(), 1..300)) {
        run(config, ops);
    }
}

/// Long runs with the defaults' shape (a window of messages, a ttl much
/// longer than one step), where trimming by count dominates.
#[test]
fn a_long_run_with_a_wide_window() {
    let config = HistoryConfig {
        max_messages: 50,
        ttl: Duration::from_millis(500),
    };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 50,
        max_shrink_iters: 50,
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(op(), 2000..3000), |ops| {
            run(config, ops);
            Ok(())
        })
        .expect("model holds");
}

#[test]
fn history_holds_the_bytes_routing_shares() {
    let store = Streams::default();
    let t = Instant::now();
    let name = StreamName::Group(GroupId::new("g").expect("valid id"));
    let start = store.position(&name, t);
    let mut built = Vec::new();
    for _ in 0..3 {
        store.append(&name, t, |at| {
            let f = frame_for(&name, at);
            built.push(f.clone());
            f
        });
    }
    let history = store.history(&name, 0, 10, t);
    assert_eq!(history.messages.len(), 3);
    for (b, e) in built.iter().zip(&history.messages) {
        assert!(same_bytes(b, &e.frame));
    }
    let Recovery::Recovered { replay, .. } = store.since(&name, &start, usize::MAX, t) else {
        panic!("recovered");
    };
    for (b, e) in built.iter().zip(&replay) {
        assert!(same_bytes(b, &e.frame));
    }
    // The frame a queue got and the one history replays are one allocation.
    let sent = built[0].clone().into_bytes();
    assert_eq!(sent.as_ptr(), replay[0].frame.bytes().as_ptr());
}

/// Appends from many threads take every seq once, and the store keeps
/// them in seq order, each with the frame built for it, while readers and
/// expiry run alongside.
#[test]
fn concurrent_appends_number_without_gaps_or_duplicates() {
    const THREADS: usize = 4;
    const EACH: usize = 2_000;
    let store = Streams::new(HistoryConfig {
        max_messages: THREADS * EACH,
        ttl: Duration::from_secs(3600),
    });
    let t = Instant::now();
    let shared = StreamName::Group(GroupId::new("g").expect("valid id"));
    let mut seqs: Vec<u64> = thread::scope(|scope| {
        let writers: Vec<_> = (0..THREADS)
            .map(|w| {
                let (store, shared) = (&store, &shared);
                scope.spawn(move || {
                    let own = StreamName::Inbox(UserId::new(&format!("u{w}")).expect("valid id"));
                    let mut got = Vec::with_capacity(EACH);
                    for n in 0..EACH {
                        got.push(store.append(shared, t, |at| frame_for(shared, at)).seq);
                        let mine = store.append(&own, t, |at| frame_for(&own, at));
                        assert_eq!(mine.seq, n as u64 + 1);
                    }
                    got
                })
            })
            .collect();
        let (store, shared) = (&store, &shared);
        scope.spawn(move || {
            for _ in 0..200 {
                let h = store.history(shared, 0, usize::MAX, t);
                for (i, e) in h.messages.iter().enumerate() {
                    assert_eq!(e.seq, i as u64 + 1);
                }
                store.expire(t);
                let at = store.position(shared, t);
                assert!(store.since(shared, &at, usize::MAX, t).is_recovered());
            }
        });
        writers
            .into_iter()
            .flat_map(|w| w.join().expect("writer"))
            .collect()
    });
    seqs.sort_unstable();
    let all: Vec<u64> = (1..=(THREADS * EACH) as u64).collect();
    assert_eq!(seqs, all);
    let h = store.history(&shared, 0, usize::MAX, t);
    assert!(h.complete);
    for (i, e) in h.messages.iter().enumerate() {
        let at = Position {
            epoch: h.current.epoch,
            seq: i as u64 + 1,
        };
        assert_eq!(e.seq, at.seq);
        assert_eq!(e.frame, frame_for(&shared, at));
    }
    assert_eq!(store.held(), THREADS * EACH * 2);
}

/// Resuming from positions of every kind on a stream never seen.
#[test]
fn a_stream_never_seen_recovers_only_from_its_own_zero() {
    let store = Streams::default();
    let t = Instant::now();
    let name = StreamName::All;
    let zero = store.position(&name, t);
    assert!(store.since(&name, &zero, 0, t).is_recovered());
    let ahead = Position { seq: 1, ..zero };
    assert_eq!(
        store.since(&name, &ahead, usize::MAX, t),
        Recovery::Reset {
            reason: ResetReason::Ahead,
            current: zero
        }
    );
    assert_eq!(store.stream_count(), 0);
}
