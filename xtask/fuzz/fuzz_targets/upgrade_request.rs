//! Fuzz target: the opening handshake of `GET /ws` (PROTOCOL.md §2): the
//! query (`token`, `userId`, `resume`) through `protocol::connect::ConnectQuery`,
//! the upgrade headers and `Sec-WebSocket-Key` through
//! `wshub_server::handshake::websocket_key`, the Origin through
//! `handshake::origin_allowed`, and `Authorization: Bearer` through
//! `wshub_server::auth::bearer`.
//!
//! The input is a request head as text: `GET /ws?<query> HTTP/1.1`, then
//! `Name: value` lines. Each check is held against an independent reading:
//! the query decoded by hand (`+`, `%XX`, last one wins, an empty `token`
//! is absent, a bad `userId` is a 400); the key is exactly 24 characters of
//! base64 for 16 bytes (canonical padding) over HTTP/1.1 with the upgrade
//! headers; an Origin passes an `--allowed-origin` list only when it is on
//! it, and in tokenless dev mode only when its host is `localhost` or a
//! loopback address (IPv6 in brackets included).

#![no_main]

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::Version;
use libfuzzer_sys::fuzz_target;
use protocol::connect::ConnectQuery;
use protocol::UserId;
use wshub_server::auth::bearer;
use wshub_server::handshake::{origin_allowed, websocket_key};

/// `application/x-www-form-urlencoded` decoding, written out.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let hex = |c: u8| (c as char).to_digit(16);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn expected_query(query: Option<&str>) -> Result<ConnectQuery, ()> {
    let mut q = ConnectQuery::default();
    let mut user = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k), decode(v));
        match k.as_str() {
            "token" if !v.is_empty() => q.token = Some(v),
            "userId" => user = Some(v),
            "resume" => q.resume = v == "1",
            _ => {}
        }
    }
    q.user_id = match user {
        None => None,
        Some(u) => Some(UserId::new(&u).map_err(|_| ())?),
    };
    Ok(q)
}

/// Base64 (standard alphabet, padded) of exactly 16 bytes: 21 characters,
/// a 22nd that carries 2 bits (its low 4 zero), then `==`.
fn is_key(k: &str) -> bool {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = k.as_bytes();
    b.len() == 24
        && b[..21].iter().all(|c| ALPHABET.contains(c))
        && ALPHABET
            .iter()
            .position(|c| *c == b[21])
            .is_some_and(|i| i & 0xf == 0)
        && &b[22..] == b"=="
}

fn has_token(h: &HeaderMap, name: HeaderName, want: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
    })
}

fn expected_key(version: Version, h: &HeaderMap) -> Option<String> {
    let key = h.get(header::SEC_WEBSOCKET_KEY)?.to_str().ok()?.trim();
    (version == Version::HTTP_11
        && has_token(h, header::UPGRADE, "websocket")
        && has_token(h, header::CONNECTION, "upgrade")
        && h.get(header::SEC_WEBSOCKET_VERSION)?.as_bytes() == b"13"
        && is_key(key))
    .then(|| key.to_owned())
}

/// The host of an Origin (`scheme://host[:port]`), by hand.
fn origin_host(origin: &str) -> &str {
    let rest = origin.split_once("://").map_or(origin, |(_, r)| r);
    match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.split([':', '/']).next().unwrap_or(""),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let mut words = request_line.split(' ');
    let _method = words.next();
    let target = words.next().unwrap_or("");
    let version = match words.next() {
        Some("HTTP/1.1") => Version::HTTP_11,
        Some("HTTP/1.0") => Version::HTTP_10,
        Some("HTTP/2") => Version::HTTP_2,
        _ => Version::HTTP_09,
    };
    let query = target.split_once('?').map(|(_, q)| q);
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        // What hyper would have refused never reaches the server.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.trim_matches([' ', '\t'])),
        ) {
            headers.append(n, v);
        }
    }

    // The query.
    let parsed = ConnectQuery::parse(query);
    match (&parsed, expected_query(query)) {
        (Ok(got), Ok(want)) => assert_eq!(got, &want, "{query:?}"),
        (Err(_), Err(())) => {}
        (got, want) => panic!("{query:?}: parsed {got:?}, expected {want:?}"),
    }
    if let Ok(q) = &parsed {
        assert!(q.token.as_ref().is_none_or(|t| !t.is_empty()));
    }

    // The upgrade headers and the key.
    let key = websocket_key(version, &headers);
    assert_eq!(key, expected_key(version, &headers), "{text:?}");

    // Authorization: Bearer.
    for value in headers.get_all(header::AUTHORIZATION) {
        let Ok(value) = value.to_str() else { continue };
        if let Some(token) = bearer(value) {
            assert!(!token.is_empty() && token == token.trim(), "{value:?}");
            let head = value.trim();
            assert!(head.len() > 7 && head[..7].eq_ignore_ascii_case("bearer "));
            assert!(head.ends_with(token));
        }
    }

    // The Origin.
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let listed = [
        "https://chat.example.com/".to_owned(),
        "http://LOCALHOST:8080".to_owned(),
    ];
    assert!(origin_allowed(&[], &headers, true));
    let on_list = origin_allowed(&listed, &headers, true);
    match origin {
        None => {
            assert!(on_list && origin_allowed(&[], &headers, false));
        }
        Some(o) => {
            let want = listed
                .iter()
                .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o));
            assert_eq!(on_list, want, "{o:?} against the list");
            let host = origin_host(o);
            let local = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            assert_eq!(
                origin_allowed(&[], &headers, false),
                local,
                "dev mode, {o:?}"
            );
        }
    }
});
