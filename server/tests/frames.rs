//! PROTOCOL.md §3–4 over real sockets: every client frame, its ack or
//! error, and the messages recipients see.

use futures_util::SinkExt;
use serde_json::{json, Value};
use test_support::*;
use tokio_tungstenite::tungstenite::Message;

fn strip_volatile(mut m: Value) -> Value {
    assert!(m["id"].is_string(), "{m}");
    assert!(
        m["ts"].as_u64().is_some_and(|ts| ts > 1_600_000_000_000),
        "{m}"
    );
    assert!(m["seq"].as_u64().is_some_and(|s| s > 0), "{m}");
    let o = m.as_object_mut().unwrap();
    o.remove("id");
    o.remove("ts");
    test_support::unplaced(&m)
}

#[tokio::test]
async fn send_reaches_every_connection_of_the_recipient_and_copies_the_sender() {
    let s = Server::start(&[]).await;
    let mut bob1 = s.client("bob", &[]).await;
    let mut bob2 = s.client("bob", &[]).await;
    let mut alice = s.client("alice", &[]).await;
    let mut alice_tab = s.client("alice", &[]).await;

    let ack = alice
        .request(json!({"type":"send","to":"bob","body":{"text":"hi"},"id":"c-1"}))
        .await;
    assert_eq!(
        test_support::unplaced(&ack),
        json!({"type":"ack","id":"c-1","delivered":2})
    );
    let expected = json!({"type":"message","from":"alice","to":"bob","body":{"text":"hi"}});
    assert_eq!(strip_volatile(bob1.recv().await), expected);
    assert_eq!(strip_volatile(bob2.recv().await), expected);
    // The sender's other connection shows the conversation too.
    assert_eq!(strip_volatile(alice_tab.recv().await), expected);

    // Offline recipient: delivered 0, not an error.
    let ack = alice
        .request(json!({"type":"send","to":"nobody","body":null,"id":7}))
        .await;
    assert_eq!(
        test_support::unplaced(&ack),
        json!({"type":"ack","id":"7","delivered":0})
    );
    assert_eq!(
        strip_volatile(alice_tab.recv().await),
        json!({"type":"message","from":"alice","to":"nobody","body":null})
    );

    // To oneself: the other connection gets it and is counted.
    let ack = alice
        .request(json!({"type":"send","to":"alice","body":1,"id":"self"}))
        .await;
    assert_eq!(
        test_support::unplaced(&ack),
        json!({"type":"ack","id":"self","delivered":1})
    );
    assert_eq!(alice_tab.recv().await["body"], 1);
}

#[tokio::test]
async fn the_original_frame_form_still_works() {
    let s = Server::start(&[]).await;
    let mut two = s.client("2", &[]).await;
    let mut one = s.client("1", &[]).await;
    one.send(json!({"userId":2,"msg":"hi"})).await;
    let m = two.recv().await;
    assert_eq!(
        strip_volatile(m),
        json!({"type":"message","from":"1","to":"2","body":"hi"})
    );
    // No id, so no ack: the next frame one sees is the pong.
    let pong = one.request(json!({"type":"ping","id":"after"})).await;
    assert_eq!(pong, json!({"type":"pong","id":"after"}));
}

