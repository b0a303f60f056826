//! The server API for backends, `/api/v1/*` (PROTOCOL.md §6).
//!
//! Handlers are plain functions over the node: they await the request body
//! and, in cluster mode, the shared store; no hub lock is held across any
//! await.

use std::time::Instant;

use http_body_util::{BodyExt, Limited};
use hub_core::{StreamName, Target};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONNECTION};
use hyper::{Method, Request, StatusCode};
use protocol::api::{
    clip, parse_push_body, valid_idempotency_key, ApiRoute as Route, GroupMembersResponse,
    HistoryQuery, KickResponse, MemberInfo, MembershipResponse, PushResponse, StatsResponse,
    UserResponse,
};
use protocol::ErrorCode;

use super::response::{error, json, raw_json, HttpResponse};
use super::REQUEST_TIMEOUT;
use crate::auth::{api_key_matches, bearer};
use crate::state::SharedState;

pub async fn handle(req: Request<Incoming>, rest: &str, state: &SharedState) -> HttpResponse {
    let started = Instant::now();
    let res = answer(req, rest, state).await;
    state.metrics.observe_api(started.elapsed());
    res
}

async fn answer(req: Request<Incoming>, rest: &str, state: &SharedState) -> HttpResponse {
    let config = &state.config;
    match (&config.api_key, config.insecure_dev) {
        (None, false) => {
            return error(
                ErrorCode::NotFound,
                "the server API is disabled (no --api-key)",
            )
        }
        (Some(key), _) => {
            let presented = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer);
            if !presented.is_some_and(|p| api_key_matches(key, p)) {
                state.node.stats().auth_failure();
                return error(ErrorCode::Unauthorized, "missing or wrong API key");
            }
        }
        (None, true) => {} // dev mode: no key needed
    }

    let route = match Route::parse(rest) {
        Ok(Some(route)) => route,
        Ok(None) => {
            return error(
                ErrorCode::NotFound,
                format!("no such API path: /api/v1/{}", clip(rest)),
            )
        }
        Err(msg) => return error(ErrorCode::BadRequest, msg),
    };
    if !route.allows(req.method().as_str()) {
        return error(
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed here", req.method()),
        );
    }

    let node = &state.node;
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_owned);
    match route {
        Route::UserHistory(u) => history(state, StreamName::Inbox(u), query.as_deref()).await,
        Route::GroupHistory(g) => history(state, StreamName::Group(g), query.as_deref()).await,
        Route::PushUser(u) => push(req, state, Target::User(u)).await,
        Route::PushGroup(g) => push(req, state, Target::Group(g)).await,
        Route::Broadcast => push(req, state, Target::All).await,
        Route::Member(group, user) => {
            let joined = method == Method::PUT;
            let done = if joined {
                node.join(&group, &user).await
            } else {
                node.leave(&group, &user).await
            };
            if let Err(e) = done {
                return error(e.code(), e.message());
            }
            json(
                StatusCode::OK,
                &MembershipResponse {
                    group,
                    user,
                    joined,
                },
            )
        }
        Route::Members(group) => {
            let members = match node.group_members(&group).await {
                Ok(members) => members,
                Err(e) => return error(e.code(), e.message()),
            };
            let members = members
                .into_iter()
                .map(|(user, connections)| MemberInfo { user, connections })
                .collect();
            json(StatusCode::OK, &GroupMembersResponse { group, members })
        }
        Route::User(user) => {
            let presence = match node.user_presence(&user).await {
                Ok(p) => p,
                Err(e) => return error(e.code(), e.message()),
            };
            json(
                StatusCode::OK,
                &UserResponse {
                    user,
                    connections: presence.connections,
                    groups: presence.groups,
                },
            )
        }
        Route::Connections(user) => {
            let closed = match node.kick(&user).await {
                Ok(n) => n,
                Err(e) => return error(e.code(), e.message()),
            };
            json(StatusCode::OK, &KickResponse { closed })
        }
        Route::Stats => {
            let s = node.stats_snapshot();
            json(
                StatusCode::OK,
                &StatsResponse {
                    connections: s.connections,
                    users: s.users,
                    groups: s.groups,
                    frames_in: s.frames_in,
                    frames_out: s.frames_out,
                    messages_delivered: s.messages_delivered,
                    slow_consumer_closes: s.slow_consumer_closes,
                    auth_failures: s.auth_failures,
                    uptime_seconds: s.uptime_seconds,
                },
            )
        }
    }
}

/// `GET …/history` (§10): the retained frames of one stream, as its
/// readers received them, written out byte for byte.
async fn history(state: &SharedState, stream: StreamName, query: Option<&str>) -> HttpResponse {
    let q = match HistoryQuery::parse(query) {
        Ok(q) => q,
        Err(msg) => return error(ErrorCode::BadRequest, msg),
    };
    let h = match state.node.history(&stream, q.since, q.limit).await {
        Ok(h) => h,
        Err(e) => return error(e.code(), e.message()),
    };
    let head = serde_json::json!({
        "stream": stream.to_string(),
        "epoch": h.current.epoch.as_str(),
        "seq": h.current.seq,
        "complete": h.complete,
    })
    .to_string();
    // `head` is an object: reopen it to add the frames unparsed.
    let mut out = String::with_capacity(
        head.len() + 16 + h.messages.iter().map(|m| m.frame.len() + 1).sum::<usize>(),
    );
    out.push_str(&head[..head.len() - 1]);
    out.push_str(",\"messages\":[");
    for (i, m) in h.messages.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(m.frame.as_str());
    }
    out.push_str("]}");
    raw_json(StatusCode::OK, out)
}

async fn push(req: Request<Incoming>, state: &SharedState, target: Target) -> HttpResponse {
    // §6: a key outside 1..=128 bytes of 0x21–0x7E is refused before
    // anything is read or delivered.
    let key = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) if valid_idempotency_key(v.as_bytes()) => {
            Some(String::from_utf8_lossy(v.as_bytes()).into_owned())
        }
        Some(_) => {
            return error(
                ErrorCode::BadRequest,
                "Idempotency-Key must be 1 to 128 printable ASCII characters (0x21-0x7E)",
            )
        }
    };
    let limit = state.config.max_frame.get();
    let body = Limited::new(req.into_body(), limit).collect();
    // A body that trickles in must not hold the request open: the whole of
    // it gets the same 10 s as the head (PROTOCOL.md §6).
    let bytes = match tokio::time::timeout(REQUEST_TIMEOUT, body).await {
        Err(_) => return request_timeout(),
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return error(ErrorCode::TooLarge, format!("body over {limit} bytes"))
        }
        Ok(Err(_)) => return error(ErrorCode::BadRequest, "could not read the request body"),
    };
    let body = match parse_push_body(&bytes) {
        Ok(body) => body,
        Err(msg) => return error(ErrorCode::BadRequest, msg),
    };
    let d = match state.node.push(target, body, key).await {
        Ok(d) => d,
        Err(e) => return error(e.code(), e.message()),
    };
    json(
        StatusCode::OK,
        &PushResponse {
            id: d.id,
            delivered: d.delivered,
            seq: d.place.map(|p| p.seq),
            duplicate: d.duplicate,
        },
    )
}

/// 408, and the connection is not kept: the rest of a body that was too
/// slow is not worth waiting for.
fn request_timeout() -> HttpResponse {
    let mut r = error(
        ErrorCode::BadRequest,
        format!(
            "the request body did not arrive within {} s",
            REQUEST_TIMEOUT.as_secs()
        ),
    );
    *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
    r.headers_mut()
        .insert(CONNECTION, hyper::header::HeaderValue::from_static("close"));
    r
}
