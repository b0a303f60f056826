//! Names in Redis, and what travels on a channel. The layout belongs to the
//! server and may change between versions (PROTOCOL.md §11).
//!
//! Keys, all under `wshub:`:
//! - `user:{u}:groups` (set), `group:{g}:members` (set): membership;
//! - `user:{u}:conns` (hash node → count): presence of one user;
//! - `node:{n}:users`, `node:{n}:groups` (sets): what a node's counts are
//!   in, to clean up after it;
//! - `group:{g}:conns` (hash node → count): connections of the group's
//!   members on each node, kept in step by every script that changes
//!   membership or presence, so a group push's `delivered` costs a few
//!   nodes' numbers, not one look-up per member;
//! - `conns_by_node` (hash node → count): for a broadcast's `delivered`;
//! - `nodes` (sorted set node → expiry, ms on Redis's clock): live nodes;
//! - `run` (string): the dataset's id; when it is gone, Redis lost its data.
//!
//! Channels carry the database number, because pub/sub ignores it:
//! `wshub:{db}:u:{user}`, `wshub:{db}:g:{group}`, `wshub:{db}:all`,
//! `wshub:{db}:n:{node}`. A payload starts with one byte that says what it
//! is. `m`: a message, then one line of JSON (a plain struct, which serde
//! reads without buffering) and the encoded frame, whose bytes are never
//! parsed or encoded again on the way. `c`: a control message, JSON.

use bytes::Bytes;
use hub_core::{ConnId, Control, Frame, NodeId, Origin, Target, Topic};
use protocol::{GroupId, UserId};
use serde::{Deserialize, Serialize};

/// Names for one Redis database.
#[derive(Debug, Clone)]
pub struct Names {
    pub keys: String,
    pub channels: String,
}

impl Names {
    pub fn new(db: i64) -> Self {
        Names {
            keys: "wshub:".into(),
            channels: format!("wshub:{db}:"),
        }
    }

    pub fn user_groups_key(&self, user: &UserId) -> String {
        format!("{}user:{user}:groups", self.keys)
    }

    pub fn group_members_key(&self, group: &GroupId) -> String {
        format!("{}group:{group}:members", self.keys)
    }

    pub fn user_channel(&self, user: &UserId) -> String {
        format!("{}u:{user}", self.channels)
    }

    pub fn group_channel(&self, group: &GroupId) -> String {
        format!("{}g:{group}", self.channels)
    }

    pub fn all_channel(&self) -> String {
        format!("{}all", self.channels)
    }

    pub fn node_channel(&self, node: NodeId) -> String {
        format!("{}n:{node}", self.channels)
    }

    pub fn topic_channel(&self, topic: &Topic) -> String {
        match topic {
            Topic::User(u) => self.user_channel(u),
            Topic::Group(g) => self.group_channel(g),
        }
    }
}

/// What travels in front of a message's frame; `part` says which
/// recipients this channel carries it to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageHeader {
    pub target: WireTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<WireOrigin>,
    pub part: Part,
}

