//! The seams between the nodes of a hub, after centrifuge's cut: a
//! `Broker` carries publications between nodes, `Membership` keeps who is
//! in which group, `Presence` counts who is connected where. One process
//! uses the memory implementations below, which are the local hub itself;
//! a cluster uses shared ones (Redis, in the server), and hands what
//! arrives from other nodes to its hub through `Inbound`.
//!
//! Every operation is async and fallible because a shared store can be
//! slow or gone: `Unavailable` is what the contract calls `unavailable`,
//! and nothing is acknowledged that a store did not take.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{GroupId, UserId};

use crate::disconnect::Disconnect;
use crate::history::{History, HistoryConfig, Position, Recovery, StreamName, Streams};
use crate::hub::Hub;
use crate::idempotency::{FirstPush, Idempotency};
use crate::publication::{Placed, Publication, Published};

/// A boxed future, so the seams can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The shared state of a cluster cannot be reached right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the hub's shared state cannot be reached; try again")
    }
}

/// News about a user that every node holding the user's connections must
/// act on, wherever it was caused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Joined { user: UserId, group: GroupId },
    Left { user: UserId, group: GroupId },
    Kick { user: UserId },
}

/// What a node gives its broker for what arrives from the cluster.
pub trait Inbound: Send + Sync + 'static {
    /// Queues a message placed in a stream to this node's readers of the
    /// stream; returns how many.
    fn placed(&self, placed: &Placed) -> usize;
    fn control(&self, control: &Control);
}

/// The local hub is the inbound side of every node.
impl Inbound for Hub {
    fn placed(&self, placed: &Placed) -> usize {
        self.deliver(placed)
    }

    fn control(&self, control: &Control) {
        match control {
            // A node mirrors memberships only for users connected to it
            // (a connection arriving later loads them from the store).
            Control::Joined { user, group } => self.join_if_connected(group, user),
            Control::Left { user, group } => {
                self.leave(group, user);
            }
            Control::Kick { user } => {
                self.close_user(user, Disconnect::Kicked);
            }
        }
    }
}

/// Numbers publications in their streams, keeps the streams' history,
/// and carries publications to the nodes that need them (centrifuge's
/// broker does both, for the same reason: the place that orders a stream
/// is the place that can replay it).
pub trait Broker: Send + Sync + 'static {
    /// Appends to the target's stream (and for a direct message, the
    /// sender's inbox), publishes to every node with recipients, this one
    /// included, and resolves to what the ack reports, `delivered` as the
    /// cluster counts it. A repeated idempotency key publishes nothing.
    fn publish(&self, publication: Publication) -> BoxFuture<'_, Result<Published, Unavailable>>;

    /// The position of each stream now, in the same order.
    fn positions<'a>(
        &'a self,
        streams: &'a [StreamName],
    ) -> BoxFuture<'a, Result<Vec<Position>, Unavailable>>;

    /// A resume of several streams in one pass: for each (stream, last
    /// position seen), what to replay or that it cannot be recovered.
    fn recover<'a>(
        &'a self,
        from: &'a [(StreamName, Position)],
    ) -> BoxFuture<'a, Result<Vec<Recovery>, Unavailable>>;

    /// The history API: retained messages of `stream` after `since`.
    fn history<'a>(
        &'a self,
        stream: &'a StreamName,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, Unavailable>>;

    /// Resolves once this node has routed to its connections every
    /// message of `stream` up to `at` that it had started to receive, so
    /// that an answer reporting `at` (a `join`'s ack) is queued behind
    /// them: `true`. One process routes as it publishes: at once. A shared
    /// broker waits, bounded, for what is still on its way from the store,
    /// and answers `false` when it gave up (or stopped receiving): then
    /// `at` may be ahead of what the connections got, and must not be
    /// given to a client as its position.
    fn routed<'a>(&'a self, _stream: &'a StreamName, _at: Position) -> BoxFuture<'a, bool> {
        Box::pin(async { true })
    }

    /// Messages held in this process's memory (`wshub_history_messages`).
    fn held_messages(&self) -> usize {
        0
    }

    /// Hands back the memory of expired history; called every second.
    fn expire(&self) {}

    /// Closes every connection of `user` on every node (1008); resolves to
    /// how many.
    fn kick<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<usize, Unavailable>>;

    /// Resolves once publications for `topics` reach this node: called
    /// before a connection that reads them is welcomed, so nothing sent
    /// after the welcome can miss it. A shared broker subscribes by
    /// interest and drops topics no local connection reads any more.
    fn subscribe<'a>(&'a self, topics: &'a [Topic]) -> BoxFuture<'a, Result<(), Unavailable>>;

    /// Whether the broker can serve now (`/readyz`, `wshub_broker_up`).
    fn is_up(&self) -> bool {
        true
    }

    /// How many times the broker came back after losing its store.
    fn reconnects(&self) -> u64 {
        0
    }

    /// Whether membership and presence live outside this process, so the
    /// hub only mirrors them for its own connections.
    fn is_shared(&self) -> bool {
        false
    }
}

/// What a broker routes by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    User(UserId),
    Group(GroupId),
}

/// Who is in which group. Membership belongs to the user.
pub trait Membership: Send + Sync + 'static {
    /// Adds `user` to `group` unless the user is in `max` groups already.
    /// `Ok(Some(new))`, or `Ok(None)` when the cap refused it.
    fn join<'a>(
        &'a self,
        group: &'a GroupId,
        user: &'a UserId,
        max: usize,
    ) -> BoxFuture<'a, Result<Option<bool>, Unavailable>>;
    fn leave<'a>(
        &'a self,
        group: &'a GroupId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, Unavailable>>;
    fn groups_of<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Vec<GroupId>, Unavailable>>;
    fn members_of<'a>(
        &'a self,
        group: &'a GroupId,
    ) -> BoxFuture<'a, Result<Vec<UserId>, Unavailable>>;
    fn is_member<'a>(
        &'a self,
        group: &'a GroupId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, Unavailable>>;
}

