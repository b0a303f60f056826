//! PROTOCOL.md §11 from outside: three real `wshub-server` processes on one
//! real `redis-server` form one hub — messages, copies, membership, kicks,
//! caps and presence across processes, processes dying or stopping, and
//! Redis crashing, coming back with or without its data, or freezing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{json, Value};
use test_support::*;
use tokio_tungstenite::tungstenite::Message;

/// How often a condition that has no signal (the shared presence, which no
/// frame or log line announces) is looked at again while waiting for it.
const POLL: Duration = Duration::from_millis(50);

/// A Redis that keeps nothing on disk, for every test that does not
/// restart it with its data. Writing an AOF costs a disk write per command,
/// and on a busy disk that can stall Redis past the hub's command timeout:
/// an outage the test did not make.
async fn redis_in_memory() -> RedisServer {
    RedisServer::builder().persistence(false).start().await
}

/// A Redis whose data survives a SIGKILL and a restart: the AOF is written
/// before each answer (into the page cache, which outlives the process), but
/// not fsynced — only a crash of the machine would need that, and a slow
/// fsync stalls Redis for seconds on a busy disk.
async fn redis_with_aof() -> RedisServer {
    RedisServer::builder()
        .args(&["--appendfsync", "no"])
        .start()
        .await
}

/// Starts three processes of one hub on `redis` and waits until each has
/// reached it ("broker up": before that it may refuse everything).
async fn three(redis: &RedisServer, extra: &[&str]) -> [Server; 3] {
    let url = redis.url();
    let (a, b, c) = tokio::join!(
        Server::start_cluster(&url, extra),
        Server::start_cluster(&url, extra),
        Server::start_cluster(&url, extra),
    );
    for s in [&a, &b, &c] {
        s.wait_log("broker up").await;
    }
    [a, b, c]
}

/// `GET /api/v1/users/{user}` through `s`, expecting 200.
async fn user(s: &Server, user: &str) -> Value {
    let (status, body) = s.api("GET", &format!("/api/v1/users/{user}"), None).await;
    assert_eq!(
        status,
        200,
        "GET users/{user}: {body}; its log:\n{}",
        s.logs().join("\n")
    );
    body
}

/// Waits until `s` counts `n` connections of `user` on the whole hub. The
/// shared presence is only observable by asking, so this polls every
/// [`POLL`], bounded by [`LIMIT`]; the contract makes counts exact once a
/// (dis)connect is more than 1 s old, so a healthy run waits about that long
/// at most (10 s after a process died).
async fn await_connections(s: &Server, u: &str, n: u64) {
    let start = Instant::now();
    loop {
        let body = user(s, u).await;
        if body["connections"].as_u64() == Some(n) {
            return;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{} still answers {body} for {u} after {LIMIT:?}, expected {n} connections",
            s.addr
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The groups `GET /api/v1/users/{user}` lists through `s`.
async fn groups_of(s: &Server, u: &str) -> Value {
    user(s, u).await["groups"].clone()
}

/// The members of `group` through `s`, as `(user, connections)` sorted by
/// user (the order of the list is not part of the contract).
async fn members(s: &Server, group: &str) -> Vec<(String, u64)> {
    let (status, body) = s
        .api("GET", &format!("/api/v1/groups/{group}/members"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let mut list: Vec<(String, u64)> = body["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members list: {body}"))
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().to_owned(),
                m["connections"].as_u64().unwrap(),
            )
        })
        .collect();
    list.sort();
    list
}

/// A push through the API; returns the status and the answer.
async fn push(s: &Server, path: &str, body: Value) -> (u16, Value) {
    s.api("POST", path, Some(json!({ "body": body }))).await
}

/// A push that must succeed; returns its `delivered`.
async fn delivered(s: &Server, path: &str, body: Value) -> u64 {
    let (status, res) = push(s, path, body).await;
    assert_eq!(status, 200, "POST {path}: {res}");
    res["delivered"]
        .as_u64()
        .unwrap_or_else(|| panic!("no delivered: {res}"))
}

/// The next frame of `c`, which must be a message with `body`; returned
/// whole for the caller's further checks.
async fn expect_message(c: &mut Client, body: &Value) -> Value {
    let m = c.recv().await;
    assert_eq!(
        (m["type"].as_str(), &m["body"]),
        (Some("message"), body),
        "{m}"
    );
    m
}

/// A ping with an id, answered by the pong: the connection is open and
/// served, and nothing else was waiting before the pong.
async fn ping(c: &mut Client, id: &str) {
    let pong = c.request(json!({"type":"ping","id":id})).await;
    assert_eq!(pong, json!({"type":"pong","id":id}));
}

/// How many of `s`'s log lines contain `needle` so far.
fn count_log(s: &Server, needle: &str) -> usize {
    s.logs().iter().filter(|l| l.contains(needle)).count()
}

/// The value of the sample `name` (no labels) in `s`'s `/metrics`.
async fn metric(s: &Server, name: &str) -> f64 {
    let res = request(s.addr, "GET", "/metrics", None, None, &[]).await;
    assert_eq!(res.status, 200);
    let text = res.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in /metrics:\n{text}"))
}

#[tokio::test]
async fn messages_pushes_and_copies_reach_every_process_with_exact_counts() {
    let redis = redis_in_memory().await;
    let [a, b, c] = three(&redis, &[]).await;
    let mut alice_a = a.client("alice", &["team"]).await;
    let mut carol_a = a.client("carol", &[]).await;
    let mut bob_b = b.client("bob", &["team"]).await;
    let mut alice_c = c.client("alice", &["team"]).await;
    let mut bob_c = c.client("bob", &["team"]).await;
    // Seen from a process that does not hold them, so the counts below are
    // the hub's and not one process's.
    await_connections(&b, "alice", 2).await;
    await_connections(&a, "bob", 2).await;
    await_connections(&b, "carol", 1).await;

    // Direct send: both of bob's connections, wherever they are, and a copy
    // on alice's other connection (on another process) but not on the
    // sending one (its next frames below are acks and pushes, in order).
    let ack = alice_a
        .request(json!({"type":"send","to":"bob","body":"hi bob","id":"s1"}))
        .await;
    assert_eq!(
        (
            ack["type"].as_str(),
            ack["id"].as_str(),
            ack["delivered"].as_u64()
        ),
        (Some("ack"), Some("s1"), Some(2)),
        "{ack}"
    );
    for r in [&mut bob_b, &mut bob_c, &mut alice_c] {
        let m = expect_message(r, &json!("hi bob")).await;
        assert_eq!(
            (m["from"].as_str(), m["to"].as_str()),
            (Some("alice"), Some("bob")),
            "{m}"
        );
    }

    // Group publish: delivered counts the other members' connections.
    let ack = alice_a
        .request(json!({"type":"publish","group":"team","body":"hi team","id":"p1"}))
        .await;
    assert_eq!(
        (
            ack["type"].as_str(),
            ack["id"].as_str(),
            ack["delivered"].as_u64()
        ),
        (Some("ack"), Some("p1"), Some(2)),
        "{ack}"
    );
    for r in [&mut bob_b, &mut bob_c, &mut alice_c] {
        let m = expect_message(r, &json!("hi team")).await;
        assert_eq!(
            (m["from"].as_str(), m["group"].as_str()),
            (Some("alice"), Some("team")),
            "{m}"
        );
    }

    // API push to a user, through a process holding none of its connections.
    let (status, res) = push(&a, "/api/v1/users/bob/messages", json!("to bob")).await;
    assert_eq!((status, res["delivered"].as_u64()), (200, Some(2)), "{res}");
    for r in [&mut bob_b, &mut bob_c] {
        let m = expect_message(r, &json!("to bob")).await;
        assert_eq!(
            (m["id"].as_str(), m["to"].as_str()),
            (res["id"].as_str(), Some("bob"))
        );
        assert!(m.get("from").is_none(), "{m}");
    }

    // API push to a group: every member connection on every process.
    assert_eq!(
        delivered(&b, "/api/v1/groups/team/messages", json!("to team")).await,
        4
    );
    for r in [&mut alice_a, &mut bob_b, &mut alice_c, &mut bob_c] {
        let m = expect_message(r, &json!("to team")).await;
        assert_eq!(m["group"], "team", "{m}");
    }

    // Broadcast: every connection. It is the first frame carol sees, so no
    // message above strayed to her, and the next one on alice_a, so she got
    // no copy of what she sent.
    assert_eq!(delivered(&c, "/api/v1/broadcast", json!("to all")).await, 5);
    for r in [
        &mut alice_a,
        &mut carol_a,
        &mut bob_b,
        &mut alice_c,
        &mut bob_c,
    ] {
        let m = expect_message(r, &json!("to all")).await;
        assert!(m.get("to").is_none() && m.get("group").is_none(), "{m}");
    }
}

#[tokio::test]
async fn membership_changed_on_one_process_is_seen_by_all() {
    let redis = redis_in_memory().await;
    let [a, b, c] = three(&redis, &["--public-group", "room"]).await;
    let mut dave_a = a.client("dave", &[]).await;
    let mut dave_b = b.client("dave", &[]).await;
    let mut erin_c = c.client("erin", &["room1"]).await;
    await_connections(&c, "dave", 2).await;
    await_connections(&a, "erin", 1).await;

    // A join frame on A, then at once a publish on C: it reaches dave's
    // connection on B too (B subscribed before the join was acked).
    let ack = dave_a
        .request(json!({"type":"join","group":"room1","id":"j1"}))
        .await;
    assert_eq!(
        (ack["type"].as_str(), ack["id"].as_str()),
        (Some("ack"), Some("j1")),
        "{ack}"
    );
    let ack = erin_c
        .request(json!({"type":"publish","group":"room1","body":"welcome dave","id":"p1"}))
        .await;
    assert_eq!(ack["delivered"], 2, "{ack}");
    for d in [&mut dave_a, &mut dave_b] {
        assert_eq!(
            expect_message(d, &json!("welcome dave")).await["from"],
            "erin"
        );
    }
    assert_eq!(groups_of(&b, "dave").await, json!(["room1"]));
    assert_eq!(
        members(&c, "room1").await,
        [("dave".to_owned(), 2), ("erin".to_owned(), 1)]
    );

    // Through the API on C, then a push through A right after.
    let (status, res) = c
        .api("PUT", "/api/v1/groups/room2/members/dave", None)
        .await;
    assert_eq!(
        (status, res),
        (200, json!({"group":"room2","user":"dave","joined":true}))
    );
    assert_eq!(
        delivered(&a, "/api/v1/groups/room2/messages", json!("r2")).await,
        2
    );
    for d in [&mut dave_a, &mut dave_b] {
        expect_message(d, &json!("r2")).await;
    }
    assert_eq!(groups_of(&a, "dave").await, json!(["room1", "room2"]));
    // A new connection on the third process is welcomed with both.
    let mut dave_c = c.client("dave", &[]).await;
    assert_eq!(dave_c.welcome["groups"], json!(["room1", "room2"]));

    // Removed through B: gone everywhere, and no longer delivered to. The
    // push to room2 after erin's publish is dave's next frame on every
    // process, so the publish reached none of them.
    let (status, res) = b
        .api("DELETE", "/api/v1/groups/room1/members/dave", None)
        .await;
    assert_eq!(
        (status, res),
        (200, json!({"group":"room1","user":"dave","joined":false}))
    );
    assert_eq!(groups_of(&a, "dave").await, json!(["room2"]));
    assert_eq!(members(&c, "room1").await, [("erin".to_owned(), 1)]);
    let ack = erin_c
        .request(json!({"type":"publish","group":"room1","body":"dave gone","id":"p2"}))
        .await;
    assert_eq!(ack["delivered"], 0, "{ack}");
    await_connections(&a, "dave", 3).await;
    assert_eq!(
        delivered(&b, "/api/v1/groups/room2/messages", json!("r2 again")).await,
        3
    );
    for d in [&mut dave_a, &mut dave_b, &mut dave_c] {
        expect_message(d, &json!("r2 again")).await;
    }

    // A leave frame on B is seen on C.
    let ack = dave_b
        .request(json!({"type":"leave","group":"room2","id":"l1"}))
        .await;
    assert_eq!(
        (ack["type"].as_str(), ack["id"].as_str()),
        (Some("ack"), Some("l1")),
        "{ack}"
    );
    assert_eq!(groups_of(&c, "dave").await, json!([]));
    assert_eq!(members(&a, "room2").await, []);
}

#[tokio::test]
async fn kicks_and_the_per_user_cap_span_every_process() {
    let redis = redis_in_memory().await;
    let [a, b, c] = three(&redis, &["--max-user-connections", "3"]).await;
    let mut frank = vec![
        a.client("frank", &[]).await,
        a.client("frank", &[]).await,
        b.client("frank", &[]).await,
    ];
    await_connections(&c, "frank", 3).await;

    // The cap counts the hub: C holds none of them, A two.
    for s in [&c, &a] {
        let url = s.ws_url(&format!("token={}", token("frank", &[], 3600)));
        match Client::try_connect(url.as_str()).await {
            Ok(_) => panic!("a 4th connection of frank was accepted on {}", s.addr),
            Err((status, body)) => {
                assert_eq!(
                    (status, body["error"]["code"].as_str()),
                    (429, Some("rate_limited"))
                )
            }
        }
    }

    // A kick through the process holding none closes all three with 1008.
    let (status, res) = c
        .api("DELETE", "/api/v1/users/frank/connections", None)
        .await;
    assert_eq!((status, res), (200, json!({"closed":3})));
    for f in &mut frank {
        assert_eq!(f.until_close().await.0, 1008);
    }
    // Once the hub no longer counts them, frank may connect again.
    await_connections(&c, "frank", 0).await;
    let mut again = c.client("frank", &[]).await;
    ping(&mut again, "back").await;
}

#[tokio::test]
async fn a_dead_process_leaves_presence_within_10s_and_a_stopped_one_at_once() {
    let redis = redis_in_memory().await;
    let [a, mut b, mut c] = three(&redis, &[]).await;
    let mut gus_a = a.client("gus", &[]).await;
    let mut gus_b = b.client("gus", &[]).await;
    let _gus_c = c.client("gus", &[]).await;
    let mut hal_b = b.client("hal", &[]).await;
    let _ida_c = c.client("ida", &[]).await;
    await_connections(&a, "gus", 3).await;
    await_connections(&a, "hal", 1).await;
    await_connections(&a, "ida", 1).await;

    // A crash: nothing tells the others, only the heartbeat's TTL.
    c.kill().await;
    let killed = Instant::now();
    await_connections(&a, "gus", 2).await;
    await_connections(&a, "ida", 0).await;
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(10),
        "the dead process counted for {took:?}"
    );
    // The survivors are unaffected.
    assert_eq!(
        delivered(&b, "/api/v1/users/gus/messages", json!("still here")).await,
        2
    );
    for g in [&mut gus_a, &mut gus_b] {
        expect_message(g, &json!("still here")).await;
    }

    // A graceful stop: its connections are closed with 1001 and, by the time
    // it has exited, no longer counted anywhere — no waiting.
    b.terminate();
    for conn in [&mut gus_b, &mut hal_b] {
        assert_eq!(conn.until_close().await.0, 1001);
    }
    assert!(b.wait_exit().await.success());
    assert_eq!(user(&a, "gus").await["connections"], 1);
    assert_eq!(user(&a, "hal").await["connections"], 0);
    assert_eq!(
        delivered(&a, "/api/v1/users/gus/messages", json!("alone")).await,
        1
    );
    expect_message(&mut gus_a, &json!("alone")).await;
}

