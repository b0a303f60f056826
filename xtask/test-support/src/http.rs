//! A minimal HTTP/1.1 client: one request per connection, written by hand so
//! a test sees exactly what the server put on the wire (status line, headers,
//! chunked or not) without a client library smoothing it over.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::LIMIT;

/// One answer, as read off the socket.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// In the order the server sent them; names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked when it came chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; `Null` when there is none. Every body the contract
    /// defines is JSON, so anything else fails the test.
    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} body is not JSON ({e}): {:?}", self.status, self.text()))
    }
}

/// `method path` with an optional bearer token and JSON body; returns the
/// status and the body as JSON.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let res = request(addr, method, path, bearer, body, &[]).await;
    (res.status, res.json())
}

/// Sends one request with `Connection: close` and reads the answer to the
/// end. `headers` are added as given.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Response {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(b) = bearer {
        req.push_str(&format!("Authorization: Bearer {b}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or_default();
    req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);

    let mut raw = Vec::new();
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(req.as_bytes()).await?;
        s.read_to_end(&mut raw).await
    };
    tokio::time::timeout(LIMIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within {LIMIT:?}"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    parse(&raw).unwrap_or_else(|| {
        panic!(
            "{method} {path}: not an HTTP/1.1 answer: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// Writes `raw` exactly as given (any method, version or header, however
/// odd) and reads one answer: its head, then as much body as it announces
/// (none for a 1xx, 204 or 304), or up to the end of the connection when it
/// announces no length. So an answer that leaves the connection open, a 101
/// or a keep-alive error, is read as well as one that closes it. The answer
/// may be HTTP/1.0: a server answers an HTTP/1.0 request in kind.
pub async fn raw_request(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut got = Vec::new();
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(raw).await?;
        let mut buf = [0u8; 4096];
        while !answer_complete(&got) {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    let what = String::from_utf8_lossy(raw.split(|&b| b == b'\r').next().unwrap_or(raw));
    tokio::time::timeout(LIMIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {LIMIT:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    Response::from_raw(&got).unwrap_or_else(|| {
        panic!(
            "{what}: not an HTTP/1.x answer: {:?}",
            String::from_utf8_lossy(&got)
        )
    })
}

/// Whether `got` holds a whole answer: a head and the body it announces.
fn answer_complete(got: &[u8]) -> bool {
    let Some(split) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let Some(head) = parse_head(got) else {
        return false;
    };
    let body = &got[split + 4..];
    if head.status < 200 || head.status == 204 || head.status == 304 {
        return true;
    }
    if let Some(len) = head.header("content-length") {
        return len.parse::<usize>().is_ok_and(|len| body.len() >= len);
    }
    if head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        return dechunk(body).is_some();
    }
    false
}

impl Response {
    /// Parses an answer as read off the socket: an HTTP/1.0 or HTTP/1.1
    /// status line, headers and the body (de-chunked when it came chunked);
    /// `None` when the bytes are not such an answer.
    pub fn from_raw(raw: &[u8]) -> Option<Response> {
        parse_any(raw)
    }
}

/// An HTTP/1.1 answer, the only kind `request` accepts.
fn parse(raw: &[u8]) -> Option<Response> {
    if !raw.starts_with(b"HTTP/1.1 ") {
        return None;
    }
    parse_any(raw)
}

fn parse_any(raw: &[u8]) -> Option<Response> {
    let mut res = parse_head(raw)?;
    if res
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        res.body = dechunk(&res.body)?;
    }
    Some(res)
}

/// The status line and headers; the body as it came, still chunked if so.
fn parse_head(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    if !status_line.starts_with("HTTP/1.1 ") && !status_line.starts_with("HTTP/1.0 ") {
        return None;
    }
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_owned(), v.trim().to_owned()))
        })
        .collect::<Option<_>>()?;
    Some(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// Undoes chunked transfer encoding; `None` when the chunks are broken.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&b[..eol]).ok()?;
        // A chunk size may carry `;extension`s, which mean nothing here.
        let size = size.split(';').next()?.trim();
        let len = usize::from_str_radix(size, 16).ok()?;
        if len == 0 {
            return Some(out);
        }
        let data = b.get(eol + 2..eol + 2 + len)?;
        out.extend_from_slice(data);
        b = b.get(eol + 2 + len + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let plain = parse(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!(plain.status, 200);
        assert_eq!(plain.header("CONTENT-TYPE"), Some("application/json"));
        assert_eq!(plain.json(), serde_json::json!({}));

        let chunked = parse(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(chunked.status, 503);
        assert_eq!(chunked.json(), serde_json::json!({"a":1}));

        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_none());
        assert!(parse(b"garbage").is_none());
    }

    #[test]
    fn raw_answers_may_be_http_1_0_and_end_where_they_say() {
        let old = b"HTTP/1.0 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert!(parse(old).is_none());
        assert_eq!(Response::from_raw(old).unwrap().status, 400);
        assert!(answer_complete(old));
        assert!(!answer_complete(&old[..old.len() - 1]));
        assert!(answer_complete(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(!answer_complete(b"HTTP/1.1 101 Switching Protocols\r\n"));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n";
        assert!(!answer_complete(chunked));
        assert!(answer_complete(&[&chunked[..], b"0\r\n\r\n"].concat()));
        // No length: only the end of the connection ends it.
        assert!(!answer_complete(b"HTTP/1.0 200 OK\r\n\r\nabc"));
    }
}
