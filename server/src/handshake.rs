//! The checks of a WebSocket opening handshake that need only its headers
//! (PROTOCOL.md §2): is it a well-formed upgrade request (RFC 6455 §4.2.1),
//! and may its Origin connect. Pure functions over hyper's header types, so
//! the fuzz targets can call them (`server/src/lib.rs`).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hyper::header::{self, HeaderMap};
use hyper::Version;

/// The `Sec-WebSocket-Key` of a well-formed opening handshake (RFC 6455
/// §4.2.1): HTTP/1.1, `Upgrade: websocket`, `Connection: upgrade`, version
/// 13, and a key that is the base64 of 16 bytes.
pub fn websocket_key(version: Version, h: &HeaderMap) -> Option<String> {
    if version != Version::HTTP_11 {
        return None;
    }
    let has_token = |name: header::HeaderName, want: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
                .unwrap_or(false)
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return None;
    }
    if h.get(header::SEC_WEBSOCKET_VERSION)?.as_bytes() != b"13" {
        return None;
    }
    let key = h.get(header::SEC_WEBSOCKET_KEY)?.to_str().ok()?.trim();
    let decoded = BASE64.decode(key).ok()?;
    (decoded.len() == 16).then(|| key.to_owned())
}

/// Whether a request with these headers may connect: `allowed` is
/// `--allowed-origin` (any of them, case-insensitively, a trailing `/`
/// ignored); when it is empty, any origin with a token, and without a token
/// (dev mode) only pages served from this machine, so a random site cannot
/// open tokenless sockets in a developer's browser. No `Origin`: not a
/// browser, allowed.
pub fn origin_allowed(allowed: &[String], h: &HeaderMap, with_token: bool) -> bool {
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true; // not a browser
    };
    if !allowed.is_empty() {
        return allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin));
    }
    if with_token {
        return true;
    }
    let rest = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    // An IPv6 host is in brackets, and holds colons of its own.
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next(),
        None => rest.split([':', '/']).next(),
    }
    .unwrap_or("");
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_str(key).unwrap(),
        );
        h
    }

    #[test]
    fn the_key_must_be_base64_of_sixteen_bytes_over_http_1_1() {
        let good = "dGhlIHNhbXBsZSBub25jZQ==";
        assert!(websocket_key(Version::HTTP_11, &headers(good)).is_some());
        assert!(websocket_key(Version::HTTP_10, &headers(good)).is_none());
        for bad in [
            "x",
            "not base64 at all!!",
            "dGhlIHNhbXBsZQ==",
            "dGhlIHNhbXBsZSBub25jZSEh",
        ] {
            assert!(
                websocket_key(Version::HTTP_11, &headers(bad)).is_none(),
                "{bad}"
            );
        }
    }

    fn origin(o: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        h
    }

    #[test]
    fn origins() {
        let listed = ["https://chat.example.com/".to_owned()];
        assert!(origin_allowed(
            &listed,
            &origin("https://CHAT.example.com"),
            true
        ));
        assert!(!origin_allowed(
            &listed,
            &origin("https://evil.example"),
            true
        ));
        assert!(origin_allowed(&[], &HeaderMap::new(), false));
        assert!(origin_allowed(&[], &origin("https://evil.example"), true));
        assert!(!origin_allowed(&[], &origin("https://evil.example"), false));
        assert!(origin_allowed(&[], &origin("http://localhost:8080"), false));
        assert!(origin_allowed(&[], &origin("http://127.0.0.1:8080"), false));
        // Found by the upgrade_request fuzz target: IPv6 loopback was refused.
        assert!(origin_allowed(&[], &origin("http://[::1]:8080"), false));
        assert!(origin_allowed(&[], &origin("http://[::1]"), false));
        assert!(!origin_allowed(
            &[],
            &origin("http://[2001:db8::1]:80"),
            false
        ));
        assert!(!origin_allowed(
            &[],
            &origin("http://localhost.evil.example"),
            false
        ));
    }
}