/// A process that stalls past the node TTL (SIGSTOP: a long GC-like
/// pause, a frozen VM) is taken for dead and its presence dropped by the
/// others' heartbeat. Its connections never closed, so once it runs again
/// its first heartbeat puts its presence back, rather than the periodic
/// sync 30 s later.
#[tokio::test]
async fn a_process_stalled_past_the_node_ttl_is_counted_again_at_its_next_beat() {
    let redis = redis_in_memory().await;
    let (a, b) = two(&redis, &[]).await;
    let mut sue = a.client("sue", &[]).await;
    await_connections(&b, "sue", 1).await;
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &a.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {}", a.pid());
    };
    signal("-STOP");
    // Up to the node TTL (6 s) and a beat: `b` drops the silent node, its
    // presence first, then its entry in the node list (docs/protocol.md,
    // "What the servers keep in Redis").
    await_connections(&b, "sue", 0).await;
    let stopped = Instant::now();
    while redis.cli(&["ZCARD", "wshub:nodes"]) != "1" {
        assert!(
            stopped.elapsed() < LIMIT,
            "the stalled node was never dropped"
        );
        tokio::time::sleep(POLL).await;
    }
    signal("-CONT");
    let resumed = Instant::now();
    await_connections(&b, "sue", 1).await;
    let took = resumed.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "presence came back {took:?} after the process ran again"
    );
    // And the connection still works across processes.
    assert_eq!(
        delivered(&b, "/api/v1/users/sue/messages", json!("back")).await,
        1
    );
    expect_message(&mut sue, &json!("back")).await;
}

#[tokio::test]
async fn messages_from_one_connection_arrive_in_order_on_another_process() {
    const N: usize = 500;
    let redis = redis_in_memory().await;
    // A rate that lets 500 frames through at once: order is what is tested.
    let [a, b, _c] = three(&redis, &["--rate", "1000"]).await;
    let mut sam = a.client("sam", &[]).await;
    let mut rita = b.client("rita", &[]).await;
    await_connections(&a, "rita", 1).await;

    let sending = async {
        // Pipelined: every frame is written before any ack is read.
        for n in 0..N {
            let frame = json!({"type":"send","to":"rita","body":n,"id":n});
            sam.ws.feed(Message::text(frame.to_string())).await.unwrap();
        }
        sam.ws.flush().await.unwrap();
        for n in 0..N {
            let ack = sam.recv().await;
            assert_eq!(
                (
                    ack["type"].as_str(),
                    ack["id"].as_str(),
                    ack["delivered"].as_u64()
                ),
                (Some("ack"), Some(n.to_string().as_str()), Some(1)),
                "{ack}"
            );
        }
    };
    let receiving = async {
        for n in 0..N {
            let m = rita.recv().await;
            assert_eq!(
                (m["from"].as_str(), &m["body"]),
                (Some("sam"), &json!(n)),
                "{m}"
            );
        }
    };
    tokio::join!(sending, receiving);
}

