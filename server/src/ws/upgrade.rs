//! `GET /ws` (PROTOCOL.md §2): every refusal happens here, before the
//! upgrade, as HTTP with a JSON error body, in the contract's order: not a
//! WebSocket request or a bad id (400), then the token (401), then `userId`
//! and Origin (403), then the connection caps (503, 429). On success the
//! connection is admitted under the caps and its socket handed to
//! `connection::serve`.

use hub_core::Session;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use protocol::connect::ConnectQuery;
use protocol::{ErrorCode, UserId};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::connection::{self, Welcome};
use crate::auth::{bearer, expiry_instant, TokenError};
use crate::handshake::{origin_allowed, websocket_key};
use crate::http::response::{error, HttpResponse};
use crate::state::SharedState;

pub async fn handle(req: Request<Incoming>, state: &SharedState) -> HttpResponse {
    if state.is_shutting_down() {
        return error(ErrorCode::Unavailable, "server is shutting down");
    }
    // Anything but an HTTP/1.1 GET with the upgrade headers is not a
    // WebSocket request: 400, the method included (RFC 6455 §4.2.1).
    let key = (req.method() == Method::GET)
        .then(|| websocket_key(req.version(), req.headers()))
        .flatten();
    let Some(key) = key else {
        return error(
            ErrorCode::BadRequest,
            "not a WebSocket upgrade request (RFC 6455 §4.2.1)",
        );
    };

    // §10: `resume=1` holds delivery until the client's first frame.
    let query = match ConnectQuery::parse(req.uri().query()) {
        Ok(q) => q,
        Err(e) => return error(ErrorCode::BadRequest, format!("bad userId: {e}")),
    };
    let ConnectQuery {
        mut token,
        user_id: claimed_user,
        resume,
    } = query;
    if token.is_none() {
        token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .map(str::to_owned);
    }

    let session = match authenticate(state, token.as_deref(), claimed_user.as_ref()) {
        Ok(session) => session,
        Err(e) => {
            state.node.stats().auth_failure();
            return error(ErrorCode::Unauthorized, e.message());
        }
    };
    if let Err(refusal) = state.node.check_token_groups(&session.token_groups) {
        state.node.stats().auth_failure();
        return error(
            ErrorCode::Unauthorized,
            format!("token lists too many groups: {}", refusal.message()),
        );
    }
    if let Some(claimed) = &claimed_user {
        if claimed != &session.user {
            state.node.stats().auth_failure();
            return error(ErrorCode::Forbidden, "userId does not match the token");
        }
    }
    if !origin_allowed(
        &state.config.allowed_origins,
        req.headers(),
        token.is_some(),
    ) {
        state.node.stats().auth_failure();
        return error(ErrorCode::Forbidden, "origin not allowed");
    }

    // The caps, last: both places are taken now and held by the connection
    // task, so upgrades in flight count and the limits are exact. The token's
    // groups count too: joining them must keep the user within the group
    // cap (409 `limit_exceeded` otherwise).
    let slot = match &state.connection_slots {
        None => None,
        Some(slots) => match slots.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                return error(
                    ErrorCode::Unavailable,
                    format!(
                        "this server holds its maximum of {} connections",
                        state.config.max_connections
                    ),
                )
            }
        },
    };
    let admission = match state.node.admit(&session).await {
        Ok(a) => a,
        Err(e) => return error(e.code(), e.message()),
    };

    let state = state.clone();
    let on_upgrade = hyper::upgrade::on(req);
    // Tracked, so shutdown waits for this connection to drain and close.
    state.connections.clone().spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let (mut conn, groups, streams) = state.node.connect(admission, &session).await;
                if resume {
                    conn.hold();
                }
                let welcome = Welcome { groups, streams };
                connection::serve(upgraded, conn, welcome, session, slot, state).await;
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

fn authenticate(
    state: &SharedState,
    token: Option<&str>,
    claimed_user: Option<&UserId>,
) -> Result<Session, TokenError> {
    match token {
        Some(token) => {
            let claims = state.tokens.verify(token)?;
            Ok(Session {
                expires_at: expiry_instant(claims.exp),
                user: claims.sub,
                token_groups: claims.groups,
            })
        }
        None => match (state.config.insecure_dev, claimed_user) {
            (true, Some(user)) => Ok(Session::new(user.clone())),
            _ => Err(TokenError::Missing),
        },
    }
}
