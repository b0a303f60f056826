//! `Node`: the hub's public face and the server's only door into hub-core.
//! It applies the rules (`rules.rs`), encodes each message once, routes it
//! through the broker, answers presence questions from the presence seam,
//! and hands out `Connection`s. Its operations are async because in a
//! cluster they reach a shared store (`backplane.rs`); on one process they
//! complete at once.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Context;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::{Body, ErrorCode, GroupId, Message, Placement, Positions, StreamPosition, UserId};

use crate::backplane::{Broker, Local, Membership, Presence, Topic, Unavailable};
use crate::disconnect::Disconnect;
use crate::frame::Frame;
use crate::history::{Epoch, History, HistoryConfig, Position, Recovery, StreamName};
use crate::hub::Hub;
use crate::publication::{Origin, Publication, Target};
use crate::queue::{self, ConnId, NodeId, QueueReceiver};
use crate::rules::{Refusal, Rules};
use crate::session::Session;
use crate::stats::{Stats, StatsSnapshot};

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Frames each connection's outbound queue holds before the connection
    /// is closed as a slow consumer. Default 1024 (`--queue`).
    pub queue_capacity: usize,
    /// Connections one user may hold at once. Default 64
    /// (`--max-user-connections`).
    pub max_user_connections: NonZeroUsize,
    /// Groups one user may belong to. Default 1024 (`--max-user-groups`).
    pub max_user_groups: NonZeroUsize,
    /// Who may join what. Default: only the token's groups.
    pub rules: Rules,
    /// `--history` and `--history-ttl` (one process; a cluster's broker
    /// takes its own).
    pub history: HistoryConfig,
    /// `--idempotency-window`. Default 300 s.
    pub idempotency_window: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            max_user_connections: NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            max_user_groups: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            rules: Rules::default(),
            history: HistoryConfig::default(),
            idempotency_window: Duration::from_secs(300),
        }
    }
}

/// Cheap to clone: all clones share one hub.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    membership: Arc<dyn Membership>,
    presence: Arc<dyn Presence>,
    config: NodeConfig,
    id: NodeId,
    next_conn: AtomicU64,
    next_message: AtomicU64,
}

/// The shared implementations of the seams, for a node of a cluster.
pub struct Backplane {
    pub broker: Arc<dyn Broker>,
    pub membership: Arc<dyn Membership>,
    pub presence: Arc<dyn Presence>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .field("config", &self.inner.config)
            .finish()
    }
}

/// A message's server id, how many connections it was queued to, and
/// where it went in the stream the ack or answer reports (§3, §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub delivered: usize,
    pub place: Option<Placement>,
    /// An idempotency key repeated an earlier push: nothing was delivered.
    pub duplicate: bool,
}

/// The answer to a `resume` (§10): the frames to send before the ack, in
/// order, and per named stream whether it was recovered. The connection
/// must take it (`Connection::cover_replay`) before it is released, so
/// what it queued meanwhile is delivered minus what the replay holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    pub replay: Vec<Frame>,
    pub recovered: BTreeMap<String, bool>,
    /// Per recovered stream (by key at its epoch), the last seq replayed.
    covers: Vec<(u64, u64)>,
}

/// The wire form of a position.
pub fn placement(stream: &StreamName, at: Position) -> Placement {
    Placement {
        stream: stream.to_string(),
        epoch: at.epoch.as_str().to_owned(),
        seq: at.seq,
    }
}

/// What the API and the welcome frame say about one user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPresence {
    /// Open connections, not counting any that are closing.
    pub connections: usize,
    /// Groups the user belongs to, sorted.
    pub groups: Vec<GroupId>,
}

/// Why a node could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeError {
    /// The rules or a cap said no.
    Refused(Refusal),
    /// The shared state of the cluster cannot be reached.
    Unavailable,
}

impl From<Refusal> for NodeError {
    fn from(r: Refusal) -> Self {
        NodeError::Refused(r)
    }
}

