//! PROTOCOL.md §5, the slow consumer, from outside: a member whose client
//! stops reading is closed once its queue fills, leaves presence and stats
//! at once, and costs the other members nothing; a sender whose own socket
//! is stuck is closed too.
//!
//! How many messages it takes to fill a queue depends on how much the two
//! kernels buffer on the way, which differs between hosts. So the tests do
//! not count on a number: they push until the server reports the silent
//! member gone (`delivered` drops), bounded by far more bytes than this
//! host's socket buffers can hold.
//!
//! The member of a busy group that reads slowly is in `busy_group.rs`: a
//! binary of its own, so these floods do not share its two cores.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use test_support::*;
use tokio_tungstenite::tungstenite::Message;

/// The most bytes that can sit between the server and a client that does
/// not read: both sides' largest socket buffers as this host sets them,
/// doubled, plus a megabyte for tungstenite and the queue.
fn bytes_in_flight_bound() -> usize {
    let read_max = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.split_whitespace().last()?.parse::<usize>().ok())
            .unwrap_or(64 << 20)
    };
    let wmem = read_max("/proc/sys/net/ipv4/tcp_wmem").max(read_max("/proc/sys/net/core/wmem_max"));
    let rmem = read_max("/proc/sys/net/ipv4/tcp_rmem").max(read_max("/proc/sys/net/core/rmem_max"));
    2 * (wmem + rmem) + (1 << 20)
}

/// Where the pushes come from.
#[derive(Clone, Copy, Debug)]
enum Source {
    Api,
    WebSocket,
}

/// A member that reads everything, in a task: returns the bodies it got
/// up to and including `"end"`.
fn reading_member(mut c: Client) -> tokio::task::JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        let mut bodies = Vec::new();
        loop {
            let f = c.recv().await;
            assert_eq!(f["type"], "message", "{f}");
            let body = f["body"].clone();
            let end = body == "end";
            bodies.push(body);
            if end {
                return bodies;
            }
        }
    })
}

