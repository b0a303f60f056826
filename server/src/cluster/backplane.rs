//! `RedisBackplane`: hub-core's broker, membership and presence seams on
//! one Redis server. Commands go through one `ConnectionManager` (it
//! reconnects by itself) with short timeouts, so that while Redis is gone
//! every operation answers `unavailable` within about a second instead of
//! waiting; and while the backplane is down (`heartbeat.rs` decides) no
//! command is even tried.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use hub_core::{
    BoxFuture, Broker, ConnId, Epoch, Frame, History, HistoryConfig, Hub, Membership, NodeId,
    Position, Presence, Publication, Published, Recovery, ResetReason, StreamEntry, StreamName,
    Tag, Target, Topic, Unavailable,
};
use protocol::{GroupId, UserId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::{FromRedisValue, ScriptInvocation};
use tokio::sync::oneshot;

use super::batch::{self, UserPush, UserPushBatcher};
use super::scripts::Scripts;
use super::subscriber::{self, RoutedWaiter, Track};
use super::wire::{self, Envelope, Names, Part};

/// How long after it is sent a script may still take effect in Redis (on
/// Redis's clock): one that reaches a Redis thawing from a freeze, or one
/// stuck behind a slow link, later than this does nothing and answers
/// "late".
const SCRIPT_DEADLINE: Duration = Duration::from_millis(700);
/// How long an answer is waited for before the call counts as an outage.
/// Well past `SCRIPT_DEADLINE`: a script that ran in time may have its
/// answer held up by TCP retransmissions on a lossy link (200 ms, then 400,
/// 800 ms...), and answering `unavailable` for what Redis did publish would
/// deliver a refused message (§11; the soak's link drill found it with a
/// one-second wait). A push still unanswered then is looked up (`settle`).
pub const REPLY_TIMEOUT: Duration = Duration::from_millis(3000);
/// How long a push whose answer never came is looked for (`settle`), and
/// how long one look may take: with `REPLY_TIMEOUT`, every push is
/// answered within 8 s of being sent (§11 allows 10).
const SETTLE_FOR: Duration = Duration::from_secs(5);
const SETTLE_EVERY: Duration = Duration::from_millis(1000);
/// How long a join waits for the nodes holding the user's connections to
/// subscribe to the group, so a push right after the join reaches them.
const JOIN_ACK_TIMEOUT: Duration = Duration::from_millis(1000);

/// The pub/sub side's state, shared with `subscriber.rs`.
#[derive(Default)]
pub struct Subscriptions {
    pub sink: Option<PubSubSink>,
    pub subscribed: HashSet<String>,
    /// Channels no local connection read at the last sweep: dropped at
    /// the next one if still unread, so churn does not flap them.
    pub idle: HashSet<String>,
}

/// A join waiting for nodes to subscribe: how many acks are still due,
/// and who to tell when none are.
type JoinWaiter = (usize, Option<oneshot::Sender<()>>);

pub struct RedisBackplane {
    pub node: NodeId,
    pub names: Names,
    pub client: redis::Client,
    conn: ConnectionManager,
    pub scripts: Scripts,
    /// Direct pushes, several to a script call under load.
    user_pushes: Arc<UserPushBatcher>,
    pub hub: Arc<Hub>,
    /// The last heartbeat reached Redis (and the node's presence is synced).
    pub heartbeat_ok: AtomicBool,
    /// The pub/sub connection holds every channel this node needs.
    pub pubsub_up: AtomicBool,
    /// Counts the pub/sub connection's (re)subscriptions; the heartbeat
    /// brings the node back to service only after it has resynced what
    /// the pub/sub side may have missed since the last one it saw.
    pub pubsub_generation: AtomicU64,
    pub synced_generation: AtomicU64,
    pub reconnects: AtomicU64,
    /// Redis's clock minus ours, in ms, as of the last heartbeat.
    pub clock_offset_ms: AtomicI64,
    pub subs: Mutex<Subscriptions>,
    acks: Mutex<HashMap<u64, JoinWaiter>>,
    next_token: AtomicU64,
    /// `--history` and `--history-ttl`, applied by the scripts.
    pub history: HistoryConfig,
    /// `--idempotency-window`.
    idempotency_window: Duration,
    /// Per channel this node reads, where its stream stands as delivered
    /// here (`subscriber.rs`).
    pub tracks: Mutex<HashMap<String, Track>>,
    /// Acks waiting for their message to be routed here, per channel
    /// (`subscriber::routed`), and how many in all.
    pub routed_waiters: Mutex<HashMap<String, Vec<RoutedWaiter>>>,
    pub routed_waiting: AtomicUsize,
    /// The pub/sub side has stopped for good (shutdown): no message or
    /// barrier comes back any more, so nothing waits for one.
    pub stopped: AtomicBool,
    next_epoch: AtomicU64,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// An entry of `acks`, taken out however its waiter ends: answered, timed
/// out, or dropped with a connection that went away meanwhile.
struct AckSlot<'a> {
    acks: &'a Mutex<HashMap<u64, JoinWaiter>>,
    token: u64,
}

impl<'a> AckSlot<'a> {
    fn insert(acks: &'a Mutex<HashMap<u64, JoinWaiter>>, token: u64, waiter: JoinWaiter) -> Self {
        lock(acks).insert(token, waiter);
        AckSlot { acks, token }
    }
}

impl Drop for AckSlot<'_> {
    fn drop(&mut self) {
        lock(self.acks).remove(&self.token);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// This process's clock in ms, signed for the offset arithmetic.
pub fn local_now_ms() -> i64 {
    hub_core::now_millis() as i64
}

impl RedisBackplane {
    /// Connects lazily: the server starts (and answers `/readyz` 503)
    /// while Redis is not there yet.
    pub fn new(
        node: NodeId,
        client: redis::Client,
        hub: Arc<Hub>,
        history: HistoryConfig,
        idempotency_window: Duration,
    ) -> redis::RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(REPLY_TIMEOUT))
            // The default retries for ~9 s; one retry keeps an outage's
            // answers within the contract's seconds.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let db = client.get_connection_info().redis_settings().db();
        let names = Names::new(db);
        let scripts = Scripts::default();
        let user_pushes = UserPushBatcher::new(
            conn.clone(),
            scripts.push_user.clone(),
            batch::Settings {
                prefix: names.keys.clone(),
                // At least 1 ms: PEXPIRE 0 would delete at once.
                ttl_ms: (history.ttl.as_millis() as u64).max(1),
                max_messages: history.max_messages,
                window_ms: idempotency_window.as_millis() as u64,
            },
        );
        Ok(RedisBackplane {
            node,
            names,
            client,
            conn,
            scripts,
            user_pushes,
            hub,
            heartbeat_ok: AtomicBool::new(false),
            pubsub_up: AtomicBool::new(false),
            pubsub_generation: AtomicU64::new(0),
            synced_generation: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            clock_offset_ms: AtomicI64::new(0),
            subs: Mutex::default(),
            acks: Mutex::default(),
            next_token: AtomicU64::new(1),
            history,
            idempotency_window,
            tracks: Mutex::default(),
            routed_waiters: Mutex::default(),
            routed_waiting: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            next_epoch: AtomicU64::new(0),
        })
    }

    pub fn up(&self) -> bool {
        self.heartbeat_ok.load(SeqCst)
            && self.pubsub_up.load(SeqCst)
            && self.synced_generation.load(SeqCst) == self.pubsub_generation.load(SeqCst)
    }

    fn check(&self) -> Result<(), Unavailable> {
        if self.up() {
            Ok(())
        } else {
            Err(Unavailable)
        }
    }

    /// A deadline on Redis's clock for a command sent now: well inside
    /// the local timeout, so a script that does run is answered before the
    /// caller gives up on it (else a message could be delivered and still
    /// answered `unavailable`).
    fn deadline(&self) -> i64 {
        local_now_ms() + self.clock_offset_ms.load(SeqCst) + SCRIPT_DEADLINE.as_millis() as i64
    }

    /// Runs a script invocation; any failure or timeout is `Unavailable`.
    pub async fn run<T: FromRedisValue>(
        &self,
        inv: ScriptInvocation<'_>,
    ) -> Result<T, Unavailable> {
        let mut conn = self.conn.clone();
        timed(inv.invoke_async(&mut conn)).await
    }

    /// Runs one plain command, likewise.
    pub async fn command<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Unavailable> {
        let mut conn = self.conn.clone();
        timed(cmd.query_async(&mut conn)).await
    }

    /// The members of a set, as ids (a malformed one, which only another
    /// writer could have put there, is skipped).
    async fn ids<T>(
        &self,
        key: String,
        id: impl Fn(&str) -> Option<T>,
    ) -> Result<Vec<T>, Unavailable> {
        let names: Vec<String> = self.command(redis::cmd("SMEMBERS").arg(key)).await?;
        Ok(names.iter().filter_map(|n| id(n)).collect())
    }

    fn prefix(&self) -> &str {
        &self.names.keys
    }

    /// One heartbeat: marks this node live for `ttl`; returns the dataset
    /// id, Redis's clock, and whether the node had lapsed (not live any
    /// more before this beat, so the others may have dropped its presence).
    pub async fn heartbeat(
        &self,
        ttl: Duration,
        run_candidate: &str,
    ) -> Result<(String, i64, bool), Unavailable> {
        let mut inv = self.scripts.heartbeat.prepare_invoke();
        inv.arg(self.prefix())
            .arg(self.node.to_string())
            .arg(ttl.as_millis() as u64)
            .arg(run_candidate);
        let (run, now, lapsed): (String, String, i64) = self.run(inv).await?;
        Ok((
            run,
            now.parse().unwrap_or_else(|_| local_now_ms()),
            lapsed == 1,
        ))
    }

    /// Rewrites this node's presence from the connections it holds.
    pub async fn sync_presence(&self) -> Result<(), Unavailable> {
        let mut inv = self.scripts.node_sync.prepare_invoke();
        inv.arg(self.prefix()).arg(self.node.to_string());
        for (user, n) in self.hub.connection_counts() {
            inv.arg(user.as_str()).arg(n);
        }
        let _: i64 = self.run(inv).await?;
        Ok(())
    }

    /// Reloads the memberships this node mirrors for its users from Redis:
    /// joins and leaves announced while its pub/sub connection was down
    /// were not heard.
    pub async fn resync_memberships(&self) -> Result<(), Unavailable> {
        let users: Vec<UserId> = self
            .hub
            .connection_counts()
            .into_iter()
            .map(|(u, _)| u)
            .collect();
        // Pipelined, a thousand users a round trip: a node with many users
        // must not send one command per user.
        for chunk in users.chunks(1000) {
            let mut pipe = redis::pipe();
            for user in chunk {
                pipe.cmd("SMEMBERS").arg(self.names.user_groups_key(user));
            }
            let mut conn = self.conn.clone();
            let all: Vec<Vec<String>> = timed(pipe.query_async(&mut conn)).await?;
            for (user, names) in chunk.iter().zip(all) {
                let groups: Vec<GroupId> =
                    names.iter().filter_map(|g| GroupId::new(g).ok()).collect();
                self.hub.set_groups(user, &groups);
            }
        }
        Ok(())
    }

    /// Leaves the shared presence at once (a graceful stop).
    pub async fn node_down(&self) -> Result<(), Unavailable> {
        let mut inv = self.scripts.node_down.prepare_invoke();
        inv.arg(self.prefix()).arg(self.node.to_string());
        let _: i64 = self.run(inv).await?;
        Ok(())
    }

    /// A node subscribed to a group after a join: one fewer to wait for.
    /// The pub/sub side stopped for good: every barrier still waited for
    /// is given up at once (its sender dropped) instead of running out its
    /// time.
    pub fn stop_barriers(&self) {
        for waiter in lock(&self.acks).values_mut() {
            waiter.1 = None;
        }
    }

    pub fn join_acked(&self, token: u64) {
        let mut acks = lock(&self.acks);
        if let Some((left, done)) = acks.get_mut(&token) {
            *left = left.saturating_sub(1);
            if *left == 0 {
                if let Some(done) = done.take() {
                    let _ = done.send(());
                }
            }
        }
    }

    /// Tells the node that waits on `token` that this one is subscribed.
    pub async fn send_join_ack(&self, node: u64, token: u64) {
        let payload = wire::control(&Envelope::JoinAck { token });
        let channel = self.names.node_channel(NodeId(node));
        let _: Result<i64, _> = self
            .command(redis::cmd("PUBLISH").arg(channel).arg(payload))
            .await;
    }

    /// A fresh epoch for whichever stream a script finds without one: 8
    /// characters of [0-9A-Za-z] (`Epoch::parse`), from a randomly keyed
    /// hash of this node, a counter and the clock.
    pub fn epoch_candidate(&self) -> String {
        use std::hash::BuildHasher;
        const ALPHABET: &[u8; 62] =
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let n = self.next_epoch.fetch_add(1, SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut h = std::hash::RandomState::new().hash_one((self.node.0, n, nanos));
        let mut out = String::with_capacity(hub_core::history::EPOCH_LEN);
        for _ in 0..hub_core::history::EPOCH_LEN {
            out.push(ALPHABET[(h % 62) as usize] as char);
            h /= 62;
        }
        out
    }

    fn ttl_ms(&self) -> u64 {
        // At least 1 ms: PEXPIRE 0 would delete at once.
        (self.history.ttl.as_millis() as u64).max(1)
    }

    /// The full key name of a push's idempotency key, "" for none.
    fn idempotency_key(&self, p: &Publication, stream: &StreamName) -> String {
        p.idempotency_key.as_ref().map_or_else(String::new, |k| {
            format!("{}idem:{} {k}", self.prefix(), Names::stream_id(stream))
        })
    }

    /// The arguments every push script takes after its own (`H` in
    /// `scripts.rs`).
    fn history_args(
        &self,
        inv: &mut ScriptInvocation<'_>,
        prefix: &str,
        p: &Publication,
        stream: &StreamName,
    ) {
        let key = self.idempotency_key(p, stream);
        inv.arg(prefix)
            .arg(self.epoch_candidate())
            .arg(self.ttl_ms())
            .arg(self.history.max_messages)
            .arg(wire::conn_field(p.origin.as_ref()))
            .arg(key)
            .arg(self.idempotency_window.as_millis() as u64)
            .arg(p.message.id.as_str());
    }

    /// Runs the push script for `p`; its answer is {delivered, epoch, seq,
    /// duplicate, id}.
    async fn push(&self, p: &Publication) -> Result<PushAnswer, Unavailable> {
        let stream = p.target.stream();
        // Every reader of a stream names it alike (an inbox is `inbox` for
        // both the recipient and the sender's copy), so one prefix serves
        // every append of the message.
        let prefix = wire::frame_prefix(&p.message, &stream.to_string()).ok_or_else(|| {
            tracing::error!("a message frame does not end with its stream");
            Unavailable
        })?;
        let origin = p.origin.as_ref();
        let origin_user = origin.map_or("", |o| o.user.as_str());
        let deadline = self.deadline();
        let answer = match &p.target {
            Target::User(to) => {
                let (from_channel, from_header) = match origin {
                    Some(o) if &o.user != to => (
                        self.names.user_channel(&o.user),
                        wire::header(&p.target, origin, Part::SenderCopies),
                    ),
                    _ => (String::new(), String::new()),
                };
                let push = UserPush {
                    to: to.as_str().to_owned(),
                    from: origin_user.to_owned(),
                    from_connection: if origin.is_some() { "1" } else { "0" },
                    to_channel: self.names.user_channel(to),
                    to_header: wire::header(&p.target, origin, Part::Target),
                    from_channel,
                    from_header,
                    frame_prefix: prefix,
                    origin_conn: wire::conn_field(origin),
                    idempotency_key: self.idempotency_key(p, &stream),
                    message_id: p.message.id.as_str().to_owned(),
                    epoch_candidate: self.epoch_candidate(),
                };
                self.user_pushes.push(deadline, push).await
            }
            Target::Group(g) => {
                let mut inv = self.scripts.push_group.prepare_invoke();
                inv.arg(self.prefix())
                    .arg(deadline)
                    .arg(g.as_str())
                    .arg(origin_user)
                    .arg(self.names.group_channel(g))
                    .arg(wire::header(&p.target, origin, Part::Target));
                self.history_args(&mut inv, &prefix, p, &stream);
                self.run_uncertain(inv).await
            }
            Target::All => {
                let mut inv = self.scripts.broadcast.prepare_invoke();
                inv.arg(self.prefix())
                    .arg(deadline)
                    .arg(self.names.all_channel())
                    .arg(wire::header(&p.target, origin, Part::Target));
                self.history_args(&mut inv, &prefix, p, &stream);
                self.run_uncertain(inv).await
            }
        };
        match answer {
            Some(answer) => answer,
            None => self.settle(p, deadline).await,
        }
    }

    /// Runs a push's script; `None` when its fate is unknown: no answer
    /// within `REPLY_TIMEOUT`, or the link failed once it may have been
    /// sent. A script error is a refusal.
    async fn run_uncertain(
        &self,
        inv: ScriptInvocation<'_>,
    ) -> Option<Result<PushAnswer, Unavailable>> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(REPLY_TIMEOUT, inv.invoke_async(&mut conn)).await {
            Ok(Ok(v)) => Some(Ok(v)),
            Ok(Err(e))
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
            {
                tracing::debug!(error = %e, "push script failed");
                Some(Err(Unavailable))
            }
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// Finds out whether a push whose answer never came took effect, so
    /// that what is answered `unavailable` is never delivered (§11): asks
    /// Redis once its clock is past the push's deadline (after which the
    /// push cannot run any more) whether the message is in its stream's
    /// log (without a log, `--history 0`: whether it left its mark), for
    /// up to `SETTLE_FOR`. When Redis cannot be asked for that long, it is
    /// `unavailable` and unknown (docs/testing.md, "Fault drills").
    async fn settle(&self, p: &Publication, deadline: i64) -> Result<PushAnswer, Unavailable> {
        // The stream the ack reports: there, the script appended last.
        let (stream, kind, of) = match (&p.target, &p.origin) {
            (Target::User(to), Some(o)) if &o.user != to => {
                (StreamName::Inbox(o.user.clone()), "u", to.as_str())
            }
            (Target::User(to), _) => (StreamName::Inbox(to.clone()), "u", to.as_str()),
            (Target::Group(g), _) => (StreamName::Group(g.clone()), "g", g.as_str()),
            (Target::All, _) => (StreamName::All, "a", ""),
        };
        let give_up = tokio::time::Instant::now() + SETTLE_FOR;
        while tokio::time::Instant::now() < give_up {
            let mut inv = self.scripts.settle.prepare_invoke();
            inv.arg(self.prefix())
                .arg(deadline)
                .arg(Names::stream_id(&stream))
                .arg(p.message.id.as_str())
                .arg(kind)
                .arg(of)
                .arg(p.origin.as_ref().map_or("", |o| o.user.as_str()))
                .arg(if p.origin.is_some() { "1" } else { "0" });
            let mut conn = self.conn.clone();
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            let asked =
                tokio::time::timeout(SETTLE_EVERY.min(left), inv.invoke_async(&mut conn)).await;
            match asked {
                Ok(Ok((1, epoch, seq, delivered))) => {
                    let answer: PushAnswer = (delivered, epoch, seq, 0, p.message.id.clone());
                    tracing::info!(id = %p.message.id, "a push whose answer was lost took effect");
                    return Ok(answer);
                }
                Ok(Ok((0, ..))) => return Err(Unavailable),
                Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {}
            }
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep((SETTLE_EVERY / 4).min(left)).await;
        }
        tracing::warn!(id = %p.message.id, "a push's fate is unknown: answered unavailable");
        Err(Unavailable)
    }

    /// Whether `user` is in `group` once a join or leave sent with
    /// `deadline` can no longer run, for up to `SETTLE_FOR`: how one whose
    /// answer never came is told apart from one that did not run.
    async fn settle_membership(
        &self,
        user: &UserId,
        group: &GroupId,
        deadline: i64,
    ) -> Result<bool, Unavailable> {
        let give_up = tokio::time::Instant::now() + SETTLE_FOR;
        while tokio::time::Instant::now() < give_up {
            let mut inv = self.scripts.settle_membership.prepare_invoke();
            inv.arg(self.prefix())
                .arg(deadline)
                .arg(user.as_str())
                .arg(group.as_str());
            let mut conn = self.conn.clone();
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            let asked: Result<Result<i64, _>, _> =
                tokio::time::timeout(SETTLE_EVERY.min(left), inv.invoke_async(&mut conn)).await;
            match asked {
                Ok(Ok(1)) => return Ok(true),
                Ok(Ok(0)) => return Ok(false),
                Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {}
            }
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep((SETTLE_EVERY / 4).min(left)).await;
        }
        tracing::warn!(%user, %group, "a membership change's fate is unknown: answered unavailable");
        Err(Unavailable)
    }

    /// Reads streams in one script (`READ`): per (stream, epoch wanted,
    /// after, limit), where it stands and the entries asked for.
    pub async fn read_streams(&self, asks: &[ReadAsk]) -> Result<Vec<StreamRead>, Unavailable> {
        if asks.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.scripts.read.prepare_invoke();
        inv.arg(self.prefix())
            .arg(self.epoch_candidate())
            .arg(self.ttl_ms())
            .arg(self.history.max_messages);
        for (stream, epoch, after, limit) in asks {
            inv.arg(Names::stream_id(stream))
                .arg(epoch.as_str())
                .arg(*after)
                .arg(*limit);
        }
        type Raw = Vec<(String, u64, u64, Vec<(u64, Vec<u8>, String)>)>;
        let raw: Raw = self.run(inv).await?;
        if raw.len() != asks.len() {
            return Err(Unavailable);
        }
        raw.into_iter()
            .zip(asks)
            .map(|((epoch, top, first, entries), (stream, ..))| {
                // Only a foreign writer could put anything else there.
                let epoch = Epoch::parse(&epoch).ok_or(Unavailable)?;
                let key = stream.key_at(&epoch);
                let entries = entries
                    .into_iter()
                    .map(|(seq, frame, origin)| {
                        let frame = Frame::from_shared(Bytes::from(frame))
                            .ok_or(Unavailable)?
                            .tagged(Tag { stream: key, seq });
                        Ok(ReadEntry {
                            seq,
                            frame,
                            origin: wire::parse_conn(&origin),
                        })
                    })
                    .collect::<Result<Vec<_>, Unavailable>>()?;
                Ok(StreamRead {
                    current: Position { epoch, seq: top },
                    first,
                    entries,
                })
            })
            .collect()
    }
}

/// A push script's answer: delivered (-1: late), epoch, seq, duplicate,
/// id.
pub type PushAnswer = (i64, String, u64, i64, String);

/// One stream to read (`READ` in scripts.rs): the stream, the epoch
/// wanted ("" any, `~E` E or a new numbering from its start), the seq to
/// read after, and how many entries at most.
pub type ReadAsk = (StreamName, String, u64, usize);

/// One stream as `read_streams` found it.
#[derive(Debug)]
pub struct StreamRead {
    pub current: Position,
    /// The oldest seq held (`current.seq + 1` when none is).
    pub first: u64,
    pub entries: Vec<ReadEntry>,
}

#[derive(Debug)]
pub struct ReadEntry {
    pub seq: u64,
    /// Tagged with its stream and seq.
    pub frame: Frame,
    /// The sending connection, which gets an ack, not a copy.
    pub origin: Option<ConnId>,
}

impl ReadEntry {
    fn into_stream_entry(self) -> StreamEntry {
        StreamEntry {
            seq: self.seq,
            frame: self.frame,
        }
    }
}

/// `Streams::since` on what Redis holds: recovered when the epoch
/// matches, the position is not past the last seq and every message after
/// it is still held.
fn recovery(after: &Position, read: StreamRead) -> Recovery {
    let current = read.current;
    let reason = if after.epoch != current.epoch {
        ResetReason::EpochChanged
    } else if after.seq > current.seq {
        ResetReason::Ahead
    } else if after.seq + 1 < read.first {
        ResetReason::Dropped
    } else {
        let replay: Vec<StreamEntry> = read
            .entries
            .into_iter()
            .filter(|e| e.seq > after.seq)
            .map(ReadEntry::into_stream_entry)
            .collect();
        // Contiguous up to the last seq, or something was dropped while
        // the read ran.
        let whole = replay.len() as u64 == current.seq - after.seq
            && replay.last().is_none_or(|e| e.seq == current.seq);
        if whole {
            return Recovery::Recovered { replay, current };
        }
        ResetReason::Dropped
    };
    Recovery::Reset { reason, current }
}

/// Bounds one Redis call by `REPLY_TIMEOUT`; any failure is `Unavailable`.
async fn timed<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, Unavailable> {
    match tokio::time::timeout(REPLY_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "redis command failed");
            Err(Unavailable)
        }
        Err(_) => Err(Unavailable),
    }
}

