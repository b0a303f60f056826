//! Fuzz target: the `Idempotency-Key` header of a push (PROTOCOL.md §6),
//! through `protocol::api::valid_idempotency_key`, as the server calls it
//! on the header's bytes.
//!
//! Beyond "no panic": a key is valid exactly when it is 1..=128 bytes, each
//! in 0x21–0x7E; a valid key is also a header value hyper accepts and reads
//! back as the same text, so the server stores it byte for byte.

#![no_main]

use hyper::header::HeaderValue;
use libfuzzer_sys::fuzz_target;
use protocol::api::valid_idempotency_key;

fuzz_target!(|data: &[u8]| {
    let valid = valid_idempotency_key(data);
    let expected =
        (1..=128).contains(&data.len()) && data.iter().all(|b| (0x21..=0x7e).contains(b));
    assert_eq!(valid, expected, "{data:?}");
    if valid {
        let header = match HeaderValue::from_bytes(data) {
            Ok(h) => h,
            Err(e) => panic!("a valid key is not a header value: {e}"),
        };
        assert_eq!(header.to_str().ok().map(str::as_bytes), Some(data));
        assert_eq!(String::from_utf8_lossy(header.as_bytes()).as_bytes(), data);
    }
});
