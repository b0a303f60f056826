//! Frames the server sends (PROTOCOL.md §4), and the welcome of §2.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::body::Body;
use crate::error::ErrorCode;
use crate::ids::{CorrelationId, GroupId, UserId};
use crate::stream::{Placement, Positions};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    /// First frame after the upgrade.
    Welcome {
        user: UserId,
        conn: String,
        groups: Vec<GroupId>,
        heartbeat: u64,
        /// The position of every stream the connection reads (§10).
        #[serde(default)]
        streams: Positions,
    },
    Message(Message),
    Ack {
        id: CorrelationId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivered: Option<usize>,
        /// `send`/`publish`: where the message went in a stream the sending
        /// connection reads; `join`: the group stream's position (§3).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// `resume`: per named stream, whether it was recovered (§10).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<BTreeMap<String, bool>>,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<CorrelationId>,
        code: ErrorCode,
        message: String,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<CorrelationId>,
    },
}

/// A delivered message. `from` is absent for pushes made through the server
/// API; `to` is set for direct messages and user pushes, `group` for group
/// messages; a broadcast has neither.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    pub body: Body,
    pub ts: u64,
    /// The stream the message sits in for its reader, and where (§10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

impl ServerFrame {
    /// Encodes the frame as JSON text.
    pub fn to_json(&self) -> String {
        // Every field serialises infallibly (strings, integers, raw JSON).
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"encode failed"}"#.to_owned()
        })
    }

    /// Encodes a message frame from a borrowed message: what routing does
    /// once per stream, without a copy of the body.
    pub fn message_json(message: &Message) -> String {
        #[derive(Serialize)]
        #[serde(tag = "type", rename_all = "lowercase")]
        enum Borrowed<'a> {
            Message(&'a Message),
        }
        serde_json::to_string(&Borrowed::Message(message)).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"encode failed"}"#.to_owned()
        })
    }

    /// An ack with nothing but its id (`join`/`leave` without a stream).
    pub fn ack(id: CorrelationId) -> Self {
        ServerFrame::Ack {
            id,
            delivered: None,
            stream: None,
            epoch: None,
            seq: None,
            recovered: None,
        }
    }

    /// The ack of a `send`/`publish`: `delivered`, and where the message
    /// went when it went into a stream.
    pub fn ack_delivered(id: CorrelationId, delivered: usize, place: Option<Placement>) -> Self {
        let (stream, epoch, seq) = match place {
            Some(p) => (Some(p.stream), Some(p.epoch), Some(p.seq)),
            None => (None, None, None),
        };
        ServerFrame::Ack {
            id,
            delivered: Some(delivered),
            stream,
            epoch,
            seq,
            recovered: None,
        }
    }

    /// The ack of a `resume`.
    pub fn ack_recovered(id: CorrelationId, recovered: BTreeMap<String, bool>) -> Self {
        ServerFrame::Ack {
            id,
            delivered: None,
            stream: None,
            epoch: None,
            seq: None,
            recovered: Some(recovered),
        }
    }

    /// The ack of a `join`: the group stream's position.
    pub fn ack_at(id: CorrelationId, place: Placement) -> Self {
        ServerFrame::Ack {
            id,
            delivered: None,
            stream: Some(place.stream),
            epoch: Some(place.epoch),
            seq: Some(place.seq),
            recovered: None,
        }
    }

    pub fn error(id: Option<CorrelationId>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            id,
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(f: ServerFrame, expected: serde_json::Value) {
        let text = f.to_json();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v, expected);
        let back: ServerFrame = serde_json::from_str(&text).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn a_borrowed_message_encodes_as_the_owned_one_does() {
        let m = Message {
            id: "m1".into(),
            from: Some(UserId::new("7").unwrap()),
            to: None,
            group: Some(GroupId::new("g").unwrap()),
            body: Body::from_value(&json!({"a": [1]})),
            ts: 3,
            stream: Some("group:g".into()),
            epoch: Some("e".into()),
            seq: Some(1),
        };
        assert_eq!(
            ServerFrame::message_json(&m),
            ServerFrame::Message(m).to_json()
        );
    }

    #[test]
    fn every_server_frame_has_the_contract_shape() {
        round_trip(
            ServerFrame::Welcome {
                user: UserId::new("42").unwrap(),
                conn: "c1".into(),
                groups: vec![GroupId::new("g1").unwrap()],
                heartbeat: 25,
                streams: [(
                    "inbox".to_owned(),
                    crate::StreamPosition {
                        epoch: "k3Jx".into(),
                        seq: 17,
                    },
                )]
                .into(),
            },
            json!({"type":"welcome","user":"42","conn":"c1","groups":["g1"],"heartbeat":25,
                   "streams":{"inbox":{"epoch":"k3Jx","seq":17}}}),
        );
        round_trip(
            ServerFrame::Message(Message {
                id: "m1".into(),
                from: Some(UserId::new("7").unwrap()),
                to: Some(UserId::new("42").unwrap()),
                group: None,
                body: Body::from_value(&json!("hi")),
                ts: 1732590000123,
                stream: Some("inbox".into()),
                epoch: Some("k3Jx".into()),
                seq: Some(18),
            }),
            json!({"type":"message","id":"m1","from":"7","to":"42","body":"hi","ts":1732590000123u64,
                   "stream":"inbox","epoch":"k3Jx","seq":18}),
        );
        round_trip(
            ServerFrame::Message(Message {
                id: "m2".into(),
                from: None,
                to: None,
                group: Some(GroupId::new("promo").unwrap()),
                body: Body::from_value(&json!({"messageType":1,"title":"t","content":"c"})),
                ts: 5,
                stream: None,
                epoch: None,
                seq: None,
            }),
            json!({"type":"message","id":"m2","group":"promo","body":{"messageType":1,"title":"t","content":"c"},"ts":5}),
        );
        round_trip(
            ServerFrame::ack_delivered(CorrelationId::new("c-17").unwrap(), 3, None),
            json!({"type":"ack","id":"c-17","delivered":3}),
        );
        round_trip(
            ServerFrame::ack_delivered(
                CorrelationId::new("c-17").unwrap(),
                3,
                Some(Placement {
                    stream: "inbox".into(),
                    epoch: "k3Jx".into(),
                    seq: 18,
                }),
            ),
            json!({"type":"ack","id":"c-17","delivered":3,"stream":"inbox","epoch":"k3Jx","seq":18}),
        );
        round_trip(
            ServerFrame::ack(CorrelationId::new("j").unwrap()),
            json!({"type":"ack","id":"j"}),
        );
        round_trip(
            ServerFrame::ack_recovered(
                CorrelationId::new("r1").unwrap(),
                [("inbox".to_owned(), true), ("group:g1".to_owned(), false)].into(),
            ),
            json!({"type":"ack","id":"r1","recovered":{"inbox":true,"group:g1":false}}),
        );
        round_trip(
            ServerFrame::error(
                Some(CorrelationId::new("c-17").unwrap()),
                ErrorCode::Forbidden,
                "not a member of group g1",
            ),
            json!({"type":"error","id":"c-17","code":"forbidden","message":"not a member of group g1"}),
        );
        round_trip(
            ServerFrame::error(None, ErrorCode::BadRequest, "x"),
            json!({"type":"error","code":"bad_request","message":"x"}),
        );
        round_trip(
            ServerFrame::Pong {
                id: Some(CorrelationId::new("c-18").unwrap()),
            },
            json!({"type":"pong","id":"c-18"}),
        );
        round_trip(ServerFrame::Pong { id: None }, json!({"type":"pong"}));
    }
}
