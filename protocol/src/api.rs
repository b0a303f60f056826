//! The server API (PROTOCOL.md §6): its routes, the bodies it reads and
//! answers, and the checks of its headers and query strings. Pure parsing:
//! the server feeds these the bytes of a request, the fuzz targets feed them
//! anything.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::body::Body;
use crate::ids::{GroupId, UserId};

/// One API route, `/api/v1/<rest>`, with the ids it names already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRoute {
    PushUser(UserId),
    PushGroup(GroupId),
    Broadcast,
    Member(GroupId, UserId),
    Members(GroupId),
    User(UserId),
    Connections(UserId),
    Stats,
    UserHistory(UserId),
    GroupHistory(GroupId),
}

impl ApiRoute {
    /// Matches `rest`, the path after `/api/v1/` as sent. Ids are
    /// percent-decoded first: a client that encodes its path segments
    /// sends `a%40b` for `a@b` (§1 allows `@` and `:`). `Ok(None)`: no
    /// such path (404); `Err`: a path of the right shape naming a bad id
    /// (400), with a message that shows at most 40 characters of it.
    pub fn parse(rest: &str) -> Result<Option<ApiRoute>, String> {
        fn decoded(s: &str) -> Result<std::borrow::Cow<'_, str>, String> {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map_err(|_| format!("bad id `{}`: not UTF-8 once decoded", clip(s)))
        }
        let user = |s: &str| {
            UserId::new(&decoded(s)?).map_err(|e| format!("bad user id `{}`: {e}", clip(s)))
        };
        let group = |s: &str| {
            GroupId::new(&decoded(s)?).map_err(|e| format!("bad group id `{}`: {e}", clip(s)))
        };
        let parts: Vec<&str> = rest.split('/').collect();
        Ok(Some(match parts.as_slice() {
            ["users", u, "messages"] => ApiRoute::PushUser(user(u)?),
            ["groups", g, "messages"] => ApiRoute::PushGroup(group(g)?),
            ["broadcast"] => ApiRoute::Broadcast,
            ["groups", g, "members", u] => ApiRoute::Member(group(g)?, user(u)?),
            ["groups", g, "members"] => ApiRoute::Members(group(g)?),
            ["users", u] => ApiRoute::User(user(u)?),
            ["users", u, "connections"] => ApiRoute::Connections(user(u)?),
            ["stats"] => ApiRoute::Stats,
            ["users", u, "history"] => ApiRoute::UserHistory(user(u)?),
            ["groups", g, "history"] => ApiRoute::GroupHistory(group(g)?),
            _ => return Ok(None),
        }))
    }

    /// Whether the route answers `method` (an HTTP method name, as sent);
    /// any other method is a 405.
    pub fn allows(&self, method: &str) -> bool {
        match self {
            ApiRoute::PushUser(_) | ApiRoute::PushGroup(_) | ApiRoute::Broadcast => {
                method == "POST"
            }
            ApiRoute::Member(..) => method == "PUT" || method == "DELETE",
            ApiRoute::Members(_)
            | ApiRoute::User(_)
            | ApiRoute::Stats
            | ApiRoute::UserHistory(_)
            | ApiRoute::GroupHistory(_) => method == "GET",
            ApiRoute::Connections(_) => method == "DELETE",
        }
    }

    /// The path after `/api/v1/` that names this route: `parse` of it gives
    /// the route back.
    pub fn path(&self) -> String {
        match self {
            ApiRoute::PushUser(u) => format!("users/{u}/messages"),
            ApiRoute::PushGroup(g) => format!("groups/{g}/messages"),
            ApiRoute::Broadcast => "broadcast".to_owned(),
            ApiRoute::Member(g, u) => format!("groups/{g}/members/{u}"),
            ApiRoute::Members(g) => format!("groups/{g}/members"),
            ApiRoute::User(u) => format!("users/{u}"),
            ApiRoute::Connections(u) => format!("users/{u}/connections"),
            ApiRoute::Stats => "stats".to_owned(),
            ApiRoute::UserHistory(u) => format!("users/{u}/history"),
            ApiRoute::GroupHistory(g) => format!("groups/{g}/history"),
        }
    }
}

/// At most 40 characters of `s`, for messages that show client input.
pub fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Reads the body of a push, `{"body": <any JSON>}`: the `body` is kept as
/// raw JSON so it is delivered exactly as sent. Anything else is an error
/// whose message is a `bad_request`'s.
pub fn parse_push_body(bytes: &[u8]) -> Result<Body, String> {
    // serde would read a JSON array into the struct by position.
    if !bytes.trim_ascii_start().starts_with(b"{") {
        return Err("body must be a JSON object: {\"body\": ..}".to_owned());
    }
    match serde_json::from_slice::<RawPush<'_>>(bytes) {
        Ok(request) => Ok(Body::from_raw(request.body.to_owned())),
        Err(e) => Err(format!("body must be {{\"body\": ..}}: {e}")),
    }
}

/// `PushRequest`, borrowed: `{"body": <any JSON>}`.
#[derive(Deserialize)]
struct RawPush<'a> {
    #[serde(borrow)]
    body: &'a RawValue,
}

