//! hub-core's rules, driven without any network: delivery per connection,
//! copies to a sender's other connections, membership across reconnects, the
//! slow-consumer policy and shared encoded bytes.

use std::num::NonZeroUsize;

mod common;

use common::{connect, done};
use hub_core::{Connection, Disconnect, Frame, Node, NodeConfig, Rules, Session, Target};
use protocol::{Body, ErrorCode, GroupId, ServerFrame, UserId};
use serde_json::json;

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn group(s: &str) -> GroupId {
    GroupId::new(s).unwrap()
}

fn body(v: serde_json::Value) -> Body {
    Body::from_value(&v)
}

fn node(queue: usize) -> Node {
    Node::new(NodeConfig {
        queue_capacity: queue,
        ..NodeConfig::default()
    })
}

/// Every frame waiting in a connection's queue, decoded.
fn drain(conn: &mut Connection) -> Vec<ServerFrame> {
    let mut out = Vec::new();
    while let Some(f) = conn.try_recv() {
        out.push(serde_json::from_str(f.as_str()).unwrap());
    }
    out
}

fn bodies(frames: &[ServerFrame]) -> Vec<serde_json::Value> {
    frames
        .iter()
        .map(|f| match f {
            ServerFrame::Message(m) => m.body.to_value(),
            other => panic!("not a message: {other:?}"),
        })
        .collect()
}

#[test]
fn a_user_with_three_connections_gets_each_message_once_per_connection() {
    let node = node(16);
    let mut tabs: Vec<Connection> = (0..3).map(|_| connect(&node, user("42"), &[]).0).collect();
    let (sender, _) = connect(&node, user("7"), &[group("g")]);
    done(node.join(&group("g"), &user("42"))).unwrap();

    let d = done(node.send(sender.origin(), user("42"), body(json!("direct")))).unwrap();
    assert_eq!(d.delivered, 3);
    let d = done(node.publish(sender.origin(), group("g"), body(json!("group")))).unwrap();
    assert_eq!(d.delivered, 3);
    let d = done(node.push(Target::User(user("42")), body(json!("push")), None)).unwrap();
    assert_eq!(d.delivered, 3);
    let d = done(node.push(Target::All, body(json!("all")), None)).unwrap();
    assert_eq!(d.delivered, 4);

    for tab in &mut tabs {
        let frames = drain(tab);
        assert_eq!(
            bodies(&frames),
            vec![json!("direct"), json!("group"), json!("push"), json!("all")]
        );
    }
}

#[test]
fn senders_other_connections_get_copies_and_are_not_counted() {
    let node = node(16);
    let (phone, _) = connect(&node, user("a"), &[]);
    let (mut laptop, _) = connect(&node, user("a"), &[]);
    let (mut b, _) = connect(&node, user("b"), &[]);

    let d = done(node.send(phone.origin(), user("b"), body(json!(1)))).unwrap();
    assert_eq!(d.delivered, 1);
    assert_eq!(bodies(&drain(&mut b)), vec![json!(1)]);
    let copies = drain(&mut laptop);
    assert_eq!(bodies(&copies), vec![json!(1)]);
    let ServerFrame::Message(m) = &copies[0] else {
        unreachable!()
    };
    assert_eq!(m.from.as_ref().map(|u| u.as_str()), Some("a"));
    assert_eq!(m.to.as_ref().map(|u| u.as_str()), Some("b"));

    // To oneself: the other connections get it and are counted.
    let d = done(node.send(phone.origin(), user("a"), body(json!(2)))).unwrap();
    assert_eq!(d.delivered, 1);
    assert_eq!(bodies(&drain(&mut laptop)), vec![json!(2)]);

    // Publish: other members counted, own other connections get copies.
    done(node.join(&group("g"), &user("a"))).unwrap();
    done(node.join(&group("g"), &user("b"))).unwrap();
    let d = done(node.publish(phone.origin(), group("g"), body(json!(3)))).unwrap();
    assert_eq!(d.delivered, 1);
    assert_eq!(bodies(&drain(&mut laptop)), vec![json!(3)]);
    assert_eq!(bodies(&drain(&mut b)), vec![json!(3)]);
}

