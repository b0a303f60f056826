//! `Node`: the hub's public face and the server's only door into hub-core.
//! It applies the rules (`rules.rs`), encodes each message once, routes it
//! through the broker, answers presence questions and hands out
//! `Connection`s.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use protocol::{Body, GroupId, Message, ServerFrame, UserId};

use crate::broker::{Broker, MemoryBroker};
use crate::disconnect::Disconnect;
use crate::frame::Frame;
use crate::hub::{AdmitRefused, Hub};
use crate::publication::{Origin, Publication, Target};
use crate::queue::{self, ConnId, QueueReceiver};
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
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            max_user_connections: NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            max_user_groups: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            rules: Rules::default(),
        }
    }
}

/// Cheap to clone: all clones share one hub.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    hub: Hub,
    broker: Box<dyn Broker>,
    config: NodeConfig,
    next_conn: AtomicU64,
    next_message: AtomicU64,
    /// Makes message and connection ids differ between server runs.
    id_prefix: String,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// A message's server id and how many connections it was queued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub delivered: usize,
}

/// What the API and the welcome frame say about one user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPresence {
    /// Open connections, not counting any that are closing.
    pub connections: usize,
    /// Groups the user belongs to, sorted.
    pub groups: Vec<GroupId>,
}

/// A place for one connection of a user, taken under the per-user cap
/// before the upgrade and spent by `Node::connect`. Dropping it unspent (the
/// upgrade failed) gives the place back.
#[derive(Debug)]
pub struct Admission {
    node: Node,
    user: UserId,
    spent: bool,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.spent {
            self.node.inner.hub.release(&self.user);
        }
    }
}

impl Node {
    pub fn new(config: NodeConfig) -> Self {
        Self::with_broker(config, Box::new(MemoryBroker))
    }

