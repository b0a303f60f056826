//! The issue-10 hardening from outside (PROTOCOL.md §2, §5–7): token claims
//! at the edges of their types, WebSocket pings under the rate limit, a
//! request that trickles in, the exact opening handshake, an empty `token`
//! parameter, readiness during shutdown, and the chat page's headers.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// The sample key of RFC 6455 §1.3 and the accept value it must produce.
const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

#[tokio::test]
async fn an_exp_beyond_any_clock_means_no_expiry() {
    let s = Server::start(&[]).await;
    // 2^63 s and u64::MAX s overflow every clock type on the way to a
    // timer; the server chose to treat them as no expiry (§2 allows that or
    // 401, never a dropped connection).
    for exp in [json!(1u64 << 63), json!(u64::MAX)] {
        let t = sign(&json!({"sub":"far","exp":exp}), SECRET);
        let mut c = Client::try_connect(s.ws_url(&format!("token={t}")))
            .await
            .unwrap_or_else(|(status, body)| panic!("exp {exp}: {status} {body}"));
        assert_eq!(c.welcome["user"], "far", "exp {exp}");
        // Alive after the welcome: not closed as expired at once.
        let pong = c.request(json!({"type":"ping","id":"alive"})).await;
        assert_eq!(pong, json!({"type":"pong","id":"alive"}), "exp {exp}");
    }
}

