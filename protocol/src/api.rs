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
