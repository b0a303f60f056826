//! `GET /`: the browser chat page, embedded in the binary at build time.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;

use super::response::HttpResponse;

const CHAT_PAGE: &str = include_str!("../../static/index.html");

pub fn chat_page() -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(CHAT_PAGE.as_bytes())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
