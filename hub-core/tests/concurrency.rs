//! Many threads connect, join, leave, publish and disconnect at once. The run
//! must finish (no lock-order deadlock) and leave the counts consistent.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use hub_core::{Connection, Node, NodeConfig, Session, Target};
use protocol::{Body, GroupId, UserId};

const THREADS: usize = 8;
const ROUNDS: usize = 2_000;
const USERS: usize = 24;
const GROUPS: usize = 6;

/// Admits and registers one connection of `user`, joining `groups` as a
/// token's groups would be.
fn connect(node: &Node, user: UserId, groups: &[GroupId]) -> (Connection, Vec<GroupId>) {
    let session = Session {
        token_groups: groups.to_vec(),
        ..Session::new(user)
    };
    let admission = node.admit(&session).unwrap();
    node.connect(admission, &session)
}

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
                        node.join(&group(i), &user(i)).unwrap();
                        let _ = node.publish(&conn, group(i + 2), Body::null());
                        node.send(&conn, user(i + 3), Body::null());
                        node.push(Target::Group(group(i + 4)), Body::null());
                        if r % 50 == 0 {
                            node.push(Target::All, Body::null());
                            node.disconnect_user(&user(i + 5), hub_core::Disconnect::Kicked);
                        }
                        node.leave(&group(i + 3), &user(i));
                        let _ = node.group_members(&group(i));
                        let _ = node.user_presence(&user(i + 1));
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
        let members = node.group_members(&group(g));
        if !members.is_empty() {
            non_empty += 1;
        }
        for (u, conns) in members {
            assert_eq!(conns, 0);
            assert!(node.user_presence(&u).groups.contains(&group(g)));
        }
    }
    assert_eq!(s.groups, non_empty);
    for u in 0..USERS {
        let presence = node.user_presence(&user(u));
        let (conns, groups) = (presence.connections, presence.groups);
        assert_eq!(conns, 0);
        for g in groups {
            assert!(node.is_member(&g, &user(u)));
        }
    }

    // Leaving everything empties the hub.
    for u in 0..USERS {
        for g in 0..GROUPS {
            node.leave(&group(g), &user(u));
        }
    }
    let s = node.stats_snapshot();
    assert_eq!((s.connections, s.users, s.groups), (0, 0, 0));
}
