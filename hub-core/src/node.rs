//! `Node`: the hub's public face, what the server calls. It encodes each
//! message once, routes it through the broker, and hands out `Connection`s.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use protocol::{Body, GroupId, Message, ServerFrame, UserId};

use crate::broker::{Broker, MemoryBroker, Origin, Publication, Target};
use crate::disconnect::Disconnect;
use crate::frame::Frame;
use crate::hub::Hub;
use crate::queue::{self, ConnId, ConnSignal, QueueReceiver};
use crate::stats::StatsSnapshot;

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Frames each connection's outbound queue holds before the connection
    /// is closed as a slow consumer. Default 1024 (`--queue`).
    pub queue_capacity: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
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

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn stats(&self) -> &crate::stats::Stats {
        &self.inner.hub.stats
    }

    pub fn stats_snapshot(&self) -> StatsSnapshot {
        self.inner.hub.stats.snapshot()
    }

    /// Registers a new connection of `user`, first joining `groups` (the
    /// token's). Returns the connection and the user's groups, sorted, for
    /// the welcome frame.
    pub fn connect(&self, user: UserId, groups: &[GroupId]) -> (Connection, Vec<GroupId>) {
        for g in groups {
            self.inner.hub.join(g, &user);
        }
        let id = ConnId(self.inner.next_conn.fetch_add(1, Relaxed));
        let (sender, rx) = queue::channel(id, self.inner.config.queue_capacity);
        let groups = self.inner.hub.register(&user, sender);
        let signal = rx.signal();
        let conn = Connection {
            id,
            user,
            rx,
            signal,
            node: self.clone(),
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

    pub fn join(&self, group: &GroupId, user: &UserId) -> bool {
        self.inner.hub.join(group, user)
    }

    pub fn leave(&self, group: &GroupId, user: &UserId) -> bool {
        self.inner.hub.leave(group, user)
    }

    pub fn is_member(&self, group: &GroupId, user: &UserId) -> bool {
        self.inner.hub.is_member(group, user)
    }

    /// `send` from a connection: to every connection of `to`, with copies to
    /// the sender's other connections.
    pub fn send(&self, from: &Connection, to: UserId, body: Body) -> Delivery {
        let origin = Origin {
            user: from.user.clone(),
            conn: from.id,
        };
        self.route(Target::User(to), Some(origin), body)
    }

    /// `publish` from a connection. The caller checks membership.
    pub fn publish(&self, from: &Connection, group: GroupId, body: Body) -> Delivery {
        let origin = Origin {
            user: from.user.clone(),
            conn: from.id,
        };
        self.route(Target::Group(group), Some(origin), body)
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
    signal: ConnSignal,
    node: Node,
}

impl Connection {
    /// The next queued frame. Cancel-safe.
    pub async fn recv(&mut self) -> Frame {
        std::future::poll_fn(|cx| self.rx.poll_recv(cx)).await
    }

    /// A queued frame if there is one, without waiting.
    pub fn try_recv(&mut self) -> Option<Frame> {
        self.rx.try_recv()
    }

    /// Resolves when something asked this connection to close.
    pub async fn closed(&self) -> Disconnect {
        self.signal.closed().await
    }

    /// The close signal on its own, so a task can wait on it while it also
    /// borrows the connection mutably to receive.
    pub fn signal(&self) -> ConnSignal {
        self.signal.clone()
    }

    pub fn close_reason(&self) -> Option<Disconnect> {
        self.signal.reason()
    }

    /// Asks this connection to close (first reason wins).
    pub fn close(&self, reason: Disconnect) -> bool {
        self.signal.close(reason)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.node.inner.hub.unregister(&self.user, self.id);
    }
}
