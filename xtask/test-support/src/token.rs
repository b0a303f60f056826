//! Connection tokens: HS256 JWTs as a backend would mint them (PROTOCOL.md
//! §1), with any claims a test needs, valid or not.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::SECRET;

/// Whole seconds since the Unix epoch, the unit of `exp`, `nbf` and `iat`.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A token for `user` joining `groups`, valid for `ttl` seconds from now
/// (negative: already expired), signed with [`SECRET`].
pub fn token(user: &str, groups: &[&str], ttl: i64) -> String {
    sign(
        &json!({"sub": user, "groups": groups, "exp": now() as i64 + ttl}),
        SECRET,
    )
}

/// Signs arbitrary `claims` with `secret` (HS256), so a test can make any
/// token the server must refuse: another secret, no `exp`, a bad `sub`.
pub fn sign(claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("claims serialize")
}
