//! Connection token claims (PROTOCOL.md §1). Signing and verification live
//! with the binaries (jsonwebtoken); this is only the shape.

use serde::{Deserialize, Serialize};

use crate::ids::{GroupId, UserId};

/// Claims of a connection token. `sub` and `groups` are validated as ids while
/// decoding, so a token carrying a bad id fails to decode (401, malformed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: UserId,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
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
}
