//! Frames a client sends (PROTOCOL.md §3), and the parser that turns a text
//! frame into one of them or into the exact error the contract names.
//!
//! The parser reads each field as raw JSON first and checks it afterwards, in
//! a fixed order (JSON, object, `id`, `type`, fields), so that a bad frame
//! always gets the right code and, when its `id` was valid, its `id` back.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::body::Body;
use crate::error::ErrorCode;
use crate::ids::{CorrelationId, GroupId, UserId};
use crate::stream::{parse_positions, Positions};

/// One parsed client frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientFrame {
    /// Deliver `body` to every connection of user `to`. The original
    /// `{"userId":2,"msg":"hi"}` form parses to this too, without `id`.
    Send {
        to: UserId,
        body: Body,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<CorrelationId>,
    },
    /// Deliver `body` to every member of `group`.
    Publish {
        group: GroupId,
        body: Body,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<CorrelationId>,
    },
    Join {
        group: GroupId,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<CorrelationId>,
    },
    Leave {
        group: GroupId,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<CorrelationId>,
    },
    Ping {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<CorrelationId>,
    },
    /// The first frame after a `resume=1` connect (PROTOCOL.md §10): the
    /// last position the client saw in each stream it wants replayed.
    Resume {
        positions: Positions,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<CorrelationId>,
    },
}

impl ClientFrame {
    /// The client's correlation id, if it sent one.
    pub fn id(&self) -> Option<&CorrelationId> {
        match self {
            ClientFrame::Send { id, .. }
            | ClientFrame::Publish { id, .. }
            | ClientFrame::Join { id, .. }
            | ClientFrame::Leave { id, .. }
            | ClientFrame::Resume { id, .. }
            | ClientFrame::Ping { id } => id.as_ref(),
        }
    }

    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        // serde would read a JSON array into the struct below by position,
        // so anything but an object is turned away before it gets there.
        if !text.trim_start().starts_with('{') {
            let message = match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => "frame must be a JSON object".to_owned(),
                Err(e) => format!("invalid JSON: {e}"),
            };
            return Err(FrameError::new(ErrorCode::BadRequest, message));
        }
        let raw: RawFields<'_> = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(e) => return Err(classify_serde_error(text, e)),
        };

        let id = match raw.id {
            None => None,
            Some(v) => Some(parse_correlation_id(v)?),
        };
        let err = |code, message: String| FrameError {
            id: id.clone(),
            code,
            message,
        };

        let kind: Option<String> = match raw.kind {
            None => None,
            Some(v) => match serde_json::from_str::<String>(v.get()) {
                Ok(s) => Some(s),
                Err(_) => return Err(err(ErrorCode::BadRequest, "`type` must be a string".into())),
            },
        };

        let Some(kind) = kind else {
            // The original design's frame has no type: {"userId":2,"msg":"hi"}.
            if raw.user_id.is_some() || raw.msg.is_some() {
                let to =
                    user_field(raw.user_id, "userId").map_err(|m| err(ErrorCode::BadRequest, m))?;
                let body = raw
                    .msg
                    .ok_or_else(|| err(ErrorCode::BadRequest, "missing field `msg`".into()))?;
                return Ok(ClientFrame::Send {
                    to,
                    body: Body::from_raw(body.to_owned()),
                    id,
                });
            }
            return Err(err(ErrorCode::BadRequest, "missing field `type`".into()));
        };

        let frame = match kind.as_str() {
            "send" => ClientFrame::Send {
                to: user_field(raw.to, "to").map_err(|m| err(ErrorCode::BadRequest, m))?,
                body: body_field(raw.body).map_err(|m| err(ErrorCode::BadRequest, m))?,
                id,
            },
            "publish" => ClientFrame::Publish {
                group: group_field(raw.group).map_err(|m| err(ErrorCode::BadRequest, m))?,
                body: body_field(raw.body).map_err(|m| err(ErrorCode::BadRequest, m))?,
                id,
            },
            "join" => ClientFrame::Join {
                group: group_field(raw.group).map_err(|m| err(ErrorCode::BadRequest, m))?,
                id,
            },
            "leave" => ClientFrame::Leave {
                group: group_field(raw.group).map_err(|m| err(ErrorCode::BadRequest, m))?,
                id,
            },
            "ping" => ClientFrame::Ping { id },
            "resume" => ClientFrame::Resume {
                positions: positions_field(raw.positions)
                    .map_err(|m| err(ErrorCode::BadRequest, m))?,
                id,
            },
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(err(
                    ErrorCode::UnknownType,
                    format!("unknown frame type `{shown}`"),
                ));
            }
        };
        Ok(frame)
    }
}

/// A frame the server refuses, with the code and message of its `error`
/// frame. `id` is the frame's correlation id when it had a valid one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub id: Option<CorrelationId>,
    pub code: ErrorCode,
    pub message: String,
}

impl FrameError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id: None,
            code,
            message: message.into(),
        }
    }
}

