//! A message body: any JSON value, `null` included, carried unchanged.
//!
//! Kept as raw JSON text (`RawValue`) so the server never re-encodes what a
//! client sent: the bytes that came in are the bytes every recipient gets.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

#[derive(Debug, Clone)]
pub struct Body(Box<RawValue>);

impl Body {
    /// Wraps raw JSON text already known to be valid.
    pub fn from_raw(raw: Box<RawValue>) -> Self {
        Self(raw)
    }

    /// Encodes a JSON value as a body.
    pub fn from_value(v: &serde_json::Value) -> Self {
        // Serialising a `Value` cannot fail: its keys are strings.
        Self(serde_json::value::to_raw_value(v).unwrap_or_else(|_| Self::null_raw()))
    }

    /// Parses `text` as JSON; when it is not JSON, it becomes a JSON string.
    /// (This is how the CLI reads a `BODY` argument.)
    pub fn from_cli_arg(text: &str) -> Self {
        match serde_json::from_str::<Box<RawValue>>(text) {
            Ok(raw) => Self(raw),
            Err(_) => Self::from_value(&serde_json::Value::String(text.to_owned())),
        }
    }

    pub fn null() -> Self {
        Self(Self::null_raw())
    }

    fn null_raw() -> Box<RawValue> {
        RawValue::NULL.to_owned()
    }

    /// The raw JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl PartialEq for Body {
    /// Bodies are equal when they are the same JSON value.
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get() || self.to_value() == other.to_value()
    }
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Body {
    /// Goes through `Value` so a `Body` can sit inside internally tagged
    /// enums (which buffer their content and cannot hand out raw text). The
    /// server's own frame parser takes the raw text directly instead.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(Self::from_value(&v))
    }
}
