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
//! History (§10), per stream `{s}` = `u:{user}` (an inbox), `g:{group}` or
//! `all`:
//! - `seq:{s}` (hash `e` → epoch, `n` → last seq): the numbering. Made with
//!   a fresh random epoch by whichever script first finds it missing (an
//!   append, or a read of positions, so `welcome` already gives the epoch
//!   the first message will carry), `l` → when its last message came,
//!   `x` → when its life was last renewed. A stream with no new message
//!   for `--history-ttl` (`now - l`) is forgotten: the next read or append
//!   numbers it again from 1 under a new epoch, and so is a stream of a
//!   Redis that lost its data. Its keys are dropped by Redis a little
//!   later: an append renews them (`PEXPIRE` 1.1 × `--history-ttl`) only
//!   once a tenth of the ttl has passed since `x`.
//! - `log:{s}` (stream, `MAXLEN ~ --history`: trimmed a node at a time,
//!   and only when appending a seq that is a multiple of 8, so it may hold
//!   up to about a hundred more, which reads ignore; same
//!   expiry): the retained messages, entry id `{seq}-0`, fields `f` (the frame, exactly as
//!   delivered live), `t` (added at, ms on Redis's clock: entries older
//!   than the ttl are deleted by the next script touching the stream) and
//!   `o` (the sending connection `{node}:{n}`, or empty: it gets an ack,
//!   not a copy, also when a node fills a gap). Not written with
//!   `--history 0`.
//! - `idem:{s} {key}` (string `{id}\n{epoch}\n{seq}`, `PX` =
//!   `--idempotency-window`): the first push with an `Idempotency-Key` to
//!   that target; a repeat answers it and publishes nothing.
//! - `ran:{message id}` (string `{epoch}:{seq}`, `PX` 15 s), only with
//!   `--history 0`: where a push went, for a process whose answer from
//!   Redis was lost to find out that it ran (`SETTLE`), as it otherwise
//!   does in the log.
//!
//! One script per publication numbers it in each stream it enters, splices
//! epoch and seq into the frame, appends it to the log and publishes it, so
//! the order on a channel is the seq order.
//!
//! Channels carry the database number, because pub/sub ignores it:
//! `wshub:{db}:u:{user}`, `wshub:{db}:g:{group}`, `wshub:{db}:all`,
//! `wshub:{db}:n:{node}`. Each of the first three carries exactly one
//! stream (a user's channel: the user's inbox, copies included). A payload
//! starts with one byte that says what it is. `p`: a placed message, then
//! `{epoch}:{seq}` and a newline, one line of JSON (a plain struct, which
//! serde reads without buffering) and the encoded frame, whose bytes are
//! never parsed or encoded again on the way. `c`: a control message, JSON.

use bytes::Bytes;
use hub_core::{ConnId, Control, Epoch, Frame, NodeId, Origin, StreamName, Target, Topic};
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

    /// A stream's name in the keys and scripts (`{s}` in the layout).
    pub fn stream_id(stream: &StreamName) -> String {
        match stream {
            StreamName::Inbox(u) => format!("u:{u}"),
            StreamName::Group(g) => format!("g:{g}"),
            StreamName::All => "all".to_owned(),
        }
    }

    /// The channel a stream's messages travel on.
    pub fn stream_channel(&self, stream: &StreamName) -> String {
        match stream {
            StreamName::Inbox(u) => self.user_channel(u),
            StreamName::Group(g) => self.group_channel(g),
            StreamName::All => self.all_channel(),
        }
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
    /// Published by `node` on a stream's channel after reading the
    /// stream's position: once it comes back, every message up to that
    /// position has reached the node (a channel's messages arrive in the
    /// order Redis ran the commands that published them). Other nodes
    /// ignore it.
    Barrier {
        node: u64,
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

const PLACED: u8 = b'p';
const CONTROL: u8 = b'c';

/// A control message's payload.
pub fn control(envelope: &Envelope) -> Vec<u8> {
    let mut out = vec![CONTROL];
    // Plain strings and numbers: serialising cannot fail.
    let _ = serde_json::to_writer(&mut out, envelope);
    out
}

/// A message on a channel, as it arrives: where it goes, where it came
/// from, and its place in the channel's stream.
#[derive(Debug, Clone)]
pub struct WireMessage {
    pub target: Target,
    pub origin: Option<Origin>,
    pub epoch: Epoch,
    pub seq: u64,
    pub frame: Frame,
}

impl WireMessage {
    /// The stream this message sits in for the channel it came on.
    pub fn stream(&self, part: Part) -> Option<StreamName> {
        match part {
            Part::Target => Some(self.target.stream()),
            Part::SenderCopies => Some(StreamName::Inbox(self.origin.as_ref()?.user.clone())),
        }
    }
}

/// The header line of a message (what the push scripts put between the
/// place they give it and the frame they build).
pub fn header(target: &Target, origin: Option<&Origin>, part: Part) -> String {
    let target = match target {
        Target::User(u) => WireTarget::User(u.clone()),
        Target::Group(g) => WireTarget::Group(g.clone()),
        Target::All => WireTarget::All,
    };
    let origin = origin.map(|o| WireOrigin {
        user: o.user.clone(),
        node: o.conn.node.0,
        conn: o.conn.n,
    });
    let header = MessageHeader {
        target,
        origin,
        part,
    };
    // Ids and numbers only: serialising cannot fail, and JSON text from
    // serde_json never holds a raw newline.
    serde_json::to_string(&header).unwrap_or_default()
}

/// The sending connection as the logs keep it (`o`): `{node}:{n}`.
pub fn conn_field(origin: Option<&Origin>) -> String {
    origin.map_or_else(String::new, |o| format!("{}:{}", o.conn.node.0, o.conn.n))
}

/// Reads `conn_field` back; `None` for empty or malformed.
pub fn parse_conn(s: &str) -> Option<ConnId> {
    let (node, n) = s.split_once(':')?;
    Some(ConnId {
        node: NodeId(node.parse().ok()?),
        n: n.parse().ok()?,
    })
}

/// What the scripts publish for a message: the same bytes, built here for
/// tests (the scripts build them in Lua).
#[cfg(test)]
pub fn placed_payload(epoch: &Epoch, seq: u64, header: &str, frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + header.len() + 32);
    out.push(PLACED);
    out.extend_from_slice(format!("{epoch}:{seq}\n{header}\n").as_bytes());
    out.extend_from_slice(frame);
    out
}

/// What arrived on a channel.
#[derive(Debug)]
pub enum Arrived {
    Message(WireMessage, Part),
    Control(Control, Option<(u64, u64)>),
    JoinAck(u64),
    /// A node's barrier: (node, token).
    Barrier(u64, u64),
}

/// Reads a payload; `None` for anything this version cannot read (logged
/// by the caller), which never takes the subscriber down.
pub fn decode(payload: Bytes) -> Option<Arrived> {
    match *payload.first()? {
        PLACED => {
            let place_end = payload.iter().position(|b| *b == b'\n')?;
            let place = std::str::from_utf8(&payload[1..place_end]).ok()?;
            let (epoch, seq) = place.split_once(':')?;
            let epoch = Epoch::parse(epoch)?;
            let seq: u64 = seq.parse().ok()?;
            let rest = place_end + 1;
            let newline = rest + payload[rest..].iter().position(|b| *b == b'\n')?;
            let header: MessageHeader = serde_json::from_slice(&payload[rest..newline]).ok()?;
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
                epoch,
                seq,
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
            Envelope::Barrier { node, token } => Arrived::Barrier(node, token),
        }),
        _ => None,
    }
}

