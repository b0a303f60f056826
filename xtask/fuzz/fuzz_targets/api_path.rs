//! Fuzz target: the path of a server API request after `/api/v1/`
//! (PROTOCOL.md §6), through `protocol::api::ApiRoute::parse`, which the
//! server runs before anything else of the request.
//!
//! Beyond "no panic": a path either routes, is a 404 (no route), or is a
//! 400 naming a bad user or group id, decided by the path's shape alone
//! (checked against an independent table of the routes, ids judged after
//! percent-decoding); a route's own `path()` is exactly the input with its
//! segments decoded and parses back to the same route; a route's ids are
//! valid ids; a 400's message shows at most 40 characters of the id.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::api::ApiRoute;
use protocol::ids::validate_id;

/// The contract's path shapes: `*` is one id segment.
const SHAPES: [&[&str]; 10] = [
    &["users", "*", "messages"],
    &["groups", "*", "messages"],
    &["broadcast"],
    &["groups", "*", "members", "*"],
    &["groups", "*", "members"],
    &["users", "*"],
    &["users", "*", "connections"],
    &["stats"],
    &["users", "*", "history"],
    &["groups", "*", "history"],
];

fn shape_of(parts: &[&str]) -> Option<&'static [&'static str]> {
    SHAPES.into_iter().find(|shape| {
        shape.len() == parts.len() && shape.iter().zip(parts).all(|(s, p)| *s == "*" || s == p)
    })
}

fuzz_target!(|data: &[u8]| {
    // hyper hands the server the path as text.
    let Ok(rest) = std::str::from_utf8(data) else {
        return;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let shape = shape_of(&parts);
    // A segment as the API reads an id from it: percent-decoded.
    let decoded = |p: &str| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8()
            .map(|d| d.into_owned())
    };
    let ids_valid = shape.is_some_and(|s| {
        s.iter()
            .zip(&parts)
            .all(|(s, p)| *s != "*" || decoded(p).is_ok_and(|d| validate_id(&d).is_ok()))
    });
    match ApiRoute::parse(rest) {
        Ok(Some(route)) => {
            assert!(shape.is_some() && ids_valid, "{rest:?} routed to {route:?}");
            let plain: Vec<String> = parts
                .iter()
                .map(|p| decoded(p).unwrap_or_default())
                .collect();
            assert_eq!(route.path(), plain.join("/"));
            assert_eq!(ApiRoute::parse(&route.path()), Ok(Some(route.clone())));
            // Every route answers at least one method and not every one.
            let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "get"];
            let allowed = methods.iter().filter(|m| route.allows(m)).count();
            assert!((1..=2).contains(&allowed), "{route:?} allows {allowed}");
            assert!(!route.allows("get") && !route.allows("PATCH"));
        }
        Ok(None) => assert!(shape.is_none(), "{rest:?} has a route's shape but is a 404"),
        Err(msg) => {
            assert!(shape.is_some() && !ids_valid, "{rest:?} refused: {msg}");
            assert!(
                msg.starts_with("bad user id `")
                    || msg.starts_with("bad group id `")
                    || msg.starts_with("bad id `"),
                "{msg}"
            );
            // `bad user id `<at most 40 chars>`: <IdError>`.
            assert!(msg.len() <= 40 * 4 + 80, "a {} byte message", msg.len());
        }
    }
});
