//! Many threads connect, join, leave, publish and disconnect at once. The run
//! must finish (no lock-order deadlock) and leave the counts consistent.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

mod common;

use common::{connect, done};
use hub_core::{Node, NodeConfig, Target};
use protocol::{Body, GroupId, UserId};

const THREADS: usize = 8;
const ROUNDS: usize = 2_000;
const USERS: usize = 24;
const GROUPS: usize = 6;

fn user(i: usize) -> UserId {
    UserId::new(&format!("u{}", i % USERS)).unwrap()
}

fn group(i: usize) -> GroupId {
    GroupId::new(&format!("g{}", i % GROUPS)).unwrap()
}

#[test]
fn concurrent_churn_ends_consistent_without_deadlock() {
    let node = Node::new(NodeConfig {
        queue_capacity: 4,
        ..NodeConfig::default()
    });
    let (done_tx, done_rx) = mpsc::channel();
    let worker_node = node.clone();
    // The work runs on its own thread so a deadlock shows up as a timeout
    // here instead of a hung test binary.
    thread::spawn(move || {
        thread::scope(|s| {
            for t in 0..THREADS {
                let node = worker_node.clone();
                s.spawn(move || {
                    let mut held = Vec::new();
                    for r in 0..ROUNDS {
                        let i = t * 7919 + r;
                        let (conn, _) = connect(&node, user(i), &[group(i + 1)]);
                        done(node.join(&group(i), &user(i))).unwrap();
                        let _ = done(node.publish(conn.origin(), group(i + 2), Body::null()));
                        done(node.send(conn.origin(), user(i + 3), Body::null())).unwrap();
                        done(node.push(Target::Group(group(i + 4)), Body::null(), None)).unwrap();
                        if r % 50 == 0 {
                            done(node.push(Target::All, Body::null(), None)).unwrap();
                            done(node.kick(&user(i + 5))).unwrap();
                        }
                        done(node.leave(&group(i + 3), &user(i))).unwrap();
                        let _ = done(node.group_members(&group(i))).unwrap();
                        let _ = done(node.user_presence(&user(i + 1))).unwrap();
                        // Keep a few connections open across rounds.
                        held.push(conn);
                        if held.len() > 3 {
                            held.remove(0);
                        }
                    }
                });
            }
        });
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("churn did not finish: deadlock");

    // All connections were dropped by their threads.
    let s = node.stats_snapshot();
    assert_eq!((s.connections, s.users), (0, 0));

    // Group gauge equals the groups that really have members, and the two
    // maps agree about who is in what.
    let mut non_empty = 0;
    for g in 0..GROUPS {
        let members = done(node.group_members(&group(g))).unwrap();
        if !members.is_empty() {
            non_empty += 1;
        }
        for (u, conns) in members {
            assert_eq!(conns, 0);
            assert!(done(node.user_presence(&u))
                .unwrap()
                .groups
                .contains(&group(g)));
        }
    }
    assert_eq!(s.groups, non_empty);
    for u in 0..USERS {
        let presence = done(node.user_presence(&user(u))).unwrap();
        let (conns, groups) = (presence.connections, presence.groups);
        assert_eq!(conns, 0);
        for g in groups {
            assert!(done(node.is_member(&g, &user(u))).unwrap());
        }
    }

    // Leaving everything empties the hub.
    for u in 0..USERS {
        for g in 0..GROUPS {
            done(node.leave(&group(g), &user(u))).unwrap();
        }
    }
    let s = node.stats_snapshot();
    assert_eq!((s.connections, s.users, s.groups), (0, 0, 0));
}
