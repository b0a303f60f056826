//! What routing carries: a message on its way to a stream and to that
//! stream's readers, and what comes back. Its own file so that the broker
//! (which numbers messages and moves them between nodes) and the hub
//! (which queues them locally) both depend on it and not on each other.

use protocol::{GroupId, Message, UserId};

use crate::frame::{Frame, Tag};
use crate::history::{Position, StreamName};
use crate::queue::ConnId;

/// Where a publication goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every connection of one user.
    User(UserId),
    /// Every connection of every member of a group.
    Group(GroupId),
    /// Every connection on every node.
    All,
}

impl Target {
    /// The stream a message to this target is appended to (for a direct
    /// message: the recipient's inbox; the sender's copy goes to the
    /// sender's inbox besides).
    pub fn stream(&self) -> StreamName {
        match self {
            Target::User(u) => StreamName::Inbox(u.clone()),
            Target::Group(g) => StreamName::Group(g.clone()),
            Target::All => StreamName::All,
        }
    }
}

/// The connection a message came from: it gets an ack, not a copy, and the
/// sender's other connections get copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub user: UserId,
    pub conn: ConnId,
}

/// One message on its way: not yet numbered, so not yet encoded. The
/// broker gives it its place in each stream it enters and encodes it once
/// per stream (`encode_at`); every reader of a stream shares those bytes.
#[derive(Debug, Clone)]
pub struct Publication {
    pub target: Target,
    pub origin: Option<Origin>,
    /// Its `stream`, `epoch` and `seq` are unset.
    pub message: Message,
    /// A push's `Idempotency-Key`, already checked (§6).
    pub idempotency_key: Option<String>,
}

/// What routing a publication did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The message's id: this publication's, or for a repeated idempotency
    /// key the first push's.
    pub id: String,
    /// Connections the message was queued to (§3: not counting copies).
    pub delivered: usize,
    /// The position the ack or the push's answer reports: for a `send`,
    /// the sender's copy in the sender's inbox; otherwise the target's
    /// stream.
    pub place: Option<(StreamName, Position)>,
    /// The idempotency key matched an earlier push: nothing was delivered.
    pub duplicate: bool,
}

/// Encodes `message` as it sits at `at` in `stream`, tagged for the merge
/// of replay and live delivery.
pub fn encode_at(message: &mut Message, stream: &StreamName, at: Position) -> Frame {
    message.stream = Some(stream.to_string());
    message.epoch = Some(at.epoch.as_str().to_owned());
    message.seq = Some(at.seq);
    Frame::encode_message(message).tagged(Tag {
        stream: stream.key_at(&at.epoch),
        seq: at.seq,
    })
}

/// An encoded message already placed in a stream (numbered by whoever
/// holds the stream), on its way to the stream's local readers.
#[derive(Debug, Clone)]
pub struct Placed {
    pub stream: StreamName,
    pub frame: Frame,
    /// The sending connection, which gets an ack instead.
    pub skip: Option<ConnId>,
}