impl From<Unavailable> for NodeError {
    fn from(_: Unavailable) -> Self {
        NodeError::Unavailable
    }
}

impl NodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            NodeError::Refused(r) => r.code(),
            NodeError::Unavailable => ErrorCode::Unavailable,
        }
    }

    pub fn message(&self) -> String {
        match self {
            NodeError::Refused(r) => r.message(),
            NodeError::Unavailable => Unavailable.to_string(),
        }
    }
}

/// A place for one connection of a user, taken under the caps before the
/// upgrade and spent by `Node::connect`. It carries the user's groups as
/// they were when it was taken, for the welcome frame. Dropping it unspent
/// (the upgrade failed) gives the place back.
#[derive(Debug)]
pub struct Admission {
    node: Node,
    user: UserId,
    groups: Vec<GroupId>,
    spent: bool,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.spent {
            let node = &self.node.inner;
            node.hub.release(&self.user);
            // In a cluster the memberships loaded for this admission are
            // mirrored only for a user connected here.
            if node.broker.is_shared() {
                node.hub.forget_if_idle(&self.user);
            }
        }
    }
}

impl Node {
    /// A node of one process: everything in memory.
    pub fn new(config: NodeConfig) -> Self {
        let (history, window) = (config.history, config.idempotency_window);
        Self::build(config, NodeId::random(), |hub| {
            let local = Arc::new(Local::new(hub, history, window));
            Backplane {
                broker: local.clone(),
                membership: local.clone(),
                presence: local,
            }
        })
    }

    /// A node of a cluster: `backplane` makes the shared seams, given the
    /// hub they deliver what arrives from other nodes to.
    pub fn with_backplane(
        config: NodeConfig,
        id: NodeId,
        backplane: impl FnOnce(Arc<Hub>) -> Backplane,
    ) -> Self {
        Self::build(config, id, backplane)
    }

    fn build(
        config: NodeConfig,
        id: NodeId,
        backplane: impl FnOnce(Arc<Hub>) -> Backplane,
    ) -> Self {
        let hub = Arc::new(Hub::default());
        let Backplane {
            broker,
            membership,
            presence,
        } = backplane(hub.clone());
        Self {
            inner: Arc::new(NodeInner {
                hub,
                broker,
                membership,
                presence,
                config,
                id,
                next_conn: AtomicU64::new(1),
                next_message: AtomicU64::new(1),
            }),
        }
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.hub.stats
    }

    pub fn stats_snapshot(&self) -> StatsSnapshot {
        self.inner.hub.stats.snapshot()
    }

    /// Whether the broker can serve now.
    pub fn broker_up(&self) -> bool {
        self.inner.broker.is_up()
    }

    /// How many times the broker came back after an outage.
    pub fn broker_reconnects(&self) -> u64 {
        self.inner.broker.reconnects()
    }

    /// Runs the hub's group fan-outs on the calling thread for as long as
    /// the process lives (fanout.rs); until a thread calls this, they are
    /// done inline by each publisher. A cluster node does not need it: its
    /// deliveries come from the broker, one channel at a time.
    pub fn run_fanout(&self, wake: impl Fn(Vec<std::task::Waker>)) -> ! {
        self.inner.hub.run_fanout(wake)
    }

    /// Runs the fan-outs queued so far on the calling thread (shutdown:
    /// before the connections drain).
    pub fn run_fanout_pending(&self) {
        self.inner.hub.run_fanout_pending();
    }

    /// Whether a thread runs the group fan-outs (`run_fanout` has begun).
    pub fn has_fanout_thread(&self) -> bool {
        self.inner.hub.has_fanout_thread()
    }

    /// Whether this node is part of a cluster (membership and presence
    /// live in a shared store).
    pub fn is_clustered(&self) -> bool {
        self.inner.broker.is_shared()
    }

