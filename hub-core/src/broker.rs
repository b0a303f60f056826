//! The seam fan-out crosses: a `Broker` carries each publication to every
//! node of a cluster, this one included.
//!
//! Today there is one node and `MemoryBroker` hands the publication straight
//! to the local hub. A Redis broker would publish the same encoded frame on a
//! Redis channel and deliver to its local hub as well, while a subscriber task
//! on every other node calls `Hub::deliver` for what arrives; nothing above
//! this trait changes. (Membership would then live in Redis too; see the note
//! on issue 2.)

use protocol::{GroupId, UserId};

use crate::frame::Frame;
use crate::hub::Hub;
use crate::queue::ConnId;

/// Where a publication goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every connection of one user.
    User(UserId),
    /// Every connection of every member of a group.
    Group(GroupId),
    /// Every connection on every node.
    All,
}

/// The connection a message came from: it gets an ack, not a copy, and the
/// sender's other connections get copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub user: UserId,
    pub conn: ConnId,
}

/// One encoded message on its way to its recipients.
#[derive(Debug, Clone)]
pub struct Publication {
    pub target: Target,
    pub origin: Option<Origin>,
    pub frame: Frame,
}

pub trait Broker: Send + Sync + 'static {
    /// Carries `publication` to every node and returns how many connections
    /// of this node it was queued to, counted as PROTOCOL.md's `delivered`.
    fn publish(&self, publication: &Publication, local: &Hub) -> usize;
}

/// The single-node broker: delivery is a function call.
#[derive(Debug, Default)]
pub struct MemoryBroker;

impl Broker for MemoryBroker {
    fn publish(&self, publication: &Publication, local: &Hub) -> usize {
        local.deliver(publication)
    }
}
