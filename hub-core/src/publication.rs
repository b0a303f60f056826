//! What routing carries: one encoded message, where it goes and where it
//! came from. Its own file so that the broker (which moves publications
//! between nodes) and the hub (which queues them locally) both depend on it
//! and not on each other.

use protocol::{GroupId, UserId};

use crate::frame::Frame;
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
