//! PROTOCOL.md §5 over real sockets: frame size, rate limit, slow consumer,
//! heartbeat, token expiry and graceful shutdown.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use test_support::*;
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
async fn excess_frames_are_refused_without_effect_then_the_client_is_closed() {
    // 1 frame/s, burst 2. The bucket starts full, so the first two frames
    // pass however slow the machine; after that one frame a second comes
    // back, and two refusals in a row close the client. Forty pipelined
    // frames reach two refusals in a row unless processing them takes half
    // a minute.
    const SENT: usize = 40;
    let s = Server::start(&["--rate", "1"]).await;
    let mut a = s.client("a", &[]).await;
    let mut b = s.client("b", &[]).await;
    for i in 0..SENT {
        let frame = json!({"type":"send","to":"b","body":i,"id":i.to_string()});
        a.ws.feed(Message::text(frame.to_string())).await.unwrap();
    }
    a.ws.flush().await.unwrap();
    let (code, _, answers) = a.until_close().await;
    assert_eq!(code, 1008, "{answers:?}");
    // Each frame before the close is answered, in order: an ack or a
    // refusal carrying its id.
    assert!(answers.len() < SENT, "never closed: {answers:?}");
    for (i, f) in answers.iter().enumerate() {
        assert_eq!(f["id"], i.to_string(), "{answers:?}");
        assert!(
            f["type"] == "ack" || (f["type"] == "error" && f["code"] == "rate_limited"),
            "{f}"
        );
    }
    assert!(
        answers.len() >= 3 && answers[..2].iter().all(|f| f["type"] == "ack"),
        "the burst was not let through: {answers:?}"
    );
    // The frame that closed it was the second refusal in a row, so the
    // last answer is the first: at least one send was refused.
    assert_eq!(answers.last().unwrap()["code"], "rate_limited");

    // A refused send has no effect: b gets exactly the accepted ones. A
    // push made after a's close is queued behind all of them and marks the
    // end of what b can get from a.
    let accepted: Vec<u64> = (0u64..)
        .zip(&answers)
        .filter(|(_, f)| f["type"] == "ack")
        .map(|(i, _)| i)
        .collect();
    let (status, _) = s
        .api(
            "POST",
            "/api/v1/users/b/messages",
            Some(json!({"body":"end"})),
        )
        .await;
    assert_eq!(status, 200);
    let mut got = Vec::new();
    loop {
        let m = b.recv().await;
        if m["body"] == "end" {
            break;
        }
        assert_eq!(m["from"], "a", "{m}");
        got.push(m["body"].as_u64().unwrap());
    }
    assert_eq!(got, accepted);
}

#[tokio::test]
async fn a_slow_consumer_is_closed_with_1013_and_the_others_get_everything() {
    const QUEUE: usize = 16;
    let s = Server::start(&["--queue", &QUEUE.to_string()]).await;
    let mut readers = Vec::new();
    for i in 0..3 {
        readers.push(s.client(&format!("r{i}"), &["promo"]).await);
    }
    // The slow member does not read, with a receive buffer made small. How
    // much the kernel still holds on the way (this buffer, the server's
    // send buffer, which autotunes up to the host's tcp_wmem) differs from
    // host to host, so the backend pushes until the server drops the slow
    // member instead of for a count sized for one host's defaults.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(s.addr).await.unwrap();
    let url = s.ws_url(&format!("token={}", token("slow", &["promo"], 3600)));
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    let mut slow = Client::after_upgrade(ws).await;

    // Readers drain concurrently, up to the end marker.
    let reading: Vec<_> = readers
        .into_iter()
        .map(|mut r| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let m = r.recv().await;
                    match m["body"]["n"].as_u64() {
                        Some(n) => got.push(n),
                        None => {
                            assert_eq!(m["body"], "end", "{m}");
                            return got;
                        }
                    }
                }
            })
        })
        .collect();
    let filler = "p".repeat(8 * 1024);
    let push = |body: serde_json::Value| {
        let s = &s;
        async move {
            let (status, res) = s
                .api(
                    "POST",
                    "/api/v1/groups/promo/messages",
                    Some(json!({ "body": body })),
                )
                .await;
            assert_eq!(status, 200, "{res}");
            res["delivered"].as_u64().unwrap()
        }
    };
    // As fast as the backend can, until a push no longer counts the slow
    // member. LIMIT bounds a server that never drops it.
    let deadline = Instant::now() + LIMIT;
    let mut delivered = Vec::new();
    while delivered.last() != Some(&3) {
        assert!(
            Instant::now() < deadline,
            "the slow member was still counted after {} pushes",
            delivered.len()
        );
        delivered.push(push(json!({"n": delivered.len(), "f": filler})).await);
    }
    let dropped_at = delivered.len() - 1;
    // Until then every push counted all four; its queue alone holds QUEUE
    // pushes, so it cannot have overflowed sooner.
    assert!(
        delivered[..dropped_at].iter().all(|&d| d == 4),
        "{delivered:?}"
    );
    assert!(dropped_at >= QUEUE, "dropped after {dropped_at} pushes");
    // After it, only the readers count.
    for _ in 0..QUEUE {
        let d = push(json!({"n": delivered.len(), "f": filler})).await;
        delivered.push(d);
        assert_eq!(d, 3);
    }
    assert_eq!(push(json!("end")).await, 3);
    for r in reading {
        let got = r.await.unwrap();
        assert_eq!(got, (0..delivered.len() as u64).collect::<Vec<_>>());
    }
    let (_, stats) = s.api("GET", "/api/v1/stats", None).await;
    assert_eq!(stats["slow_consumer_closes"], 1);
    // Reading now, it finds what got through, in order and nothing pushed
    // once it was dropped, then the 1013 close.
    let (code, reason, before) = slow.until_close().await;
    assert_eq!((code, reason.as_str()), (1013, "slow_consumer"));
    let ns: Vec<u64> = before
        .iter()
        .map(|m| m["body"]["n"].as_u64().unwrap())
        .collect();
    assert!(
        ns.windows(2).all(|w| w[0] < w[1]) && ns.iter().all(|&n| n < dropped_at as u64),
        "{ns:?}"
    );
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
async fn an_expiring_token_closes_the_connection_with_1008_at_its_exp() {
    let s = Server::start(&[]).await;
    // `exp` counts whole seconds: a second boundary two to three seconds
    // ahead is an exact instant, with room for the upgrade and a ping.
    let exp = now() + 3;
    let exp_at = UNIX_EPOCH + Duration::from_secs(exp);
    let t = sign(&json!({"sub":"brief","exp": exp}), SECRET);
    let mut c = Client::connect(&s.ws_url(&format!("token={t}"))).await;
    let pong = c.request(json!({"type":"ping","id":"before"})).await;
    assert_eq!(pong["type"], "pong");
    let (code, _, before) = c.until_close().await;
    let closed_at = SystemTime::now();
    assert_eq!((code, before.len()), (1008, 0));
    // The close was sent before it arrived here, so arriving before `exp`
    // means the server closed early.
    let late = closed_at
        .duration_since(exp_at)
        .unwrap_or_else(|e| panic!("closed {:?} before exp", e.duration()));
    // A timer set for `exp` fires within milliseconds; a second late means
    // the expiry was rounded or left to some other timer.
    assert!(late < Duration::from_secs(1), "closed {late:?} after exp");
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