/// A script's "too late, did nothing" (-1) is an outage too.
fn counted(n: i64) -> Result<usize, Unavailable> {
    usize::try_from(n).map_err(|_| Unavailable)
}

impl Broker for RedisBackplane {
    fn publish(&self, p: Publication) -> BoxFuture<'_, Result<Published, Unavailable>> {
        Box::pin(async move {
            self.check()?;
            let (n, epoch, seq, duplicate, id) = self.push(&p).await?;
            let delivered = counted(n)?;
            let epoch = Epoch::parse(&epoch).ok_or(Unavailable)?;
            // The ack reports the sender's copy for a send to another user,
            // the target's stream otherwise (as the script answered).
            let stream = match (&p.target, &p.origin) {
                (Target::User(to), Some(o)) if &o.user != to => StreamName::Inbox(o.user.clone()),
                (target, _) => target.stream(),
            };
            // A connection's ack must not overtake a message before it. (A
            // repeated idempotency key publishes nothing to wait for.) When
            // its message could not be seen coming back, the ack goes
            // without the position: messages before it may be missing here.
            let mut placed = true;
            if p.origin.is_some() && duplicate != 1 {
                let channel = self.names.stream_channel(&stream);
                placed =
                    subscriber::routed(self, &channel, epoch, seq, subscriber::Untracked::Wait)
                        .await;
            }
            Ok(Published {
                id,
                delivered,
                place: placed.then_some((stream, Position { epoch, seq })),
                duplicate: duplicate == 1,
            })
        })
    }

    /// A join's position, read from Redis: messages up to it may still be
    /// on their way to this node over pub/sub. A barrier published on the
    /// stream's channel after the read comes back behind all of them;
    /// then whatever of them a gap fill holds is waited for as a send's
    /// ack waits for its own message. Nothing to wait for on a channel
    /// this node does not read; at most `subscriber::ROUTED_WAIT` each.
    fn routed<'a>(&'a self, stream: &'a StreamName, at: Position) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let channel = self.names.stream_channel(stream);
            if self.stopped.load(SeqCst) {
                return false;
            }
            if !subscriber::reads(self, &channel) {
                return true;
            }
            let token = self.next_token.fetch_add(1, SeqCst);
            let (done, came) = oneshot::channel();
            let slot = AckSlot::insert(&self.acks, token, (1, Some(done)));
            let barrier = wire::control(&Envelope::Barrier {
                node: self.node.0,
                token,
            });
            let published: Result<i64, _> = self
                .command(redis::cmd("PUBLISH").arg(&channel).arg(barrier))
                .await;
            let barrier_back = published.is_ok()
                && matches!(
                    tokio::time::timeout(subscriber::ROUTED_WAIT, came).await,
                    Ok(Ok(()))
                );
            drop(slot);
            let routed =
                subscriber::routed(self, &channel, at.epoch, at.seq, subscriber::Untracked::Go)
                    .await;
            barrier_back && routed
        })
    }

    fn positions<'a>(
        &'a self,
        streams: &'a [StreamName],
    ) -> BoxFuture<'a, Result<Vec<Position>, Unavailable>> {
        Box::pin(async move {
            self.check()?;
            let asks: Vec<_> = streams
                .iter()
                .map(|s| (s.clone(), String::new(), 0, 0))
                .collect();
            let read = self.read_streams(&asks).await?;
            Ok(read.into_iter().map(|r| r.current).collect())
        })
    }

    fn recover<'a>(
        &'a self,
        from: &'a [(StreamName, Position)],
    ) -> BoxFuture<'a, Result<Vec<Recovery>, Unavailable>> {
        Box::pin(async move {
            self.check()?;
            // A log never holds more than `--history` entries.
            let limit = self.history.max_messages;
            let asks: Vec<_> = from
                .iter()
                .map(|(s, at)| (s.clone(), at.epoch.to_string(), at.seq, limit))
                .collect();
            let read = self.read_streams(&asks).await?;
            Ok(from
                .iter()
                .zip(read)
                .map(|((_, after), read)| recovery(after, read))
                .collect())
        })
    }

    fn history<'a>(
        &'a self,
        stream: &'a StreamName,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, Unavailable>> {
        Box::pin(async move {
            self.check()?;
            let asks = [(stream.clone(), String::new(), since, limit)];
            let read = self.read_streams(&asks).await?.pop().ok_or(Unavailable)?;
            let from = since.saturating_add(1);
            Ok(History {
                current: read.current,
                complete: from >= read.first,
                messages: read
                    .entries
                    .into_iter()
                    .take(limit)
                    .map(ReadEntry::into_stream_entry)
                    .collect(),
            })
        })
    }

    fn kick<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<usize, Unavailable>> {
        Box::pin(async move {
            self.check()?;
            let payload = wire::control(&Envelope::Kick { user: user.clone() });
            let mut inv = self.scripts.kick.prepare_invoke();
            inv.arg(self.prefix())
                .arg(self.deadline())
                .arg(user.as_str())
                .arg(self.names.user_channel(user))
                .arg(payload);
            counted(self.run(inv).await?)
        })
    }

    fn subscribe<'a>(&'a self, topics: &'a [Topic]) -> BoxFuture<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            self.check()?;
            let channels: Vec<String> =
                topics.iter().map(|t| self.names.topic_channel(t)).collect();
            super::subscriber::ensure(self, channels).await
        })
    }

    fn is_up(&self) -> bool {
        self.up()
    }

    fn reconnects(&self) -> u64 {
        self.reconnects.load(SeqCst)
    }

    fn is_shared(&self) -> bool {
        true
    }
}