#[tokio::test]
async fn a_redis_crash_closes_nothing_and_service_comes_back_with_its_data() {
    let mut redis = redis_with_aof().await;
    let nodes = three(&redis, &[]).await;
    let [a, b, c] = &nodes;
    let mut gina_a = a.client("gina", &[]).await;
    let mut hank_b = b.client("hank", &[]).await;
    let (status, _) = c.api("PUT", "/api/v1/groups/crew/members/gina", None).await;
    assert_eq!(status, 200);
    await_connections(c, "gina", 1).await;
    await_connections(c, "hank", 1).await;
    // Acknowledged and delivered before the outage: never repeated after.
    assert_eq!(
        delivered(c, "/api/v1/users/gina/messages", json!("before")).await,
        1
    );
    expect_message(&mut gina_a, &json!("before")).await;

    redis.kill();
    for s in &nodes {
        s.wait_log("broker down").await;
    }
    let ups: Vec<usize> = nodes.iter().map(|s| count_log(s, "broker up")).collect();

    // Live, not ready, and every push and frame is refused, quickly.
    for s in &nodes {
        let (status, body) = http(s.addr, "GET", "/healthz", None, None).await;
        assert_eq!(
            (status, body),
            (200, json!({"status":"ok","broker":"down"}))
        );
        let (status, body) = http(s.addr, "GET", "/readyz", None, None).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(metric(s, "wshub_broker_up").await, 0.0);
    }
    for (s, path) in [
        (a, "/api/v1/users/hank/messages"),
        (b, "/api/v1/groups/crew/messages"),
        (c, "/api/v1/broadcast"),
    ] {
        let sent = Instant::now();
        let (status, res) = push(s, path, json!("refused push")).await;
        assert_eq!(
            (status, res["error"]["code"].as_str()),
            (503, Some("unavailable")),
            "{path}: {res}"
        );
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "{path} took {:?}",
            sent.elapsed()
        );
    }
    for (frame, id) in [
        (
            json!({"type":"send","to":"gina","body":"refused","id":"x1"}),
            "x1",
        ),
        (json!({"type":"join","group":"crew","id":"x2"}), "x2"),
    ] {
        let err = hank_b.request(frame).await;
        assert_eq!(
            (
                err["type"].as_str(),
                err["id"].as_str(),
                err["code"].as_str()
            ),
            (Some("error"), Some(id), Some("unavailable")),
            "{err}"
        );
    }
    let err = gina_a
        .request(json!({"type":"publish","group":"crew","body":"refused","id":"x3"}))
        .await;
    assert_eq!(
        (err["id"].as_str(), err["code"].as_str()),
        (Some("x3"), Some("unavailable")),
        "{err}"
    );

    // Back on the same port with its AOF: full service within 5 s.
    redis.restart().await;
    let restarted = Instant::now();
    for (s, n) in nodes.iter().zip(ups) {
        s.wait_log_n("broker up", n + 1).await;
    }
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "back to service after {took:?}"
    );

    // No WebSocket was closed.
    ping(&mut gina_a, "after-1").await;
    ping(&mut hank_b, "after-2").await;
    for s in &nodes {
        assert_eq!(
            count_log(s, "connection closed"),
            0,
            "{}",
            s.logs().join("\n")
        );
    }
    // Membership from before the outage is kept, presence is whole again.
    for s in &nodes {
        let u = user(s, "gina").await;
        assert_eq!(
            (&u["groups"], &u["connections"]),
            (&json!(["crew"]), &json!(1)),
            "{u}"
        );
    }
    // Messages flow again; gina's next frame is the new one, so the send
    // refused during the outage was not delivered late.
    let ack = hank_b
        .request(json!({"type":"send","to":"gina","body":"after","id":"y1"}))
        .await;
    assert_eq!(
        (ack["type"].as_str(), ack["delivered"].as_u64()),
        (Some("ack"), Some(1)),
        "{ack}"
    );
    expect_message(&mut gina_a, &json!("after")).await;
    assert_eq!(
        delivered(b, "/api/v1/groups/crew/messages", json!("crew after")).await,
        1
    );
    expect_message(&mut gina_a, &json!("crew after")).await;
    for s in &nodes {
        assert_eq!(metric(s, "wshub_broker_up").await, 1.0);
        assert!(metric(s, "wshub_broker_reconnects_total").await >= 1.0);
        let (status, _) = http(s.addr, "GET", "/readyz", None, None).await;
        assert_eq!(status, 200);
    }
    // A new connection is welcomed with the membership kept.
    let again = c.client("gina", &[]).await;
    assert_eq!(again.welcome["groups"], json!(["crew"]));
}

#[tokio::test]
async fn a_redis_back_without_its_data_keeps_connections_and_drops_memberships() {
    let mut redis = redis_in_memory().await;
    let nodes = three(&redis, &[]).await;
    let [a, b, c] = &nodes;
    // A member on every process, each mirroring the membership it must drop.
    let mut ivy_a = a.client("ivy", &[]).await;
    let mut jack_b = b.client("jack", &[]).await;
    let mut kim_c = c.client("kim", &[]).await;
    for (s, u) in [(c, "ivy"), (a, "jack"), (b, "kim")] {
        let (status, res) = s
            .api("PUT", &format!("/api/v1/groups/crew/members/{u}"), None)
            .await;
        assert_eq!(status, 200, "{res}");
        await_connections(s, u, 1).await;
    }
    assert_eq!(
        delivered(a, "/api/v1/groups/crew/messages", json!("crew")).await,
        3
    );
    for conn in [&mut ivy_a, &mut jack_b, &mut kim_c] {
        expect_message(conn, &json!("crew")).await;
    }

    redis.kill();
    for s in &nodes {
        s.wait_log("broker down").await;
    }
    let ups: Vec<usize> = nodes.iter().map(|s| count_log(s, "broker up")).collect();
    redis.restart_empty().await;
    for (s, n) in nodes.iter().zip(ups) {
        s.wait_log_n("broker up", n + 1).await;
    }

    // The connections stayed open and are served.
    for (conn, id) in [(&mut ivy_a, "p1"), (&mut jack_b, "p2"), (&mut kim_c, "p3")] {
        ping(conn, id).await;
    }
    // The memberships lived only in the lost data: gone for every process.
    for s in &nodes {
        for u in ["ivy", "jack", "kim"] {
            assert_eq!(groups_of(s, u).await, json!([]), "{u} on {}", s.addr);
        }
        assert_eq!(members(s, "crew").await, []);
    }
    assert_eq!(
        delivered(b, "/api/v1/groups/crew/messages", json!("nobody")).await,
        0
    );
    // New messages flow, counted from the rewritten presence; each
    // connection's next frame is one of them, so the group push above
    // reached no process's mirror of the old membership.
    let ack = jack_b
        .request(json!({"type":"send","to":"ivy","body":"fresh","id":"f1"}))
        .await;
    assert_eq!(
        (ack["type"].as_str(), ack["delivered"].as_u64()),
        (Some("ack"), Some(1)),
        "{ack}"
    );
    expect_message(&mut ivy_a, &json!("fresh")).await;
    assert_eq!(delivered(c, "/api/v1/broadcast", json!("all")).await, 3);
    for conn in [&mut ivy_a, &mut jack_b, &mut kim_c] {
        expect_message(conn, &json!("all")).await;
    }
    let again = c.client("ivy", &[]).await;
    assert_eq!(again.welcome["groups"], json!([]));
}

#[tokio::test]
async fn a_send_refused_while_redis_was_frozen_is_never_delivered() {
    let mut redis = redis_in_memory().await;
    let url = redis.url();
    let (a, b) = tokio::join!(
        Server::start_cluster(&url, &[]),
        Server::start_cluster(&url, &[])
    );
    for s in [&a, &b] {
        s.wait_log("broker up").await;
    }
    let mut kim = a.client("kim", &[]).await;
    let mut lee = b.client("lee", &[]).await;
    await_connections(&a, "lee", 1).await;

    // Frozen, not gone: the script reaches Redis and would run on thaw.
    redis.pause();
    let err = kim
        .request(json!({"type":"send","to":"lee","body":"frozen","id":"z1"}))
        .await;
    assert_eq!(
        (
            err["type"].as_str(),
            err["id"].as_str(),
            err["code"].as_str()
        ),
        (Some("error"), Some("z1"), Some("unavailable")),
        "{err}"
    );
    for s in [&a, &b] {
        s.wait_log("broker down").await;
    }
    let ups: Vec<usize> = [&a, &b].iter().map(|s| count_log(s, "broker up")).collect();
    redis.resume();
    for (s, n) in [&a, &b].into_iter().zip(ups) {
        s.wait_log_n("broker up", n + 1).await;
    }

    let ack = kim
        .request(json!({"type":"send","to":"lee","body":"thawed","id":"z2"}))
        .await;
    assert_eq!(
        (ack["type"].as_str(), ack["delivered"].as_u64()),
        (Some("ack"), Some(1)),
        "{ack}"
    );
    // lee's first message is the one sent after: the refused one never came.
    expect_message(&mut lee, &json!("thawed")).await;
}

// History and recovery across processes (§10 in a cluster): numbering,
// logs and idempotency keys live in Redis.

