//! PROTOCOL.md §2: every refusal before the upgrade, in order, with its JSON
//! body; the welcome frame; dev mode.

use serde_json::json;
use test_support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[tokio::test]
async fn a_plain_get_is_not_a_websocket_request() {
    let s = Server::start(&[]).await;
    let t = token("42", &[], 60);
    let (status, body) = http(s.addr, "GET", &format!("/ws?token={t}"), None, None).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request");
    // Checked before the token: a bad token does not change the answer.
    let (status, _) = http(s.addr, "GET", "/ws?token=garbage", None, None).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_bad_user_id_is_400() {
    let s = Server::start(&[]).await;
    let t = token("42", &[], 60);
    let (status, body) = refused(
        s.ws_url(&format!("userId=a%20b&token={t}"))
            .into_client_request()
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
}

#[tokio::test]
async fn token_refusals_are_401() {
    let s = Server::start(&[]).await;
    let cases = [
        ("missing", String::new()),
        ("malformed", "token=not-a-jwt".to_owned()),
        (
            "badly signed",
            format!(
                "token={}",
                sign(&json!({"sub":"42","exp":now()+60}), "another-secret")
            ),
        ),
        (
            "expired",
            format!("token={}", sign(&json!({"sub":"42","exp":now()-5}), SECRET)),
        ),
        (
            "no exp",
            format!("token={}", sign(&json!({"sub":"42"}), SECRET)),
        ),
        (
            "bad sub",
            format!(
                "token={}",
                sign(&json!({"sub":"4 2","exp":now()+60}), SECRET)
            ),
        ),
        (
            "bad group",
            format!(
                "token={}",
                sign(&json!({"sub":"42","exp":now()+60,"groups":["a/b"]}), SECRET)
            ),
        ),
        (
            "not yet valid",
            format!(
                "token={}",
                sign(&json!({"sub":"42","exp":now()+60,"nbf":now()+30}), SECRET)
            ),
        ),
        ("userId without token", "userId=42".to_owned()),
    ];
    for (what, query) in cases {
        let (status, body) = refused(s.ws_url(&query).into_client_request().unwrap()).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
        assert!(body["error"]["message"].is_string(), "{what}");
    }
    let (_, stats) = s.api("GET", "/api/v1/stats", None).await;
    assert_eq!(stats["auth_failures"], 9);
}

#[tokio::test]
async fn token_in_authorization_header_works() {
    let s = Server::start(&[]).await;
    let mut req = s.ws_url("").into_client_request().unwrap();
    let t = token("hdr", &[], 60);
    req.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let c = Client::after_upgrade(ws).await;
    assert_eq!(c.welcome["user"], "hdr");
}

#[tokio::test]
async fn user_id_must_match_sub_and_origin_must_be_allowed() {
    let s = Server::start(&["--allowed-origin", "https://app.example"]).await;
    let t = token("42", &[], 60);
    let (status, body) = refused(
        s.ws_url(&format!("userId=43&token={t}"))
            .into_client_request()
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    // The original form with a matching userId is accepted.
    let c = Client::connect(&s.ws_url(&format!("userId=42&token={t}"))).await;
    assert_eq!(c.welcome["user"], "42");

    let mut req = s
        .ws_url(&format!("token={t}"))
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Origin", HeaderValue::from_static("https://evil.example"));
    let (status, body) = refused(req).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    let mut req = s
        .ws_url(&format!("token={t}"))
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Origin", HeaderValue::from_static("https://app.example"));
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());

    // The token is checked before userId and Origin.
    let mut req = s
        .ws_url("userId=43&token=bad")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Origin", HeaderValue::from_static("https://evil.example"));
    assert_eq!(refused(req).await.0, 401);
}

#[tokio::test]
async fn welcome_lists_token_groups_and_earlier_memberships_sorted() {
    let s = Server::start(&[]).await;
    let (status, _) = s.api("PUT", "/api/v1/groups/early/members/42", None).await;
    assert_eq!(status, 200);
    let c = s.client("42", &["zeta", "alpha"]).await;
    assert_eq!(
        c.welcome,
        json!({
            "type": "welcome",
            "user": "42",
            "conn": c.welcome["conn"].clone(),
            "groups": ["alpha", "early", "zeta"],
            "heartbeat": 25,
            "streams": c.welcome["streams"].clone(),
        })
    );
    // A position for every stream the connection reads, each at seq 0.
    let streams = c.welcome["streams"].as_object().unwrap();
    let mut names: Vec<&str> = streams.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        ["all", "group:alpha", "group:early", "group:zeta", "inbox"]
    );
    for p in streams.values() {
        assert_eq!(p["seq"], 0, "{p}");
        assert_eq!(p["epoch"].as_str().map(str::len), Some(8), "{p}");
    }
    assert!(c.welcome["conn"].as_str().is_some_and(|s| !s.is_empty()));
    let other = s.client("42", &[]).await;
    assert_ne!(other.welcome["conn"], c.welcome["conn"]);
}

#[tokio::test]
async fn integer_sub_is_a_user_id() {
    let s = Server::start(&[]).await;
    let t = sign(&json!({"sub": 42, "exp": now() + 60}), SECRET);
    let c = Client::connect(&s.ws_url(&format!("userId=42&token={t}"))).await;
    assert_eq!(c.welcome["user"], "42");
}

#[tokio::test]
async fn dev_mode_takes_a_user_id_without_token() {
    let s = Server::builder().args(&["--insecure-dev"]).start().await;
    s.wait_log("INSECURE DEV MODE").await;
    let mut c = Client::connect(&s.ws_url("userId=dev1")).await;
    assert_eq!(c.welcome["user"], "dev1");
    // Any group may be joined in dev mode.
    let ack = c
        .request(json!({"type":"join","group":"anything","id":"j"}))
        .await;
    assert_eq!(test_support::unplaced(&ack), json!({"type":"ack","id":"j"}));
    // Tokenless sockets from a foreign page are refused.
    let mut req = s.ws_url("userId=dev2").into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", HeaderValue::from_static("https://evil.example"));
    assert_eq!(refused(req).await.0, 403);
}

/// The 101 and the welcome frame leave in one write, so a client's first
/// read has both: one segment per connect instead of two
/// (server/src/ws/held_upgrade.rs). Sent apart, the client's read often
/// comes late enough to find both anyway, so twenty connects each look.
#[tokio::test]
async fn the_101_and_the_welcome_arrive_together() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start(&[]).await;
    for i in 0..20 {
        let t = token(&format!("u{i}"), &[], 60);
        let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let head = format!(
            "GET /ws?token={t} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            s.addr
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        let got = &buf[..n];
        let text = String::from_utf8_lossy(got);
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        let end = got
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(n, |p| p + 4);
        // A whole text frame follows the head: the welcome.
        assert_eq!(got.get(end), Some(&0x81), "connect {i}, first read: {text}");
        assert!(
            text[end..].contains(r#""type":"welcome""#),
            "connect {i}, first read: {text}"
        );
    }
}
