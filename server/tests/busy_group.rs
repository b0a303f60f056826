//! PROTOCOL.md §5: a member of a group that never goes quiet, whose client
//! reads (and so answers pings) but more slowly than the group's publishers
//! send, keeps its heartbeat and stays connected. Its own binary: the test
//! is about time (heartbeat 2 s, flooded for 5), and the floods of the other slow-consumer
//! tests must not share its cores.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use test_support::*;
use tokio_tungstenite::tungstenite::Message;

/// A member of a group flooded for longer than two heartbeat intervals,
/// whose client reads (and so answers pings), but more slowly than the
/// group's publishers send, like a phone in a busy group: its queue never
/// empties and its socket stays full. It must stay connected and get every
/// message in order. A loop that served the queue before the socket would
/// stop reading pongs and close it for a heartbeat timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_of_a_busy_group_keeps_its_heartbeat() {
    const PUBLISHERS: usize = PUBLISHERS_READ;
    // Each publisher sends 10 frames a millisecond; the member reads at
    // most 20 (`read_slowly`): a third less than arrives.
    const SENT_PER_MS: u64 = 10;
    let s = Server::start(&[
        "--heartbeat",
        "2",
        "--queue",
        "1000000",
        "--rate",
        "1000000",
    ])
    .await;
    // The member reads on a thread and runtime of its own: what this test
    // is about is whether the *server* starves it, so the publishers'
    // tasks in this process must not. A small receive buffer, so what
    // waits for the member waits in its queue on the server, not in a
    // kernel buffer ahead of the pings.
    let (addr, url) = (
        s.addr,
        s.ws_url(&format!("token={}", token("member", &["busy"], 3600))),
    );
    let (connected, is_connected) = tokio::sync::oneshot::channel();
    let reader = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut member = silent_connect(addr, &url).await;
            let _ = connected.send(());
            read_slowly(&mut member).await
        })
    });
    is_connected.await.expect("the member connected");
    // Longer than two heartbeat intervals (the server's limit).
    let flood = Duration::from_secs(5);
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let c = s.client(&format!("p{p}"), &["busy"]).await;
        let (mut sink, mut stream) = c.ws.split();
        // Publishers read too (the other publishers' messages, the pings),
        // so they stay healthy themselves, until the ack of their last
        // publish says the server has routed all of theirs.
        let drain = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                // Only the ack is parsed: this test's own process must not
                // be what makes the member slow (it parses every frame).
                if let Message::Text(t) = msg {
                    if !t.as_str().starts_with(r#"{"type":"ack""#) {
                        continue;
                    }
                    let f: Value = serde_json::from_str(&t).unwrap();
                    if f["id"] == "last" {
                        return;
                    }
                }
            }
            panic!("publisher {p} lost its connection");
        });
        publishers.push(tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut n = 0u64;
            while started.elapsed() < flood {
                tick.tick().await;
                for _ in 0..SENT_PER_MS {
                    let body = json!({"p": p, "n": n});
                    let frame = json!({"type":"publish","group":"busy","body":body});
                    sink.feed(Message::text(frame.to_string())).await.unwrap();
                    n += 1;
                }
                sink.flush().await.unwrap();
            }
            let body = json!({"p": p, "n": n});
            let last = json!({"type":"publish","group":"busy","body":body,"id":"last"});
            sink.send(Message::text(last.to_string())).await.unwrap();
            drain.await.unwrap();
            (n + 1, sink)
        }));
    }
    let mut sent = Vec::new();
    for p in publishers {
        let (n, _sink) = p.await.unwrap();
        sent.push(n);
    }
    let end = json!({"body":"end"});
    let (status, _) = s
        .api("POST", "/api/v1/groups/busy/messages", Some(end))
        .await;
    assert_eq!(status, 200);
    let (got, pong) = tokio::task::spawn_blocking(move || reader.join())
        .await
        .unwrap()
        .expect("the member's thread");
    assert_eq!(got.to_vec(), sent);
    assert_eq!(pong, json!({"type":"pong","id":"alive"}));
    // The pong proves the member was still connected after the flood; the
    // log must show no close by the server either (the member's own close,
    // when its thread ended, is fine).
    let logs = s.logs();
    let closed_by_server = logs
        .iter()
        .any(|l| l.contains("connection closed user=member") && !l.contains("reason=\"client"));
    assert!(!closed_by_server, "{logs:?}");
}

const PUBLISHERS_READ: usize = 3;

/// Reads at most 20 frames a millisecond until the "end" push, checking
/// each publisher's order (tungstenite answers the server's pings as it
/// reads); then asks for a pong. Returns how many of each publisher's
/// messages it got, and the pong.
async fn read_slowly(member: &mut Client) -> ([u64; PUBLISHERS_READ], Value) {
    const READ_PER_MS: u64 = 20;
    let mut next = [0u64; PUBLISHERS_READ];
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for read in 0u64.. {
        if read % READ_PER_MS == 0 {
            tick.tick().await;
        }
        let f = member.recv().await;
        assert_eq!(f["type"], "message", "{f}");
        if f["body"] == "end" {
            break;
        }
        let p = f["body"]["p"].as_u64().unwrap() as usize;
        assert_eq!(
            f["body"]["n"], next[p],
            "publisher {p}'s messages out of order"
        );
        next[p] += 1;
    }
    let pong = member.request(json!({"type":"ping","id":"alive"})).await;
    (next, pong)
}
