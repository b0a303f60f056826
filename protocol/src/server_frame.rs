//! Frames the server sends (PROTOCOL.md §4), and the welcome of §2.

use serde::{Deserialize, Serialize};

use crate::body::Body;
use crate::error::ErrorCode;
use crate::ids::{CorrelationId, GroupId, UserId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    /// First frame after the upgrade.
    Welcome {
        user: UserId,
        conn: String,
        groups: Vec<GroupId>,
        heartbeat: u64,
    },
    Message(Message),
    Ack {
        id: CorrelationId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivered: Option<usize>,
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
}

impl ServerFrame {
    /// Encodes the frame as JSON text.
    pub fn to_json(&self) -> String {
        // Every field serialises infallibly (strings, integers, raw JSON).
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"encode failed"}"#.to_owned()
        })
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
    fn every_server_frame_has_the_contract_shape() {
        round_trip(
            ServerFrame::Welcome {
                user: UserId::new("42").unwrap(),
                conn: "c1".into(),
                groups: vec![GroupId::new("g1").unwrap()],
                heartbeat: 25,
            },
            json!({"type":"welcome","user":"42","conn":"c1","groups":["g1"],"heartbeat":25}),
        );
        round_trip(
            ServerFrame::Message(Message {
                id: "m1".into(),
                from: Some(UserId::new("7").unwrap()),
                to: Some(UserId::new("42").unwrap()),
                group: None,
                body: Body::from_value(&json!("hi")),
                ts: 1732590000123,
            }),
            json!({"type":"message","id":"m1","from":"7","to":"42","body":"hi","ts":1732590000123u64}),
        );
        round_trip(
            ServerFrame::Message(Message {
                id: "m2".into(),
                from: None,
                to: None,
                group: Some(GroupId::new("promo").unwrap()),
                body: Body::from_value(&json!({"messageType":1,"title":"t","content":"c"})),
                ts: 5,
            }),
            json!({"type":"message","id":"m2","group":"promo","body":{"messageType":1,"title":"t","content":"c"},"ts":5}),
        );
        round_trip(
            ServerFrame::Ack {
                id: CorrelationId::new("c-17").unwrap(),
                delivered: Some(3),
            },
            json!({"type":"ack","id":"c-17","delivered":3}),
        );
        round_trip(
            ServerFrame::Ack {
                id: CorrelationId::new("j").unwrap(),
                delivered: None,
            },
            json!({"type":"ack","id":"j"}),
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
