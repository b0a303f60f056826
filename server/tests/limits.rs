//! PROTOCOL.md §5 over real sockets: frame size, rate limit, slow consumer,
//! heartbeat, token expiry and graceful shutdown.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let s = Server::start(&["--max-frame", "1024"]).await;
    let mut a = s.client("a", &[]).await;
    // Exactly at the limit is fine.
    let frame = format!(
        r#"{{"type":"send","to":"b","body":"{}"}}"#,
        "x".repeat(1024 - r#"{"type":"send","to":"b","body":""}"#.len())
    );
    assert_eq!(frame.len(), 1024);
    a.send_text(&frame).await;
    assert_eq!(
        a.request(json!({"type":"ping","id":"ok"})).await["type"],
        "pong"
    );
    a.send_text(&format!(
        r#"{{"type":"send","to":"b","body":"{}"}}"#,
        "x".repeat(2000)
    ))
    .await;
    let (code, _, _) = a.until_close().await;
    assert_eq!(code, 1009);
}

#[tokio::test]
async fn excess_frames_are_rate_limited_then_the_client_is_closed() {
    // 2 frames/s, burst 4: a token comes back every 500 ms, far slower than
    // this test sends, so the counts below hold on a loaded machine too. A
    // client is closed after `burst` refusals in a row.
    let s = Server::start(&["--rate", "2"]).await;
    let mut a = s.client("a", &[]).await;
    let mut b = s.client("b", &[]).await;
    // A pipelined burst of 6: the first 4 are within the limit.
    for i in 0..6 {
        let frame = Message::text(format!(r#"{{"type":"ping","id":"{i}"}}"#));
        a.ws.feed(frame).await.unwrap();
    }
    a.ws.flush().await.unwrap();
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(a.recv().await);
    }
    for (i, f) in got.iter().enumerate() {
        // Every frame is answered, with its id: a pong or a refusal.
        assert_eq!(f["id"], i.to_string(), "{f}");
    }
    assert!(got[..4].iter().all(|f| f["type"] == "pong"), "{got:?}");
    assert!(
        got[4..].iter().any(|f| f["code"] == "rate_limited"),
        "{got:?}"
    );
    // A refused frame has no effect: a refused send delivers nothing.
    let e = a
        .request(json!({"type":"send","to":"b","body":"x","id":"over"}))
        .await;
    if e["code"] == "rate_limited" {
        assert_eq!(e["id"], "over");
        let pong = b.request(json!({"type":"ping","id":"b"})).await;
        assert_eq!(pong["type"], "pong", "b got the refused message: {pong}");
    }
    // Keep going: closed with 1008.
    for i in 0..40 {
        let frame = Message::text(format!(r#"{{"type":"ping","id":"k{i}"}}"#));
        if a.ws.send(frame).await.is_err() {
            break;
        }
    }
    let (code, _, before) = a.until_close().await;
    assert_eq!(code, 1008);
    assert!(before
        .iter()
        .all(|f| f["code"] == "rate_limited" || f["type"] == "pong"));
}

use futures_util::SinkExt;

#[tokio::test]
async fn a_slow_consumer_is_closed_with_1013_and_the_others_get_everything() {
    const PUSHES: usize = 1_000;
    let s = Server::start(&["--queue", "16"]).await;
    let mut readers = Vec::new();
    for i in 0..3 {
        readers.push(s.client(&format!("r{i}"), &["promo"]).await);
    }
    // The slow member: a small receive buffer, and it does not read.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(s.addr).await.unwrap();
    let url = s.ws_url(&format!("token={}", token("slow", &["promo"], 3600)));
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    let mut slow = Client::after_upgrade(ws).await;

    // Readers drain concurrently while the backend pushes as fast as it can.
    let reading: Vec<_> = readers
        .into_iter()
        .map(|mut r| {
            tokio::spawn(async move {
                let mut got = Vec::with_capacity(PUSHES);
                while got.len() < PUSHES {
                    got.push(r.recv().await["body"]["n"].as_u64().unwrap());
                }
                got
            })
        })
        .collect();
    let filler = "p".repeat(8 * 1024);
    let mut delivered = Vec::new();
    for n in 0..PUSHES {
        let (status, res) = s
            .api(
                "POST",
                "/api/v1/groups/promo/messages",
                Some(json!({"body":{"n":n,"f":filler}})),
            )
            .await;
        assert_eq!(status, 200);
        delivered.push(res["delivered"].as_u64().unwrap());
    }
    for r in reading {
        let got = r.await.unwrap();
        assert_eq!(got, (0..PUSHES as u64).collect::<Vec<_>>());
    }
    // The slow one was counted until its queue overflowed, then dropped out.
    assert_eq!(delivered[0], 4);
    assert_eq!(*delivered.last().unwrap(), 3);
    let (_, stats) = s.api("GET", "/api/v1/stats", None).await;
    assert_eq!(stats["slow_consumer_closes"], 1);
    // Reading now, it finds what got through and then the 1013 close.
    let (code, reason, _) = slow.until_close().await;
    assert_eq!((code, reason.as_str()), (1013, "slow_consumer"));
    s.wait_log("reason=\"slow_consumer\"").await;
}

#[tokio::test]
async fn a_silent_client_is_closed_by_the_heartbeat() {
    let s = Server::start(&["--heartbeat", "1"]).await;
    let mut silent = s.client("quiet", &[]).await;
    assert_eq!(silent.welcome["heartbeat"], 1);
    // A client that answers pings stays.
    let mut lively = s.client("lively", &[]).await;
    let lively_task = tokio::spawn(async move {
        // Reading answers pings; the close below ends it.
        while let Some(Ok(_)) = lively.ws.next().await {}
    });
    // The silent one does not read (so it never answers a ping) until the
    // server logs that it gave up on it.
    s.wait_log("reason=\"heartbeat timeout\"").await;
    let (code, _, _) = silent.until_close().await;
    assert_eq!(code, 1001);
    let (_, user) = s.api("GET", "/api/v1/users/lively", None).await;
    assert_eq!(user["connections"], 1);
    lively_task.abort();
}

#[tokio::test]
async fn an_expiring_token_closes_the_connection_with_1008() {
    let s = Server::start(&[]).await;
    let t = sign(&json!({"sub":"brief","exp": now() + 2}), SECRET);
    let mut c = Client::connect(&s.ws_url(&format!("token={t}"))).await;
    let (code, _, _) = c.until_close().await;
    assert_eq!(code, 1008);
}

#[tokio::test]
async fn sigterm_drains_closes_with_1001_and_exits_0() {
    let mut s = Server::start(&["--shutdown-grace", "5"]).await;
    let mut a = s.client("a", &[]).await;
    let mut b = s.client("b", &[]).await;
    for n in 0..50 {
        a.send(json!({"type":"send","to":"b","body":n})).await;
    }
    // The last one is acked, so all 50 were queued before the signal.
    let ack = a.request(json!({"type":"ping","id":"sync"})).await;
    assert_eq!(ack["type"], "pong");
    s.terminate();
    s.wait_log("shutting down").await;

    let (status, body) = http(s.addr, "GET", "/healthz", None, None).await;
    assert_eq!(status, 503);
    assert_ne!(body["status"], "ok");
    let t = token("late", &[], 60);
    let (status, body) = refused(
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            s.ws_url(&format!("token={t}")),
        )
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );

    let (code, _, before) = b.until_close().await;
    assert_eq!(code, 1001);
    let bodies: Vec<_> = before.iter().map(|m| m["body"].as_u64().unwrap()).collect();
    assert_eq!(bodies, (0..50).collect::<Vec<_>>());
    let (code, _, _) = a.until_close().await;
    assert_eq!(code, 1001);
    assert_eq!(s.wait_exit().await.code(), Some(0));
}
