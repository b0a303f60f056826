//! PROTOCOL.md §11 from outside: three real `wshub-server` processes on one
//! real `redis-server` form one hub — messages, copies, membership, kicks,
//! caps and presence across processes, processes dying or stopping, and
//! Redis crashing, coming back with or without its data, or freezing.

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