impl Membership for RedisBackplane {
    fn join<'a>(
        &'a self,
        group: &'a GroupId,
        user: &'a UserId,
        max: usize,
    ) -> BoxFuture<'a, Result<Option<bool>, Unavailable>> {
        Box::pin(async move {
            self.check()?;
            let token = self.next_token.fetch_add(1, SeqCst);
            let (done, acked) = oneshot::channel();
            // Registered before the script runs: an ack can come back
            // before the script's answer does.
            let _slot = AckSlot::insert(&self.acks, token, (usize::MAX, Some(done)));
            let payload = wire::control(&Envelope::Joined {
                user: user.clone(),
                group: group.clone(),
                node: self.node.0,
                token,
            });
            let deadline = self.deadline();
            let mut inv = self.scripts.join.prepare_invoke();
            inv.arg(self.prefix())
                .arg(deadline)
                .arg(user.as_str())
                .arg(group.as_str())
                .arg(max)
                .arg(self.names.user_channel(user))
                .arg(payload);
            let answer: Result<(i64, i64), Unavailable> = self.run(inv).await;
            let outcome = match answer {
                Ok((1, receivers)) => {
                    let waiting = {
                        let mut acks = lock(&self.acks);
                        match acks.get_mut(&token) {
                            Some(entry) => {
                                // Acks that already came in count.
                                let early = usize::MAX - entry.0;
                                entry.0 = (receivers.max(0) as usize).saturating_sub(early);
                                entry.0 > 0
                            }
                            None => false,
                        }
                    };
                    if waiting {
                        // Best effort: a node that never acks (it just
                        // died) must not hold the join for longer.
                        let _ = tokio::time::timeout(JOIN_ACK_TIMEOUT, acked).await;
                    }
                    Ok(Some(true))
                }
                Ok((0, _)) => Ok(Some(false)),
                Ok((-1, _)) => Ok(None),
                // No answer: the script may have run all the same, and a
                // join answered `unavailable` must not hold (§11).
                Err(_) => match self.settle_membership(user, group, deadline).await {
                    Ok(true) => Ok(Some(true)),
                    Ok(false) | Err(_) => Err(Unavailable),
                },
                Ok(_) => Err(Unavailable),
            };
            outcome
        })
    }

    fn leave<'a>(
        &'a self,
        group: &'a GroupId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, Unavailable>> {
        Box::pin(async move {
            self.check()?;
            let payload = wire::control(&Envelope::Left {
                user: user.clone(),
                group: group.clone(),
            });
            let deadline = self.deadline();
            let mut inv = self.scripts.leave.prepare_invoke();
            inv.arg(self.prefix())
                .arg(deadline)
                .arg(user.as_str())
                .arg(group.as_str())
                .arg(self.names.user_channel(user))
                .arg(payload);
            match self.run::<i64>(inv).await {
                Ok(-1) => Err(Unavailable),
                Ok(n) => Ok(n == 1),
                // As for a join: a leave that ran is a leave.
                Err(_) => match self.settle_membership(user, group, deadline).await {
                    Ok(false) => Ok(true),
                    Ok(true) | Err(_) => Err(Unavailable),
                },
            }
        })
    }

    fn groups_of<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Vec<GroupId>, Unavailable>> {
        Box::pin(async move {
            self.check()?;
            let key = self.names.user_groups_key(user);
            self.ids(key, |g| GroupId::new(g).ok()).await
        })
    }

    fn members_of<'a>(
        &'a self,
        group: &'a GroupId,
    ) -> BoxFuture<'a, Result<Vec<UserId>, Unavailable>> {
        Box::pin(async move {
            self.check()?;
            let key = self.names.group_members_key(group);
            self.ids(key, |u| UserId::new(u).ok()).await
        })
    }

    fn is_member<'a>(
        &'a self,
        group: &'a GroupId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, Unavailable>> {
        Box::pin(async move {
            self.check()?;
            let key = self.names.user_groups_key(user);
            self.command(redis::cmd("SISMEMBER").arg(key).arg(group.as_str()))
                .await
        })
    }
}

impl Presence for RedisBackplane {
    fn connections<'a>(
        &'a self,
        users: &'a [UserId],
    ) -> BoxFuture<'a, Result<Vec<usize>, Unavailable>> {
        Box::pin(async move {
            self.check()?;
            if users.is_empty() {
                return Ok(Vec::new());
            }
            let mut inv = self.scripts.connections.prepare_invoke();
            inv.arg(self.prefix());
            for u in users {
                inv.arg(u.as_str());
            }
            let counts: Vec<i64> = self.run(inv).await?;
            Ok(counts.into_iter().map(|c| c.max(0) as usize).collect())
        })
    }

    fn changed<'a>(
        &'a self,
        user: &'a UserId,
        delta: i64,
    ) -> BoxFuture<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            self.check()?;
            let mut inv = self.scripts.presence.prepare_invoke();
            inv.arg(self.prefix())
                .arg(self.node.to_string())
                .arg(user.as_str())
                .arg(delta);
            let _: i64 = self.run(inv).await?;
            Ok(())
        })
    }
}
