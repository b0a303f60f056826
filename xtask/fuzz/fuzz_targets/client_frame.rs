//! Fuzz target: a client's text frame (PROTOCOL.md §3, §10), through
//! `protocol::ClientFrame::parse`, the parser the server runs on every frame.
//!
//! Beyond "no panic": a frame that parses re-encodes (`serde_json::to_string`)
//! to text that parses to an equal frame; a refusal names `bad_request` or
//! `unknown_type` and nothing else, `unknown_type` only for a JSON object
//! whose `type` is a string the contract does not know; text that is not
//! JSON is always refused; an error's message stays short (it shows at most
//! a clipped part of what the client sent) and never carries an `id` the
//! contract calls bad.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{ClientFrame, ErrorCode};

const KNOWN_TYPES: [&str; 6] = ["send", "publish", "join", "leave", "ping", "resume"];

fuzz_target!(|data: &[u8]| {
    // The server only ever parses text frames, which are UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = ClientFrame::parse(text);
    // serde_json's own reading of the text, as the oracle.
    let value = serde_json::from_str::<serde_json::Value>(text);
    // Past its own limits serde_json refuses text that is JSON by the grammar.
    let too_deep = wshub_fuzz::too_deep(&value);
    match parsed {
        Ok(frame) => {
            match &value {
                Ok(v) => assert!(v.is_object(), "a non-object parsed: {text:?}"),
                Err(_) => assert!(too_deep, "invalid JSON parsed as a frame: {text:?}"),
            }
            if let Some(id) = frame.id() {
                assert!(id.as_str().len() <= protocol::ids::MAX_CORRELATION_ID_LEN);
            }
            if let ClientFrame::Resume { positions, .. } = &frame {
                for p in positions.values() {
                    assert!(p.epoch.len() <= protocol::stream::MAX_EPOCH_LEN);
                }
            }
            let again = match serde_json::to_string(&frame) {
                Ok(s) => s,
                Err(e) => panic!("frame {frame:?} does not encode: {e}"),
            };
            match ClientFrame::parse(&again) {
                Ok(back) => assert_eq!(back, frame, "re-encoded as {again:?} from {text:?}"),
                Err(e) => panic!("re-encoded frame {again:?} (from {text:?}) is refused: {e:?}"),
            }
        }
        Err(e) => {
            assert!(
                matches!(e.code, ErrorCode::BadRequest | ErrorCode::UnknownType),
                "code {:?} for {text:?}",
                e.code
            );
            if value.is_err() && !too_deep {
                assert_eq!(e.code, ErrorCode::BadRequest, "invalid JSON {text:?}");
            }
            if e.code == ErrorCode::UnknownType {
                let kind = value
                    .as_ref()
                    .ok()
                    .and_then(|v| v.get("type"))
                    .and_then(|t| t.as_str());
                match kind {
                    Some(k) => assert!(!KNOWN_TYPES.contains(&k), "known type {k:?} refused"),
                    None if value.is_ok() => {
                        panic!("unknown_type without a string type: {text:?}")
                    }
                    // Past serde_json's limits: no oracle for the type.
                    None => assert!(too_deep),
                }
            }
            if e.message.starts_with("bad `id`") {
                assert_eq!(e.id, None, "a bad id echoed: {text:?}");
            }
            assert!(
                e.message.len() <= 256,
                "an error message of {} bytes for {} bytes of input",
                e.message.len(),
                text.len()
            );
        }
    }
});