#[test]
fn offline_and_unknown_targets_deliver_zero() {
    let node = node(4);
    assert_eq!(
        done(node.push(Target::User(user("nobody")), Body::null(), None))
            .unwrap()
            .delivered,
        0
    );
    assert_eq!(
        done(node.push(Target::Group(group("none")), Body::null(), None))
            .unwrap()
            .delivered,
        0
    );
    assert_eq!(
        done(node.push(Target::All, Body::null(), None))
            .unwrap()
            .delivered,
        0
    );
}

#[test]
fn membership_survives_a_reconnect() {
    let node = node(4);
    let (conn, groups) = connect(&node, user("u"), &[group("from-token")]);
    assert_eq!(groups, vec![group("from-token")]);
    done(node.join(&group("later"), &user("u"))).unwrap();
    drop(conn);
    assert_eq!(node.stats_snapshot().connections, 0);
    assert_eq!(
        done(node.user_presence(&user("u"))).unwrap().groups.len(),
        2
    );

    let (mut again, groups) = connect(&node, user("u"), &[]);
    assert_eq!(groups, vec![group("from-token"), group("later")]);
    let d = done(node.push(Target::Group(group("later")), body(json!("back")), None)).unwrap();
    assert_eq!(d.delivered, 1);
    assert_eq!(bodies(&drain(&mut again)), vec![json!("back")]);

    done(node.leave(&group("later"), &user("u"))).unwrap();
    done(node.leave(&group("from-token"), &user("u"))).unwrap();
    drop(again);
    let s = node.stats_snapshot();
    assert_eq!((s.connections, s.users, s.groups), (0, 0, 0));
}

#[test]
fn a_full_queue_closes_only_that_connection() {
    let node = node(8);
    let (slow, _) = connect(&node, user("slow"), &[group("g")]);
    let mut fast: Vec<Connection> = (0..5)
        .map(|i| connect(&node, user(&format!("f{i}")), &[group("g")]).0)
        .collect();

    let mut delivered = Vec::new();
    for i in 0..20 {
        delivered.push(
            done(node.push(Target::Group(group("g")), body(json!(i)), None))
                .unwrap()
                .delivered,
        );
        // Fast readers keep up.
        for f in &mut fast {
            assert_eq!(bodies(&drain(f)), vec![json!(i)]);
        }
    }
    // The slow one took 8, then was closed; everyone else got all 20.
    assert_eq!(slow.close_reason(), Some(Disconnect::SlowConsumer));
    assert_eq!(&delivered[..8], &[6; 8]);
    assert!(delivered[8..].iter().all(|d| *d == 5));
    assert_eq!(node.stats_snapshot().slow_consumer_closes, 1);
    // Gone from presence and stats the moment it overflowed, although its
    // task has not yet dropped it.
    assert_eq!(
        done(node.user_presence(&user("slow"))).unwrap().connections,
        0
    );
    assert_eq!(done(node.group_members(&group("g"))).unwrap().len(), 6);
    assert_eq!(node.stats_snapshot().connections, 5);
    for f in &fast {
        assert_eq!(f.close_reason(), None);
    }
}

#[tokio::test]
async fn closing_wakes_the_connection_task() {
    let node = node(1);
    let (conn, _) = connect(&node, user("k"), &[]);
    let waiter = tokio::spawn(async move {
        let mut conn = conn;
        conn.closed().await
    });
    assert_eq!(done(node.kick(&user("k"))).unwrap(), 1);
    assert_eq!(done(node.user_presence(&user("k"))).unwrap().connections, 0);
    assert_eq!(waiter.await.unwrap(), Disconnect::Kicked);
    assert_eq!(node.stats_snapshot().connections, 0);
}

fn capped(connections: usize, groups: usize) -> Node {
    Node::new(NodeConfig {
        max_user_connections: NonZeroUsize::new(connections).unwrap(),
        max_user_groups: NonZeroUsize::new(groups).unwrap(),
        ..NodeConfig::default()
    })
}

#[test]
fn a_user_holds_at_most_max_user_connections_counting_upgrades_in_flight() {
    let node = capped(2, 8);
    let first = done(node.admit(&Session::new(user("u")))).unwrap();
    let (conn, _, _) = done(node.connect(first, &Session::new(user("u"))));
    // Admitted but not yet connected counts too.
    let pending = done(node.admit(&Session::new(user("u")))).unwrap();
    let refused = done(node.admit(&Session::new(user("u")))).unwrap_err();
    assert_eq!(refused.code(), ErrorCode::RateLimited);
    // Another user is not affected.
    assert!(done(node.admit(&Session::new(user("v")))).is_ok());
    // An upgrade that failed gives its place back; so does a closed one.
    drop(pending);
    let again = done(node.admit(&Session::new(user("u")))).unwrap();
    drop(conn);
    let (_c1, _, _) = done(node.connect(again, &Session::new(user("u"))));
    let (_c2, _, _) = done(node.connect(
        done(node.admit(&Session::new(user("u")))).unwrap(),
        &Session::new(user("u")),
    ));
    assert!(done(node.admit(&Session::new(user("u")))).is_err());
    assert_eq!(done(node.user_presence(&user("u"))).unwrap().connections, 2);
}