#[tokio::test]
async fn bodies_arrive_unchanged() {
    let s = Server::start(&[]).await;
    let mut rx = s.client("rx", &[]).await;
    let mut tx = s.client("tx", &[]).await;
    tx.send_text(r#"{"type":"send","to":"rx","body":{"n": 1.50, "s":"\u00e9"}}"#)
        .await;
    let raw = match tokio::time::timeout(LIMIT, futures_util::StreamExt::next(&mut rx.ws))
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        Message::Text(t) => t.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(raw.contains(r#""body":{"n": 1.50, "s":"\u00e9"}"#), "{raw}");
}

#[tokio::test]
async fn groups_join_publish_leave() {
    let s = Server::start(&["--public-group", "lobby"]).await;
    let mut a = s.client("a", &["team"]).await;
    let mut b = s.client("b", &["team"]).await;
    let mut a2 = s.client("a", &[]).await;
    let mut c = s.client("c", &[]).await;

    // Not a member yet: forbidden, with the id.
    let e = c
        .request(json!({"type":"publish","group":"team","body":"x","id":"p0"}))
        .await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "forbidden");
    assert_eq!(e["id"], "p0");
    // Not in c's token and not public: forbidden.
    let e = c
        .request(json!({"type":"join","group":"team","id":"j0"}))
        .await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("forbidden"), Some("j0"))
    );
    // Public prefix: allowed, and idempotent.
    for _ in 0..2 {
        let ack = c
            .request(json!({"type":"join","group":"lobby-1","id":"j1"}))
            .await;
        assert_eq!(
            test_support::unplaced(&ack),
            json!({"type":"ack","id":"j1"})
        );
    }

    let ack = a
        .request(json!({"type":"publish","group":"team","body":{"t":1},"id":"p1"}))
        .await;
    // b's one connection; a's other connection gets a copy, not counted.
    assert_eq!(
        test_support::unplaced(&ack),
        json!({"type":"ack","id":"p1","delivered":1})
    );
    let expected = json!({"type":"message","from":"a","group":"team","body":{"t":1}});
    assert_eq!(strip_volatile(b.recv().await), expected);
    assert_eq!(strip_volatile(a2.recv().await), expected);

    // Leave is idempotent; after it, b no longer receives.
    for _ in 0..2 {
        let ack = b
            .request(json!({"type":"leave","group":"team","id":"l"}))
            .await;
        assert_eq!(test_support::unplaced(&ack), json!({"type":"ack","id":"l"}));
    }
    let ack = a
        .request(json!({"type":"publish","group":"team","body":2,"id":"p2"}))
        .await;
    assert_eq!(ack["delivered"], 0);
    // b can rejoin (in its token).
    let ack = b
        .request(json!({"type":"join","group":"team","id":"j"}))
        .await;
    assert_eq!(test_support::unplaced(&ack), json!({"type":"ack","id":"j"}));
    let ack = a
        .request(json!({"type":"publish","group":"team","body":3,"id":"p3"}))
        .await;
    assert_eq!(ack["delivered"], 1);
    assert_eq!(b.recv().await["body"], 3);
}

#[tokio::test]
async fn ping_gets_pong() {
    let s = Server::start(&[]).await;
    let mut a = s.client("a", &[]).await;
    assert_eq!(
        a.request(json!({"type":"ping","id":"c-18"})).await,
        json!({"type":"pong","id":"c-18"})
    );
    assert_eq!(
        a.request(json!({"type":"ping"})).await,
        json!({"type":"pong"})
    );
}