    /// Whether a token may carry this many groups (`max_user_groups`).
    pub fn check_token_groups(&self, groups: &[GroupId]) -> Result<(), Refusal> {
        let max = self.inner.config.max_user_groups.get();
        if groups.len() > max {
            return Err(Refusal::TooManyGroups { max });
        }
        Ok(())
    }

    /// Takes a place for one more connection of the session's user: joins
    /// the token's groups and loads the user's groups for the welcome. It
    /// refuses when the user holds `max_user_connections` on the whole hub,
    /// or when the token's groups would put the user in more than
    /// `max_user_groups`.
    pub async fn admit(&self, session: &Session) -> Result<Admission, NodeError> {
        let inner = &self.inner;
        let max_conns = inner.config.max_user_connections.get();
        let max_groups = inner.config.max_user_groups.get();
        let user = &session.user;
        // The user's channel first: a join or leave made elsewhere from now
        // on is heard, so the groups read next cannot go stale unseen.
        inner
            .broker
            .subscribe(std::slice::from_ref(&Topic::User(user.clone())))
            .await?;
        let mut groups = inner.membership.groups_of(user).await?;
        let new: BTreeSet<&GroupId> = session
            .token_groups
            .iter()
            .filter(|g| !groups.contains(g))
            .collect();
        if groups.len() + new.len() > max_groups {
            return Err(Refusal::TooManyGroups { max: max_groups }.into());
        }
        // Connections elsewhere in the cluster, then a place here under
        // what is left: exact on one node, and across nodes once presence
        // has caught up.
        let everywhere = inner
            .presence
            .connections(std::slice::from_ref(user))
            .await?;
        // Presence counts registered connections only, so only those are
        // taken off; reservations here stay counted by `hub.admit`.
        let here = inner.hub.user_info(user).0;
        let elsewhere = everywhere
            .first()
            .copied()
            .unwrap_or(0)
            .saturating_sub(here);
        if !inner.hub.admit(user, max_conns.saturating_sub(elsewhere)) {
            return Err(Refusal::TooManyConnections { max: max_conns }.into());
        }
        let mut admission = Admission {
            node: self.clone(),
            user: user.clone(),
            groups: Vec::new(),
            spent: false,
        };
        for g in new {
            // Only a join racing this admission can have taken the room
            // checked above; the group cap wins then.
            // Joined now or by a concurrent admission: a member either way.
            if inner.membership.join(g, user, max_groups).await?.is_some() {
                groups.push(g.clone());
            }
        }
        groups.sort();
        let topics: Vec<Topic> = groups.iter().cloned().map(Topic::Group).collect();
        inner.broker.subscribe(&topics).await?;
        admission.groups = groups;
        Ok(admission)
    }

    /// Registers the connection `admission` was taken for. Returns the
    /// connection, the user's groups, sorted, and the position of every
    /// stream it reads, for the welcome frame. Positions are read after the
    /// connection is registered, so every message after them reaches it.
    pub async fn connect(
        &self,
        mut admission: Admission,
        session: &Session,
    ) -> (Connection, Vec<GroupId>, Positions) {
        admission.spent = true;
        let inner = &self.inner;
        let user = session.user.clone();
        let groups = std::mem::take(&mut admission.groups);
        if self.is_clustered() {
            // The hub mirrors the memberships of users connected here, so
            // fan-out to them stays local.
            inner.hub.set_groups(&user, &groups);
        }
        let id = ConnId {
            node: inner.id,
            n: inner.next_conn.fetch_add(1, Relaxed),
        };
        let (sender, rx) = queue::channel(id, inner.config.queue_capacity);
        inner.hub.register(&user, sender);
        // Best effort: a shared presence is also rewritten from the hub
        // periodically, which repairs a change that did not get through.
        let _ = inner.presence.changed(&user, 1).await;
        let mut conn = Connection {
            id,
            user,
            rx,
            node: self.clone(),
            registered: true,
            held: false,
            replayed: Vec::new(),
        };
        let (streams, at) = self.welcome_positions(&conn.user, &groups).await;
        // A message the welcome's positions already count may still be on
        // its way here (queued between the registration and the read; in a
        // cluster, still on pub/sub when Redis answered): the client would
        // see it twice, so it is skipped like a replayed one.
        for (key, seq) in at {
            conn.cover(key, seq);
        }
        (conn, groups, streams)
    }