async fn silent_member_is_closed_and_the_others_get_everything(source: Source, body_len: usize) {
    // The default heartbeat: the silent client answers no pings, and this
    // test is about its queue, not its heartbeat.
    let s = Server::start(&["--queue", "32", "--rate", "1000000"]).await;
    let mut silent = s.silent_client("silent", &["g"]).await;
    let reader = reading_member(s.client("reader", &["g"]).await);
    let mut publisher = match source {
        Source::WebSocket => Some(s.client("publisher", &["g"]).await),
        Source::Api => None,
    };
    let filler = "x".repeat(body_len);
    let max_pushes = bytes_in_flight_bound() / body_len + 64;

    // Push until the silent member's queue overflows: that push reaches
    // only the reader.
    let mut sent = 0usize;
    loop {
        assert!(
            sent < max_pushes,
            "{sent} pushes of {body_len} bytes and the silent member is still counted"
        );
        let body = json!({"n": sent, "pad": filler});
        let delivered = push(&s, publisher.as_mut(), sent, body).await;
        sent += 1;
        match delivered {
            2 => continue,
            1 => break,
            other => panic!("delivered {other} with two members"),
        }
    }
    // Gone from presence and stats at once: no waiting here.
    let (_, user) = s.api("GET", "/api/v1/users/silent", None).await;
    assert_eq!(user["connections"], 0, "{user}");
    let (_, stats) = s.api("GET", "/api/v1/stats", None).await;
    let expected = if publisher.is_some() { 2 } else { 1 };
    assert_eq!(stats["connections"], expected, "{stats}");
    assert_eq!(stats["slow_consumer_closes"], 1, "{stats}");
    let (_, members) = s.api("GET", "/api/v1/groups/g/members", None).await;
    assert!(
        members["members"]
            .as_array()
            .unwrap()
            .contains(&json!({"user":"silent","connections":0})),
        "{members}"
    );

    // Its socket is closed although its client still reads nothing: no
    // write to it can pin the connection's task.
    let closed = s.wait_log("connection closed user=silent").await;
    assert!(closed.contains("slow_consumer"), "{closed}");

    // The reader got every message, in order, and later ones still flow.
    assert_eq!(push(&s, publisher.as_mut(), sent, json!("end")).await, 1);
    let got = reader.await.unwrap();
    assert_eq!(got.len(), sent + 1);
    for (i, body) in got[..sent].iter().enumerate() {
        assert_eq!(body["n"], i, "reader's message {i}");
    }

    // The silent client, reading at last, finds an in-order prefix of what
    // was pushed and then the close: 1013, or the socket dropped when not
    // even the close frame could be written in time.
    let mut next = 0usize;
    let end = loop {
        match tokio::time::timeout(LIMIT, silent.ws.next()).await {
            Err(_) => panic!("the silent member was never closed"),
            Ok(Some(Ok(Message::Text(t)))) => {
                let f: Value = serde_json::from_str(&t).unwrap();
                if f["type"] == "message" {
                    assert_eq!(f["body"]["n"], next, "silent member's message {next}");
                    next += 1;
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => break None,
        }
    };
    assert!(end.is_none() || end == Some(1013), "closed with {end:?}");
    assert!(next < sent, "the silent member got everything ({next})");
}

/// One push to group `g`; returns `delivered`.
async fn push(s: &Server, publisher: Option<&mut Client>, n: usize, body: Value) -> u64 {
    match publisher {
        None => {
            let (status, res) = s
                .api(
                    "POST",
                    "/api/v1/groups/g/messages",
                    Some(json!({ "body": body })),
                )
                .await;
            assert_eq!(status, 200, "{res}");
            res["delivered"].as_u64().unwrap()
        }
        Some(c) => {
            let ack = c
                .request(json!({"type":"publish","group":"g","body":body,"id":n}))
                .await;
            assert_eq!(ack["type"], "ack", "{ack}");
            ack["delivered"].as_u64().unwrap()
        }
    }
}

#[tokio::test]
async fn api_pushes_of_small_frames_close_a_silent_member() {
    silent_member_is_closed_and_the_others_get_everything(Source::Api, 1024).await;
}

#[tokio::test]
async fn api_pushes_of_large_frames_close_a_silent_member() {
    silent_member_is_closed_and_the_others_get_everything(Source::Api, 16 * 1024).await;
}

#[tokio::test]
async fn websocket_publishes_of_small_frames_close_a_silent_member() {
    silent_member_is_closed_and_the_others_get_everything(Source::WebSocket, 1024).await;
}

#[tokio::test]
async fn websocket_publishes_of_large_frames_close_a_silent_member() {
    silent_member_is_closed_and_the_others_get_everything(Source::WebSocket, 16 * 1024).await;
}

/// A client that sends and never reads: its pongs fill its own socket. The
/// server stops reading it, and closes it once the socket has taken nothing
/// for two heartbeat intervals; its frames do not pile up in the server
/// meanwhile, and the server goes on serving others.
#[tokio::test]
async fn a_sender_whose_socket_is_stuck_is_closed() {
    let s = Server::start(&["--heartbeat", "1", "--rate", "1000000"]).await;
    let mut stuck = s.silent_client("stuck", &[]).await;
    // Sends until its own socket takes no more (the server stopped reading)
    // or the server hangs up; the test ends it either way.
    let sender = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            let frame = json!({"type":"ping","id":n}).to_string();
            if stuck.ws.send(Message::text(frame)).await.is_err() {
                return n;
            }
            n += 1;
        }
    });
    let closed = s.wait_log("connection closed user=stuck").await;
    assert!(closed.contains("heartbeat timeout"), "{closed}");
    let (_, user) = s.api("GET", "/api/v1/users/stuck", None).await;
    assert_eq!(user["connections"], 0, "{user}");
    let mut other = s.client("other", &[]).await;
    let pong = other
        .request(json!({"type":"ping","id":"still here"}))
        .await;
    assert_eq!(pong["type"], "pong");
    sender.abort();
}
