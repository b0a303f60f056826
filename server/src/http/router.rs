//! The one HTTP service behind the listener: routes each request to the
//! WebSocket upgrade, the server API, health, metrics or the chat page.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use protocol::api::HealthResponse;
use protocol::ErrorCode;

use super::response::{error, json, HttpResponse};
use crate::state::SharedState;

pub async fn route(req: Request<Incoming>, state: SharedState) -> HttpResponse {
    let path = req.uri().path();
    if path == "/ws" {
        return crate::ws::upgrade::handle(req, &state).await;
    }
    if let Some(rest) = path.strip_prefix("/api/v1/") {
        let rest = rest.to_owned();
        return super::api::handle(req, &rest, &state).await;
    }
    let method = req.method();
    match path {
        "/healthz" => only_get(method, || health(&state)),
        "/readyz" => only_get(method, || ready(&state)),
        "/metrics" => only_get(method, || {
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.render())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }),
        "/" | "/index.html" => only_get(method, || super::page::chat_page(req.headers())),
        p if super::page::is_asset(p) => only_get(method, || super::page::asset(p)),
        _ => error(ErrorCode::NotFound, format!("no such path: {path}")),
    }
}

fn only_get(method: &Method, answer: impl FnOnce() -> HttpResponse) -> HttpResponse {
    if method == Method::GET || method == Method::HEAD {
        answer()
    } else {
        error(ErrorCode::MethodNotAllowed, "use GET")
    }
}

fn health(state: &SharedState) -> HttpResponse {
    let (code, word) = if state.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else {
        (StatusCode::OK, "ok")
    };
    // A broker outage alone never fails liveness: restarting the process
    // would not bring Redis back.
    let broker = state
        .cluster
        .as_ref()
        .map(|_| if state.node.broker_up() { "up" } else { "down" }.to_owned());
    json(
        code,
        &HealthResponse {
            status: word.to_owned(),
            broker,
        },
    )
}

/// Readiness (PROTOCOL.md §7): whether a load balancer should send new
/// clients here: not while shutting down, nor in cluster mode while the
/// broker is unreachable.
fn ready(state: &SharedState) -> HttpResponse {
    let ready = !state.is_shutting_down() && (state.cluster.is_none() || state.node.broker_up());
    let (code, word) = if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    json(
        code,
        &HealthResponse {
            status: word.to_owned(),
            broker: None,
        },
    )
}
