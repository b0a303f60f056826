//! HTTP answers: JSON bodies and the contract's error bodies (PROTOCOL.md §5),
//! shared by every handler so none of them imports the router.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use protocol::{ErrorBody, ErrorCode};
use serde::Serialize;

pub type HttpResponse = Response<Full<Bytes>>;

pub fn json<T: Serialize>(status: StatusCode, body: &T) -> HttpResponse {
    raw_json(status, serde_json::to_vec(body).unwrap_or_default())
}

/// A body that is JSON already (frames written out as they are kept).
pub fn raw_json(status: StatusCode, bytes: impl Into<Bytes>) -> HttpResponse {
    let bytes: Bytes = bytes.into();
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn error(code: ErrorCode, message: impl Into<String>) -> HttpResponse {
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    json(status, &ErrorBody::new(code, message))
}
