//! `GET /ws` (PROTOCOL.md §2): every refusal happens here, before the
//! upgrade, as HTTP with a JSON error body, in the contract's order: not a
//! WebSocket request or a bad id (400), then the token (401), then `userId`
//! and Origin (403). On success the socket is handed to `connection::serve`.

use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use protocol::{ErrorCode, GroupId, UserId};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::connection::{self, Session};
use crate::auth::{bearer, expiry_instant, TokenError};
use crate::http::response::{error, HttpResponse};
use crate::state::SharedState;

/// Who a successful upgrade belongs to.
struct Identity {
    user: UserId,
    token_groups: Vec<GroupId>,
    /// `None` in dev mode without a token.
    expires_at: Option<Instant>,
}

pub fn handle(req: Request<Incoming>, state: &SharedState) -> HttpResponse {
    if state.is_shutting_down() {
        return error(ErrorCode::Unavailable, "server is shutting down");
    }
    if req.method() != Method::GET {
        return error(ErrorCode::MethodNotAllowed, "/ws takes GET");
    }
    let Some(key) = websocket_key(req.headers()) else {
        return error(ErrorCode::BadRequest, "not a WebSocket upgrade request");
    };

    let mut token = None;
    let mut user_param = None;
    if let Some(q) = req.uri().query() {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            match &*k {
                "token" => token = Some(v.into_owned()),
                "userId" => user_param = Some(v.into_owned()),
                _ => {}
            }
        }
    }
    let claimed_user = match user_param.as_deref().map(UserId::new) {
        None => None,
        Some(Ok(u)) => Some(u),
        Some(Err(e)) => return error(ErrorCode::BadRequest, format!("bad userId: {e}")),
    };
    if token.is_none() {
        token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .map(str::to_owned);
    }

    let identity = match authenticate(state, token.as_deref(), claimed_user.as_ref()) {
        Ok(id) => id,
        Err(e) => {
            state.node.stats().auth_failure();
            return error(ErrorCode::Unauthorized, e.message());
        }
    };
    if let Some(claimed) = &claimed_user {
        if claimed != &identity.user {
            state.node.stats().auth_failure();
            return error(ErrorCode::Forbidden, "userId does not match the token");
        }
    }
    if !origin_allowed(state, req.headers(), token.is_some()) {
        state.node.stats().auth_failure();
        return error(ErrorCode::Forbidden, "origin not allowed");
    }

    let state = state.clone();
    let on_upgrade = hyper::upgrade::on(req);
    // Tracked, so shutdown waits for this connection to drain and close.
    state.connections.clone().spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let session = Session {
                    user: identity.user,
                    token_groups: identity.token_groups,
                    expires_at: identity.expires_at,
                };
                connection::serve(upgraded, session, state).await;
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });

    let mut res = Response::new(Default::default());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    res
}

/// The `Sec-WebSocket-Key` of a well-formed upgrade request (RFC 6455 §4.2.1).
fn websocket_key(h: &HeaderMap) -> Option<String> {
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
    (!key.is_empty()).then(|| key.to_owned())
}

fn authenticate(
    state: &SharedState,
    token: Option<&str>,
    claimed_user: Option<&UserId>,
) -> Result<Identity, TokenError> {
    match token {
        Some(token) => {
            let claims = state.tokens.verify(token)?;
            Ok(Identity {
                expires_at: Some(expiry_instant(claims.exp)),
                user: claims.sub,
                token_groups: claims.groups,
            })
        }
        None => match (state.config.insecure_dev, claimed_user) {
            (true, Some(user)) => Ok(Identity {
                user: user.clone(),
                token_groups: Vec::new(),
                expires_at: None,
            }),
            _ => Err(TokenError::Missing),
        },
    }
}

/// `--allowed-origin` when given; otherwise any origin with a token, and in
/// dev mode without a token only pages served from this machine, so a
/// random site cannot open tokenless sockets in a developer's browser.
fn origin_allowed(state: &SharedState, h: &HeaderMap, with_token: bool) -> bool {
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true; // not a browser
    };
    let allowed = &state.config.allowed_origins;
    if !allowed.is_empty() {
        return allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin));
    }
    if with_token {
        return true;
    }
    let host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_start_matches('[');
    let host = host.split([':', ']', '/']).next().unwrap_or("");
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