    /// The streams a connection of `user` in `groups` reads, with their
    /// positions. Best effort: a cluster whose store is gone answers none,
    /// and the client resumes from what it had.
    /// Also each stream's key and seq.
    async fn welcome_positions(
        &self,
        user: &UserId,
        groups: &[GroupId],
    ) -> (Positions, Vec<(u64, u64)>) {
        let mut names = vec![StreamName::Inbox(user.clone()), StreamName::All];
        names.extend(groups.iter().cloned().map(StreamName::Group));
        let Ok(at) = self.inner.broker.positions(&names).await else {
            return (Positions::new(), Vec::new());
        };
        let keys = names
            .iter()
            .zip(&at)
            .map(|(n, at)| (n.key_at(&at.epoch), at.seq))
            .collect();
        let positions = names
            .iter()
            .zip(at)
            .map(|(name, at)| {
                let p = StreamPosition {
                    epoch: at.epoch.as_str().to_owned(),
                    seq: at.seq,
                };
                (name.to_string(), p)
            })
            .collect();
        (positions, keys)
    }

    /// A `resume` (§10) for `conn`: replays what it missed of each named
    /// stream it may read, in one pass over the broker, and makes the
    /// connection skip queued frames the replay already covers.
    /// Works out a `resume` for `user`'s held connection. It owns nothing
    /// of the connection, so the connection goes on watching its close
    /// signal and heartbeat while this waits on a cluster's Redis.
    pub async fn resume(&self, user: &UserId, positions: &Positions) -> Result<Resumed, NodeError> {
        let inner = &self.inner;
        let mut recovered = BTreeMap::new();
        let mut asked = Vec::new();
        let mut names = Vec::new();
        // One look-up of the user's groups, however many are named: a
        // resume is one pass over the shared store, not a trip per stream.
        let groups: BTreeSet<GroupId> = if positions.keys().any(|k| k.starts_with("group:")) {
            inner
                .membership
                .groups_of(user)
                .await?
                .into_iter()
                .collect()
        } else {
            BTreeSet::new()
        };
        for (wire, p) in positions {
            recovered.insert(wire.clone(), false);
            let Ok(name) = StreamName::parse(wire, user) else {
                continue;
            };
            if let StreamName::Group(g) = &name {
                if !groups.contains(g) {
                    continue;
                }
            }
            // An epoch this hub never hands out matches nothing: an epoch
            // of the stream's own that cannot be it.
            let Some(epoch) = Epoch::parse(&p.epoch) else {
                continue;
            };
            asked.push((name.clone(), Position { epoch, seq: p.seq }));
            names.push(wire.clone());
        }
        let answers = inner.broker.recover(&asked).await?;
        let mut replay = Vec::new();
        let mut covers = Vec::new();
        for ((wire, (name, _)), answer) in names.iter().zip(&asked).zip(answers) {
            let ok = answer.is_recovered();
            recovered.insert(wire.clone(), ok);
            if let Recovery::Recovered { replay: r, current } = answer {
                covers.push((name.key_at(&current.epoch), current.seq));
                replay.extend(r.into_iter().map(|e| e.frame));
            }
        }
        let stats = &inner.hub.stats;
        let ok = recovered.values().filter(|v| **v).count() as u64;
        stats.recovered.fetch_add(ok, Relaxed);
        stats.reset.fetch_add(recovered.len() as u64 - ok, Relaxed);
        Ok(Resumed {
            replay,
            recovered,
            covers,
        })
    }

