//! Fuzz target: connection tokens (PROTOCOL.md §1, §2) through
//! `wshub_server::auth::TokenVerifier::verify`, the check every upgrade
//! with a token runs.
//!
//! Random bytes almost never carry a valid HS256 signature, so the target
//! signs what it is given: the first byte picks a raw token (any text), or
//! claims (the rest of the input) under the standard HS256 header, or a
//! header and claims of the input's own (split at the first newline), each
//! signed with the server's secret. Beyond "no panic" (a token is answered
//! 101 or 401, never a dropped connection): a correctly signed HS256 token
//! is never called badly signed; claims that are not JSON are malformed
//! (UTF-8 ones: serde_json does not check the bytes of a claim it skips);
//! an accepted token had an HS256 header, a JSON object of claims with
//! `sub` and `exp`, `exp` in the future, `nbf`/`iat` not in the future, and
//! ids that are valid; its expiry always converts to a deadline or to none.

#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use protocol::ids::validate_id;
use wshub_server::auth::{expiry_instant, now_secs, TokenError, TokenVerifier};

const SECRET: &str = "fuzz-secret";
const HS256_HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;

fn signed(header: &[u8], claims: &[u8]) -> String {
    let message = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    match jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256) {
        Ok(sig) => format!("{message}.{sig}"),
        Err(e) => panic!("cannot sign: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let verifier = TokenVerifier::new(Some(SECRET));
    let (token, header, claims) = match mode % 3 {
        0 => match std::str::from_utf8(rest) {
            Ok(t) => (t.to_owned(), None, None),
            Err(_) => return,
        },
        1 => (signed(HS256_HEADER, rest), Some(HS256_HEADER), Some(rest)),
        _ => {
            let split = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            let (h, c) = rest.split_at(split);
            let c = c.get(1..).unwrap_or(&[]);
            (signed(h, c), Some(h), Some(c))
        }
    };
    let result = verifier.verify(&token);
    assert_ne!(result, Err(TokenError::NoSecret));
    assert_ne!(result, Err(TokenError::Missing));
    let hs256 = header.is_some_and(|h| {
        serde_json::from_slice::<serde_json::Value>(h)
            .ok()
            .and_then(|v| v.get("alg").and_then(|a| a.as_str()).map(|a| a == "HS256"))
            .unwrap_or(false)
    });
    if hs256 {
        assert_ne!(
            result,
            Err(TokenError::BadSignature),
            "a signed token refused as unsigned"
        );
    }
    let claims_json = claims.map(serde_json::from_slice::<serde_json::Value>);
    // serde_json skips a claim it does not know without checking that its
    // string is UTF-8, so only claims in UTF-8 are held to the grammar.
    let utf8 = claims.is_some_and(|c| std::str::from_utf8(c).is_ok());
    if let (Some(Err(e)), true) = (&claims_json, utf8) {
        if !e.to_string().contains("number out of range") {
            assert!(result.is_err(), "claims that are not JSON accepted");
        }
    }
    if let Ok(c) = &result {
        let now = now_secs();
        assert!(c.exp > now, "expired token accepted");
        assert!(c.nbf.is_none_or(|n| n <= now) && c.iat.is_none_or(|i| i <= now));
        assert!(validate_id(c.sub.as_str()).is_ok());
        assert!(c.groups.iter().all(|g| validate_id(g.as_str()).is_ok()));
        if let Some(h) = header {
            assert!(
                hs256,
                "accepted under header {:?}",
                String::from_utf8_lossy(h)
            );
        }
        if let Some(Ok(v)) = &claims_json {
            assert!(v.is_object() && v.get("sub").is_some() && v.get("exp").is_some());
        }
        // Never a panic, whatever `exp` holds.
        let _ = expiry_instant(c.exp);
    }
});