/// Every field any frame may carry, each kept as unparsed JSON.
/// Unknown fields are ignored so clients can add their own.
#[derive(Deserialize)]
struct RawFields<'a> {
    // `null` is kept as given: a `type` or `id` of `null` is a bad one,
    // not a missing one (§3).
    #[serde(rename = "type", borrow, default, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    to: Option<&'a RawValue>,
    #[serde(borrow, default)]
    group: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    body: Option<&'a RawValue>,
    #[serde(rename = "userId", borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    msg: Option<&'a RawValue>,
    #[serde(borrow, default)]
    positions: Option<&'a RawValue>,
}

/// `Option<&RawValue>` reads `null` as `None`; a body of `null` is a body.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

fn classify_serde_error(text: &str, e: serde_json::Error) -> FrameError {
    let message = match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        Err(_) => format!("invalid JSON: {e}"),
        Ok(_) => format!("bad frame: {e}"),
    };
    FrameError::new(ErrorCode::BadRequest, message)
}

fn parse_correlation_id(raw: &RawValue) -> Result<CorrelationId, FrameError> {
    let text = raw.get();
    // An integer literal of any length means its digits, as it does for
    // user and group ids (parsed, one past 64 bits would be a float).
    let digits = text.strip_prefix('-').unwrap_or(text);
    let id = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        CorrelationId::new(text)
    } else {
        let v: serde_json::Value = serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
        CorrelationId::from_json(&v)
    };
    // The message never echoes the bad id.
    id.map_err(|e| FrameError::new(ErrorCode::BadRequest, format!("bad `id`: {e}")))
}

fn json_of(raw: &RawValue) -> serde_json::Value {
    serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null)
}

fn user_field(raw: Option<&RawValue>, name: &str) -> Result<UserId, String> {
    let raw = raw.ok_or_else(|| format!("missing field `{name}`"))?;
    UserId::from_json_text(raw.get()).map_err(|e| format!("bad user id in `{name}`: {e}"))
}

fn group_field(raw: Option<&RawValue>) -> Result<GroupId, String> {
    let raw = raw.ok_or_else(|| "missing field `group`".to_owned())?;
    GroupId::from_json_text(raw.get()).map_err(|e| format!("bad group id in `group`: {e}"))
}

fn positions_field(raw: Option<&RawValue>) -> Result<Positions, String> {
    let raw = raw.ok_or_else(|| "missing field `positions`".to_owned())?;
    parse_positions(&json_of(raw))
}