/// A client of `user` in `groups` on `s` that connects with `resume=1`,
/// sends `positions` as its first frame and reads up to the resume's ack:
/// the client, the replayed messages, and the ack.
async fn resumed(
    s: &Server,
    user: &str,
    groups: &[&str],
    positions: Value,
) -> (Client, Vec<Value>, Value) {
    let t = sign(
        &json!({"sub": user, "groups": groups, "exp": now() + 3600}),
        SECRET,
    );
    let mut c = Client::connect(&s.ws_url(&format!("token={t}&resume=1"))).await;
    c.send(json!({"type":"resume","id":"r","positions":positions}))
        .await;
    let mut replay = Vec::new();
    loop {
        let f = c.recv().await;
        if f["type"] == "ack" && f["id"] == "r" {
            return (c, replay, f);
        }
        assert_eq!(f["type"], "message", "{f}");
        replay.push(f);
    }
}

/// `n` sends to rita from `c`, pipelined, then their acks.
async fn sends(c: &mut Client, tag: &str, n: usize) {
    for i in 0..n {
        let id = format!("{tag}{i}");
        c.send(json!({"type":"send","to":"rita","body":id,"id":id}))
            .await;
    }
    for _ in 0..n {
        let ack = c.recv().await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
}

/// A message's place, as a resume names it.
fn at(m: &Value) -> Value {
    json!({"epoch": m["epoch"], "seq": m["seq"]})
}

/// Two processes of one hub, up.
async fn two(redis: &RedisServer, extra: &[&str]) -> (Server, Server) {
    let url = redis.url();
    let (a, b) = tokio::join!(
        Server::start_cluster(&url, extra),
        Server::start_cluster(&url, extra)
    );
    for s in [&a, &b] {
        s.wait_log("broker up").await;
    }
    (a, b)
}

#[tokio::test]
async fn seqs_stay_continuous_per_stream_with_publishers_on_two_processes() {
    let redis = redis_in_memory().await;
    let (a, b) = two(&redis, &[]).await;
    let mut on_a = a.client("rita", &["team"]).await;
    let mut on_b = b.client("sam", &["team"]).await;
    let start = on_a.welcome["streams"]["group:team"].clone();
    assert_eq!(start["seq"], 0, "{start}");
    assert_eq!(on_b.welcome["streams"]["group:team"], start);
    await_connections(&a, "sam", 1).await;

    // Pushes through both processes at once, and sends into one inbox
    // from a connection on each.
    let mut tom_a = a.client("tom", &[]).await;
    let mut uma_b = b.client("uma", &[]).await;
    const N: usize = 30;
    let pushes = |s: &Server, tag: &'static str| {
        let addr = s.addr;
        async move {
            for i in 0..N {
                let body = json!({ "body": format!("{tag}{i}") }).to_string();
                let res = request(
                    addr,
                    "POST",
                    "/api/v1/groups/team/messages",
                    Some(API_KEY),
                    Some(&body),
                    &[],
                )
                .await;
                assert_eq!(res.status, 200, "{}", res.text());
            }
        }
    };
    tokio::join!(
        pushes(&a, "a"),
        pushes(&b, "b"),
        sends(&mut tom_a, "t", N),
        sends(&mut uma_b, "u", N)
    );

    // Each stream numbered 1, 2, 3, … under one epoch, and every reader
    // sees the same order; each publisher's own messages stay in order.
    let mut group_order = Vec::new();
    let mut inbox = Vec::new();
    for _ in 0..4 * N {
        let m = on_a.recv().await;
        if m["stream"] == "group:team" {
            group_order.push(m);
        } else {
            assert_eq!(m["stream"], "inbox", "{m}");
            inbox.push(m);
        }
    }
    for (list, first) in [(&group_order, Some(&start)), (&inbox, None)] {
        assert_eq!(list.len(), 2 * N);
        for (i, m) in list.iter().enumerate() {
            assert_eq!(m["seq"].as_u64(), Some(i as u64 + 1), "{m}");
            assert_eq!(m["epoch"], list[0]["epoch"], "{m}");
        }
        if let Some(first) = first {
            assert_eq!(list[0]["epoch"], first["epoch"]);
        }
        for tag in ["a", "b", "t", "u"] {
            let mine: Vec<&Value> = list
                .iter()
                .map(|m| &m["body"])
                .filter(|b| b.as_str().is_some_and(|s| s.starts_with(tag)))
                .collect();
            let expected: Vec<Value> = (0..N).map(|i| json!(format!("{tag}{i}"))).collect();
            if !mine.is_empty() {
                assert_eq!(mine, expected.iter().collect::<Vec<_>>());
            }
        }
    }
    for m in &group_order {
        let seen = on_b.recv().await;
        assert_eq!(&seen, m);
    }
}

#[tokio::test]
async fn a_client_resumes_on_another_process_than_the_one_it_left() {
    let redis = redis_in_memory().await;
    let (a, b) = two(&redis, &[]).await;
    let mut dora = a.client("dora", &["crew"]).await;
    let (status, _) = push(&a, "/api/v1/users/dora/messages", json!("one")).await;
    assert_eq!(status, 200);
    let one = expect_message(&mut dora, &json!("one")).await;
    let (status, _) = push(&a, "/api/v1/groups/crew/messages", json!("g1")).await;
    assert_eq!(status, 200);
    let g1 = expect_message(&mut dora, &json!("g1")).await;
    drop(dora);
    await_connections(&b, "dora", 0).await;

    // Missed while away, pushed through the other process.
    for (path, body) in [
        ("/api/v1/users/dora/messages", "two"),
        ("/api/v1/groups/crew/messages", "g2"),
        ("/api/v1/users/dora/messages", "three"),
    ] {
        let (status, res) = push(&b, path, json!(body)).await;
        assert_eq!(status, 200, "{res}");
    }
    let (mut dora, replay, ack) = resumed(
        &b,
        "dora",
        &["crew"],
        json!({"inbox": at(&one), "group:crew": at(&g1), "group:other": at(&g1)}),
    )
    .await;
    assert_eq!(
        ack["recovered"],
        json!({"inbox": true, "group:crew": true, "group:other": false}),
        "{ack}"
    );
    let per = |stream: &str| -> Vec<(Value, Value)> {
        replay
            .iter()
            .filter(|m| m["stream"] == stream)
            .map(|m| (m["body"].clone(), m["seq"].clone()))
            .collect()
    };
    assert_eq!(
        per("inbox"),
        [(json!("two"), json!(2)), (json!("three"), json!(3))]
    );
    assert_eq!(per("group:crew"), [(json!("g2"), json!(2))]);
    assert_eq!(replay.len(), 3);
    // Live delivery goes on after the replay, with no gap or repeat.
    let (status, _) = push(&a, "/api/v1/users/dora/messages", json!("four")).await;
    assert_eq!(status, 200);
    let four = expect_message(&mut dora, &json!("four")).await;
    assert_eq!((&four["seq"], &four["epoch"]), (&json!(4), &one["epoch"]));
    // A position from the future is not recovered.
    let (_c, replay, ack) = resumed(
        &a,
        "dora",
        &["crew"],
        json!({"inbox": {"epoch": one["epoch"], "seq": 99}}),
    )
    .await;
    assert_eq!(
        (replay.len(), &ack["recovered"]),
        (0, &json!({"inbox": false}))
    );
}

#[tokio::test]
async fn history_and_acks_are_the_same_on_every_process() {
    let redis = redis_in_memory().await;
    let (a, b) = two(&redis, &["--history", "3"]).await;
    let mut alice = a.client("alice", &[]).await;
    let mut bob = b.client("bob", &[]).await;
    await_connections(&a, "bob", 1).await;
    let ack = alice
        .request(json!({"type":"send","to":"bob","body":"h1","id":"s1"}))
        .await;
    // The ack gives the sender's copy's place, in alice's own inbox.
    assert_eq!(
        (&ack["stream"], &ack["seq"], &ack["delivered"]),
        (&json!("inbox"), &json!(1), &json!(1)),
        "{ack}"
    );
    let mut live = vec![expect_message(&mut bob, &json!("h1")).await];
    for body in ["h2", "h3"] {
        let (status, res) = push(&a, "/api/v1/users/bob/messages", json!(body)).await;
        assert_eq!(
            (status, &res["seq"]),
            (200, &json!(live.len() + 1)),
            "{res}"
        );
        live.push(expect_message(&mut bob, &json!(body)).await);
    }
    // Through the other process: the very frames delivered live.
    let (status, h) = a
        .api("GET", "/api/v1/users/bob/history?since=1", None)
        .await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(
        (&h["seq"], &h["complete"], &h["epoch"]),
        (&json!(3), &json!(true), &live[0]["epoch"])
    );
    assert_eq!(h["messages"], json!(&live[1..]));
    let (_, h) = a
        .api("GET", "/api/v1/users/bob/history?since=0&limit=2", None)
        .await;
    assert_eq!(h["messages"], json!(&live[..2]));
    assert_eq!(h["complete"], true);
    // The sender's copy is in alice's inbox, where the ack said.
    let (_, h) = b.api("GET", "/api/v1/users/alice/history", None).await;
    assert_eq!(
        (&h["seq"], &h["epoch"], &h["messages"][0]["body"]),
        (&json!(1), &ack["epoch"], &json!("h1")),
        "{h}"
    );
    // Past `--history 3`, the oldest is dropped: incomplete from 0, and a
    // resume from before it is not recovered.
    let (status, _) = push(&b, "/api/v1/users/bob/messages", json!("h4")).await;
    assert_eq!(status, 200);
    live.push(expect_message(&mut bob, &json!("h4")).await);
    let (_, h) = a.api("GET", "/api/v1/users/bob/history", None).await;
    assert_eq!(h["complete"], false, "{h}");
    assert_eq!(h["messages"], json!(&live[1..]));
    let (_, h) = a
        .api("GET", "/api/v1/users/bob/history?since=1", None)
        .await;
    assert_eq!(h["complete"], true, "{h}");
    let (_, replay, ack) = resumed(
        &a,
        "bob",
        &[],
        json!({"inbox": {"epoch": live[0]["epoch"], "seq": 0}}),
    )
    .await;
    assert_eq!(
        (replay.len(), &ack["recovered"]),
        (0, &json!({"inbox": false}))
    );
    let (_, replay, ack) = resumed(&a, "bob", &[], json!({"inbox": at(&live[0])})).await;
    assert_eq!(ack["recovered"], json!({"inbox": true}));
    assert_eq!(replay, &live[1..]);
    // A stream never seen: seq 0, nothing, complete.
    let (_, h) = b.api("GET", "/api/v1/groups/nobody/history", None).await;
    assert_eq!(
        (&h["seq"], &h["complete"], &h["messages"]),
        (&json!(0), &json!(true), &json!([]))
    );
}

