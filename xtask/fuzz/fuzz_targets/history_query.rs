//! Fuzz target: the query string of `GET …/history` (PROTOCOL.md §10),
//! through `protocol::api::HistoryQuery::parse`.
//!
//! Beyond "no panic": the parser accepts exactly non-negative integers
//! (ASCII digits, any length; past u64 is as large as can be) for `since`
//! and `limit`, checked against an independent reading of the query: the
//! last of each name wins, `limit` is capped at 1000, defaults are 0 and
//! 100, other parameters are ignored, names and values are decoded as a
//! form's (`+` a space, `%xx` a byte); a refusal names the bad parameter.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::api::{HistoryQuery, HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX};

/// The oracle: a digit string's value, saturating at u64::MAX.
fn number(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.bytes().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// The oracle's form decoding: `+` is a space, then `%xx` a byte; bytes
/// that are not UTF-8 become U+FFFD.
fn form(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first byte picks "no query at all", so that case is reached too.
    let query = if text.starts_with('\u{0}') {
        None
    } else {
        Some(text)
    };
    let mut expected = Ok((0u64, HISTORY_LIMIT_DEFAULT));
    for pair in query.unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (form(k), form(v));
        if k != "since" && k != "limit" {
            continue;
        }
        let Some(n) = number(&v) else {
            expected = Err(k);
            break;
        };
        if let Ok((since, limit)) = &mut expected {
            if k == "since" {
                *since = n;
            } else {
                *limit = usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .min(HISTORY_LIMIT_MAX);
            }
        }
    }
    match (HistoryQuery::parse(query), expected) {
        (Ok(q), Ok((since, limit))) => {
            assert_eq!((q.since, q.limit), (since, limit), "{query:?}");
            assert!(q.limit <= HISTORY_LIMIT_MAX);
        }
        (Err(msg), Err(name)) => {
            assert!(msg.starts_with(&format!("`{name}`")), "{msg} for {query:?}")
        }
        (got, want) => panic!("{query:?}: parsed {got:?}, expected {want:?}"),
    }
});