/// The frame of `message` in the stream its wire name `stream` says, with
/// its epoch and seq left for the script: the JSON up to and without its
/// closing `}`. Serde writes fields in declaration order and `stream`,
/// `epoch`, `seq` are the last three, so with the last two unset the text
/// ends `,"stream":"…"}` and the script appends `,"epoch":"E","seq":N}`
/// (`splice`). `None` if that ever stops being so.
pub fn frame_prefix(message: &protocol::Message, stream: &str) -> Option<String> {
    let mut m = message.clone();
    m.stream = Some(stream.to_owned());
    m.epoch = None;
    m.seq = None;
    let mut json = protocol::ServerFrame::message_json(&m);
    let tail = format!(",\"stream\":{}}}", serde_json::to_string(stream).ok()?);
    if !json.ends_with(&tail) {
        return None;
    }
    json.pop();
    Some(json)
}

/// What the scripts append to a `frame_prefix` (kept in step with
/// `scripts.rs`'s `splice`; the tests compare both with one process's
/// encoding).
#[cfg(test)]
pub fn splice(prefix: &str, epoch: &Epoch, seq: u64) -> String {
    format!("{prefix},\"epoch\":\"{epoch}\",\"seq\":{seq}}}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Body, Message, ServerFrame};

    fn message() -> Message {
        Message {
            id: "m1".into(),
            from: Some(UserId::new("a").unwrap()),
            to: None,
            group: Some(GroupId::new("g:1").unwrap()),
            body: Body::from_value(&serde_json::json!({"x": "}\"\n", "y": [1, 2]})),
            ts: 1_732_590_000_123,
            stream: None,
            epoch: None,
            seq: None,
        }
    }

    #[test]
    fn a_spliced_frame_is_what_one_process_encodes() {
        let m = message();
        let epoch = Epoch::parse("k3Jx9aZ0").unwrap();
        for stream in ["group:g:1", "inbox", "all"] {
            let prefix = frame_prefix(&m, stream).expect("stream is the last field set");
            let mut full = m.clone();
            full.stream = Some(stream.into());
            full.epoch = Some(epoch.to_string());
            full.seq = Some(4_000_000_001);
            assert_eq!(
                splice(&prefix, &epoch, 4_000_000_001),
                ServerFrame::message_json(&full)
            );
        }
    }

    #[test]
    fn a_message_survives_the_wire_with_its_bytes_unchanged() {
        let frame = Frame::encode(&ServerFrame::Pong { id: None });
        let target = Target::Group(GroupId::new("g").unwrap());
        let origin = Origin {
            user: UserId::new("a").unwrap(),
            conn: ConnId {
                node: NodeId(u64::MAX),
                n: 7,
            },
        };
        let epoch = Epoch::parse("Ab3dEf9h").unwrap();
        let h = header(&target, Some(&origin), Part::SenderCopies);
        let payload = placed_payload(&epoch, 42, &h, frame.bytes());
        let Some(Arrived::Message(back, Part::SenderCopies)) = decode(Bytes::from(payload)) else {
            panic!("not read back");
        };
        assert_eq!(back.frame, frame);
        assert_eq!(back.origin.as_ref(), Some(&origin));
        assert_eq!(back.target, target);
        assert_eq!((back.epoch, back.seq), (epoch, 42));
        assert_eq!(
            back.stream(Part::SenderCopies),
            Some(StreamName::Inbox(UserId::new("a").unwrap()))
        );
        assert_eq!(parse_conn(&conn_field(Some(&origin))), Some(origin.conn));
        assert!(decode(Bytes::from_static(b"pno newline")).is_none());
        assert!(decode(Bytes::from_static(b"pAb3dEf9h:x\n{}\n")).is_none());
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
