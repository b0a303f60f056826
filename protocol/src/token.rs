//! Connection token claims (PROTOCOL.md §1). Signing and verification live
//! with the binaries (jsonwebtoken); this is only the shape.

use serde::{Deserialize, Serialize};

use crate::ids::{GroupId, UserId};

/// Claims of a connection token. `sub` and `groups` are validated as ids while
/// decoding, so a token carrying a bad id fails to decode (401, malformed).
///
/// The times (`exp`, `nbf`, `iat`) are JSON numbers of seconds since the
/// epoch, whole or not (RFC 7519's NumericDate: a token minted from
/// Python's `time.time()` has a fraction); a fraction is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: UserId,
    #[serde(deserialize_with = "seconds")]
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupId>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_seconds"
    )]
    pub nbf: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_seconds"
    )]
    pub iat: Option<u64>,
}

/// A NumericDate: a whole or fractional number of seconds, not negative.
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Seconds;
    impl serde::de::Visitor<'_> for Seconds {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number of seconds since the epoch")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom("a negative time"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
            // `as` saturates; the bounds keep it exact where it matters.
            if v.is_finite() && v >= 0.0 && v < u64::MAX as f64 {
                Ok(v.floor() as u64)
            } else {
                Err(E::custom("a time out of range"))
            }
        }
    }
    d.deserialize_any(Seconds)
}

fn some_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    seconds(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_sub_or_group_fails_to_decode() {
        assert!(serde_json::from_str::<Claims>(r#"{"sub":"a b","exp":1}"#).is_err());
        assert!(
            serde_json::from_str::<Claims>(r#"{"sub":"a","exp":1,"groups":["ok","no way"]}"#)
                .is_err()
        );
        let c: Claims = serde_json::from_str(r#"{"sub":42,"exp":1,"groups":["g"]}"#).unwrap();
        assert_eq!(c.sub.as_str(), "42");
    }

    #[test]
    fn times_may_have_a_fraction_but_not_a_sign() {
        let c: Claims =
            serde_json::from_str(r#"{"sub":"a","exp":1900000000.75,"nbf":5.5,"iat":7}"#).unwrap();
        assert_eq!((c.exp, c.nbf, c.iat), (1_900_000_000, Some(5), Some(7)));
        for bad in [
            r#"{"sub":"a","exp":-1}"#,
            r#"{"sub":"a","exp":-0.5}"#,
            r#"{"sub":"a","exp":"1"}"#,
            r#"{"sub":"a","exp":1e30}"#,
            r#"{"sub":"a"}"#,
            r#"{"sub":"a","exp":1,"nbf":null}"#,
        ] {
            assert!(serde_json::from_str::<Claims>(bad).is_err(), "{bad}");
        }
    }
}