#[test]
fn a_user_belongs_to_at_most_max_user_groups() {
    let node = capped(4, 2);
    let u = user("u");
    assert_eq!(done(node.join(&group("a"), &u)), Ok(true));
    assert_eq!(done(node.join(&group("b"), &u)), Ok(true));
    let refused = done(node.join(&group("c"), &u)).unwrap_err();
    assert_eq!(refused.code(), ErrorCode::LimitExceeded);
    // Joining a group one is in stays idempotent at the cap.
    assert_eq!(done(node.join(&group("a"), &u)), Ok(false));
    assert!(!done(node.is_member(&group("c"), &u)).unwrap());
    // A refused join by a user the hub did not know leaves nothing behind.
    let tiny = capped(1, 1);
    done(tiny.join(&group("a"), &user("w"))).unwrap();
    assert!(done(tiny.join(&group("b"), &user("w"))).is_err());
    done(tiny.leave(&group("a"), &user("w"))).unwrap();
    assert_eq!(tiny.stats_snapshot().groups, 0);
    // A token whose groups would put the user past the cap is refused at
    // admission, before anything is joined.
    let with = |groups: &[&str]| Session {
        token_groups: groups.iter().map(|g| group(g)).collect(),
        ..Session::new(u.clone())
    };
    let refused = done(node.admit(&with(&["a", "c", "d"]))).unwrap_err();
    assert_eq!(refused.code(), ErrorCode::LimitExceeded);
    assert!(!done(node.is_member(&group("c"), &u)).unwrap());
    let (_conn, groups, _) =
        done(node.connect(done(node.admit(&with(&["a"]))).unwrap(), &with(&["a"])));
    assert_eq!(groups, vec![group("a"), group("b")]);
    // A token listing more groups than the cap is refused as a whole.
    let too_many = [group("a"), group("b"), group("c")];
    assert!(node.check_token_groups(&too_many).is_err());
    assert!(node.check_token_groups(&too_many[..2]).is_ok());
}

#[test]
fn joining_and_publishing_follow_the_rules() {
    let node = Node::new(NodeConfig {
        rules: Rules {
            open: false,
            public_groups: vec!["lobby".into()],
        },
        ..NodeConfig::default()
    });
    let session = Session {
        token_groups: vec![group("team")],
        ..Session::new(user("u"))
    };
    assert!(done(node.join_as(&session, &group("lobby-1"))).is_ok());
    assert_eq!(
        done(node.join_as(&session, &group("secret")))
            .unwrap_err()
            .code(),
        ErrorCode::Forbidden
    );
    let (conn, _, _) = done(node.connect(done(node.admit(&session)).unwrap(), &session));
    assert!(done(node.publish(conn.origin(), group("team"), body(json!(1)))).is_ok());
    assert_eq!(
        done(node.publish(conn.origin(), group("secret"), body(json!(1))))
            .unwrap_err()
            .code(),
        ErrorCode::Forbidden
    );
}

#[test]
fn a_group_message_is_encoded_once_and_its_bytes_shared() {
    let node = node(4);
    let mut members: Vec<Connection> = (0..50)
        .map(|i| connect(&node, user(&format!("m{i}")), &[group("promo")]).0)
        .collect();
    done(node.push(
        Target::Group(group("promo")),
        body(json!({"messageType":1,"title":"sale","content":"50% off"})),
        None,
    ))
    .unwrap();
    done(node.push(Target::All, body(json!("all")), None)).unwrap();
    for round in 0..2 {
        let frames: Vec<Frame> = members.iter_mut().map(|m| m.try_recv().unwrap()).collect();
        let first = frames[0].bytes().as_ptr();
        for f in &frames {
            // Same allocation, not equal copies.
            assert_eq!(f.bytes().as_ptr(), first, "round {round}");
        }
    }
}