/// A control message: membership and kicks, announced on a user's channel,
/// and join acks on a node's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Envelope {
    Joined {
        user: UserId,
        group: GroupId,
        /// The node waiting for acks, and what to ack.
        node: u64,
        token: u64,
    },
    Left {
        user: UserId,
        group: GroupId,
    },
    Kick {
        user: UserId,
    },
    /// A node subscribed to a group after a `Joined`.
    JoinAck {
        token: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireTarget {
    User(UserId),
    Group(GroupId),
    All,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireOrigin {
    pub user: UserId,
    pub node: u64,
    pub conn: u64,
}

/// Which recipients of a message one channel carries it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Everyone the target names (a group, everyone, or the user `to`).
    Target,
    /// The sender's other connections (a direct message's copies).
    SenderCopies,
}

const MESSAGE: u8 = b'm';
const CONTROL: u8 = b'c';

/// A control message's payload.
pub fn control(envelope: &Envelope) -> Vec<u8> {
    let mut out = vec![CONTROL];
    // Plain strings and numbers: serialising cannot fail.
    let _ = serde_json::to_writer(&mut out, envelope);
    out
}

/// An encoded message on a channel: where it goes and where it came from.
#[derive(Debug, Clone)]
pub struct WireMessage {
    pub target: Target,
    pub origin: Option<Origin>,
    pub frame: Frame,
}

pub fn message(p: &WireMessage, part: Part) -> Vec<u8> {
    let target = match &p.target {
        Target::User(u) => WireTarget::User(u.clone()),
        Target::Group(g) => WireTarget::Group(g.clone()),
        Target::All => WireTarget::All,
    };
    let origin = p.origin.as_ref().map(|o| WireOrigin {
        user: o.user.clone(),
        node: o.conn.node.0,
        conn: o.conn.n,
    });
    let header = MessageHeader {
        target,
        origin,
        part,
    };
    let mut out = Vec::with_capacity(p.frame.len() + 96);
    out.push(MESSAGE);
    let _ = serde_json::to_writer(&mut out, &header);
    out.push(b'\n');
    out.extend_from_slice(p.frame.bytes());
    out
}

/// What arrived on a channel.
#[derive(Debug)]
pub enum Arrived {
    Message(WireMessage, Part),
    Control(Control, Option<(u64, u64)>),
    JoinAck(u64),
}

/// Reads a payload; `None` for anything this version cannot read (logged
/// by the caller), which never takes the subscriber down.
pub fn decode(payload: Bytes) -> Option<Arrived> {
    match *payload.first()? {
        MESSAGE => {
            let newline = payload.iter().position(|b| *b == b'\n')?;
            let header: MessageHeader = serde_json::from_slice(&payload[1..newline]).ok()?;
            let frame = Frame::from_shared(payload.slice(newline + 1..))?;
            let target = match header.target {
                WireTarget::User(u) => Target::User(u),
                WireTarget::Group(g) => Target::Group(g),
                WireTarget::All => Target::All,
            };
            let origin = header.origin.map(|o| Origin {
                user: o.user,
                conn: ConnId {
                    node: NodeId(o.node),
                    n: o.conn,
                },
            });
            let p = WireMessage {
                target,
                origin,
                frame,
            };
            Some(Arrived::Message(p, header.part))
        }
        CONTROL => Some(match serde_json::from_slice(&payload[1..]).ok()? {
            Envelope::Joined {
                user,
                group,
                node,
                token,
            } => Arrived::Control(Control::Joined { user, group }, Some((node, token))),
            Envelope::Left { user, group } => Arrived::Control(Control::Left { user, group }, None),
            Envelope::Kick { user } => Arrived::Control(Control::Kick { user }, None),
            Envelope::JoinAck { token } => Arrived::JoinAck(token),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ServerFrame;

    #[test]
    fn a_message_survives_the_wire_with_its_bytes_unchanged() {
        let frame = Frame::encode(&ServerFrame::Pong { id: None });
        let p = WireMessage {
            target: Target::Group(GroupId::new("g").unwrap()),
            origin: Some(Origin {
                user: UserId::new("a").unwrap(),
                conn: ConnId {
                    node: NodeId(u64::MAX),
                    n: 7,
                },
            }),
            frame: frame.clone(),
        };
        let Some(Arrived::Message(back, Part::Target)) =
            decode(Bytes::from(message(&p, Part::Target)))
        else {
            panic!("not read back");
        };
        assert_eq!(back.frame, frame);
        assert_eq!(back.origin, p.origin);
        assert_eq!(back.target, p.target);
        assert!(decode(Bytes::from_static(b"mno newline")).is_none());
        assert!(decode(Bytes::from_static(b"c{\"k\":\"unknown\"}")).is_none());
        assert!(decode(Bytes::new()).is_none());
        let kick = Envelope::Kick {
            user: UserId::new("k").unwrap(),
        };
        let Some(Arrived::Control(Control::Kick { user }, None)) =
            decode(Bytes::from(control(&kick)))
        else {
            panic!("control not read back");
        };
        assert_eq!(user.as_str(), "k");
    }
}