fn body_field(raw: Option<&RawValue>) -> Result<Body, String> {
    raw.map(|r| Body::from_raw(r.to_owned()))
        .ok_or_else(|| "missing field `body`".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ClientFrame, FrameError> {
        ClientFrame::parse(s)
    }

    fn code(s: &str) -> ErrorCode {
        parse(s).unwrap_err().code
    }

    #[test]
    fn round_trips_every_frame() {
        let frames = vec![
            ClientFrame::Send {
                to: UserId::new("42").unwrap(),
                body: Body::from_value(&serde_json::json!({"a":[1,2]})),
                id: Some(CorrelationId::new("c-1").unwrap()),
            },
            ClientFrame::Send {
                to: UserId::new("bob").unwrap(),
                body: Body::null(),
                id: None,
            },
            ClientFrame::Publish {
                group: GroupId::new("g1").unwrap(),
                body: Body::from_value(&serde_json::json!("hi")),
                id: None,
            },
            ClientFrame::Join {
                group: GroupId::new("g1").unwrap(),
                id: Some(CorrelationId::new("j").unwrap()),
            },
            ClientFrame::Leave {
                group: GroupId::new("g1").unwrap(),
                id: None,
            },
            ClientFrame::Ping {
                id: Some(CorrelationId::new("p").unwrap()),
            },
            ClientFrame::Ping { id: None },
            ClientFrame::Resume {
                positions: [(
                    "group:g1".to_owned(),
                    crate::StreamPosition {
                        epoch: "Zt7w".into(),
                        seq: 9,
                    },
                )]
                .into(),
                id: Some(CorrelationId::new("r1").unwrap()),
            },
        ];
        for f in frames {
            let text = serde_json::to_string(&f).unwrap();
            assert_eq!(parse(&text).unwrap(), f, "{text}");
        }
    }

    #[test]
    fn a_null_type_or_id_is_a_bad_one_not_a_missing_one() {
        for text in [
            r#"{"type":null,"userId":"bob","msg":"hi"}"#,
            r#"{"type":"send","to":"bob","body":1,"id":null}"#,
            r#"{"type":"ping","id":null}"#,
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!((e.code, e.id), (ErrorCode::BadRequest, None), "{text}");
        }
    }

    #[test]
    fn an_integer_id_of_any_length_means_its_digits() {
        let f = parse(r#"{"type":"send","to":100000000000000000000,"body":1}"#).unwrap();
        assert!(
            matches!(f, ClientFrame::Send { to, .. } if to.as_str() == "100000000000000000000")
        );
        let f = parse(r#"{"type":"ping","id":100000000000000000000}"#).unwrap();
        assert_eq!(f.id().map(|i| i.as_str()), Some("100000000000000000000"));
        let f = parse(r#"{"type":"join","group":-12}"#).unwrap();
        assert!(matches!(f, ClientFrame::Join { group, .. } if group.as_str() == "-12"));
        for bad in [
            r#"{"type":"send","to":1.5,"body":1}"#,
            r#"{"type":"send","to":1e3,"body":1}"#,
            r#"{"type":"send","to":true,"body":1}"#,
        ] {
            assert_eq!(parse(bad).unwrap_err().code, ErrorCode::BadRequest, "{bad}");
        }
    }

    #[test]
    fn original_form_is_a_send() {
        let f = parse(r#"{"userId":2,"msg":"hi"}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Send {
                to: UserId::new("2").unwrap(),
                body: Body::from_value(&serde_json::json!("hi")),
                id: None
            }
        );
    }

    #[test]
    fn body_is_kept_byte_for_byte_and_null_is_a_body() {
        let f = parse(r#"{"type":"send","to":"a","body":{"x": 1.50}}"#).unwrap();
        let ClientFrame::Send { body, .. } = f else {
            panic!("not a send")
        };
        assert_eq!(body.get(), r#"{"x": 1.50}"#);
        let f = parse(r#"{"type":"send","to":"a","body":null}"#).unwrap();
        assert!(matches!(f, ClientFrame::Send { body, .. } if body.get() == "null"));
    }

    #[test]
    fn integer_ids_are_decimal_strings() {
        let f = parse(r#"{"type":"join","group":7,"id":99}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Join {
                group: GroupId::new("7").unwrap(),
                id: Some(CorrelationId::new("99").unwrap())
            }
        );
    }

    #[test]
    fn invalid_json_is_bad_request() {
        assert_eq!(code("{not json"), ErrorCode::BadRequest);
        assert_eq!(code(""), ErrorCode::BadRequest);
    }

    #[test]
    fn non_objects_are_bad_request() {
        assert_eq!(code("[1,2]"), ErrorCode::BadRequest);
        let e = parse(r#"["ping","x"]"#).unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, None));
        assert_eq!(code("\"send\""), ErrorCode::BadRequest);
        assert_eq!(code("3"), ErrorCode::BadRequest);
        assert_eq!(code("null"), ErrorCode::BadRequest);
    }

    #[test]
    fn unknown_type_echoes_id() {
        let e = parse(r#"{"type":"dance","id":"c9"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownType);
        assert_eq!(e.id, Some(CorrelationId::new("c9").unwrap()));
    }

    #[test]
    fn missing_or_non_string_type_is_bad_request() {
        assert_eq!(code(r#"{"to":"a","body":1}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":null}"#), ErrorCode::BadRequest);
    }

    #[test]
    fn missing_fields_are_bad_request_with_id() {
        for s in [
            r#"{"type":"send","body":1,"id":"x"}"#,
            r#"{"type":"send","to":"a","id":"x"}"#,
            r#"{"type":"publish","body":1,"id":"x"}"#,
            r#"{"type":"publish","group":"g","id":"x"}"#,
            r#"{"type":"join","id":"x"}"#,
            r#"{"type":"leave","id":"x"}"#,
            r#"{"userId":2,"id":"x"}"#,
            r#"{"msg":"hi","id":"x"}"#,
            r#"{"type":"resume","id":"x"}"#,
            r#"{"type":"resume","positions":[],"id":"x"}"#,
            r#"{"type":"resume","positions":{"inbox":{"seq":1}},"id":"x"}"#,
        ] {
            let e = parse(s).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{s}");
            assert_eq!(e.id.as_ref().map(|i| i.as_str()), Some("x"), "{s}");
        }
    }

    #[test]
    fn bad_ids_are_bad_request() {
        for s in [
            r#"{"type":"send","to":"a b","body":1}"#,
            r#"{"type":"send","to":"","body":1}"#,
            r#"{"type":"send","to":true,"body":1}"#,
            r#"{"type":"send","to":1.5,"body":1}"#,
            r#"{"type":"join","group":["g"]}"#,
            r#"{"userId":"no/slash","msg":1}"#,
        ] {
            assert_eq!(code(s), ErrorCode::BadRequest, "{s}");
        }
        let long = "g".repeat(129);
        assert_eq!(
            code(&format!(r#"{{"type":"join","group":"{long}"}}"#)),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn correlation_id_over_64_bytes_is_refused_and_not_echoed() {
        let long = "i".repeat(65);
        let e = parse(&format!(r#"{{"type":"ping","id":"{long}"}}"#)).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(e.id, None);
        assert!(!e.message.contains(&long));
        let e = parse(r#"{"type":"ping","id":{"a":1}}"#).unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, None));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(
            parse(r#"{"type":"ping","extra":[1]}"#).unwrap(),
            ClientFrame::Ping { id: None }
        );
    }
}