/// §10: a resumed connection gets each missed message once, whether it
/// came by the replay or was queued live while delivery was held.
#[test]
fn a_resume_replays_and_skips_what_was_queued_while_held() {
    let node = node(64);
    let (old, _, at) = common::connect_at(&node, user("u"), &[]);
    let inbox = at["inbox"].clone();
    drop(old);
    done(node.push(Target::User(user("u")), body(json!(1)), None)).unwrap();
    let (mut c, _, _) = common::connect_at(&node, user("u"), &[]);
    c.hold();
    // Queued while held: also in the replay.
    done(node.push(Target::User(user("u")), body(json!(2)), None)).unwrap();
    assert!(
        c.try_recv().is_none(),
        "a held connection hands nothing out"
    );
    let positions = [("inbox".to_owned(), inbox)].into();
    let resumed = done(node.resume(&c.user, &positions)).unwrap();
    c.cover_replay(&resumed);
    c.release();
    assert_eq!(resumed.recovered, [("inbox".to_owned(), true)].into());
    let replay: Vec<ServerFrame> = resumed
        .replay
        .iter()
        .map(|f| serde_json::from_str(f.as_str()).unwrap())
        .collect();
    assert_eq!(bodies(&replay), vec![json!(1), json!(2)]);
    // Live after the resume: only what the replay did not cover.
    done(node.push(Target::User(user("u")), body(json!(3)), None)).unwrap();
    assert_eq!(bodies(&drain(&mut c)), vec![json!(3)]);
}

/// An ack that carries a position is queued behind the messages routing
/// queued before it, so the client never sees the position first.
#[test]
fn a_reply_queued_by_the_connection_goes_behind_queued_messages() {
    let node = node(64);
    let (mut a, _) = connect(&node, user("a"), &[]);
    done(node.push(Target::User(user("a")), body(json!("first")), None)).unwrap();
    let d = done(node.send(a.origin(), user("b"), body(json!("out")))).unwrap();
    let ack = protocol::ServerFrame::ack_delivered(
        protocol::CorrelationId::new("s").unwrap(),
        d.delivered,
        d.place.clone(),
    );
    assert!(a.queue_own(&hub_core::Frame::encode(&ack)));
    let frames = drain(&mut a);
    assert_eq!(bodies(&frames[..1]), vec![json!("first")]);
    assert!(
        matches!(&frames[1], protocol::ServerFrame::Ack { seq: Some(2), .. }),
        "{frames:?}"
    );
    assert_eq!(frames.len(), 2);
}

/// Every message a connection has queued, waiting for a fan-out thread to
/// queue `n` of them (it has no signal of its own to await).
fn recv_n(conn: &mut Connection, n: usize) -> Vec<ServerFrame> {
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    while out.len() < n {
        match conn.try_recv() {
            Some(f) => out.push(serde_json::from_str(f.as_str()).unwrap()),
            None => {
                assert!(start.elapsed().as_secs() < 10, "only {out:?}");
                std::thread::yield_now();
            }
        }
    }
    out
}

/// Starts `node`'s fan-out thread, which hands its wake-ups to `hand_off`,
/// and returns once it runs: a push made before is fanned out by its
/// publisher, and the tests here are about the thread.
fn start_fanout(node: &Node, hand_off: impl Fn(Vec<std::task::Waker>) + Send + 'static) {
    let runner = node.clone();
    std::thread::spawn(move || runner.run_fanout(hand_off));
    let start = std::time::Instant::now();
    while !node.has_fanout_thread() {
        assert!(
            start.elapsed().as_secs() < 10,
            "the fan-out thread did not start"
        );
        std::thread::yield_now();
    }
}