    /// The history API (§6): what a reader of `stream` would have received
    /// after `since`, at most `limit` messages.
    pub async fn history(
        &self,
        stream: &StreamName,
        since: u64,
        limit: usize,
    ) -> Result<History, NodeError> {
        Ok(self.inner.broker.history(stream, since, limit).await?)
    }

    /// Messages held in memory for history (0 in a cluster).
    pub fn held_messages(&self) -> usize {
        self.inner.broker.held_messages()
    }

    /// Hands back the memory of expired history; the server calls it
    /// every second.
    pub fn expire_history(&self) {
        self.inner.broker.expire();
    }

    /// The opaque id of a connection as the welcome frame shows it.
    pub fn conn_label(&self, id: ConnId) -> String {
        id.to_string()
    }

    fn next_message_id(&self) -> String {
        let n = self.inner.next_message.fetch_add(1, Relaxed);
        format!("{}-{n}", self.inner.id)
    }

    /// `join` from a connection: checked against the rules and the group
    /// cap. Answers the group stream's position, for the ack; `None` when
    /// what came before it could not be seen routed to this node's
    /// connections (the ack then goes without one).
    pub async fn join_as(
        &self,
        session: &Session,
        group: &GroupId,
    ) -> Result<Option<Placement>, NodeError> {
        let is_member = self
            .inner
            .membership
            .is_member(group, &session.user)
            .await?;
        self.inner
            .config
            .rules
            .may_join(session, group, is_member)?;
        self.join(group, &session.user).await?;
        let stream = StreamName::Group(group.clone());
        let at = self
            .inner
            .broker
            .positions(std::slice::from_ref(&stream))
            .await?;
        let at = at.first().copied().ok_or(NodeError::Unavailable)?;
        // The ack will carry `at`: a member joining again must have every
        // message up to it queued first, fan-outs still waiting included,
        // and in a cluster those still on their way to this node.
        let routed = self.inner.broker.routed(&stream, at).await;
        self.inner.hub.drain_fanout_of(group);
        Ok(routed.then(|| placement(&stream, at)))
    }

    /// Adds `user` to `group` (the API's `PUT …/members/{user}`): checked
    /// against the group cap only. `Ok(true)` when the membership is new.
    pub async fn join(&self, group: &GroupId, user: &UserId) -> Result<bool, NodeError> {
        let max = self.inner.config.max_user_groups.get();
        match self.inner.membership.join(group, user, max).await? {
            Some(new) => Ok(new),
            None => Err(Refusal::TooManyGroups { max }.into()),
        }
    }

    pub async fn leave(&self, group: &GroupId, user: &UserId) -> Result<bool, NodeError> {
        Ok(self.inner.membership.leave(group, user).await?)
    }

    pub async fn is_member(&self, group: &GroupId, user: &UserId) -> Result<bool, NodeError> {
        Ok(self.inner.membership.is_member(group, user).await?)
    }

    /// Open connections and groups of `user`, on the whole hub.
    pub async fn user_presence(&self, user: &UserId) -> Result<UserPresence, NodeError> {
        let inner = &self.inner;
        let connections = inner
            .presence
            .connections(std::slice::from_ref(user))
            .await?;
        let mut groups = inner.membership.groups_of(user).await?;
        groups.sort();
        Ok(UserPresence {
            connections: connections.first().copied().unwrap_or(0),
            groups,
        })
    }

    /// Members of `group`, sorted, with their open connections.
    pub async fn group_members(&self, group: &GroupId) -> Result<Vec<(UserId, usize)>, NodeError> {
        let inner = &self.inner;
        let mut members = inner.membership.members_of(group).await?;
        members.sort();
        let counts = inner.presence.connections(&members).await?;
        Ok(members.into_iter().zip(counts).collect())
    }

    /// `send` from a connection: to every connection of `to`, with copies to
    /// the sender's other connections.
    pub async fn send(&self, from: Origin, to: UserId, body: Body) -> Result<Delivery, NodeError> {
        self.route(Target::User(to), Some(from), body, None).await
    }

