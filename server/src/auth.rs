//! Who may connect and who may call the API (PROTOCOL.md §1): connection
//! tokens (HS256 JWTs) and the server API key.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use protocol::Claims;
use subtle::ConstantTimeEq;

/// Why a token was refused. Each is a 401; the text is safe to show the
/// client and to log (it never contains the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Missing,
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    /// Dev mode without `--secret` cannot check tokens.
    NoSecret,
}

impl TokenError {
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Missing => "missing token",
            TokenError::Malformed => "malformed token",
            TokenError::BadSignature => "bad token signature",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not yet valid",
            TokenError::NoSecret => "tokens cannot be checked: the server has no --secret",
        }
    }
}

/// Checks connection tokens against the server secret.
pub struct TokenVerifier {
    key: Option<DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    pub fn new(secret: Option<&str>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // jsonwebtoken checks the signature only; the claims are checked in
        // `verify`. `sub` and `exp` are required by `Claims` itself
        // (jsonwebtoken would demand a string `sub`, and the contract also
        // takes an integer); the times are checked below, whole or
        // fractional; claims the contract does not name (`aud`, `iss`, …)
        // are not the hub's business and do not refuse a token.
        validation.set_required_spec_claims::<&str>(&[]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Self {
            key: secret.map(|s| DecodingKey::from_secret(s.as_bytes())),
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let key = self.key.as_ref().ok_or(TokenError::NoSecret)?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                    _ => TokenError::Malformed,
                }
            })?;
        let claims = data.claims;
        let now = now_secs();
        // RFC 7519: not accepted on or after `exp` (jsonwebtoken still takes
        // `exp == now`, which would let a connection open and close at once).
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now) || claims.iat.is_some_and(|iat| iat > now) {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

/// When a token's `exp` (seconds since the epoch) falls, on this process's
/// monotonic clock; `None` when it is too far away for the clock to
/// represent (the server then treats the token as never expiring, which the
/// contract allows). Every step is checked: `exp` is the client's input.
pub fn expiry_instant(exp: u64) -> Option<std::time::Instant> {
    let at = UNIX_EPOCH.checked_add(std::time::Duration::from_secs(exp))?;
    let left = at
        .duration_since(SystemTime::now())
        .unwrap_or(std::time::Duration::ZERO);
    std::time::Instant::now().checked_add(left)
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Compares a presented API key with the configured one in constant time.
pub fn api_key_matches(configured: &str, presented: &str) -> bool {
    configured.as_bytes().ct_eq(presented.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn mint(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn verifies_and_refuses() {
        let v = TokenVerifier::new(Some("s3cret"));
        let now = now_secs();
        let ok = mint(json!({"sub":"42","exp":now+60,"groups":["g1"]}), "s3cret");
        let c = v.verify(&ok).unwrap();
        assert_eq!(c.sub.as_str(), "42");
        assert_eq!(c.groups.len(), 1);

        let cases = [
            (
                mint(json!({"sub":"42","exp":now+60}), "other"),
                TokenError::BadSignature,
            ),
            (
                mint(json!({"sub":"42","exp":now-1}), "s3cret"),
                TokenError::Expired,
            ),
            (mint(json!({"sub":"42"}), "s3cret"), TokenError::Malformed),
            (mint(json!({"exp":now+60}), "s3cret"), TokenError::Malformed),
            (
                mint(json!({"sub":"a b","exp":now+60}), "s3cret"),
                TokenError::Malformed,
            ),
            (
                mint(json!({"sub":"a","exp":now+60,"groups":["x/y"]}), "s3cret"),
                TokenError::Malformed,
            ),
            (
                mint(json!({"sub":"a","exp":now+60,"nbf":now+30}), "s3cret"),
                TokenError::NotYetValid,
            ),
            (
                mint(json!({"sub":"a","exp":now+60,"iat":now+30}), "s3cret"),
                TokenError::NotYetValid,
            ),
            ("not.a.jwt".to_owned(), TokenError::Malformed),
        ];
        for (token, expected) in cases {
            assert_eq!(v.verify(&token), Err(expected));
        }
    }

    /// RFC 7519 times may have a fraction (Python's `time.time()`), and a
    /// token may carry claims the contract does not name, `aud` included.
    #[test]
    fn fractional_times_and_other_claims_are_accepted() {
        let v = TokenVerifier::new(Some("s3cret"));
        let now = now_secs() as f64 + 0.25;
        for claims in [
            json!({"sub":"a","exp":now + 60.5,"nbf":now,"iat":now}),
            json!({"sub":"a","exp":now + 60.0,"aud":"wshub","iss":"backend","jti":"1"}),
            json!({"sub":"a","exp":now + 60.0,"aud":["x","y"]}),
        ] {
            let token = mint(claims.clone(), "s3cret");
            assert!(v.verify(&token).is_ok(), "{claims}");
        }
        let late = mint(json!({"sub":"a","exp":now - 0.5}), "s3cret");
        assert_eq!(v.verify(&late), Err(TokenError::Expired));
        let early = mint(
            json!({"sub":"a","exp":now + 60.0,"nbf":now + 30.5}),
            "s3cret",
        );
        assert_eq!(v.verify(&early), Err(TokenError::NotYetValid));
    }

    #[test]
    fn an_expiry_beyond_the_clock_means_no_expiry_not_a_panic() {
        let soon = expiry_instant(now_secs() + 60).unwrap();
        assert!(soon > std::time::Instant::now());
        for exp in [1u64 << 63, u64::MAX, (1u64 << 63) + 12345] {
            assert_eq!(expiry_instant(exp), None, "exp {exp}");
        }
        // And such a token verifies (it is validly signed and not expired).
        let v = TokenVerifier::new(Some("s3cret"));
        let token = mint(json!({"sub":"42","exp":u64::MAX}), "s3cret");
        assert_eq!(v.verify(&token).map(|c| c.exp), Ok(u64::MAX));
    }

    #[test]
    fn bearer_and_api_key() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert!(api_key_matches("k", "k"));
        assert!(!api_key_matches("k", "K"));
        assert!(!api_key_matches("k", "kk"));
    }
}