/// With a fan-out thread (the server runs one), a push to a group is
/// answered at its append: `delivered` counts the members' connections
/// then, the members then get it (and whoever joins after does not), and
/// a member's own publish lands behind every push before it, with its ack
/// after it, so no position ever overtakes a message.
#[test]
fn a_fan_out_thread_delivers_group_pushes_to_the_members_of_their_append() {
    let node = node(1024);
    start_fanout(&node, |wakers| {
        wakers.into_iter().for_each(std::task::Waker::wake)
    });
    let g = group("g");
    let (mut a, _) = connect(&node, user("a"), std::slice::from_ref(&g));
    let (mut b, _) = connect(&node, user("b"), std::slice::from_ref(&g));
    let (mut b2, _) = connect(&node, user("b"), &[]);
    for i in 0..100 {
        let d = done(node.push(Target::Group(g.clone()), body(json!(i)), None)).unwrap();
        assert_eq!(d.delivered, 3);
    }
    // Joined after the pushes: none of them.
    let (mut late, _) = connect(&node, user("late"), &[]);
    done(node.join(&g, &user("late"))).unwrap();
    let d = done(node.publish(a.origin(), g.clone(), body(json!("mine")))).unwrap();
    assert_eq!(d.delivered, 3);
    let ack = ServerFrame::ack_delivered(
        protocol::CorrelationId::new("p").unwrap(),
        d.delivered,
        d.place.clone(),
    );
    assert!(a.queue_own(&Frame::encode(&ack)));
    let expected: Vec<serde_json::Value> = (0..100).map(|i| json!(i)).collect();
    for c in [&mut b, &mut b2] {
        let got = recv_n(c, 101);
        let mut want = expected.clone();
        want.push(json!("mine"));
        assert_eq!(bodies(&got), want);
    }
    let got = recv_n(&mut a, 101);
    assert_eq!(bodies(&got[..100]), expected);
    assert!(
        matches!(&got[100], ServerFrame::Ack { seq: Some(101), .. }),
        "{:?}",
        got[100]
    );
    assert_eq!(bodies(&recv_n(&mut late, 1)), vec![json!("mine")]);
}

/// With a fan-out thread a group push's `delivered` is the group's
/// connection count, kept in step by connects, closes, joins and leaves
/// rather than counted per push: it must stay exact through all of them.
#[test]
fn a_group_push_counts_connections_exactly_through_membership_and_connection_changes() {
    let node = node(1024);
    start_fanout(&node, |wakers| {
        wakers.into_iter().for_each(std::task::Waker::wake)
    });
    let g = group("g");
    let push = |expected: usize| {
        let d = done(node.push(Target::Group(g.clone()), body(json!("x")), None)).unwrap();
        assert_eq!(d.delivered, expected);
    };
    let (a, _) = connect(&node, user("a"), std::slice::from_ref(&g));
    let (b, _) = connect(&node, user("b"), std::slice::from_ref(&g));
    let (b2, _) = connect(&node, user("b"), &[]);
    push(3);
    drop(b2);
    push(2);
    let (a2, _) = connect(&node, user("a"), &[]);
    push(3);
    done(node.leave(&g, &user("b"))).unwrap();
    push(2);
    // Leaving twice changes nothing; joining again counts b's connection.
    done(node.leave(&g, &user("b"))).unwrap();
    push(2);
    done(node.join(&g, &user("b"))).unwrap();
    done(node.join(&g, &user("b"))).unwrap();
    push(3);
    assert_eq!(done(node.kick(&user("a"))).unwrap(), 2);
    push(1);
    drop((a, a2, b));
    push(0);
}

/// A group large enough for the fan-out thread to keep a flat list of its
/// connections (hub.rs, `flat_list`) reaches exactly the connections its
/// members hold at each push, through a second connection of a member, a
/// leave, a newcomer, a close and a slow consumer: a list kept from an
/// earlier push must never stand in for a changed group.
#[test]
fn a_large_group_reaches_exactly_its_members_connections_through_every_change() {
    let node = node(16);
    start_fanout(&node, |wakers| {
        wakers.into_iter().for_each(std::task::Waker::wake)
    });
    let g = group("big");
    let push = |tag: i64| {
        done(node.push(Target::Group(g.clone()), body(json!(tag)), None))
            .unwrap()
            .delivered
    };
    let mut members: Vec<Connection> = (0..40)
        .map(|i| connect(&node, user(&format!("u{i}")), std::slice::from_ref(&g)).0)
        .collect();
    assert_eq!(push(1), 40);
    assert_eq!(push(2), 40);
    let (mut second, _) = connect(&node, user("u0"), &[]);
    assert_eq!(push(3), 41);
    done(node.leave(&g, &user("u1"))).unwrap();
    assert_eq!(push(4), 40);
    let (mut newcomer, _) = connect(&node, user("new"), std::slice::from_ref(&g));
    assert_eq!(push(5), 41);
    drop(members.remove(2));
    assert_eq!(push(6), 40);
    let mut left = members.remove(1);
    let all: Vec<serde_json::Value> = (1..=6).map(|i| json!(i)).collect();
    for c in members.iter_mut() {
        assert_eq!(bodies(&recv_n(c, 6)), all);
    }
    assert_eq!(bodies(&recv_n(&mut second, 4)), all[2..]);
    assert_eq!(bodies(&recv_n(&mut newcomer, 2)), all[4..]);
    // Every job up to 6 has run: the leaver got nothing after its leave.
    assert_eq!(bodies(&drain(&mut left)), all[..3]);

    // A slow consumer (its queue full of frames of its own) is closed by
    // the next push and leaves the registry: the push after counts it out.
    let (slow_i, slow) = (5, &members[5]);
    for _ in 0..16 {
        assert!(slow.queue_own(&Frame::encode(&ServerFrame::Pong { id: None })));
    }
    assert_eq!(push(7), 40);
    // Push 8 goes out after the whole run of 7 (the others had 7 before it
    // was pushed), so once they have it the slow one is out.
    for tag in [7, 8] {
        if tag == 8 {
            push(8);
        }
        for (i, c) in members.iter_mut().enumerate().filter(|(i, _)| *i != slow_i) {
            assert_eq!(bodies(&recv_n(c, 1)), vec![json!(tag)], "member {i}");
        }
    }
    assert_eq!(
        members[slow_i].close_reason(),
        Some(Disconnect::SlowConsumer)
    );
    assert_eq!(push(9), 39);
}