#[tokio::test]
async fn an_idempotency_key_repeated_through_two_processes_delivers_once() {
    let redis = redis_in_memory().await;
    let (a, b) = two(&redis, &[]).await;
    let mut eve = b.client("eve", &[]).await;
    await_connections(&a, "eve", 1).await;
    let body = json!({"body": "once"}).to_string();
    let mut answers = Vec::new();
    for s in [&a, &b, &a] {
        let res = request(
            s.addr,
            "POST",
            "/api/v1/users/eve/messages",
            Some(API_KEY),
            Some(&body),
            &[("Idempotency-Key", "order-17")],
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
        answers.push(res.json());
    }
    assert_eq!(answers[0]["delivered"], 1);
    assert!(answers[0].get("duplicate").is_none(), "{}", answers[0]);
    for again in &answers[1..] {
        assert_eq!(
            (
                &again["id"],
                &again["seq"],
                &again["delivered"],
                &again["duplicate"]
            ),
            (
                &answers[0]["id"],
                &answers[0]["seq"],
                &json!(0),
                &json!(true)
            ),
            "{again}"
        );
    }
    // The same key for another target is another push.
    let res = request(
        a.addr,
        "POST",
        "/api/v1/groups/g/messages",
        Some(API_KEY),
        Some(&body),
        &[("Idempotency-Key", "order-17")],
    )
    .await;
    assert!(res.json().get("duplicate").is_none(), "{}", res.text());
    let m = expect_message(&mut eve, &json!("once")).await;
    assert_eq!(m["id"], answers[0]["id"]);
    let (status, _) = push(&a, "/api/v1/users/eve/messages", json!("next")).await;
    assert_eq!(status, 200);
    let next = expect_message(&mut eve, &json!("next")).await;
    assert_eq!(next["seq"], 2);
}

#[tokio::test]
async fn a_redis_back_empty_gives_new_epochs_and_resumes_answer_false() {
    let mut redis = redis_in_memory().await;
    let (a, b) = two(&redis, &[]).await;
    let mut fay = a.client("fay", &[]).await;
    await_connections(&b, "fay", 1).await;
    let (status, _) = push(&b, "/api/v1/users/fay/messages", json!("before")).await;
    assert_eq!(status, 200);
    let before = expect_message(&mut fay, &json!("before")).await;

    redis.kill();
    for s in [&a, &b] {
        s.wait_log("broker down").await;
    }
    let ups: Vec<usize> = [&a, &b].iter().map(|s| count_log(s, "broker up")).collect();
    redis.restart_empty().await;
    for (s, n) in [&a, &b].into_iter().zip(ups) {
        s.wait_log_n("broker up", n + 1).await;
    }

    // The open connection keeps receiving, in a new numbering.
    let (status, _) = push(&b, "/api/v1/users/fay/messages", json!("after")).await;
    assert_eq!(status, 200);
    let after = expect_message(&mut fay, &json!("after")).await;
    assert_eq!(after["seq"], 1, "{after}");
    assert_ne!(after["epoch"], before["epoch"]);
    let (again, replay, ack) = resumed(&b, "fay", &[], json!({"inbox": at(&before)})).await;
    assert_eq!(
        (replay.len(), &ack["recovered"]),
        (0, &json!({"inbox": false}))
    );
    assert_eq!(again.welcome["streams"]["inbox"], at(&after));
}

#[tokio::test]
async fn a_redis_crash_during_pushes_loses_or_repeats_no_acknowledged_message() {
    let mut redis = redis_with_aof().await;
    let (a, b) = two(&redis, &[]).await;
    let mut gus = b.client("gus", &[]).await;
    await_connections(&a, "gus", 1).await;
    let first = {
        let (status, _) = push(&a, "/api/v1/users/gus/messages", json!("start")).await;
        assert_eq!(status, 200);
        expect_message(&mut gus, &json!("start")).await
    };

    // Pushes one after another through `a` while Redis dies and comes back.
    let stop = stop_flag();
    let addr = a.addr;
    let flag = stop.clone();
    let pusher = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0;
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            let body = json!({ "body": format!("p{i}") }).to_string();
            let res = request(
                addr,
                "POST",
                "/api/v1/users/gus/messages",
                Some(API_KEY),
                Some(&body),
                &[],
            )
            .await;
            if res.status == 200 {
                acked.push(format!("p{i}"));
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    for s in [&a, &b] {
        s.wait_log("broker down").await;
    }
    let ups: Vec<usize> = [&a, &b].iter().map(|s| count_log(s, "broker up")).collect();
    redis.restart().await;
    for (s, n) in [&a, &b].into_iter().zip(ups) {
        s.wait_log_n("broker up", n + 1).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked = pusher.await.expect("pusher");
    let (status, _) = push(&a, "/api/v1/users/gus/messages", json!("end")).await;
    assert_eq!(status, 200);

    // Live: seq order without a gap or a repeat, every acked push there.
    let mut live = Vec::new();
    loop {
        let m = gus.recv().await;
        assert_eq!(m["type"], "message", "{m}");
        let end = m["body"] == "end";
        live.push(m);
        if end {
            break;
        }
    }
    for (i, m) in live.iter().enumerate() {
        assert_eq!(m["seq"].as_u64(), Some(i as u64 + 2), "{m}");
        assert_eq!(m["epoch"], first["epoch"], "{m}");
    }
    let bodies: Vec<String> = live
        .iter()
        .filter_map(|m| m["body"].as_str().map(str::to_owned))
        .collect();
    for p in &acked {
        assert_eq!(
            bodies.iter().filter(|b| *b == p).count(),
            1,
            "{p}: {bodies:?}"
        );
    }
    assert!(acked.len() >= 10, "only {} pushes acked", acked.len());
    // A client that resumes after, on the other process, gets the same.
    let (_, replay, ack) = resumed(&a, "gus", &[], json!({"inbox": at(&first)})).await;
    assert_eq!(ack["recovered"], json!({"inbox": true}), "{ack}");
    assert_eq!(replay, live);
}

fn stop_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false))
}

#[tokio::test]
async fn messages_published_while_a_node_resubscribes_are_filled_from_the_log() {
    let redis = redis_in_memory().await;
    // hal reads nothing until the pushes stop: room for all of them in its
    // queue and in the log a gap is filled from, however fast they come.
    let (a, b) = two(&redis, &["--queue", "100000", "--history", "10000"]).await;
    let mut hal = b.client("hal", &["band"]).await;
    await_connections(&a, "hal", 1).await;

    // Pushes through `a` while `b`'s pub/sub connection is killed again and
    // again (`a`'s stays: it serves on): `b` misses what is published
    // while it resubscribes.
    let stop = stop_flag();
    let flag = stop.clone();
    let addr = a.addr;
    let pusher = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0;
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            let path = if i % 2 == 0 {
                "/api/v1/users/hal/messages"
            } else {
                "/api/v1/groups/band/messages"
            };
            let body = json!({ "body": format!("q{i}") }).to_string();
            let res = request(addr, "POST", path, Some(API_KEY), Some(&body), &[]).await;
            if res.status == 200 {
                acked.push(format!("q{i}"));
            }
            i += 1;
        }
        acked
    });
    let lost_before = count_log(&b, "pub/sub connection lost");
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        // `b` reads 4 channels (all, its node's, hal's, band's), `a` 2.
        let list = redis.cli(&["CLIENT", "LIST", "TYPE", "pubsub"]);
        let id = list
            .lines()
            .find(|l| l.split(' ').any(|f| f == "sub=4"))
            .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .unwrap_or_else(|| panic!("no pub/sub client of b in {list}"))
            .to_owned();
        redis.cli(&["CLIENT", "KILL", "ID", &id]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked = pusher.await.expect("pusher");
    assert!(count_log(&b, "pub/sub connection lost") >= lost_before + 5);
    assert_eq!(count_log(&a, "pub/sub connection lost"), 0);
    for path in ["/api/v1/users/hal/messages", "/api/v1/groups/band/messages"] {
        let (status, _) = push(&a, path, json!("end")).await;
        assert_eq!(status, 200);
    }

    // Each stream in seq order from 1 with no gap or repeat, and every
    // acknowledged push in it: nothing was dropped and no one was closed.
    let mut seen: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut ends = 0;
    while ends < 2 {
        let m = hal.recv().await;
        assert_eq!(m["type"], "message", "{m}");
        if m["body"] == "end" {
            ends += 1;
        }
        seen.entry(m["stream"].as_str().unwrap_or("?").to_owned())
            .or_default()
            .push(m);
    }
    let mut bodies = Vec::new();
    for (stream, list) in &seen {
        for (i, m) in list.iter().enumerate() {
            assert_eq!(m["seq"].as_u64(), Some(i as u64 + 1), "{stream}: {m}");
        }
        bodies.extend(list.iter().filter_map(|m| m["body"].as_str()));
    }
    for p in &acked {
        assert_eq!(bodies.iter().filter(|b| *b == p).count(), 1, "{p}");
    }
    assert!(acked.len() >= 20, "only {} pushes acked", acked.len());
    ping(&mut hal, "still-open").await;
}

