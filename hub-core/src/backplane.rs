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

use protocol::{GroupId, UserId};

use crate::disconnect::Disconnect;
use crate::hub::Hub;
use crate::publication::Publication;

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
    /// Queues a publication to this node's recipients; returns how many.
    fn publication(&self, publication: &Publication) -> usize;
    fn control(&self, control: &Control);
}

/// The local hub is the inbound side of every node.
impl Inbound for Hub {
    fn publication(&self, publication: &Publication) -> usize {
        self.deliver(publication)
    }

    fn control(&self, control: &Control) {
        match control {
            Control::Joined { user, group } => {
                let _ = self.join(group, user, usize::MAX);
            }
            Control::Left { user, group } => {
                self.leave(group, user);
            }
            Control::Kick { user } => {
                self.close_user(user, Disconnect::Kicked);
            }
        }
    }
}

/// Carries publications to the nodes that need them.
pub trait Broker: Send + Sync + 'static {
    /// Publishes to every node with recipients, this one included, and
    /// resolves to `delivered` as the cluster counts it.
    fn publish<'a>(
        &'a self,
        publication: &'a Publication,
    ) -> BoxFuture<'a, Result<usize, Unavailable>>;

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

/// One process: the hub is the whole truth, and every call is immediate.
#[derive(Debug, Clone)]
pub struct Local(pub Arc<Hub>);

fn ready<'a, T: Send + 'a>(t: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(t))
}

impl Broker for Local {
    fn publish<'a>(
        &'a self,
        publication: &'a Publication,
    ) -> BoxFuture<'a, Result<usize, Unavailable>> {
        ready(Ok(self.0.deliver(publication)))
    }

    fn kick<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<usize, Unavailable>> {
        ready(Ok(self.0.close_user(user, Disconnect::Kicked)))
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
        ready(Ok(self.0.join(group, user, max).ok()))
    }

    fn leave<'a>(
        &'a self,
        group: &'a GroupId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, Unavailable>> {
        ready(Ok(self.0.leave(group, user)))
    }

    fn groups_of<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Vec<GroupId>, Unavailable>> {
        ready(Ok(self.0.user_info(user).1))
    }

    fn members_of<'a>(
        &'a self,
        group: &'a GroupId,
    ) -> BoxFuture<'a, Result<Vec<UserId>, Unavailable>> {
        let members = self
            .0
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
        ready(Ok(self.0.is_member(group, user)))
    }
}

impl Presence for Local {
    fn connections<'a>(
        &'a self,
        users: &'a [UserId],
    ) -> BoxFuture<'a, Result<Vec<usize>, Unavailable>> {
        ready(Ok(users.iter().map(|u| self.0.user_info(u).0).collect()))
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