/// Two pushes queued for the fan-out thread back to back go out together
/// when they are for the same members, but not when a member's connection
/// opened between them: that connection read its position before the
/// second push, so it must get it, and a list kept from before it opened
/// does not have it.
#[test]
fn a_connection_opened_between_two_queued_pushes_gets_the_second() {
    use std::sync::{mpsc, Arc, Mutex};
    let node = node(1024);
    let g = group("big");
    let mut members: Vec<Connection> = (0..40)
        .map(|i| connect(&node, user(&format!("u{i}")), std::slice::from_ref(&g)).0)
        .collect();
    // The thread's first hand-off of wake-ups (after it has made and kept
    // the group's list for push 1) waits until the test lets it go on.
    let gate = Arc::new(Mutex::new(()));
    let closed = gate.lock().unwrap();
    let (reached, at_gate) = mpsc::channel();
    let thread_gate = gate.clone();
    start_fanout(&node, move |wakers| {
        wakers.into_iter().for_each(std::task::Waker::wake);
        let _ = reached.send(());
        drop(thread_gate.lock());
    });
    // A waker to hand off: one member waits for its queue.
    members[0].watch(&mut std::task::Context::from_waker(std::task::Waker::noop()));
    let push = |tag: i64| {
        done(node.push(Target::Group(g.clone()), body(json!(tag)), None))
            .unwrap()
            .delivered
    };
    assert_eq!(push(1), 40);
    at_gate
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the thread handed off push 1's wake-ups");
    assert_eq!(push(2), 40);
    let (mut second, _) = connect(&node, user("u7"), &[]);
    assert_eq!(push(3), 41);
    drop(closed);
    assert_eq!(bodies(&recv_n(&mut second, 1)), vec![json!(3)]);
    for c in members.iter_mut() {
        assert_eq!(bodies(&recv_n(c, 3)), vec![json!(1), json!(2), json!(3)]);
    }
}

/// A connection marks what its welcome counted as had, per stream and
/// numbering: once a quiet stream is forgotten and numbered again from 1,
/// the new messages reach the connection although their seqs are at or
/// below the old position.
#[test]
fn a_stream_numbered_again_reaches_a_connection_whose_welcome_was_past_it() {
    let node = Node::new(NodeConfig {
        history: hub_core::HistoryConfig {
            max_messages: 100,
            ttl: std::time::Duration::from_millis(50),
        },
        ..NodeConfig::default()
    });
    for i in 0..3 {
        done(node.push(Target::User(user("u")), body(json!(i)), None)).unwrap();
    }
    let (mut c, _, at) = common::connect_at(&node, user("u"), &[]);
    assert_eq!(at["inbox"].seq, 3);
    // No signal marks the end of a ttl: wait it out.
    std::thread::sleep(std::time::Duration::from_millis(120));
    let d = done(node.push(Target::User(user("u")), body(json!("new")), None)).unwrap();
    assert_eq!(d.place.as_ref().map(|p| p.seq), Some(1));
    assert_eq!(bodies(&drain(&mut c)), vec![json!("new")]);
}