/// `--history-ttl` counts from a stream's last message on every process:
/// messages more often than the ttl keep it (and its numbering) alive,
/// however the renewal of its keys in Redis is spaced, and a quiet ttl
/// (plus the tenth of slack the keys are renewed with) forgets it.
#[tokio::test]
async fn a_cluster_stream_lives_while_messages_come_and_is_forgotten_after_a_quiet_ttl() {
    let redis = redis_in_memory().await;
    let (a, b) = two(&redis, &["--history-ttl", "1"]).await;
    let _bob = b.client("bob", &[]).await;
    let mut first = None;
    // Two and a half ttls of messages, 300 ms apart, through both processes.
    for i in 1..=8u64 {
        let via = if i % 2 == 0 { &a } else { &b };
        let (status, res) = push(via, "/api/v1/users/bob/messages", json!(i)).await;
        assert_eq!((status, &res["seq"]), (200, &json!(i)), "{res}");
        let (_, h) = a.api("GET", "/api/v1/users/bob/history", None).await;
        let epoch = first.get_or_insert_with(|| h["epoch"].clone());
        assert_eq!((&h["seq"], &h["epoch"]), (&json!(i), &*epoch), "{h}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // No signal marks the end of a ttl: look until the stream is forgotten.
    let quiet = Instant::now();
    let after = loop {
        let (_, h) = b.api("GET", "/api/v1/users/bob/history", None).await;
        if Some(&h["epoch"]) != first.as_ref() {
            break h;
        }
        assert!(
            quiet.elapsed() < Duration::from_secs(5),
            "never forgotten: {h}"
        );
        tokio::time::sleep(POLL).await;
    };
    assert_eq!((&after["seq"], &after["messages"]), (&json!(0), &json!([])));
    // The forgetting is never early (the last look above was under 300 ms
    // after the last message, so at least 700 ms have to pass here).
    assert!(
        quiet.elapsed() >= Duration::from_millis(650),
        "{:?}",
        quiet.elapsed()
    );
}

/// §10: a stream with no message for `--history-ttl` is forgotten then,
/// to the millisecond, not when Redis drops its keys (renewed sparingly,
/// they live up to a tenth of the ttl longer). The last message's time is
/// moved back in Redis rather than waiting a minute.
#[tokio::test]
async fn a_cluster_stream_is_forgotten_when_its_ttl_is_up_though_its_keys_live_on() {
    let redis = redis_in_memory().await;
    let (a, b) = two(&redis, &["--history-ttl", "60"]).await;
    let _bob = b.client("bob", &[]).await;
    let (status, pushed) = push(&a, "/api/v1/users/bob/messages", json!("one")).await;
    assert_eq!((status, &pushed["seq"]), (200, &json!(1)), "{pushed}");
    let (_, first) = b.api("GET", "/api/v1/users/bob/history", None).await;
    let time = redis.cli(&["TIME"]);
    let mut parts = time.lines().map(|l| l.trim().parse::<i64>().unwrap());
    let now_ms = parts.next().unwrap() * 1000 + parts.next().unwrap() / 1000;
    // The last message's time set to `l`, then bob's inbox through `b`.
    let last_at = |l: i64| {
        redis.cli(&["HSET", "wshub:seq:u:bob", "l", &l.to_string()]);
        b.api("GET", "/api/v1/users/bob/history", None)
    };

    // A second short of the ttl: still the same stream.
    let (_, h) = last_at(now_ms - 59_000).await;
    assert_eq!(
        (&h["epoch"], &h["seq"]),
        (&first["epoch"], &json!(1)),
        "{h}"
    );

    // Past it: forgotten, though the keys are all still there.
    assert_eq!(redis.cli(&["EXISTS", "wshub:log:u:bob"]), "1");
    let (_, h) = last_at(now_ms - 60_001).await;
    assert_ne!(h["epoch"], first["epoch"], "{h}");
    assert_eq!((&h["seq"], &h["messages"]), (&json!(0), &json!([])), "{h}");
    // The next message starts the new numbering the read made.
    let (status, next) = push(&a, "/api/v1/users/bob/messages", json!("two")).await;
    assert_eq!((status, &next["seq"]), (200, &json!(1)), "{next}");
    let (_, after) = last_at(now_ms).await;
    assert_eq!(
        (&after["epoch"], &after["seq"]),
        (&h["epoch"], &json!(1)),
        "{after}"
    );

    // An append finds a quiet stream forgotten just as a read does.
    redis.cli(&[
        "HSET",
        "wshub:seq:u:bob",
        "l",
        &(now_ms - 60_001).to_string(),
    ]);
    let (status, third) = push(&a, "/api/v1/users/bob/messages", json!("three")).await;
    assert_eq!((status, &third["seq"]), (200, &json!(1)), "{third}");
    let (_, last) = b.api("GET", "/api/v1/users/bob/history", None).await;
    assert_ne!(last["epoch"], after["epoch"], "{last}");
    assert_eq!(last["seq"], 1, "{last}");
}

/// A TCP relay in front of Redis whose answers (Redis to server) can be
/// held back: a link that carries requests but loses the replies for a
/// while, as retransmissions on a lossy one do. `Holds` says on which of
/// the connections through it.
/// Which answers a `ReplyHold` holds while held.
#[derive(Clone, Copy)]
enum Holds {
    Everything,
    /// What pub/sub delivers (the connections that subscribed).
    PubSub,
    /// The command connection's answers.
    Commands,
}

struct ReplyHold {
    addr: std::net::SocketAddr,
    hold: tokio::sync::watch::Sender<bool>,
}

impl ReplyHold {
    async fn start(upstream: std::net::SocketAddr, holds: Holds) -> ReplyHold {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hold, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let subscribed = Arc::new(AtomicBool::new(false));
                let marks = subscribed.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let text = String::from_utf8_lossy(&buf[..n]).to_ascii_uppercase();
                        if text.contains("SUBSCRIBE") {
                            marks.store(true, Ordering::SeqCst);
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let Ok(n) = sr.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        // Held: wait until released, then pass it on.
                        let held = match holds {
                            Holds::Everything => true,
                            Holds::PubSub => subscribed.load(Ordering::SeqCst),
                            Holds::Commands => !subscribed.load(Ordering::SeqCst),
                        };
                        if held && watch.wait_for(|held| !*held).await.is_err() {
                            return;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        ReplyHold { addr, hold }
    }

    fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }
}

/// Two processes, `a` reaching Redis through a relay that can hold what
/// pub/sub delivers to it (not its commands' answers); `xena` on `a` and
/// `yuri` on `b`, both in `team`.
struct HeldPubSub {
    relay: ReplyHold,
    a: Server,
    b: Server,
    xena: Client,
    yuri: Client,
}

/// A relay in front of `redis` (`ReplyHold`), a process `a` through it
/// and a process `b` straight to Redis, both serving.
async fn one_through_a_relay(redis: &RedisServer, holds: Holds) -> (ReplyHold, Server, Server) {
    one_through_a_relay_with(redis, holds, &[]).await
}

async fn one_through_a_relay_with(
    redis: &RedisServer,
    holds: Holds,
    flags: &[&str],
) -> (ReplyHold, Server, Server) {
    let relay = ReplyHold::start(redis.addr(), holds).await;
    let (through_relay, direct) = (relay.url(), redis.url());
    let (a, b) = tokio::join!(
        Server::start_cluster(&through_relay, flags),
        Server::start_cluster(&direct, flags)
    );
    for s in [&a, &b] {
        s.wait_log("broker up").await;
    }
    (relay, a, b)
}

/// `one_through_a_relay`, with ann on `a` and ben on `b`, each counted by
/// the other process, and one message from ann to ben with nothing held:
/// Redis then has the script (a first EVALSHA's NOSCRIPT answer, held,
/// would leave the script unrun).
async fn ann_through_a_relay_ben_not(
    redis: &RedisServer,
    holds: Holds,
    flags: &[&str],
) -> (ReplyHold, Server, Server, Client, Client) {
    let (relay, a, b) = one_through_a_relay_with(redis, holds, flags).await;
    let mut ann = a.client("ann", &[]).await;
    let mut ben = b.client("ben", &[]).await;
    await_connections(&a, "ben", 1).await;
    await_connections(&b, "ann", 1).await;
    let ack = ann
        .request(json!({"type":"send","to":"ben","body":"before","id":"s0"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    expect_message(&mut ben, &json!("before")).await;
    (relay, a, b, ann, ben)
}

/// Holds the relay, then ann sends "held" (id `s1`) to ben, who gets it:
/// Redis has run the script, and its answer to ann's process is held.
async fn hold_and_send_held(relay: &ReplyHold, ann: &mut Client, ben: &mut Client) {
    relay.hold.send_replace(true);
    ann.send(json!({"type":"send","to":"ben","body":"held","id":"s1"}))
        .await;
    expect_message(ben, &json!("held")).await;
}

async fn held_pubsub(redis: &RedisServer) -> HeldPubSub {
    let (relay, a, b) = one_through_a_relay(redis, Holds::PubSub).await;
    let xena = a.client("xena", &["team"]).await;
    let yuri = b.client("yuri", &["team"]).await;
    await_connections(&a, "yuri", 1).await;
    HeldPubSub {
        relay,
        a,
        b,
        xena,
        yuri,
    }
}

impl HeldPubSub {
    /// A first message of `team` through both: `a` then has a track of
    /// the group's channel (seq 1).
    async fn warm_up(&mut self) {
        let ack = self
            .yuri
            .request(json!({"type":"publish","group":"team","body":"warm","id":"y0"}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        expect_message(&mut self.xena, &json!("warm")).await;
    }

    /// A warm-up, then "first" (seq 2) held on its way to `a`, then xena
    /// publishes "second" (id `x1`): returns once Redis has run her script
    /// (the group's history has it), so its answer is on its way to `a`
    /// unheld while "first" is still held.
    async fn publish_second_behind_held_first(&mut self) {
        self.warm_up().await;
        self.hold_and_publish_first(2).await;
        self.xena
            .send(json!({"type":"publish","group":"team","body":"second","id":"x1"}))
            .await;
        let start = Instant::now();
        loop {
            let (_, h) = self.b.api("GET", "/api/v1/groups/team/history", None).await;
            if h.to_string().contains("second") {
                return;
            }
            assert!(start.elapsed() < LIMIT, "the publish never ran");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Holds pub/sub to `a`, then yuri publishes "first" at `seq`.
    async fn hold_and_publish_first(&mut self, seq: u64) {
        self.relay.hold.send_replace(true);
        let first = self
            .yuri
            .request(json!({"type":"publish","group":"team","body":"first","id":"y1"}))
            .await;
        assert_eq!(first["seq"], seq, "{first}");
    }

    /// Releases the hold, then expects xena to get "first" before the
    /// answer `id` at `seq`.
    async fn release_and_expect_first_then(&mut self, id: &str, seq: u64) {
        self.relay.hold.send_replace(false);
        let m = self.xena.recv().await;
        assert_eq!(
            (&m["type"], &m["body"]),
            (&json!("message"), &json!("first")),
            "{m}"
        );
        let ack = self.xena.recv().await;
        assert_eq!(
            (&ack["id"], &ack["seq"]),
            (&json!(id), &json!(seq)),
            "{ack}"
        );
    }

    /// xena joins `team` again; once Redis has run the join's scripts (its
    /// answer would then be on its way unheld, while "first" is held), the
    /// hold is released: "first" must still come before the join's ack.
    async fn join_and_expect_first_then_ack(&mut self, redis: &RedisServer, seq: u64) {
        let before = calls(redis, "evalsha");
        self.xena
            .send(json!({"type":"join","group":"team","id":"j1"}))
            .await;
        let started = Instant::now();
        while calls(redis, "evalsha") < before + 1 {
            assert!(started.elapsed() < LIMIT, "the join never reached Redis");
            tokio::time::sleep(POLL).await;
        }
        self.release_and_expect_first_then("j1", seq).await;
    }
}

/// §3 and §10: the ack of a `publish` gives the message's place in the
/// group's stream, which the client may keep as its position. On another
/// process than the one that ran the script, an earlier message of the
/// stream can still be on its way over pub/sub when the script's answer
/// comes back on the command connection; the ack waits for it, so the
/// client never holds a position past a message it has not had (and a
/// resume from the ack would not skip it).
#[tokio::test]
async fn an_ack_never_overtakes_an_earlier_message_of_its_stream() {
    let redis = redis_in_memory().await;
    let mut t = held_pubsub(&redis).await;
    t.publish_second_behind_held_first().await;
    t.release_and_expect_first_then("x1", 3).await;
}

/// §5: the ack of a `join` carries the group stream's position. A member
/// joining again on a process where an earlier message of the group is
/// still on its way over pub/sub gets that message first, then the ack,
/// as with one process.
#[tokio::test]
async fn a_join_ack_comes_after_the_messages_its_position_counts() {
    let redis = redis_in_memory().await;
    let mut t = held_pubsub(&redis).await;
    t.warm_up().await;
    t.hold_and_publish_first(2).await;
    t.join_and_expect_first_then_ack(&redis, 2).await;
}

/// The same on a process that reads the group but has had no message of
/// it yet (a quiet group, a fresh process): the message still on its way
/// comes before the join's ack (found by review).
#[tokio::test]
async fn a_join_ack_comes_after_a_message_on_its_way_to_a_quiet_process() {
    let redis = redis_in_memory().await;
    let mut t = held_pubsub(&redis).await;
    t.hold_and_publish_first(1).await;
    t.join_and_expect_first_then_ack(&redis, 1).await;
    // `a` serves on: a push through it reaches both.
    assert_eq!(
        delivered(&t.a, "/api/v1/groups/team/messages", json!("after")).await,
        2
    );
}

/// §11: what is refused is never delivered. A send whose script ran in
/// Redis but whose answer is held up past the server's wait is looked up
/// instead of refused: the sender gets the ack, the recipient the message
/// once.
#[tokio::test]
async fn a_send_whose_answer_is_held_up_is_acknowledged_not_refused() {
    held_up_send_is_acknowledged(&[]).await;
}

/// The same without history (`--history 0`): there is no log to look the
/// message up in, and the push's mark is found instead.
#[tokio::test]
async fn a_send_whose_answer_is_held_up_is_acknowledged_without_history_too() {
    held_up_send_is_acknowledged(&["--history", "0"]).await;
}

/// §11: a join whose script ran in Redis but whose answer is held up
/// past the server's wait is looked up rather than refused: the member
/// it made is not one the backend was told failed.
#[tokio::test]
async fn a_join_whose_answer_is_held_up_is_acknowledged_not_refused() {
    let redis = redis_in_memory().await;
    let (relay, a, b) = one_through_a_relay_with(&redis, Holds::Everything, &[]).await;
    // Redis has the script (a first EVALSHA's NOSCRIPT answer, held,
    // would leave it unrun).
    let (status, _) = a.api("PUT", "/api/v1/groups/warm/members/ann", None).await;
    assert_eq!(status, 200);
    relay.hold.send_replace(true);
    let join = a.api("PUT", "/api/v1/groups/team/members/ann", None);
    let meanwhile = async {
        // The script ran: the other process sees the membership.
        let start = Instant::now();
        while !groups_of(&b, "ann").await.to_string().contains("team") {
            assert!(start.elapsed() < LIMIT, "the held join never ran");
            tokio::time::sleep(POLL).await;
        }
        // Past the server's wait for the answer (3 s): no signal marks it.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        relay.hold.send_replace(false);
    };
    let ((status, body), ()) = tokio::join!(join, meanwhile);
    assert_eq!(
        (status, &body),
        (200, &json!({"group":"team","user":"ann","joined":true}))
    );
}

async fn held_up_send_is_acknowledged(flags: &[&str]) {
    let redis = redis_in_memory().await;
    let (relay, a, _b, mut ann, mut ben) =
        ann_through_a_relay_ben_not(&redis, Holds::Everything, flags).await;
    let ups = count_log(&a, "broker up");
    relay.hold.send_replace(true);
    ann.send(json!({"type":"send","to":"ben","body":"held","id":"h1"}))
        .await;
    // The script ran: ben, on the other process, has it at once.
    let got = expect_message(&mut ben, &json!("held")).await;
    // Past the server's wait for the answer (3 s): no signal marks it.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    relay.hold.send_replace(false);
    let ack = ann.recv().await;
    assert_eq!(
        (ack["type"].as_str(), ack["id"].as_str(), &ack["delivered"]),
        (Some("ack"), Some("h1"), &json!(1)),
        "{ack}"
    );
    assert_eq!((&ack["stream"], &ack["seq"]), (&json!("inbox"), &json!(2)));
    assert_eq!(got["seq"], 2);
    // The heartbeat's answers were held too: `a` took Redis for down and
    // serves again once a beat gets through.
    a.wait_log_n("broker up", ups + 1).await;
    // Once: the next message ben gets is the next one sent.
    let ack = ann
        .request(json!({"type":"send","to":"ben","body":"after","id":"h2"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let next = expect_message(&mut ben, &json!("after")).await;
    assert_eq!(next["seq"], 3);
}

/// How many times Redis has run `command` so far, from scripts too
/// (`INFO commandstats`).
fn calls(redis: &RedisServer, command: &str) -> u64 {
    let stats = redis.cli(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// §5 and §11: while a frame of a connection waits on Redis, what others
/// send to that connection is delivered all the same: the frame's work
/// does not stop its connection's deliveries. Its answer follows once
/// Redis answers.
#[tokio::test]
async fn a_frame_waiting_on_redis_does_not_hold_up_its_connections_deliveries() {
    let redis = redis_in_memory().await;
    let (relay, _a, _b, mut ann, mut ben) =
        ann_through_a_relay_ben_not(&redis, Holds::Commands, &[]).await;
    hold_and_send_held(&relay, &mut ann, &mut ben).await;
    // ann's answer is held on its way back; ben's message to her comes
    // over pub/sub, which is not held, and reaches her first.
    let ack = ben
        .request(json!({"type":"send","to":"ann","body":"meanwhile","id":"b1"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    expect_message(&mut ann, &json!("meanwhile")).await;
    relay.hold.send_replace(false);
    let ack = ann.recv().await;
    assert_eq!(
        (ack["type"].as_str(), ack["id"].as_str(), &ack["delivered"]),
        (Some("ack"), Some("s1"), &json!(1)),
        "{ack}"
    );
}

/// §4: the heartbeat closes a client that has been silent for two
/// intervals. A client whose frame is under way for longer than that
/// (here: its answer from Redis held up) is not read meanwhile, so its
/// pongs wait unread; it is not taken for silent, and gets its answer.
#[tokio::test]
async fn a_frame_under_way_for_two_heartbeats_does_not_time_its_client_out() {
    let redis = redis_in_memory().await;
    let (relay, _a, _b, mut ann, mut ben) =
        ann_through_a_relay_ben_not(&redis, Holds::Commands, &["--heartbeat", "1"]).await;
    hold_and_send_held(&relay, &mut ann, &mut ben).await;
    // Three heartbeat intervals with the answer held: no signal marks them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.hold.send_replace(false);
    let answer = ann.recv().await;
    assert_eq!(answer["id"], "s1", "{answer}");
    ping(&mut ann, "still-open").await;
}

/// §5: at a graceful stop a connection gets what was queued for it, then
/// 1001. A frame under way at that moment (here: Redis has run its script
/// and the answer is held on its way back) is finished and answered before
/// the close: left unanswered, the client would send it again after
/// reconnecting, and ben would get it twice. Finished after shutdown has
/// closed the connections, the answer leaves out the position (§10: her resume replays her own copy instead).
#[tokio::test]
async fn a_frame_under_way_at_a_graceful_stop_is_answered_before_the_close() {
    let redis = redis_in_memory().await;
    let (relay, mut a, _b, mut ann, mut ben) =
        ann_through_a_relay_ben_not(&redis, Holds::Commands, &[]).await;
    hold_and_send_held(&relay, &mut ann, &mut ben).await;
    a.terminate();
    a.wait_log("shutting down").await;
    relay.hold.send_replace(false);
    let (code, _, frames) = ann.until_close().await;
    assert_eq!(code, 1001, "{frames:?}");
    let acks: Vec<&Value> = frames.iter().filter(|f| f["type"] == "ack").collect();
    assert_eq!(acks.len(), 1, "{frames:?}");
    assert_eq!(
        (&acks[0]["id"], &acks[0]["delivered"]),
        (&json!("s1"), &json!(1))
    );
    // With a position only if it came back before the connections were
    // closed (then nothing before it is missing: her inbox's last message
    // is this one's copy); after that, without one.
    if acks[0].get("seq").is_some() {
        assert_eq!(
            (&acks[0]["stream"], &acks[0]["seq"]),
            (&json!("inbox"), &json!(2))
        );
    }
    assert!(a.wait_exit().await.success());
    // Sent once: the next thing ben hears is the answer to his own ping.
    ping(&mut ben, "after").await;
}

/// §5, §10: at a graceful stop, a publish whose ack waits for an earlier
/// message still held on its way to this process is answered before the
/// close, once, and never with a position past a message the client did
/// not get: shutdown closes the connections before it stops reading
/// pub/sub, so the ack goes without one. Several rounds, since which of
/// the two ends first is up to the threads.
#[tokio::test]
async fn a_publish_under_way_at_a_graceful_stop_gets_one_ack_that_skips_nothing() {
    for round in 0..3 {
        let redis = redis_in_memory().await;
        let mut t = held_pubsub(&redis).await;
        t.publish_second_behind_held_first().await;
        // Its answer is on the way back (no signal marks it arriving).
        tokio::time::sleep(Duration::from_millis(50)).await;
        t.a.terminate();
        let (code, _, frames) = t.xena.until_close().await;
        assert_eq!(code, 1001, "round {round}: {frames:?}");
        let acks: Vec<&Value> = frames.iter().filter(|f| f["type"] == "ack").collect();
        assert_eq!(acks.len(), 1, "round {round}: {frames:?}");
        assert_eq!(acks[0]["id"], "x1", "round {round}: {frames:?}");
        let got_first = frames.iter().any(|f| f["body"] == "first");
        assert!(
            acks[0].get("seq").is_none() || got_first,
            "round {round}: an ack at a position past a message never delivered: {frames:?}"
        );
    }
}

/// §10, §11: a `resume` reads Redis while its connection stays held. A
/// kick meanwhile (through another process) closes the connection with
/// 1008 at once: the resume does not keep it from watching for one. (Had
/// the loop waited for the resume, the held answer would have run out
/// its time first, and an `unavailable` error would have come before the
/// close.)
#[tokio::test]
async fn a_kick_closes_a_connection_whose_resume_waits_on_redis() {
    let redis = redis_in_memory().await;
    let (relay, a, b, _ann, _ben) = ann_through_a_relay_ben_not(&redis, Holds::Commands, &[]).await;
    let t = sign(&json!({"sub": "ann", "exp": now() + 3600}), SECRET);
    let mut again = Client::connect(&a.ws_url(&format!("token={t}&resume=1"))).await;
    let inbox = again.welcome["streams"]["inbox"].clone();
    assert_eq!(inbox["seq"], 1, "{}", again.welcome);
    await_connections(&b, "ann", 2).await;
    relay.hold.send_replace(true);
    again
        .send(json!({"type":"resume","id":"r","positions":{"inbox": inbox}}))
        .await;
    let (status, _) = b.api("DELETE", "/api/v1/users/ann/connections", None).await;
    assert_eq!(status, 200);
    let (code, _, frames) = again.until_close().await;
    assert_eq!((code, frames), (1008, vec![]));
    relay.hold.send_replace(false);
}

/// Direct pushes that come at once travel to Redis several to a script
/// call (`cluster/batch.rs`); each is still numbered once in its
/// recipient's inbox and answered with its own place, and a key repeated
/// within the same call is answered as the duplicate it is.
#[tokio::test]
async fn direct_pushes_that_come_at_once_share_script_calls_and_stay_exact() {
    const USERS: usize = 20;
    const EACH: u64 = 10;
    let redis = redis_in_memory().await;
    let (a, b) = two(&redis, &[]).await;
    let mut clients = Vec::new();
    for u in 0..USERS {
        clients.push(b.client(&format!("r{u}"), &[]).await);
    }
    for u in 0..USERS {
        await_connections(&a, &format!("r{u}"), 1).await;
    }
    let calls_before = calls(&redis, "evalsha");
    // Every message pushed twice at once, with the same key.
    let pushes: Vec<(usize, u64)> = (0..USERS)
        .flat_map(|u| (0..EACH).flat_map(move |k| [(u, k), (u, k)]))
        .collect();
    let answers = futures_util::future::join_all(pushes.iter().map(|&(u, k)| {
        let addr = a.addr;
        async move {
            let body = json!({ "body": { "k": k } }).to_string();
            let key = format!("m{u}-{k}");
            let res = request(
                addr,
                "POST",
                &format!("/api/v1/users/r{u}/messages"),
                Some(API_KEY),
                Some(&body),
                &[("Idempotency-Key", &key)],
            )
            .await;
            assert_eq!(res.status, 200, "{}", res.text());
            ((u, k), res.json())
        }
    }))
    .await;
    let calls = calls(&redis, "evalsha") - calls_before;
    let mut by_push: BTreeMap<(usize, u64), Vec<Value>> = BTreeMap::new();
    for (at, answer) in answers {
        by_push.entry(at).or_default().push(answer);
    }
    let mut seq_of = BTreeMap::new();
    for ((u, k), two) in &by_push {
        let [first, second] = &two[..] else {
            panic!("{u}/{k}: {two:?}")
        };
        assert_eq!(
            (&first["id"], &first["seq"]),
            (&second["id"], &second["seq"]),
            "the same key, two places: {first} {second}"
        );
        let dups = two.iter().filter(|x| x["duplicate"] == true).count();
        assert_eq!(dups, 1, "{u}/{k}: exactly one is the duplicate: {two:?}");
        seq_of.insert((*u, first["seq"].as_u64().unwrap()), *k);
    }
    for (u, c) in clients.iter_mut().enumerate() {
        let mut seqs = Vec::new();
        for _ in 0..EACH {
            let m = c.recv().await;
            assert_eq!(m["type"], "message", "{m}");
            let seq = m["seq"].as_u64().unwrap();
            assert_eq!(
                Some(&m["body"]["k"].as_u64().unwrap()),
                seq_of.get(&(u, seq)),
                "r{u} got {m}"
            );
            seqs.push(seq);
        }
        assert_eq!(
            seqs,
            (1..=EACH).collect::<Vec<_>>(),
            "r{u}: in seq order, once each"
        );
        ping(c, "end").await;
    }
    let n = pushes.len() as u64;
    assert!(
        calls <= n / 2,
        "{n} pushes at once took {calls} script calls: they were not batched"
    );
}
