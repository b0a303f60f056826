//! `wshub-cli push`: the server API (PROTOCOL.md §6) over plain HTTP/1.1.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use protocol::api::PushRequest;
use protocol::{Body, ErrorBody, GroupId, UserId};
use tokio::net::TcpStream;

use crate::{Common, Failure, Outcome};

pub async fn push(
    common: &Common,
    user: Option<&str>,
    group: Option<&str>,
    all: bool,
    body: &str,
) -> Outcome {
    let path = match (user, group, all) {
        (Some(u), _, _) => {
            let u = UserId::new(u).map_err(|e| Failure::usage(format!("bad --user {u:?}: {e}")))?;
            format!("/api/v1/users/{u}/messages")
        }
        (None, Some(g), _) => {
            let g =
                GroupId::new(g).map_err(|e| Failure::usage(format!("bad --group {g:?}: {e}")))?;
            format!("/api/v1/groups/{g}/messages")
        }
        (None, None, true) => "/api/v1/broadcast".to_owned(),
        _ => return Err(Failure::usage("push needs --user, --group or --all")),
    };
    let key = common.api_key.as_deref();
    let request_body = PushRequest {
        body: Body::from_cli_arg(body),
    };
    let payload =
        serde_json::to_string(&request_body).map_err(|e| Failure::usage(e.to_string()))?;
    let answer = request(&common.url, "POST", &path, key, Some(payload)).await?;
    println!("{answer}");
    Ok(())
}

/// `host:port` of the server behind a `ws://host:port/ws` URL.
fn authority(url: &str) -> Result<String, Failure> {
    let rest = url.trim().strip_prefix("ws://").ok_or_else(|| {
        Failure::usage(format!(
            "invalid --url {url:?}: push needs a ws://HOST:PORT/ws URL"
        ))
    })?;
    let host = rest.split(['/', '?']).next().unwrap_or("");
    if host.is_empty() {
        return Err(Failure::usage(format!("invalid --url {url:?}: no host")));
    }
    Ok(if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:80")
    })
}

/// One API request; the JSON answer on success, a `Failure` otherwise.
pub async fn request(
    url: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<String>,
) -> Result<String, Failure> {
    let host = authority(url)?;
    let stream = TcpStream::connect(&host).await.map_err(|e| {
        Failure::connect(format!(
            "cannot connect to {host}: {e}{}",
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                " (is the server running?)"
            } else {
                ""
            }
        ))
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::connect(format!("cannot talk HTTP to {host}: {e}")))?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", &host)
        .header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| Failure::usage(format!("bad request: {e}")))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| Failure::connect(format!("request to {host} failed: {e}")))?;
    let status = res.status();
    let bytes = res
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::connect(format!("reading the answer failed: {e}")))?
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if status.is_success() {
        return Ok(text);
    }
    let detail = serde_json::from_slice::<ErrorBody>(&bytes)
        .map(|b| format!("{}: {}", b.error.code, b.error.message))
        .unwrap_or(text);
    Err(Failure::server(format!(
        "server answered {}: {detail}",
        status.as_u16()
    )))
}
