//! Fuzz target: the body of a push, `POST /api/v1/users/{user}/messages`,
//! `/groups/{group}/messages`, `/broadcast` (PROTOCOL.md §6), through
//! `protocol::api::parse_push_body`, which the server runs on the body's
//! bytes.
//!
//! Beyond "no panic": a body that is accepted was a JSON object with a
//! `body` member, and the `body` kept is that member byte for byte (a slice
//! of the input) with the same JSON value; a body that is not JSON, not an
//! object, or has no `body` is refused (always `bad_request` on the wire)
//! with a message saying what a push body must be.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::api::parse_push_body;

fuzz_target!(|data: &[u8]| {
    let value = serde_json::from_slice::<serde_json::Value>(data);
    // Past its own limits serde_json refuses text that is JSON by the grammar.
    let too_deep = wshub_fuzz::too_deep(&value);
    match parse_push_body(data) {
        Ok(body) => {
            let raw = body.get().as_bytes();
            assert!(
                data.windows(raw.len().max(1)).any(|w| w == raw),
                "the body is not a slice of the input"
            );
            match &value {
                Ok(v) => {
                    let member = v.get("body");
                    assert!(v.is_object() && member.is_some(), "accepted {v}");
                    if let Ok(inner) = serde_json::from_str::<serde_json::Value>(body.get()) {
                        assert_eq!(Some(&inner), member);
                    }
                }
                // serde_json skips a member it does not read without
                // checking that it is UTF-8; only UTF-8 is held to this.
                Err(_) => assert!(
                    too_deep || std::str::from_utf8(data).is_err(),
                    "accepted invalid JSON"
                ),
            }
        }
        Err(msg) => {
            assert!(msg.starts_with("body must be "), "{msg}");
            if let Ok(v) = &value {
                // Refused though valid: not an object, no `body`, or a
                // repeated `body` (which serde refuses rather than guess).
                let repeated = String::from_utf8_lossy(data).matches("\"body\"").count() > 1
                    || String::from_utf8_lossy(data).contains('\\');
                assert!(
                    !v.is_object() || v.get("body").is_none() || repeated,
                    "refused {v}: {msg}"
                );
            }
        }
    }
});
