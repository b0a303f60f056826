//! User and group ids (PROTOCOL.md §1) and the client's correlation id (§3).
//!
//! Ids are `Arc<str>` inside so the hub can keep one in several maps and hand
//! copies to every message it routes without allocating.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Longest user or group id, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest client correlation id, in bytes.
pub const MAX_CORRELATION_ID_LEN: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("id has a character outside [A-Za-z0-9_.:@-]")]
    BadChar,
    #[error("id must be a string or an integer")]
    WrongType,
}

/// Checks the id alphabet and length of §1.
pub fn validate_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(IdError::BadChar)
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` and wraps it.
            pub fn new(s: &str) -> Result<Self, IdError> {
                validate_id(s)?;
                Ok(Self(Arc::from(s)))
            }

            /// Parses an id from a JSON value: a string, or an integer that
            /// stands for its decimal string (the original integer-id design).
            pub fn from_json(v: &serde_json::Value) -> Result<Self, IdError> {
                match v {
                    serde_json::Value::String(s) => Self::new(s),
                    serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => {
                        Self::new(&n.to_string())
                    }
                    _ => Err(IdError::WrongType),
                }
            }

            /// `from_json` for a value still in its JSON text: an integer
            /// of any length stands for its digits as written (a parsed
            /// one past 64 bits would already be a rounded float).
            pub fn from_json_text(text: &str) -> Result<Self, IdError> {
                let digits = text.strip_prefix('-').unwrap_or(text);
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Self::new(text);
                }
                let v: serde_json::Value =
                    serde_json::from_str(text).map_err(|_| IdError::WrongType)?;
                Self::from_json(&v)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = d.deserialize_any(IdVisitor { max: MAX_ID_LEN })?;
                Self::new(&s).map_err(de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A user id: 1..=128 bytes of `[A-Za-z0-9_.:@-]`.
    UserId
);
id_type!(
    /// A group id: same alphabet and length as a user id.
    GroupId
);

/// The client's own correlation id: a string of up to 64 bytes, or an
/// integer taken as its decimal string. Echoed back in acks and errors.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct CorrelationId(String);

impl CorrelationId {
    pub fn new(s: &str) -> Result<Self, CorrelationIdError> {
        if s.len() > MAX_CORRELATION_ID_LEN {
            return Err(CorrelationIdError::TooLong);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn from_json(v: &serde_json::Value) -> Result<Self, CorrelationIdError> {
        match v {
            serde_json::Value::String(s) => Self::new(s),
            serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Self::new(&n.to_string()),
            _ => Err(CorrelationIdError::WrongType),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a correlation id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorrelationIdError {
    #[error("id is longer than {MAX_CORRELATION_ID_LEN} bytes")]
    TooLong,
    #[error("id must be a string or an integer")]
    WrongType,
}

impl Serialize for CorrelationId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CorrelationId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = d.deserialize_any(IdVisitor {
            max: MAX_CORRELATION_ID_LEN,
        })?;
        Self::new(&s).map_err(de::Error::custom)
    }
}

/// Accepts a string or an integer; the caller validates the result.
struct IdVisitor {
    max: usize,
}

impl Visitor<'_> for IdVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string of at most {} bytes or an integer", self.max)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_alphabet_and_integers() {
        assert!(UserId::new("alice_01.x:y@z-w").is_ok());
        let id: UserId = serde_json::from_str("42").unwrap();
        assert_eq!(id.as_str(), "42");
        let id = GroupId::from_json(&serde_json::json!(7)).unwrap();
        assert_eq!(id.as_str(), "7");
    }

    #[test]
    fn refuses_bad_ids() {
        assert_eq!(UserId::new(""), Err(IdError::Empty));
        assert_eq!(UserId::new(&"a".repeat(129)), Err(IdError::TooLong));
        assert!(UserId::new(&"a".repeat(128)).is_ok());
        assert_eq!(UserId::new("a b"), Err(IdError::BadChar));
        assert_eq!(UserId::new("é"), Err(IdError::BadChar));
        assert_eq!(
            UserId::from_json(&serde_json::json!(1.5)),
            Err(IdError::WrongType)
        );
        assert_eq!(
            UserId::from_json(&serde_json::json!(true)),
            Err(IdError::WrongType)
        );
        assert!(serde_json::from_str::<UserId>("\"a/b\"").is_err());
    }

    #[test]
    fn correlation_ids() {
        assert!(CorrelationId::new(&"x".repeat(64)).is_ok());
        assert_eq!(
            CorrelationId::new(&"x".repeat(65)),
            Err(CorrelationIdError::TooLong)
        );
        let c = CorrelationId::from_json(&serde_json::json!(17)).unwrap();
        assert_eq!(c.as_str(), "17");
    }
}