/// tungstenite answers a client's ping itself, into the same buffer as
/// the server's messages: the pong must come whole, between whole frames,
/// with the ping's payload, while large messages are being written.
#[tokio::test]
async fn a_websocket_ping_is_answered_between_whole_messages() {
    let s = Server::start(&[]).await;
    let mut a = s.client("a", &["g"]).await;
    let pad = "z".repeat(4000);
    for batch in 0..10u64 {
        for n in 0..20u64 {
            if n == 10 {
                let ping = format!("batch {batch}").into_bytes();
                a.ws.send(Message::Ping(ping.into())).await.unwrap();
            }
            let (status, _) = s
                .api(
                    "POST",
                    "/api/v1/groups/g/messages",
                    Some(json!({"body":{"n":batch * 20 + n,"pad":pad}})),
                )
                .await;
            assert_eq!(status, 200);
        }
        let (mut ns, mut pongs) = (Vec::new(), Vec::new());
        while ns.len() < 20 || pongs.is_empty() {
            let msg = tokio::time::timeout(LIMIT, futures_util::StreamExt::next(&mut a.ws))
                .await
                .expect("a frame in time")
                .expect("the stream goes on")
                .expect("a well-formed frame");
            match msg {
                Message::Text(t) => {
                    let m: Value = serde_json::from_str(&t).unwrap();
                    assert_eq!(m["body"]["pad"], pad);
                    ns.push(m["body"]["n"].as_u64().unwrap());
                }
                Message::Pong(p) => pongs.push(p.to_vec()),
                Message::Ping(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let expected: Vec<u64> = (batch * 20..batch * 20 + 20).collect();
        assert_eq!(ns, expected);
        assert_eq!(pongs, [format!("batch {batch}").into_bytes()]);
    }
}

/// A client that closes gets its close echoed (RFC 6455 §5.5.1), after
/// every message already on its way to it.
#[tokio::test]
async fn a_client_that_closes_gets_its_close_answered_after_its_messages() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let s = Server::start(&[]).await;
    let mut a = s.client("a", &["g"]).await;
    let mut b = s.client("b", &["g"]).await;
    for n in 0..50 {
        let ack = b
            .request(json!({"type":"publish","group":"g","body":n,"id":n}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    a.ws.send(Message::Close(Some(close))).await.unwrap();
    let mut bodies = Vec::new();
    loop {
        let msg = tokio::time::timeout(LIMIT, futures_util::StreamExt::next(&mut a.ws))
            .await
            .expect("a frame in time");
        match msg {
            Some(Ok(Message::Text(t))) => {
                let m: Value = serde_json::from_str(&t).unwrap();
                bodies.push(m["body"].as_u64().unwrap());
            }
            Some(Ok(Message::Close(Some(reply)))) => {
                assert_eq!(reply.code, CloseCode::Normal);
                break;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected the close echoed, got {other:?}"),
        }
    }
    assert_eq!(bodies, (0..50).collect::<Vec<u64>>());
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_stays_open() {
    let s = Server::start(&[]).await;
    let mut a = s.client("a", &[]).await;
    let long_id = "i".repeat(65);
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        ("{not json".into(), "bad_request", None),
        ("[1,2,3]".into(), "bad_request", None),
        ("42".into(), "bad_request", None),
        (r#"{"to":"b","body":1}"#.into(), "bad_request", None),
        (r#"{"type":7,"id":"t"}"#.into(), "bad_request", Some("t")),
        (
            r#"{"type":"dance","id":"u"}"#.into(),
            "unknown_type",
            Some("u"),
        ),
        (
            r#"{"type":"send","body":1,"id":"m"}"#.into(),
            "bad_request",
            Some("m"),
        ),
        (
            r#"{"type":"send","to":"b","id":"m2"}"#.into(),
            "bad_request",
            Some("m2"),
        ),
        (
            r#"{"type":"join","id":"g"}"#.into(),
            "bad_request",
            Some("g"),
        ),
        (
            r#"{"type":"send","to":"no such","body":1,"id":"bid"}"#.into(),
            "bad_request",
            Some("bid"),
        ),
        (
            r#"{"type":"join","group":true}"#.into(),
            "bad_request",
            None,
        ),
        (
            format!(r#"{{"type":"ping","id":"{long_id}"}}"#),
            "bad_request",
            None,
        ),
        (r#"{"type":"ping","id":[1]}"#.into(), "bad_request", None),
    ];
    for (text, code, id) in cases {
        a.send_text(&text).await;
        let e = a.recv().await;
        assert_eq!(e["type"], "error", "{text}");
        assert_eq!(e["code"], code, "{text}");
        assert_eq!(e["id"].as_str(), id, "{text}");
        assert!(e["message"].is_string(), "{text}");
        assert!(!e.to_string().contains(&long_id));
    }
    a.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let e = a.recv().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );
    // Still open and working.
    assert_eq!(
        a.request(json!({"type":"ping","id":"ok"})).await["type"],
        "pong"
    );
}

/// §3: a bad frame is answered. A text frame that is not UTF-8 is too, and
/// then the connection is failed with 1007 as RFC 6455 §8.1 requires (the
/// WebSocket layer reads nothing past it).
#[tokio::test]
async fn a_text_frame_that_is_not_utf8_is_answered_then_closed_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    let s = Server::start(&[]).await;
    let mut a = s.client("a", &[]).await;
    let bad = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    a.ws.send(Message::Frame(bad)).await.unwrap();
    let (code, _, frames) = a.until_close().await;
    assert_eq!(code, 1007, "{frames:?}");
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(
        (frames[0]["type"].as_str(), frames[0]["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );
    // Everyone else is unaffected.
    let mut b = s.client("b", &[]).await;
    assert_eq!(
        b.request(json!({"type":"ping","id":"ok"})).await["type"],
        "pong"
    );
}
