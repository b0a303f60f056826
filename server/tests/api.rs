//! PROTOCOL.md §6–7 over real HTTP: the server API, health and metrics.

use futures_util::StreamExt;
use serde_json::{json, Value};
use test_support::*;

#[tokio::test]
async fn the_api_is_404_without_a_key_configured() {
    let s = Server::builder().secret(SECRET).start().await;
    let (status, body) = http(s.addr, "GET", "/api/v1/stats", Some("anything"), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_401() {
    let s = Server::start(&[]).await;
    for key in [
        None,
        Some("wrong"),
        Some("test-api-ke"),
        Some("test-api-keyy"),
    ] {
        let (status, body) = http(s.addr, "GET", "/api/v1/stats", key, None).await;
        assert_eq!(status, 401, "{key:?}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let (status, _) = http(s.addr, "GET", "/api/v1/stats", Some(API_KEY), None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_push_whose_sender_shut_its_side_after_the_request_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start(&[]).await;
    let mut u1 = s.client("u1", &[]).await;
    // As `printf 'POST ...' | nc host port` sends it: the request, then
    // the end of the client's side, then it waits for the answer.
    let body = json!({"body": "over nc"}).to_string();
    let request = format!(
        "POST /api/v1/users/u1/messages HTTP/1.1\r\nHost: wshub\r\n\
         Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, tcp.read_to_end(&mut answer))
        .await
        .expect("no answer in time")
        .unwrap();
    let answer = Response::from_raw(&answer)
        .unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&answer)));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["delivered"], 1);
    let m = u1.recv().await;
    assert_eq!(m["body"], "over nc");
}

#[tokio::test]
async fn pushes_to_a_user_a_group_and_everyone() {
    let s = Server::start(&[]).await;
    let mut u1 = s.client("u1", &["promo"]).await;
    let mut u1b = s.client("u1", &[]).await;
    let mut u2 = s.client("u2", &[]).await;

    let (status, res) = s
        .api(
            "POST",
            "/api/v1/users/u1/messages",
            Some(json!({"body":{"k":"v"}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(res["delivered"], 2);
    assert!(res["id"].is_string());
    for c in [&mut u1, &mut u1b] {
        let m = c.recv().await;
        assert_eq!(m["type"], "message");
        assert_eq!(m["to"], "u1");
        assert_eq!(m["body"], json!({"k":"v"}));
        assert_eq!(m["id"], res["id"]);
        assert!(m.get("from").is_none(), "{m}");
    }

    let promo = json!({"messageType":1,"title":"Sale","content":"50% off"});
    let (status, res) = s
        .api(
            "POST",
            "/api/v1/groups/promo/messages",
            Some(json!({"body": promo})),
        )
        .await;
    // Membership belongs to the user: both of u1's connections get it.
    assert_eq!((status, res["delivered"].as_u64()), (200, Some(2)));
    for c in [&mut u1, &mut u1b] {
        let m = c.recv().await;
        assert_eq!((m["group"].as_str(), &m["body"]), (Some("promo"), &promo));
        assert!(m.get("from").is_none() && m.get("to").is_none());
    }

    let (status, res) = s
        .api("POST", "/api/v1/broadcast", Some(json!({"body":null})))
        .await;
    assert_eq!((status, res["delivered"].as_u64()), (200, Some(3)));
    for c in [&mut u1, &mut u1b, &mut u2] {
        let m = c.recv().await;
        assert_eq!(m["body"], Value::Null);
    }

    // Unknown user or group: delivered 0, not an error.
    let (status, res) = s
        .api(
            "POST",
            "/api/v1/users/ghost/messages",
            Some(json!({"body":1})),
        )
        .await;
    assert_eq!((status, res["delivered"].as_u64()), (200, Some(0)));
    let (status, res) = s
        .api(
            "POST",
            "/api/v1/groups/ghosts/messages",
            Some(json!({"body":1})),
        )
        .await;
    assert_eq!((status, res["delivered"].as_u64()), (200, Some(0)));
}

#[tokio::test]
async fn a_group_push_reaches_all_500_members() {
    let s = Server::start(&[]).await;
    let mut members = Vec::new();
    for i in 0..500 {
        members.push(s.client(&format!("m{i}"), &["big"]).await);
    }
    let (status, res) = s
        .api(
            "POST",
            "/api/v1/groups/big/messages",
            Some(json!({"body":"hello all"})),
        )
        .await;
    assert_eq!((status, res["delivered"].as_u64()), (200, Some(500)));
    for m in &mut members {
        assert_eq!(m.recv().await["body"], "hello all");
    }
}

#[tokio::test]
async fn pushes_never_wait_for_a_member_that_does_not_read() {
    let s = Server::start(&["--queue", "4"]).await;
    let _stuck = s.client("stuck", &["g"]).await; // never reads
    let mut reader = s.client("reader", &["g"]).await;
    // Far more pushes than the stuck member's queue and socket buffers hold
    // at first: each answers, none waits for the stuck member.
    for n in 0..300 {
        let (status, _) = s
            .api(
                "POST",
                "/api/v1/groups/g/messages",
                Some(json!({"body":{"n":n,"pad":"z".repeat(4000)}})),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(reader.recv().await["body"]["n"], n);
    }
}

#[tokio::test]
async fn membership_and_presence() {
    let s = Server::start(&[]).await;
    let (status, res) = s.api("PUT", "/api/v1/groups/club/members/ann", None).await;
    assert_eq!(status, 200);
    assert_eq!(res, json!({"group":"club","user":"ann","joined":true}));
    let _a1 = s.client("ann", &[]).await;
    let a2 = s.client("ann", &[]).await;
    assert_eq!(a2.welcome["groups"], json!(["club"]));
    s.api("PUT", "/api/v1/groups/club/members/bob", None).await;

    let (status, res) = s.api("GET", "/api/v1/groups/club/members", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        res,
        json!({"group":"club","members":[{"user":"ann","connections":2},{"user":"bob","connections":0}]})
    );
    let (_, res) = s.api("GET", "/api/v1/users/ann", None).await;
    assert_eq!(res, json!({"user":"ann","connections":2,"groups":["club"]}));

    let (status, res) = s
        .api("DELETE", "/api/v1/groups/club/members/bob", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(res, json!({"group":"club","user":"bob","joined":false}));
    // Idempotent, and unknown things are empty, not errors.
    let (status, _) = s
        .api("DELETE", "/api/v1/groups/club/members/bob", None)
        .await;
    assert_eq!(status, 200);
    let (_, res) = s.api("GET", "/api/v1/groups/nothing/members", None).await;
    assert_eq!(res, json!({"group":"nothing","members":[]}));
    let (_, res) = s.api("GET", "/api/v1/users/nobody", None).await;
    assert_eq!(res, json!({"user":"nobody","connections":0,"groups":[]}));
}

#[tokio::test]
async fn kick_closes_every_connection_with_1008() {
    let s = Server::start(&[]).await;
    let mut a = s.client("kicked", &[]).await;
    let mut b = s.client("kicked", &[]).await;
    let mut other = s.client("stays", &[]).await;
    let (status, res) = s
        .api("DELETE", "/api/v1/users/kicked/connections", None)
        .await;
    assert_eq!((status, res), (200, json!({"closed":2})));
    for c in [&mut a, &mut b] {
        assert_eq!(c.until_close().await.0, 1008);
    }
    assert_eq!(
        other.request(json!({"type":"ping","id":"x"})).await["type"],
        "pong"
    );
    let (_, res) = s
        .api("DELETE", "/api/v1/users/nobody/connections", None)
        .await;
    assert_eq!(res, json!({"closed":0}));
}

#[tokio::test]
async fn stats_answer_exactly_the_contract_fields() {
    let s = Server::start(&[]).await;
    let mut a = s.client("a", &["g"]).await;
    let mut b = s.client("b", &[]).await;
    let ack = a
        .request(json!({"type":"send","to":"b","body":1,"id":"1"}))
        .await;
    assert_eq!(
        (ack["type"].as_str(), ack["delivered"].as_u64()),
        (Some("ack"), Some(1))
    );
    // Every frame the server wrote is now in a client's hands (the ack at a,
    // the message at b), so each has been counted: the counts below are
    // exact, not a race with b's writer.
    assert_eq!(b.recv().await["body"], 1);
    let (status, res) = s.api("GET", "/api/v1/stats", None).await;
    assert_eq!(status, 200);
    // The protocol type refuses unknown fields and needs every field, as
    // an integer: decoding it checks the contract's exact field set.
    let stats: protocol::api::StatsResponse = serde_json::from_value(res.clone())
        .unwrap_or_else(|e| panic!("stats body is not exactly the contract's: {e}: {res}"));
    assert_eq!(res.as_object().unwrap().len(), 9);
    assert!(stats.uptime_seconds < 3600);

    assert_eq!(
        (
            res["connections"].as_u64(),
            res["users"].as_u64(),
            res["groups"].as_u64()
        ),
        (Some(2), Some(2), Some(1))
    );
    assert_eq!(res["frames_in"], 1);
    assert_eq!(res["messages_delivered"], 1);
    // Two welcomes, the ack and the message.
    assert_eq!(res["frames_out"], 4);
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let s = Server::start(&[]).await;
    let cases: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        (
            "POST",
            "/api/v1/users/a%20b/messages",
            Some(r#"{"body":1}"#),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/groups/x!/messages",
            Some(r#"{"body":1}"#),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/users/a/messages",
            Some("not json"),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/users/a/messages",
            Some(r#"{"msg":1}"#),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/users/a/messages",
            Some("[1]"),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/users/a/messages",
            None,
            405,
            "method_not_allowed",
        ),
        ("POST", "/api/v1/stats", None, 405, "method_not_allowed"),
        (
            "GET",
            "/api/v1/groups/g/members/u",
            None,
            405,
            "method_not_allowed",
        ),
        ("GET", "/api/v1/nothing/here", None, 404, "not_found"),
        ("GET", "/no/such/path", None, 404, "not_found"),
        ("POST", "/healthz", None, 405, "method_not_allowed"),
    ];
    for (method, path, body, status, code) in cases {
        let (got, res) = http(s.addr, method, path, Some(API_KEY), body).await;
        assert_eq!(got, status, "{method} {path}");
        assert_eq!(res["error"]["code"], code, "{method} {path}");
        assert!(res["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn healthz_is_ok_while_serving() {
    let s = Server::start(&[]).await;
    let (status, body) = http(s.addr, "GET", "/healthz", None, None).await;
    assert_eq!((status, body), (200, json!({"status":"ok"})));
}

/// The value of an unlabelled series in Prometheus text output.
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no series {name} in:\n{text}"))
}

async fn metrics(s: &Server) -> String {
    let res = request(s.addr, "GET", "/metrics", None, None, &[]).await;
    assert_eq!(res.status, 200);
    assert!(res
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain")));
    String::from_utf8(res.body).unwrap()
}

#[tokio::test]
async fn metrics_follow_connects_and_disconnects() {
    let s = Server::start(&[]).await;
    let text = metrics(&s).await;
    for name in [
        "wshub_connections",
        "wshub_users",
        "wshub_groups",
        "wshub_frames_received_total",
        "wshub_frames_sent_total",
        "wshub_bytes_received_total",
        "wshub_bytes_sent_total",
        "wshub_messages_delivered_total",
        "wshub_slow_consumer_closes_total",
        "wshub_auth_failures_total",
        "wshub_api_request_duration_seconds_count",
    ] {
        series(&text, name);
    }
    assert!(text.contains("# TYPE wshub_connections gauge"));
    // The Prometheus text format (0.0.4): a counter's family carries its
    // `_total`, and no OpenMetrics `# EOF`.
    assert!(text.contains("# TYPE wshub_frames_received_total counter"));
    assert!(!text.contains("# EOF"), "{text}");
    assert!(text.contains("# TYPE wshub_api_request_duration_seconds histogram"));
    assert_eq!(series(&text, "wshub_connections"), 0.0);

    let mut a = s.client("a", &[]).await;
    let b = s.client("b", &[]).await;
    assert_eq!(series(&metrics(&s).await, "wshub_connections"), 2.0);
    assert_eq!(series(&metrics(&s).await, "wshub_users"), 2.0);

    drop(b);
    // The server logs the close once it has unregistered the connection.
    s.wait_log("connection closed").await;
    assert_eq!(series(&metrics(&s).await, "wshub_connections"), 1.0);

    a.request(json!({"type":"ping","id":"p"})).await;
    let text = metrics(&s).await;
    assert_eq!(series(&text, "wshub_frames_received_total"), 1.0);
    assert!(series(&text, "wshub_bytes_received_total") > 0.0);
    a.ws.close(None).await.unwrap();
    while a.ws.next().await.is_some() {}
    s.wait_log_n("connection closed", 2).await;
    assert_eq!(series(&metrics(&s).await, "wshub_connections"), 0.0);
}
