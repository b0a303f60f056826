//! Bodies of the server API (PROTOCOL.md §6).

use serde::{Deserialize, Serialize};

use crate::body::Body;
use crate::ids::{GroupId, UserId};

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
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let number = || -> Result<u64, String> {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("`{k}` must be a non-negative integer"));
                }
                // Past u64: as large as can be.
                Ok(v.parse().unwrap_or(u64::MAX))
            };
            match k {
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