/// Who is connected, on every node.
pub trait Presence: Send + Sync + 'static {
    /// Connections of each of `users`, on every node, in the same order.
    fn connections<'a>(
        &'a self,
        users: &'a [UserId],
    ) -> BoxFuture<'a, Result<Vec<usize>, Unavailable>>;
    /// This node opened (`+1`) or closed (`-1`) a connection of `user`.
    fn changed<'a>(
        &'a self,
        user: &'a UserId,
        delta: i64,
    ) -> BoxFuture<'a, Result<(), Unavailable>>;
}

/// One process: the hub and its streams are the whole truth, and every
/// call is immediate.
#[derive(Debug)]
pub struct Local {
    pub hub: Arc<Hub>,
    streams: Streams,
    idempotency: Idempotency,
}

impl Local {
    pub fn new(hub: Arc<Hub>, history: HistoryConfig, idempotency_window: Duration) -> Self {
        Self {
            hub,
            streams: Streams::new(history),
            idempotency: Idempotency::new(idempotency_window),
        }
    }

    /// Routes on this process. A push with a key checks, routes and
    /// remembers under one hold of the keys (no await in between), so
    /// racing repeats deliver once.
    fn route(&self, mut p: Publication) -> Published {
        let now = Instant::now();
        let id = p.message.id.clone();
        let Some(key) = p.idempotency_key.take() else {
            let (delivered, place) = self.hub.route(&mut p, &self.streams, now);
            return Published {
                id,
                delivered,
                place: Some(place),
                duplicate: false,
            };
        };
        let mut check = self.idempotency.check(now);
        if let Some(first) = check.first(&p.target, &key) {
            return Published {
                id: first.id,
                delivered: 0,
                place: first.place,
                duplicate: true,
            };
        }
        let (delivered, place) = self.hub.route(&mut p, &self.streams, now);
        let place = Some(place);
        let first = FirstPush {
            id: id.clone(),
            place: place.clone(),
        };
        check.remember(&p.target, &key, first);
        Published {
            id,
            delivered,
            place,
            duplicate: false,
        }
    }
}

fn ready<'a, T: Send + 'a>(t: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(t))
}

impl Broker for Local {
    fn publish(&self, publication: Publication) -> BoxFuture<'_, Result<Published, Unavailable>> {
        ready(Ok(self.route(publication)))
    }

    fn positions<'a>(
        &'a self,
        streams: &'a [StreamName],
    ) -> BoxFuture<'a, Result<Vec<Position>, Unavailable>> {
        let now = Instant::now();
        ready(Ok(streams
            .iter()
            .map(|s| self.streams.position(s, now))
            .collect()))
    }

    fn recover<'a>(
        &'a self,
        from: &'a [(StreamName, Position)],
    ) -> BoxFuture<'a, Result<Vec<Recovery>, Unavailable>> {
        let now = Instant::now();
        ready(Ok(from
            .iter()
            .map(|(s, after)| self.streams.since(s, after, usize::MAX, now))
            .collect()))
    }

    fn history<'a>(
        &'a self,
        stream: &'a StreamName,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, Unavailable>> {
        ready(Ok(self.streams.history(
            stream,
            since,
            limit,
            Instant::now(),
        )))
    }

    fn held_messages(&self) -> usize {
        self.streams.held()
    }

    fn expire(&self) {
        self.streams.expire(Instant::now());
    }

    fn kick<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<usize, Unavailable>> {
        ready(Ok(self.hub.close_user(user, Disconnect::Kicked)))
    }

    fn subscribe<'a>(&'a self, _topics: &'a [Topic]) -> BoxFuture<'a, Result<(), Unavailable>> {
        ready(Ok(()))
    }
}

impl Membership for Local {
    fn join<'a>(
        &'a self,
        group: &'a GroupId,
        user: &'a UserId,
        max: usize,
    ) -> BoxFuture<'a, Result<Option<bool>, Unavailable>> {
        ready(Ok(self.hub.join(group, user, max).ok()))
    }

    fn leave<'a>(
        &'a self,
        group: &'a GroupId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, Unavailable>> {
        ready(Ok(self.hub.leave(group, user)))
    }

    fn groups_of<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Vec<GroupId>, Unavailable>> {
        ready(Ok(self.hub.user_info(user).1))
    }

    fn members_of<'a>(
        &'a self,
        group: &'a GroupId,
    ) -> BoxFuture<'a, Result<Vec<UserId>, Unavailable>> {
        let members = self
            .hub
            .group_members(group)
            .into_iter()
            .map(|(u, _)| u)
            .collect();
        ready(Ok(members))
    }

    fn is_member<'a>(
        &'a self,
        group: &'a GroupId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, Unavailable>> {
        ready(Ok(self.hub.is_member(group, user)))
    }
}

impl Presence for Local {
    fn connections<'a>(
        &'a self,
        users: &'a [UserId],
    ) -> BoxFuture<'a, Result<Vec<usize>, Unavailable>> {
        ready(Ok(users.iter().map(|u| self.hub.user_info(u).0).collect()))
    }

    fn changed<'a>(
        &'a self,
        _user: &'a UserId,
        _delta: i64,
    ) -> BoxFuture<'a, Result<(), Unavailable>> {
        // The hub counted it when it registered or removed the connection.
        ready(Ok(()))
    }
}