/// `POST /api/v1/users/{user}/messages`, `/groups/{group}/messages`, `/broadcast`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushRequest {
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResponse {
    pub id: String,
    pub delivered: usize,
    /// The message's seq in the target's stream (for a user: the inbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// True when an `Idempotency-Key` matched an earlier push: nothing was
    /// delivered this time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// The longest `Idempotency-Key` (§6).
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// Checks an `Idempotency-Key` header: 1..=128 bytes from 0x21–0x7E.
pub fn valid_idempotency_key(key: &[u8]) -> bool {
    (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len()) && key.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// `GET /api/v1/users/{user}/history`, `/groups/{group}/history`: the
/// query, with the defaults and caps of §10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    pub since: u64,
    pub limit: usize,
}

/// Default and largest `limit` of the history API.
pub const HISTORY_LIMIT_DEFAULT: usize = 100;
pub const HISTORY_LIMIT_MAX: usize = 1000;

impl HistoryQuery {
    /// Reads `since` and `limit` from a query string; anything but a
    /// non-negative integer is an error naming the parameter. Other
    /// parameters are ignored.
    pub fn parse(query: Option<&str>) -> Result<HistoryQuery, String> {
        let mut q = HistoryQuery {
            since: 0,
            limit: HISTORY_LIMIT_DEFAULT,
        };
        // Decoded as a form is (`%31` is `1`), as clients encode queries.
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let number = || -> Result<u64, String> {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("`{k}` must be a non-negative integer"));
                }
                // Past u64: as large as can be.
                Ok(v.parse().unwrap_or(u64::MAX))
            };
            match k.as_ref() {
                "since" => q.since = number()?,
                "limit" => {
                    q.limit = usize::try_from(number()?)
                        .unwrap_or(usize::MAX)
                        .min(HISTORY_LIMIT_MAX)
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// `PUT`/`DELETE /api/v1/groups/{group}/members/{user}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipResponse {
    pub group: GroupId,
    pub user: UserId,
    pub joined: bool,
}

/// `GET /api/v1/groups/{group}/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMembersResponse {
    pub group: GroupId,
    pub members: Vec<MemberInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub user: UserId,
    pub connections: usize,
}

/// `GET /api/v1/users/{user}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserResponse {
    pub user: UserId,
    pub connections: usize,
    pub groups: Vec<GroupId>,
}

/// `DELETE /api/v1/users/{user}/connections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KickResponse {
    pub closed: usize,
}

/// `GET /api/v1/stats`: exactly these fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsResponse {
    pub connections: u64,
    pub users: u64,
    pub groups: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub messages_delivered: u64,
    pub slow_consumer_closes: u64,
    pub auth_failures: u64,
    pub uptime_seconds: u64,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    pub status: String,
    /// Cluster mode only: `up` or `down`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn path_ids_are_percent_decoded_then_checked() {
        let u = |s: &str| UserId::new(s).unwrap();
        let g = |s: &str| GroupId::new(s).unwrap();
        assert_eq!(
            ApiRoute::parse("users/a%40b/messages"),
            Ok(Some(ApiRoute::PushUser(u("a@b"))))
        );
        assert_eq!(
            ApiRoute::parse("groups/shop%3A7/members/x%2dy"),
            Ok(Some(ApiRoute::Member(g("shop:7"), u("x-y"))))
        );
        assert_eq!(
            ApiRoute::parse("users/a@b"),
            Ok(Some(ApiRoute::User(u("a@b"))))
        );
        for bad in ["users/a%2Fb", "users/a%20b", "users/%ff", "users/"] {
            assert!(ApiRoute::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn push_request_needs_a_body_and_takes_null() {
        assert!(serde_json::from_value::<PushRequest>(json!({})).is_err());
        let r: PushRequest = serde_json::from_value(json!({"body": null})).unwrap();
        assert_eq!(r.body.get(), "null");
    }

    #[test]
    fn history_query_defaults_caps_and_refuses() {
        let q = HistoryQuery::parse(None).unwrap();
        assert_eq!((q.since, q.limit), (0, 100));
        let q = HistoryQuery::parse(Some("since=5&limit=5000&x=y")).unwrap();
        assert_eq!((q.since, q.limit), (5, 1000));
        let q = HistoryQuery::parse(Some("limit=0")).unwrap();
        assert_eq!(q.limit, 0);
        let q = HistoryQuery::parse(Some("%73ince=%31&limit=%32")).unwrap();
        assert_eq!((q.since, q.limit), (1, 2));
        for bad in [
            "since=-1",
            "since=",
            "limit=1.5",
            "limit=abc",
            "since=1e3",
            "since",
        ] {
            assert!(HistoryQuery::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn idempotency_keys_are_printable_ascii_up_to_128_bytes() {
        assert!(valid_idempotency_key(b"order-17"));
        assert!(valid_idempotency_key(&[b'k'; 128]));
        assert!(!valid_idempotency_key(b""));
        assert!(!valid_idempotency_key(&[b'k'; 129]));
        assert!(!valid_idempotency_key(b"has space"));
        assert!(!valid_idempotency_key("é".as_bytes()));
    }

    #[test]
    fn stats_has_exactly_the_contract_fields() {
        let v = serde_json::to_value(StatsResponse::default()).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "auth_failures",
                "connections",
                "frames_in",
                "frames_out",
                "groups",
                "messages_delivered",
                "slow_consumer_closes",
                "uptime_seconds",
                "users"
            ]
        );
    }
}