#[tokio::test]
async fn any_claims_are_answered_101_or_401_never_dropped() {
    let s = Server::start(&[]).await;
    let far = json!(u64::MAX);
    let claims = [
        json!({"sub":"odd","exp":18446744073709551616.0}),
        json!({"sub":"odd","exp":1e300}),
        json!({"sub":"odd","exp":-1}),
        json!({"sub":"odd","exp":"tomorrow"}),
        json!({"sub":"odd","exp":far,"nbf":far}),
        json!({"sub":"odd","exp":far,"iat":far}),
        json!({"sub":"odd","exp":far,"nbf":-1,"iat":-1}),
        json!({"sub":18446744073709551615u64,"exp":far}),
    ];
    for c in claims {
        let t = sign(&c, SECRET);
        // `try_connect` fails the test on a dropped connection.
        match Client::try_connect(s.ws_url(&format!("token={t}"))).await {
            Ok(_) => {}
            Err((status, body)) => {
                assert_eq!(
                    (status, &body["error"]["code"]),
                    (401, &json!("unauthorized")),
                    "{c}"
                );
            }
        }
    }
    // And the server is still there for everyone else.
    let (status, _) = http(s.addr, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn websocket_pings_count_toward_the_rate_limit() {
    // 5 frames/s, burst 10: a hundred pings at once are far past it.
    let s = Server::start(&["--rate", "5"]).await;
    let mut c = s.client("pinger", &[]).await;
    for _ in 0..100 {
        c.ws.feed(Message::Ping(Default::default())).await.unwrap();
    }
    // A JSON frame after them: if pings were free it would be answered.
    c.ws.feed(Message::text(
        json!({"type":"ping","id":"after"}).to_string(),
    ))
    .await
    .unwrap();
    c.ws.flush().await.unwrap();

    let mut refusals = 0;
    let code = loop {
        let msg = tokio::time::timeout(LIMIT, c.ws.next())
            .await
            .expect("no close in time")
            .expect("stream ended without a close frame")
            .expect("read error");
        match msg {
            Message::Text(t) => {
                let f: Value = serde_json::from_str(&t).unwrap();
                assert_ne!(f["id"], "after", "pings were not counted: {f}");
                assert_eq!(
                    (&f["type"], &f["code"]),
                    (&json!("error"), &json!("rate_limited")),
                    "{f}"
                );
                refusals += 1;
            }
            Message::Close(frame) => break frame.map(|f| u16::from(f.code)),
            // The server's pongs.
            _ => continue,
        }
    };
    assert!(refusals > 0, "closed without a rate_limited error first");
    assert_eq!(code, Some(1008));
}

/// Sends a push's head announcing a 100-byte body, then `pieces` of the
/// body (each after `pause`), and keeps the socket open without more.
/// Returns what came back until the server closed it (`Connection: close`:
/// every answer ends it; empty when it closed without an answer); fails the
/// test when nothing ends it within LIMIT.
async fn push_in_pieces(s: &Server, pieces: Vec<Vec<u8>>, pause: Duration) -> Vec<u8> {
    let body_len: usize = 100;
    let (mut rd, mut wr) = TcpStream::connect(s.addr).await.unwrap().into_split();
    let head = format!(
        "POST /api/v1/users/slow/messages HTTP/1.1\r\nHost: {}\r\n\
         Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {body_len}\r\n\r\n",
        s.addr
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    // The write half stays open (a shutdown would end the body early) and
    // stops at the first failed write: the server has hung up.
    let writer = tokio::spawn(async move {
        for p in pieces {
            tokio::time::sleep(pause).await;
            if wr.write_all(&p).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
        drop(wr);
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(LIMIT, async {
        let mut buf = [0u8; 4096];
        // An end or a reset both mean the server hung up.
        while let Ok(n @ 1..) = rd.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    writer.abort();
    read.unwrap_or_else(|_| panic!("neither answered nor closed within {LIMIT:?}"));
    got
}

/// A 100-byte push body.
fn body_of_100() -> Vec<u8> {
    let b = format!(r#"{{"body":"{}"}}"#, "x".repeat(100 - 11)).into_bytes();
    assert_eq!(b.len(), 100);
    b
}

#[tokio::test]
async fn a_request_body_that_does_not_arrive_in_10_s_is_408() {
    let s = Server::start(&[]).await;
    // Healthy but slow: the whole body in three parts within a second or
    // so is taken, so the limit is not cutting off ordinary clients.
    let body = body_of_100();
    let parts = vec![
        body[..30].to_vec(),
        body[30..60].to_vec(),
        body[60..].to_vec(),
    ];
    let slow = push_in_pieces(&s, parts, Duration::from_millis(300));
    // One byte a second, and nothing at all after the head: each holds the
    // request past 10 s. Both run at once to spend those seconds once.
    let trickle = push_in_pieces(
        &s,
        body.iter().map(|&b| vec![b]).collect(),
        Duration::from_secs(1),
    );
    let silent = push_in_pieces(&s, Vec::new(), Duration::ZERO);
    let (slow, trickle, silent) = tokio::join!(slow, trickle, silent);

    let slow = Response::from_raw(&slow).expect("an answer to the slow push");
    assert_eq!(slow.status, 200, "{}", slow.text());
    assert_eq!(slow.json()["delivered"], 0);

    // The silent client can always be answered.
    let silent = Response::from_raw(&silent).expect("an answer to the silent push");
    assert_eq!(silent.status, 408, "{}", silent.text());
    assert!(
        silent.json()["error"]["code"].is_string(),
        "{}",
        silent.text()
    );
    // The trickling one is answered too, unless its next byte made the
    // closed socket reset first; either way the server let go of it.
    if !trickle.is_empty() {
        let trickle = Response::from_raw(&trickle).expect("an HTTP answer");
        assert_eq!(trickle.status, 408, "{}", trickle.text());
    }
}

/// §6: a request head must arrive within 10 s; then the connection is
/// closed, with a 408 where one can still be written: here, to a head cut
/// short (of an API call and of an upgrade) and to a client that says
/// nothing at all. All three run at once to spend the 10 s once.
#[tokio::test]
async fn a_request_head_that_does_not_arrive_in_10_s_is_408() {
    let s = Server::start(&[]).await;
    let unfinished = |start: &'static [u8]| async move {
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(start).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(LIMIT, async {
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = tcp.read(&mut buf).await {
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("an unfinished head held its socket for {LIMIT:?}"));
        got
    };
    let answers = tokio::join!(
        unfinished(b"POST /api/v1/broadcast HTTP/1.1\r\nHost: x\r\n"),
        unfinished(b"GET /ws?token=abc HTTP/1.1\r\nUpgrade: websocket\r\n"),
        unfinished(b""),
    );
    for got in [answers.0, answers.1, answers.2] {
        let res = Response::from_raw(&got).expect("an HTTP answer");
        assert_eq!(res.status, 408, "{}", res.text());
        assert_eq!(res.json()["error"]["code"], "bad_request", "{}", res.text());
    }
}

/// A head whose lines end in a bare `\n` is a whole head (as HTTP parsers
/// are lenient about it): answered at once, not held for the 10 s of an
/// unfinished one.
#[tokio::test]
async fn a_head_with_bare_line_feeds_is_answered_at_once() {
    let s = Server::start(&[]).await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\nHost: a\nConnection: close\n\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    // Well inside the 10 s an unfinished head gets.
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got))
        .await
        .expect("answered at once")
        .unwrap();
    let res = Response::from_raw(&got).expect("an HTTP answer");
    assert_eq!(res.status, 200, "{}", res.text());
}

/// An opening handshake written by hand, so that each part can be wrong.
fn handshake(
    method: &str,
    version: &str,
    query: &str,
    key: Option<&str>,
    ws_version: &str,
) -> String {
    let mut req = format!(
        "{method} /ws?{query} {version}\r\nHost: x\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: {ws_version}\r\n"
    );
    if let Some(k) = key {
        req.push_str(&format!("Sec-WebSocket-Key: {k}\r\n"));
    }
    if method != "GET" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    req
}

#[tokio::test]
async fn only_an_http_1_1_get_with_a_16_byte_key_is_a_websocket_request() {
    let s = Server::start(&[]).await;
    let q = format!("token={}", token("hs", &[], 3600));

    // The well-formed request, as the baseline the others differ from.
    let ok = raw_request(
        s.addr,
        handshake("GET", "HTTP/1.1", &q, Some(SAMPLE_KEY), "13").as_bytes(),
    )
    .await;
    assert_eq!(ok.status, 101);
    assert_eq!(ok.header("sec-websocket-accept"), Some(SAMPLE_ACCEPT));

    let bad = [
        (
            "a key that is not base64",
            handshake("GET", "HTTP/1.1", &q, Some("abc"), "13"),
        ),
        (
            "a key of 15 bytes",
            handshake("GET", "HTTP/1.1", &q, Some("MTIzNDU2Nzg5MDEyMzQ1"), "13"),
        ),
        (
            "a key of 17 bytes",
            handshake(
                "GET",
                "HTTP/1.1",
                &q,
                Some("MTIzNDU2Nzg5MDEyMzQ1Njc="),
                "13",
            ),
        ),
        ("no key", handshake("GET", "HTTP/1.1", &q, None, "13")),
        (
            "version 8",
            handshake("GET", "HTTP/1.1", &q, Some(SAMPLE_KEY), "8"),
        ),
        (
            "HTTP/1.0",
            handshake("GET", "HTTP/1.0", &q, Some(SAMPLE_KEY), "13"),
        ),
        (
            "POST",
            handshake("POST", "HTTP/1.1", &q, Some(SAMPLE_KEY), "13"),
        ),
        (
            "PUT",
            handshake("PUT", "HTTP/1.1", &q, Some(SAMPLE_KEY), "13"),
        ),
        // Checked before the token: a bad token does not change the answer.
        (
            "a bad key and a bad token",
            handshake("GET", "HTTP/1.1", "token=garbage", Some("abc"), "13"),
        ),
    ];
    for (what, req) in bad {
        let res = raw_request(s.addr, req.as_bytes()).await;
        assert_eq!(res.status, 400, "{what}: {}", res.text());
        assert_eq!(res.json()["error"]["code"], "bad_request", "{what}");
    }

    // The same through a WebSocket client library, which sends its own
    // well-formed headers except the key it is given.
    let mut req = s.ws_url(&q).into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Key", HeaderValue::from_static("abc"));
    let (status, body) = refused(req).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("bad_request"))
    );
}

#[tokio::test]
async fn an_empty_token_parameter_counts_as_absent() {
    let s = Server::start(&[]).await;
    let t = token("hdr", &[], 3600);
    for query in ["token=", "userId=hdr&token="] {
        let mut req = s.ws_url(query).into_client_request().unwrap();
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        let c = Client::try_connect(req)
            .await
            .unwrap_or_else(|(status, body)| panic!("{query}: {status} {body}"));
        assert_eq!(c.welcome["user"], "hdr", "{query}");
    }
    // Absent and no header: no token at all.
    let (status, body) = refused(s.ws_url("token=").into_client_request().unwrap()).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
}

#[tokio::test]
async fn readyz_is_ready_until_shutdown_begins() {
    let mut s = Server::start(&["--shutdown-grace", "5"]).await;
    let (status, body) = http(s.addr, "GET", "/readyz", None, None).await;
    assert_eq!((status, body), (200, json!({"status":"ready"})));

    let mut lingering = s.client("lingering", &[]).await;
    s.terminate();
    s.wait_log("shutting down").await;
    // The server logs that line just before it marks itself as shutting
    // down; the 1001 close sent to every client comes after the mark, so
    // it is the signal that the drain has begun. The close is read but not
    // answered yet: the server waits for the reply, so it is still there
    // to be asked.
    let code = loop {
        let msg = tokio::time::timeout(LIMIT, lingering.ws.next())
            .await
            .expect("no close in time")
            .expect("stream ended without a close frame")
            .expect("read error");
        if let Message::Close(frame) = msg {
            break frame.map(|f| u16::from(f.code));
        }
    };
    assert_eq!(code, Some(1001));
    let (status, body) = http(s.addr, "GET", "/readyz", None, None).await;
    assert_eq!(
        (status, &body["status"]),
        (503, &json!("unavailable")),
        "{body}"
    );

    // Reading on sends the close reply; the drain ends and so does the
    // process.
    let _ = tokio::time::timeout(LIMIT, lingering.ws.next()).await;
    assert_eq!(s.wait_exit().await.code(), Some(0));
}

#[tokio::test]
async fn the_chat_page_has_its_security_headers_and_a_favicon() {
    let s = Server::start(&[]).await;
    let page = request(s.addr, "GET", "/", None, None, &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<html"), "{}", page.text());
    let csp = page
        .header("content-security-policy")
        .expect("a Content-Security-Policy header");
    // The page loads nothing from other origins: no wildcard source.
    assert!(csp.contains("default-src"), "{csp}");
    assert!(
        !csp.split_whitespace()
            .any(|w| w.trim_end_matches(';') == "*"),
        "{csp}"
    );
    assert_eq!(
        page.header("x-content-type-options")
            .map(str::to_ascii_lowercase),
        Some("nosniff".to_owned())
    );

    let icon = request(s.addr, "GET", "/favicon.ico", None, None, &[]).await;
    assert_eq!(icon.status, 200);
    assert!(!icon.body.is_empty());
    assert!(
        icon.header("content-type")
            .is_some_and(|t| t.starts_with("image/")),
        "{:?}",
        icon.header("content-type")
    );
}