    pub fn with_broker(config: NodeConfig, broker: Box<dyn Broker>) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            inner: Arc::new(NodeInner {
                hub: Hub::default(),
                broker,
                config,
                next_conn: AtomicU64::new(1),
                next_message: AtomicU64::new(1),
                id_prefix: format!("{:x}", nanos & 0xffff_ffff_ffff),
            }),
        }
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

    /// Takes a place for one more connection of the session's user, or
    /// refuses when the user holds `max_user_connections` already, or when
    /// the token's groups would put the user in more than
    /// `max_user_groups`.
    pub fn admit(&self, session: &Session) -> Result<Admission, Refusal> {
        let config = &self.inner.config;
        let (max_conns, max_groups) = (
            config.max_user_connections.get(),
            config.max_user_groups.get(),
        );
        let user = &session.user;
        match self
            .inner
            .hub
            .admit(user, &session.token_groups, max_conns, max_groups)
        {
            Ok(()) => Ok(Admission {
                node: self.clone(),
                user: user.clone(),
                spent: false,
            }),
            Err(AdmitRefused::Connections) => Err(Refusal::TooManyConnections { max: max_conns }),
            Err(AdmitRefused::Groups) => Err(Refusal::TooManyGroups { max: max_groups }),
        }
    }

    /// Whether a token may carry this many groups (`max_user_groups`).
    pub fn check_token_groups(&self, groups: &[GroupId]) -> Result<(), Refusal> {
        let max = self.inner.config.max_user_groups.get();
        if groups.len() > max {
            return Err(Refusal::TooManyGroups { max });
        }
        Ok(())
    }

    /// Registers the connection `admission` was taken for, first joining the
    /// session's token groups (`admit` checked that they fit under the group
    /// cap). Returns the connection and the user's groups, sorted, for the
    /// welcome frame.
    pub fn connect(
        &self,
        mut admission: Admission,
        session: &Session,
    ) -> (Connection, Vec<GroupId>) {
        admission.spent = true;
        let user = session.user.clone();
        let max_groups = self.inner.config.max_user_groups.get();
        for g in &session.token_groups {
            // Only a join racing this connect can have taken the room
            // `admit` saw; the group cap wins then.
            let _ = self.inner.hub.join(g, &user, max_groups);
        }
        let id = ConnId(self.inner.next_conn.fetch_add(1, Relaxed));
        let (sender, rx) = queue::channel(id, self.inner.config.queue_capacity);
        let groups = self.inner.hub.register(&user, sender);
        let conn = Connection {
            id,
            user,
            rx,
            node: self.clone(),
            registered: true,
        };
        (conn, groups)
    }

    /// The opaque id of a connection as the welcome frame shows it.
    pub fn conn_label(&self, id: ConnId) -> String {
        format!("{}-{}", self.inner.id_prefix, id.0)
    }

    fn next_message_id(&self) -> String {
        let n = self.inner.next_message.fetch_add(1, Relaxed);
        format!("{}-{n}", self.inner.id_prefix)
    }

    /// `join` from a connection: checked against the rules and the group cap.
    pub fn join_as(&self, session: &Session, group: &GroupId) -> Result<bool, Refusal> {
        let is_member = self.is_member(group, &session.user);
        self.inner
            .config
            .rules
            .may_join(session, group, is_member)?;
        self.join(group, &session.user)
    }

    /// Adds `user` to `group` (the API's `PUT …/members/{user}`): checked
    /// against the group cap only. `Ok(true)` when the membership is new.
    pub fn join(&self, group: &GroupId, user: &UserId) -> Result<bool, Refusal> {
        let max = self.inner.config.max_user_groups.get();
        self.inner
            .hub
            .join(group, user, max)
            .map_err(|_| Refusal::TooManyGroups { max })
    }

    pub fn leave(&self, group: &GroupId, user: &UserId) -> bool {
        self.inner.hub.leave(group, user)
    }

    pub fn is_member(&self, group: &GroupId, user: &UserId) -> bool {
        self.inner.hub.is_member(group, user)
    }

    /// Open connections and groups of `user`.
    pub fn user_presence(&self, user: &UserId) -> UserPresence {
        let (connections, groups) = self.inner.hub.user_info(user);
        UserPresence {
            connections,
            groups,
        }
    }

    /// Members of `group`, sorted, with their open connections.
    pub fn group_members(&self, group: &GroupId) -> Vec<(UserId, usize)> {
        self.inner.hub.group_members(group)
    }

    /// `send` from a connection: to every connection of `to`, with copies to
    /// the sender's other connections.
    pub fn send(&self, from: &Connection, to: UserId, body: Body) -> Delivery {
        self.route(Target::User(to), Some(from.origin()), body)
    }

    /// `publish` from a connection: only a member may.
    pub fn publish(
        &self,
        from: &Connection,
        group: GroupId,
        body: Body,
    ) -> Result<Delivery, Refusal> {
        let is_member = self.is_member(&group, &from.user);
        self.inner.config.rules.may_publish(&group, is_member)?;
        Ok(self.route(Target::Group(group), Some(from.origin()), body))
    }

    /// A push from the server API (no `from`).
    pub fn push(&self, target: Target, body: Body) -> Delivery {
        self.route(target, None, body)
    }

    fn route(&self, target: Target, origin: Option<Origin>, body: Body) -> Delivery {
        let id = self.next_message_id();
        let (to, group) = match &target {
            Target::User(u) => (Some(u.clone()), None),
            Target::Group(g) => (None, Some(g.clone())),
            Target::All => (None, None),
        };
        let message = ServerFrame::Message(Message {
            id: id.clone(),
            from: origin.as_ref().map(|o| o.user.clone()),
            to,
            group,
            body,
            ts: now_millis(),
        });
        // The one encode of this message; every recipient shares these bytes.
        let frame = Frame::encode(&message);
        let publication = Publication {
            target,
            origin,
            frame,
        };
        let delivered = self.inner.broker.publish(&publication, &self.inner.hub);
        Delivery { id, delivered }
    }

    /// Closes every connection of `user` with `reason`; returns how many.
    pub fn disconnect_user(&self, user: &UserId, reason: Disconnect) -> usize {
        self.inner.hub.close_user(user, reason)
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
}

impl Connection {
    fn origin(&self) -> Origin {
        Origin {
            user: self.user.clone(),
            conn: self.id,
        }
    }

    /// The next queued frame. Cancel-safe.
    pub async fn recv(&mut self) -> Frame {
        std::future::poll_fn(|cx| self.rx.poll_recv(cx)).await
    }

    /// The next queued frame, for a task that polls several things at once.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Frame> {
        self.rx.poll_recv(cx)
    }

    /// A queued frame if there is one, without waiting.
    pub fn try_recv(&mut self) -> Option<Frame> {
        self.rx.try_recv()
    }

    /// Resolves when something asked this connection to close.
    pub async fn closed(&mut self) -> Disconnect {
        std::future::poll_fn(|cx| self.rx.poll_closed(cx)).await
    }

    /// Ready once something asked this connection to close. Polled by the
    /// same task as `poll_recv`: the two share one waker slot.
    pub fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<Disconnect> {
        self.rx.poll_closed(cx)
    }

    pub fn close_reason(&self) -> Option<Disconnect> {
        self.rx.reason()
    }

    /// Asks this connection to close (first reason wins).
    pub fn close(&self, reason: Disconnect) -> bool {
        self.rx.close(reason)
    }

    /// Takes the connection out of presence and routing now, ahead of its
    /// close handshake; frames already queued stay readable.
    pub fn unregister(&mut self) {
        if std::mem::take(&mut self.registered) {
            self.node.inner.hub.unregister(&self.user, self.id);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.unregister();
    }
}