    /// `publish` from a connection: only a member may.
    pub async fn publish(
        &self,
        from: Origin,
        group: GroupId,
        body: Body,
    ) -> Result<Delivery, NodeError> {
        let is_member = self.inner.membership.is_member(&group, &from.user).await?;
        self.inner.config.rules.may_publish(&group, is_member)?;
        self.route(Target::Group(group), Some(from), body, None)
            .await
    }

    /// A push from the server API (no `from`), with its `Idempotency-Key`
    /// if it had one (checked by the caller).
    pub async fn push(
        &self,
        target: Target,
        body: Body,
        idempotency_key: Option<String>,
    ) -> Result<Delivery, NodeError> {
        self.route(target, None, body, idempotency_key).await
    }

    async fn route(
        &self,
        target: Target,
        origin: Option<Origin>,
        body: Body,
        idempotency_key: Option<String>,
    ) -> Result<Delivery, NodeError> {
        let (to, group) = match &target {
            Target::User(u) => (Some(u.clone()), None),
            Target::Group(g) => (None, Some(g.clone())),
            Target::All => (None, None),
        };
        // Encoded by the broker once per stream it enters, when its place
        // there is known; every reader of that stream shares those bytes.
        let message = Message {
            id: self.next_message_id(),
            from: origin.as_ref().map(|o| o.user.clone()),
            to,
            group,
            body,
            ts: now_millis(),
            stream: None,
            epoch: None,
            seq: None,
        };
        let publication = Publication {
            target,
            origin,
            message,
            idempotency_key,
        };
        let published = self.inner.broker.publish(publication).await?;
        Ok(Delivery {
            id: published.id,
            delivered: published.delivered,
            place: published.place.map(|(s, at)| placement(&s, at)),
            duplicate: published.duplicate,
        })
    }

    /// Closes every connection of `user`, on every node, with 1008
    /// (kicked); returns how many.
    pub async fn kick(&self, user: &UserId) -> Result<usize, NodeError> {
        Ok(self.inner.broker.kick(user).await?)
    }

    /// Closes every connection of this node with `reason`.
    pub fn disconnect_all(&self, reason: Disconnect) -> usize {
        self.inner.hub.close_all(reason)
    }
}

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One registered connection, owned by the task that serves its socket.
/// Dropping it unregisters the connection; the user's memberships stay.
#[derive(Debug)]
pub struct Connection {
    pub id: ConnId,
    pub user: UserId,
    rx: QueueReceiver,
    node: Node,
    registered: bool,
    /// Delivery held until the `resume` frame (§10): frames queue up but
    /// are not handed out.
    held: bool,
    /// Per stream (by key), the last seq the client has already: the
    /// welcome's position, or a resume's replay. Queued frames of that
    /// stream up to it are skipped; the entry goes with the first frame
    /// past it, since a stream's frames are queued in seq order.
    replayed: Vec<(u64, u64)>,
}

impl Connection {
    /// Who sends from this connection: what a frame handed to the node
    /// carries, so the work can go on while the connection itself keeps
    /// delivering.
    pub fn origin(&self) -> Origin {
        Origin {
            user: self.user.clone(),
            conn: self.id,
        }
    }

    /// A queued frame if there is one, without waiting; none while
    /// delivery is held (the task that releases it polls again on its
    /// own). A task waits for the next one with `watch`.
    pub fn try_recv(&mut self) -> Option<Frame> {
        if self.held {
            return None;
        }
        loop {
            let frame = self.rx.try_recv()?;
            if !self.already_replayed(&frame) {
                return Some(frame);
            }
        }
    }

