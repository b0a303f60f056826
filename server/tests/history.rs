//! History and recovery on one process (PROTOCOL.md §10, §6's history API
//! and idempotent pushes), over real sockets against the real binary.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use test_support::{now, request, sign, Client, Server, API_KEY, SECRET};

/// A client of `user` in `groups` that connects with `resume=1`: its
/// delivery is held until its first frame.
async fn resuming(s: &Server, user: &str, groups: &[&str]) -> Client {
    let t = sign(
        &json!({"sub": user, "groups": groups, "exp": now() + 3600}),
        SECRET,
    );
    Client::connect(&s.ws_url(&format!("token={t}&resume=1"))).await
}

async fn push(s: &Server, path: &str, body: Value) -> Value {
    let (status, answer) = s.api("POST", path, Some(json!({ "body": body }))).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The position `welcome` gave for `stream`.
fn welcome_at(c: &Client, stream: &str) -> Value {
    c.welcome["streams"][stream].clone()
}

/// Reads frames until the ack with `id`; returns the messages before it.
async fn until_ack(c: &mut Client, id: &str) -> (Vec<Value>, Value) {
    let mut messages = Vec::new();
    loop {
        let f = c.recv().await;
        if f["type"] == "ack" && f["id"] == id {
            return (messages, f);
        }
        assert_eq!(f["type"], "message", "{f}");
        messages.push(f);
    }
}

fn seqs(messages: &[Value], stream: &str) -> Vec<u64> {
    messages
        .iter()
        .filter(|m| m["stream"] == stream)
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test]
async fn every_stream_numbers_its_messages_and_acks_carry_the_senders_position() {
    let s = Server::start(&["--public-group", "pub."]).await;
    let mut alice = s.client("alice", &["team"]).await;
    let mut alice_tab = s.client("alice", &[]).await;
    let mut bob = s.client("bob", &["team"]).await;
    let epoch = |c: &Client, stream: &str| welcome_at(c, stream)["epoch"].clone();

    // Direct: bob's inbox seq 1; alice's copy seq 1 of alice's inbox.
    let ack = alice
        .request(json!({"type":"send","to":"bob","body":"hi","id":"s1"}))
        .await;
    assert_eq!(
        (&ack["stream"], &ack["seq"], &ack["epoch"]),
        (&json!("inbox"), &json!(1), &epoch(&alice, "inbox"))
    );
    let m = bob.recv().await;
    assert_eq!((&m["stream"], &m["seq"]), (&json!("inbox"), &json!(1)));
    assert_eq!(m["epoch"], epoch(&bob, "inbox"));
    let copy = alice_tab.recv().await;
    assert_eq!(
        (&copy["stream"], &copy["seq"]),
        (&json!("inbox"), &json!(1))
    );
    assert_eq!(copy["id"], m["id"]);

    // A push to bob is seq 2 of bob's inbox, and the answer says so.
    let answer = push(&s, "/api/v1/users/bob/messages", json!("p")).await;
    assert_eq!(answer["seq"], 2);
    assert_eq!(bob.recv().await["seq"], 2);

    // Group: one stream, the same seq for every member; the ack carries it.
    let ack = alice
        .request(json!({"type":"publish","group":"team","body":1,"id":"p1"}))
        .await;
    assert_eq!(
        (&ack["stream"], &ack["seq"]),
        (&json!("group:team"), &json!(1))
    );
    let m = bob.recv().await;
    assert_eq!((&m["stream"], &m["seq"]), (&json!("group:team"), &json!(1)));
    assert_eq!(alice_tab.recv().await["seq"], 1);

    // Broadcast: the `all` stream.
    let answer = push(&s, "/api/v1/broadcast", json!("all")).await;
    assert_eq!(answer["seq"], 1);
    let m = bob.recv().await;
    assert_eq!((&m["stream"], &m["seq"]), (&json!("all"), &json!(1)));

    // A join's ack gives the group stream's position.
    let ack = bob
        .request(json!({"type":"join","group":"pub.x","id":"j"}))
        .await;
    assert_eq!(
        (&ack["stream"], &ack["seq"]),
        (&json!("group:pub.x"), &json!(0))
    );
    assert_eq!(ack["epoch"].as_str().map(str::len), Some(8));
}

#[tokio::test]
async fn racing_publishers_never_reorder_a_stream() {
    let s = Server::start(&[]).await;
    let mut reader = s.client("reader", &["g"]).await;
    const PUBLISHERS: usize = 4;
    const EACH: usize = 100;
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let mut c = s.client(&format!("pub{p}"), &["g"]).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                c.send(json!({"type":"publish","group":"g","body":[p, i]}))
                    .await;
            }
            c
        }));
    }
    let mut got = Vec::new();
    while got.len() < PUBLISHERS * EACH {
        let m = reader.recv().await;
        got.push(m);
    }
    // Gapless and in order, and each publisher's own order kept.
    let want: Vec<u64> = (1..=(PUBLISHERS * EACH) as u64).collect();
    assert_eq!(seqs(&got, "group:g"), want);
    for p in 0..PUBLISHERS {
        let mine: Vec<u64> = got
            .iter()
            .filter(|m| m["body"][0] == p)
            .map(|m| m["body"][1].as_u64().unwrap())
            .collect();
        assert_eq!(mine, (0..EACH as u64).collect::<Vec<_>>());
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn resume_replays_what_was_missed_exactly_once_with_pushes_racing_it() {
    let s = Server::start(&[]).await;
    let first = s.client("u", &["g"]).await;
    let inbox = welcome_at(&first, "inbox");
    let group = welcome_at(&first, "group:g");
    drop(first);
    // Missed while away.
    for i in 0..5 {
        push(&s, "/api/v1/users/u/messages", json!(i)).await;
        push(&s, "/api/v1/groups/g/messages", json!(i)).await;
    }
    let mut c = resuming(&s, "u", &["g"]).await;
    // Pushes racing the resume frame and its replay.
    let addr = s.addr;
    let racer = tokio::spawn(async move {
        for i in 5..40 {
            for path in ["/api/v1/users/u/messages", "/api/v1/groups/g/messages"] {
                let body = json!({ "body": i }).to_string();
                let r = request(addr, "POST", path, Some(API_KEY), Some(&body), &[]).await;
                assert_eq!(r.status, 200);
            }
        }
    });
    c.send(json!({"type":"resume","id":"r","positions":{"inbox":inbox,"group:g":group}}))
        .await;
    let (mut got, ack) = until_ack(&mut c, "r").await;
    assert_eq!(ack["recovered"], json!({"inbox": true, "group:g": true}));
    racer.await.unwrap();
    // Everything after the replay arrives live; read until both streams
    // reach 40 messages.
    while seqs(&got, "inbox").len() < 40 || seqs(&got, "group:g").len() < 40 {
        got.push(c.recv().await);
    }
    let want: Vec<u64> = (1..=40).collect();
    assert_eq!(seqs(&got, "inbox"), want);
    assert_eq!(seqs(&got, "group:g"), want);
    let bodies: Vec<Value> = got
        .iter()
        .filter(|m| m["stream"] == "inbox")
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(bodies, (0..40).map(|i| json!(i)).collect::<Vec<_>>());
    // And nothing more: the next frame is the answer to a ping.
    let pong = c.request(json!({"type":"ping","id":"end"})).await;
    assert_eq!(pong, json!({"type":"pong","id":"end"}));
}

#[tokio::test]
async fn resume_answers_false_when_it_cannot_recover() {
    let s = Server::start(&["--history", "3", "--public-group", "pub."]).await;
    let first = s.client("u", &["g"]).await;
    let inbox = welcome_at(&first, "inbox");
    let all = welcome_at(&first, "all");
    drop(first);
    // Five to the inbox: the first two are trimmed (--history 3).
    for i in 0..5 {
        push(&s, "/api/v1/users/u/messages", json!(i)).await;
    }
    push(&s, "/api/v1/broadcast", json!("b")).await;
    let mut c = resuming(&s, "u", &["g"]).await;
    let mut positions = BTreeMap::new();
    positions.insert("inbox", inbox.clone());
    positions.insert("all", all.clone());
    // Wrong epoch, a group the user is not in, one that does not exist as
    // a stream name, and a position past the stream's end.
    positions.insert("group:g", json!({"epoch":"nOtMiNe0","seq":0}));
    positions.insert("group:other", json!({"epoch": all["epoch"], "seq":0}));
    positions.insert("nonsense", json!({"epoch":"x","seq":0}));
    c.send(json!({"type":"resume","id":"r","positions":positions}))
        .await;
    let (got, ack) = until_ack(&mut c, "r").await;
    assert_eq!(
        ack["recovered"],
        json!({"inbox":false,"all":true,"group:g":false,"group:other":false,"nonsense":false})
    );
    // Only the recovered stream was replayed.
    assert_eq!(seqs(&got, "all"), vec![1]);
    assert!(seqs(&got, "inbox").is_empty(), "{got:?}");

    // From a position the history still covers, it recovers.
    drop(c);
    let mut c = resuming(&s, "u", &[]).await;
    let at = json!({"epoch": inbox["epoch"], "seq": 2});
    c.send(json!({"type":"resume","id":"r2","positions":{"inbox":at}}))
        .await;
    let (got, ack) = until_ack(&mut c, "r2").await;
    assert_eq!(ack["recovered"], json!({"inbox": true}));
    assert_eq!(seqs(&got, "inbox"), vec![3, 4, 5]);
    // Ahead of the stream: false.
    drop(c);
    let mut c = resuming(&s, "u", &[]).await;
    let at = json!({"epoch": inbox["epoch"], "seq": 99});
    c.send(json!({"type":"resume","id":"r3","positions":{"inbox":at}}))
        .await;
    let (_, ack) = until_ack(&mut c, "r3").await;
    assert_eq!(ack["recovered"], json!({"inbox": false}));

    let (_, metrics) = (0, metrics_text(&s).await);
    assert!(metrics.contains("wshub_history_messages 4"), "{metrics}");
    assert!(
        metrics.contains(r#"wshub_recoveries_total{result="recovered"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"wshub_recoveries_total{result="reset"} 5"#),
        "{metrics}"
    );
}

async fn metrics_text(s: &Server) -> String {
    request(s.addr, "GET", "/metrics", None, None, &[])
        .await
        .text()
}

#[tokio::test]
async fn a_restarted_process_answers_false_under_new_epochs() {
    let mut s = Server::start(&[]).await;
    let first = s.client("u", &[]).await;
    push(&s, "/api/v1/users/u/messages", json!(1)).await;
    let inbox = welcome_at(&first, "inbox");
    drop(first);
    s.kill().await;
    let s = Server::start(&[]).await;
    let mut c = resuming(&s, "u", &[]).await;
    assert_ne!(welcome_at(&c, "inbox")["epoch"], inbox["epoch"]);
    c.send(json!({"type":"resume","id":"r","positions":{"inbox":inbox}}))
        .await;
    let (got, ack) = until_ack(&mut c, "r").await;
    assert_eq!(ack["recovered"], json!({"inbox": false}));
    assert!(got.is_empty());
}

#[tokio::test]
async fn an_expired_stream_starts_over_under_a_new_epoch() {
    let s = Server::start(&["--history-ttl", "1"]).await;
    let c = s.client("u", &[]).await;
    push(&s, "/api/v1/users/u/messages", json!(1)).await;
    let (_, h) = s.api("GET", "/api/v1/users/u/history", None).await;
    assert_eq!(h["seq"], 1);
    // No signal marks the end of a ttl: wait it out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, after) = s.api("GET", "/api/v1/users/u/history", None).await;
    assert_eq!(after["seq"], 0, "{after}");
    assert_eq!(after["messages"], json!([]));
    assert_ne!(after["epoch"], h["epoch"]);
    drop(c);
    let mut c = resuming(&s, "u", &[]).await;
    let old = json!({"epoch": h["epoch"], "seq": 1});
    c.send(json!({"type":"resume","id":"r","positions":{"inbox":old}}))
        .await;
    let (_, ack) = until_ack(&mut c, "r").await;
    assert_eq!(ack["recovered"], json!({"inbox": false}));
    let answer = push(&s, "/api/v1/users/u/messages", json!(2)).await;
    assert_eq!(answer["seq"], 1);
}

#[tokio::test]
async fn resume_is_only_the_first_frame_after_resume_1() {
    let s = Server::start(&[]).await;
    // Without resume=1: bad_request, and delivery was never held.
    let mut plain = s.client("a", &[]).await;
    let e = plain
        .request(json!({"type":"resume","id":"r","positions":{}}))
        .await;
    assert_eq!((&e["code"], &e["id"]), (&json!("bad_request"), &json!("r")));

    // With it: a first frame that is not a resume is handled as usual,
    // after an empty resume; a resume after it is bad_request.
    let mut c = resuming(&s, "b", &[]).await;
    push(&s, "/api/v1/users/b/messages", json!("held")).await;
    c.send(json!({"type":"ping","id":"p"})).await;
    let first = c.recv().await;
    let second = c.recv().await;
    let mut frames = [first, second];
    frames.sort_by_key(|f| f["type"].as_str().map(str::to_owned));
    assert_eq!(frames[0]["body"], "held");
    assert_eq!(frames[1], json!({"type":"pong","id":"p"}));
    let e = c
        .request(json!({"type":"resume","id":"late","positions":{}}))
        .await;
    assert_eq!(e["code"], "bad_request");

    // A resume frame with a bad shape is bad_request too, with its id.
    let mut c = resuming(&s, "c", &[]).await;
    let e = c
        .request(json!({"type":"resume","id":"x","positions":{"inbox":{"seq":-1}}}))
        .await;
    assert_eq!((&e["code"], &e["id"]), (&json!("bad_request"), &json!("x")));
}

#[tokio::test]
async fn a_held_connection_gets_nothing_until_its_resume() {
    let s = Server::start(&[]).await;
    let mut c = resuming(&s, "u", &[]).await;
    let inbox = welcome_at(&c, "inbox");
    push(&s, "/api/v1/users/u/messages", json!("while held")).await;
    // The message waits: the first frame the client sees answers its
    // resume, with the message replayed before the ack.
    c.send(json!({"type":"resume","id":"r","positions":{"inbox":inbox}}))
        .await;
    let (got, ack) = until_ack(&mut c, "r").await;
    assert_eq!(ack["recovered"], json!({"inbox": true}));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["body"], "while held");
    let pong = c.request(json!({"type":"ping","id":"p"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn the_history_api_pages_with_since_and_limit() {
    let s = Server::start(&["--history", "5"]).await;
    let mut member = s.client("m", &["g"]).await;
    for i in 1..=8 {
        push(&s, "/api/v1/groups/g/messages", json!(i)).await;
    }
    let mut live = Vec::new();
    for _ in 0..8 {
        live.push(member.recv().await);
    }
    // Never seen: seq 0, nothing, complete.
    let (status, h) = s.api("GET", "/api/v1/groups/none/history", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&h["stream"], &h["seq"], &h["complete"], &h["messages"]),
        (&json!("group:none"), &json!(0), &json!(true), &json!([]))
    );
    // 8 sent, 5 kept: from 0 the first three are gone.
    let (_, h) = s.api("GET", "/api/v1/groups/g/history", None).await;
    assert_eq!((&h["seq"], &h["complete"]), (&json!(8), &json!(false)));
    // The frames are the live frames, byte for byte in JSON terms.
    assert_eq!(h["messages"], Value::from(live[3..].to_vec()));
    let (_, h) = s
        .api("GET", "/api/v1/groups/g/history?since=4&limit=2", None)
        .await;
    assert_eq!(h["complete"], true);
    assert_eq!(seqs(h["messages"].as_array().unwrap(), "group:g"), [5, 6]);
    let (_, h) = s
        .api("GET", "/api/v1/groups/g/history?since=8&limit=5000", None)
        .await;
    assert_eq!((&h["complete"], &h["messages"]), (&json!(true), &json!([])));
    for bad in ["since=-1", "limit=x", "since=1.5", "limit="] {
        let (status, e) = s
            .api("GET", &format!("/api/v1/groups/g/history?{bad}"), None)
            .await;
        assert_eq!(
            (status, &e["error"]["code"]),
            (400, &json!("bad_request")),
            "{bad}"
        );
    }
    // A user's inbox, as that user's connections received it.
    let mut u = s.client("u", &[]).await;
    push(&s, "/api/v1/users/u/messages", json!("x")).await;
    let m = u.recv().await;
    let (_, h) = s.api("GET", "/api/v1/users/u/history", None).await;
    assert_eq!(
        (&h["stream"], &h["messages"]),
        (&json!("inbox"), &json!([m]))
    );
    let (status, _) = s.api("POST", "/api/v1/users/u/history", None).await;
    assert_eq!(status, 405);
}

async fn keyed_push(s: &Server, path: &str, key: &str, body: Value) -> (u16, Value) {
    let body = json!({ "body": body }).to_string();
    let r = request(
        s.addr,
        "POST",
        path,
        Some(API_KEY),
        Some(&body),
        &[("Idempotency-Key", key)],
    )
    .await;
    (r.status, r.json())
}

#[tokio::test]
async fn a_repeated_idempotency_key_is_not_delivered_again() {
    let s = Server::start(&["--idempotency-window", "1"]).await;
    let mut u = s.client("u", &["g"]).await;
    let (status, first) = keyed_push(&s, "/api/v1/users/u/messages", "order-17", json!(1)).await;
    assert_eq!(status, 200);
    assert_eq!(first["delivered"], 1);
    assert!(first.get("duplicate").is_none(), "{first}");
    assert_eq!(u.recv().await["body"], 1);
    // The same key to the same target, whatever the body: the first push.
    let (_, again) = keyed_push(&s, "/api/v1/users/u/messages", "order-17", json!(2)).await;
    assert_eq!(
        again,
        json!({"id": first["id"], "seq": first["seq"], "delivered": 0, "duplicate": true})
    );
    // Another target with that key is another push.
    let (_, other) = keyed_push(&s, "/api/v1/groups/g/messages", "order-17", json!(3)).await;
    assert_eq!(other["delivered"], 1);
    assert_eq!(u.recv().await["body"], 3);
    // Bad keys are refused before anything is delivered.
    for bad in ["has space", &"k".repeat(129), "é"] {
        let (status, e) = keyed_push(&s, "/api/v1/users/u/messages", bad, json!(4)).await;
        assert_eq!(
            (status, &e["error"]["code"]),
            (400, &json!("bad_request")),
            "{bad}"
        );
    }
    // After the window the key is new again. No signal marks its end.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, later) = keyed_push(&s, "/api/v1/users/u/messages", "order-17", json!(5)).await;
    assert_eq!(later["delivered"], 1);
    assert_ne!(later["id"], first["id"]);
    // Nothing else reached the user in between: the next message is 5.
    assert_eq!(u.recv().await["body"], 5);
}

#[tokio::test]
async fn with_history_0_messages_are_numbered_but_not_kept() {
    let s = Server::start(&["--history", "0"]).await;
    let first = s.client("u", &[]).await;
    let inbox = welcome_at(&first, "inbox");
    drop(first);
    let answer = push(&s, "/api/v1/users/u/messages", json!(1)).await;
    assert_eq!(answer["seq"], 1);
    let (_, h) = s.api("GET", "/api/v1/users/u/history", None).await;
    assert_eq!(
        (&h["seq"], &h["complete"], &h["messages"]),
        (&json!(1), &json!(false), &json!([]))
    );
    // Missed a message: false. Missed nothing: true.
    let mut c = resuming(&s, "u", &[]).await;
    let now_at = welcome_at(&c, "inbox");
    assert_eq!(now_at["seq"], 1);
    c.send(json!({"type":"resume","id":"r","positions":{"inbox":inbox}}))
        .await;
    let (_, ack) = until_ack(&mut c, "r").await;
    assert_eq!(ack["recovered"], json!({"inbox": false}));
    drop(c);
    let mut c = resuming(&s, "u", &[]).await;
    c.send(json!({"type":"resume","id":"r","positions":{"inbox":now_at}}))
        .await;
    let (_, ack) = until_ack(&mut c, "r").await;
    assert_eq!(ack["recovered"], json!({"inbox": true}));
    let metrics = metrics_text(&s).await;
    assert!(metrics.contains("wshub_history_messages 0"), "{metrics}");
}

/// The value of the counter `name` in `/metrics`.
async fn counter(s: &Server, name: &str) -> u64 {
    let text = metrics_text(s).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// §5 "Shutdown" and §10: a resume's replay and its ack go out before
/// anything queued after them, also when a shutdown comes while a client
/// that reads slowly still has most of the replay to take: the shutdown
/// writes the rest of it and the ack, then the queue, then closes with
/// 1001. Nothing the client was told it would get is left out.
#[tokio::test]
async fn a_shutdown_during_a_long_replay_still_writes_all_of_it() {
    const MESSAGES: u64 = 600;
    let s = Server::start(&["--history", "1000"]).await;
    let first = s.client("rita", &[]).await;
    let inbox = welcome_at(&first, "inbox");
    drop(first);
    // 600 messages of 32 KiB: about 19 MB, far more than the socket
    // buffers between the server and a client that is not reading.
    let pad = "x".repeat(32 * 1024);
    for n in 0..MESSAGES {
        push(
            &s,
            "/api/v1/users/rita/messages",
            json!({"n": n, "pad": pad}),
        )
        .await;
    }
    let mut rita = resuming(&s, "rita", &[]).await;
    let sent = counter(&s, "wshub_frames_sent_total").await;
    rita.send(json!({"type":"resume","id":"r","positions":{"inbox":inbox}}))
        .await;
    // The replay has started going out; rita reads nothing yet.
    while counter(&s, "wshub_frames_sent_total").await < sent + 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.terminate();
    s.wait_log("shutting down").await;
    let (code, _, frames) = rita.until_close().await;
    assert_eq!(code, 1001);
    let got: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["body"]["n"].as_u64().expect("n"))
        .collect();
    assert_eq!(got, (0..MESSAGES).collect::<Vec<_>>());
    let ack = frames.last().expect("frames");
    assert_eq!(
        (&ack["id"], &ack["recovered"]),
        (&json!("r"), &json!({"inbox": true}))
    );
}