    /// `try_recv` for several frames under one lock: queued frames into
    /// `out` until it is full or they add up to `bytes` (the last may pass
    /// it). Returns how many, and whether the queue is empty now (so the
    /// task, registered by `watch`, need not look again this turn).
    pub fn try_recv_into(&mut self, out: &mut [Option<Frame>], bytes: usize) -> (usize, bool) {
        if self.held {
            return (0, true);
        }
        loop {
            let (n, emptied) = self.rx.take_into(out, bytes);
            let mut kept = 0;
            for i in 0..n {
                if let Some(frame) = out[i].take() {
                    if !self.already_replayed(&frame) {
                        out[kept] = Some(frame);
                        kept += 1;
                    }
                }
            }
            // Only frames a replay had already: look again.
            if kept > 0 || emptied {
                return (kept, emptied);
            }
        }
    }

    /// Makes queued frames of stream `key` up to `seq` count as had.
    /// Makes what `resumed` replays count as had: queued frames of those
    /// streams up to it are skipped once the connection is released.
    pub fn cover_replay(&mut self, resumed: &Resumed) {
        for &(key, seq) in &resumed.covers {
            self.cover(key, seq);
        }
    }

    fn cover(&mut self, key: u64, seq: u64) {
        if seq == 0 {
            return;
        }
        match self.replayed.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = entry.1.max(seq),
            None => self.replayed.push((key, seq)),
        }
    }

    fn already_replayed(&mut self, frame: &Frame) -> bool {
        if self.replayed.is_empty() {
            return false;
        }
        let Some(tag) = frame.tag() else {
            return false;
        };
        let Some(i) = self.replayed.iter().position(|(k, _)| *k == tag.stream) else {
            return false;
        };
        if tag.seq <= self.replayed[i].1 {
            return true;
        }
        self.replayed.swap_remove(i);
        false
    }

    /// Queues a reply behind the frames already queued to this connection.
    /// For an ack that carries a stream position: written after every
    /// message of that stream with a smaller seq that routing queued here,
    /// so a client never holds a position past a message it has not seen.
    /// False when the connection is closing (or just overflowed).
    pub fn queue_own(&self, frame: &Frame) -> bool {
        self.rx.push_own(frame)
    }

    /// Holds delivery until `release` (a `resume=1` connect).
    pub fn hold(&mut self) {
        self.held = true;
    }

    pub fn release(&mut self) {
        self.held = false;
    }

    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Resolves when something asked this connection to close.
    pub async fn closed(&mut self) -> Disconnect {
        std::future::poll_fn(|cx| self.rx.poll_closed(cx)).await
    }

    /// Registers the polling task to be woken by the next queued frame and
    /// by a close, with one registration for both (they share one waker
    /// slot). A task that polls several things calls it first in each
    /// turn; after it, `close_reason` and `try_recv` are plain looks that
    /// miss nothing, since whatever comes after a look wakes the task. One
    /// registration per turn instead of one per empty look: a writer in a
    /// large fan-out is woken once per message, so this is paid per
    /// delivery.
    pub fn watch(&mut self, cx: &mut Context<'_>) {
        self.rx.watch(cx);
    }

    pub fn close_reason(&self) -> Option<Disconnect> {
        self.rx.reason()
    }

    /// Asks this connection to close (first reason wins).
    pub fn close(&self, reason: Disconnect) -> bool {
        self.rx.close(reason)
    }

    /// Takes the connection out of routing and presence now, ahead of its
    /// close handshake; frames already queued stay readable.
    pub async fn unregister(&mut self) {
        if self.unregister_here() {
            let node = &self.node.inner;
            let _ = node.presence.changed(&self.user, -1).await;
        }
    }

    /// The local half of `unregister`; true the first time.
    fn unregister_here(&mut self) -> bool {
        if !std::mem::take(&mut self.registered) {
            return false;
        }
        let node = &self.node.inner;
        node.hub.unregister(&self.user, self.id);
        if node.broker.is_shared() {
            node.hub.forget_if_idle(&self.user);
        }
        true
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // A shared presence not told here is repaired by its periodic
        // rewrite from the hub.
        self.unregister_here();
    }
}
