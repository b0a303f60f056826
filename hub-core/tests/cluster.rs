//! The seams between nodes (`backplane.rs`), driven by two nodes in one
//! process that share an in-memory stand-in for a cluster's store: what a
//! Redis implementation must do, checked without a network. Messages,
//! copies, membership, presence and kicks cross from one node to the
//! other, and a store that is down makes every operation `unavailable`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

mod common;

use common::done;
use hub_core::{
    encode_at, Backplane, BoxFuture, Broker, Connection, Control, Disconnect, History, Hub,
    Inbound, Membership, Node, NodeConfig, NodeError, NodeId, Placed, Presence, Publication,
    Published, Recovery, Rules, Session, StreamName, Streams, Target, Topic, Unavailable,
};
use protocol::{Body, GroupId, ServerFrame, UserId};
use serde_json::json;

/// The shared store: memberships, and the hubs of the nodes attached.
#[derive(Default)]
struct Store {
    groups_of: Mutex<HashMap<UserId, BTreeSet<GroupId>>>,
    hubs: Mutex<Vec<Arc<Hub>>>,
    up: AtomicBool,
    /// The streams, numbered in one place as Redis numbers them; the lock
    /// orders each append with its delivery, as one script does.
    streams: Streams,
    order: Mutex<()>,
}

impl Store {
    fn new() -> Arc<Store> {
        let store = Arc::new(Store::default());
        store.up.store(true, Ordering::SeqCst);
        store
    }

    fn check(&self) -> Result<(), Unavailable> {
        if self.up.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Unavailable)
        }
    }

    fn hubs(&self) -> Vec<Arc<Hub>> {
        self.hubs.lock().unwrap().clone()
    }

    /// Control news goes to the nodes holding the user's connections, as a
    /// user's channel would carry it.
    fn tell(&self, user: &UserId, control: Control) {
        for hub in self.hubs() {
            if hub.user_info(user).0 > 0 {
                hub.control(&control);
            }
        }
    }
}

/// One node's view of the store.
struct Side(Arc<Store>);

fn now<'a, T: Send + 'a>(t: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(t))
}

impl Store {
    /// Appends to `stream` and hands the placed frame to every node.
    fn place(&self, stream: StreamName, p: &mut Publication) -> (hub_core::Position, usize) {
        let (at, frame) = self.streams.append_frame(&stream, Instant::now(), |at| {
            encode_at(&mut p.message, &stream, at)
        });
        let placed = Placed {
            stream,
            frame,
            skip: p.origin.as_ref().map(|o| o.conn),
        };
        let n = self.hubs().iter().map(|h| h.placed(&placed)).sum();
        (at, n)
    }
}

impl Broker for Side {
    fn publish(&self, mut p: Publication) -> BoxFuture<'_, Result<Published, Unavailable>> {
        now(self.0.check().map(|()| {
            let _order = self.0.order.lock().unwrap();
            let target_stream = p.target.stream();
            let (at, mut delivered) = self.0.place(target_stream.clone(), &mut p);
            let mut place = (target_stream, at);
            if let (Target::User(to), Some(o)) = (p.target.clone(), p.origin.clone()) {
                if o.user != to {
                    let own = StreamName::Inbox(o.user.clone());
                    let (at, _) = self.0.place(own.clone(), &mut p);
                    place = (own, at);
                }
            }
            if let (Target::Group(_), Some(o)) = (&p.target, &p.origin) {
                // The sender's other connections got copies, not deliveries.
                let copies: usize = self.0.hubs().iter().map(|h| h.user_info(&o.user).0).sum();
                delivered -= copies.saturating_sub(1);
            }
            Published {
                id: p.message.id.clone(),
                delivered,
                place: Some(place),
                duplicate: false,
            }
        }))
    }

    fn positions<'a>(
        &'a self,
        streams: &'a [StreamName],
    ) -> BoxFuture<'a, Result<Vec<hub_core::Position>, Unavailable>> {
        now(self.0.check().map(|()| {
            streams
                .iter()
                .map(|s| self.0.streams.position(s, Instant::now()))
                .collect()
        }))
    }

    fn recover<'a>(
        &'a self,
        from: &'a [(StreamName, hub_core::Position)],
    ) -> BoxFuture<'a, Result<Vec<Recovery>, Unavailable>> {
        now(self.0.check().map(|()| {
            from.iter()
                .map(|(s, p)| self.0.streams.since(s, p, usize::MAX, Instant::now()))
                .collect()
        }))
    }

    fn history<'a>(
        &'a self,
        stream: &'a StreamName,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, Unavailable>> {
        now(self
            .0
            .check()
            .map(|()| self.0.streams.history(stream, since, limit, Instant::now())))
    }

    fn kick<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<usize, Unavailable>> {
        now(self.0.check().map(|()| {
            self.0
                .hubs()
                .iter()
                .map(|h| h.close_user(user, Disconnect::Kicked))
                .sum()
        }))
    }

    fn subscribe<'a>(&'a self, _topics: &'a [Topic]) -> BoxFuture<'a, Result<(), Unavailable>> {
        now(self.0.check())
    }

    fn is_up(&self) -> bool {
        self.0.check().is_ok()
    }

    fn is_shared(&self) -> bool {
        true
    }
}

impl Membership for Side {
    fn join<'a>(
        &'a self,
        group: &'a GroupId,
        user: &'a UserId,
        max: usize,
    ) -> BoxFuture<'a, Result<Option<bool>, Unavailable>> {
        now(self.0.check().map(|()| {
            let new = {
                let mut all = self.0.groups_of.lock().unwrap();
                let groups = all.entry(user.clone()).or_default();
                if !groups.contains(group) && groups.len() >= max {
                    return None;
                }
                groups.insert(group.clone())
            };
            let (user, group) = (user.clone(), group.clone());
            self.0.tell(&user.clone(), Control::Joined { user, group });
            Some(new)
        }))
    }

    fn leave<'a>(
        &'a self,
        group: &'a GroupId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, Unavailable>> {
        now(self.0.check().map(|()| {
            let was = self
                .0
                .groups_of
                .lock()
                .unwrap()
                .get_mut(user)
                .is_some_and(|g| g.remove(group));
            let (user, group) = (user.clone(), group.clone());
            self.0.tell(&user.clone(), Control::Left { user, group });
            was
        }))
    }

    fn groups_of<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Vec<GroupId>, Unavailable>> {
        now(self.0.check().map(|()| {
            let all = self.0.groups_of.lock().unwrap();
            all.get(user)
                .map(|g| g.iter().cloned().collect())
                .unwrap_or_default()
        }))
    }

    fn members_of<'a>(
        &'a self,
        group: &'a GroupId,
    ) -> BoxFuture<'a, Result<Vec<UserId>, Unavailable>> {
        now(self.0.check().map(|()| {
            let all = self.0.groups_of.lock().unwrap();
            all.iter()
                .filter(|(_, g)| g.contains(group))
                .map(|(u, _)| u.clone())
                .collect()
        }))
    }

    fn is_member<'a>(
        &'a self,
        group: &'a GroupId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, Unavailable>> {
        now(self.0.check().map(|()| {
            let all = self.0.groups_of.lock().unwrap();
            all.get(user).is_some_and(|g| g.contains(group))
        }))
    }
}

impl Presence for Side {
    fn connections<'a>(
        &'a self,
        users: &'a [UserId],
    ) -> BoxFuture<'a, Result<Vec<usize>, Unavailable>> {
        now(self.0.check().map(|()| {
            let hubs = self.0.hubs();
            users
                .iter()
                .map(|u| hubs.iter().map(|h| h.user_info(u).0).sum())
                .collect()
        }))
    }

    fn changed<'a>(
        &'a self,
        _user: &'a UserId,
        _delta: i64,
    ) -> BoxFuture<'a, Result<(), Unavailable>> {
        // The hubs are the counts here, read on demand.
        now(Ok(()))
    }
}

fn node(store: &Arc<Store>, n: u64) -> Node {
    let config = NodeConfig {
        rules: Rules {
            open: false,
            public_groups: vec!["pub.".into()],
        },
        ..NodeConfig::default()
    };
    Node::with_backplane(config, NodeId(n), |hub| {
        store.hubs.lock().unwrap().push(hub);
        let side = Arc::new(Side(store.clone()));
        Backplane {
            broker: side.clone(),
            membership: side.clone(),
            presence: side,
        }
    })
}

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn group(s: &str) -> GroupId {
    GroupId::new(s).unwrap()
}

fn connect(node: &Node, who: &str) -> (Connection, Session) {
    let session = Session::new(user(who));
    let admission = done(node.admit(&session)).unwrap();
    (done(node.connect(admission, &session)).0, session)
}

fn bodies(conn: &mut Connection) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while let Some(f) = conn.try_recv() {
        match serde_json::from_str(f.as_str()).unwrap() {
            ServerFrame::Message(m) => out.push(m.body.to_value()),
            other => panic!("not a message: {other:?}"),
        }
    }
    out
}

#[test]
fn messages_copies_and_broadcasts_cross_nodes() {
    let store = Store::new();
    let (a, b) = (node(&store, 1), node(&store, 2));
    let (alice, _) = connect(&a, "alice");
    let (mut alice_on_b, _) = connect(&b, "alice");
    let (mut bob, _) = connect(&b, "bob");
    // Connection ids differ across nodes even where their numbers match.
    assert_ne!(alice.id, bob.id);

    let d = done(a.send(alice.origin(), user("bob"), Body::from_value(&json!("hi")))).unwrap();
    assert_eq!(d.delivered, 1);
    assert_eq!(bodies(&mut bob), vec![json!("hi")]);
    // The sender's copy reached its other connection, on the other node.
    assert_eq!(bodies(&mut alice_on_b), vec![json!("hi")]);

    let d = done(a.push(Target::All, Body::from_value(&json!("all")), None)).unwrap();
    assert_eq!(d.delivered, 3);
    assert_eq!(bodies(&mut bob), vec![json!("all")]);
}

#[test]
fn membership_and_presence_are_the_same_from_every_node() {
    let store = Store::new();
    let (a, b) = (node(&store, 1), node(&store, 2));
    let (alice, _) = connect(&a, "alice");
    let (mut bob, bob_session) = connect(&b, "bob");
    done(a.join(&group("g"), &user("alice"))).unwrap();
    // bob joins on node B; node A sees it, and A's publish reaches him.
    assert_eq!(
        done(b.join_as(&bob_session, &group("pub.lobby")))
            .unwrap()
            .map(|at| at.stream)
            .unwrap_or_default(),
        "group:pub.lobby"
    );
    done(a.join(&group("pub.lobby"), &user("alice"))).unwrap();
    assert!(done(a.is_member(&group("pub.lobby"), &user("bob"))).unwrap());
    let d = done(a.publish(
        alice.origin(),
        group("pub.lobby"),
        Body::from_value(&json!(1)),
    ))
    .unwrap();
    assert_eq!(d.delivered, 1);
    assert_eq!(bodies(&mut bob), vec![json!(1)]);
    let presence = done(a.user_presence(&user("bob"))).unwrap();
    assert_eq!(presence.connections, 1);
    assert_eq!(presence.groups, vec![group("pub.lobby")]);
    let members = done(a.group_members(&group("pub.lobby"))).unwrap();
    assert_eq!(members, vec![(user("alice"), 1), (user("bob"), 1)]);

    // Leaving on A stops B's fan-out to bob.
    done(a.leave(&group("pub.lobby"), &user("bob"))).unwrap();
    let d = done(a.publish(
        alice.origin(),
        group("pub.lobby"),
        Body::from_value(&json!(2)),
    ))
    .unwrap();
    assert_eq!(d.delivered, 0);
    assert!(bodies(&mut bob).is_empty());
}

#[test]
fn the_per_user_cap_counts_connections_on_every_node() {
    let store = Store::new();
    let config = |max: usize| NodeConfig {
        max_user_connections: std::num::NonZeroUsize::new(max).unwrap(),
        ..NodeConfig::default()
    };
    let make = |n: u64| {
        Node::with_backplane(config(2), NodeId(n), |hub| {
            store.hubs.lock().unwrap().push(hub);
            let side = Arc::new(Side(store.clone()));
            Backplane {
                broker: side.clone(),
                membership: side.clone(),
                presence: side,
            }
        })
    };
    let (a, b) = (make(1), make(2));
    let _one = connect(&a, "u");
    let _two = connect(&b, "u");
    let refused = done(a.admit(&Session::new(user("u")))).unwrap_err();
    assert_eq!(refused.code(), protocol::ErrorCode::RateLimited);
}

#[test]
fn a_kick_through_one_node_closes_the_user_on_every_node() {
    let store = Store::new();
    let (a, b) = (node(&store, 1), node(&store, 2));
    let (on_a, _) = connect(&a, "k");
    let (on_b, _) = connect(&b, "k");
    assert_eq!(done(a.kick(&user("k"))).unwrap(), 2);
    assert_eq!(on_a.close_reason(), Some(Disconnect::Kicked));
    assert_eq!(on_b.close_reason(), Some(Disconnect::Kicked));
    assert_eq!(done(b.user_presence(&user("k"))).unwrap().connections, 0);
}

#[test]
fn a_store_that_is_down_makes_every_operation_unavailable() {
    let store = Store::new();
    let a = node(&store, 1);
    let (alice, session) = connect(&a, "alice");
    store.up.store(false, Ordering::SeqCst);
    assert!(!a.broker_up());
    let body = || Body::from_value(&json!("x"));
    assert_eq!(
        done(a.send(alice.origin(), user("bob"), body())).unwrap_err(),
        NodeError::Unavailable
    );
    assert_eq!(
        done(a.join_as(&session, &group("pub.x"))).unwrap_err(),
        NodeError::Unavailable
    );
    assert_eq!(
        done(a.push(Target::All, body(), None)).unwrap_err().code(),
        protocol::ErrorCode::Unavailable
    );
    assert!(done(a.admit(&Session::new(user("carol")))).is_err());
    // The connection itself is untouched, and service returns with the store.
    assert_eq!(alice.close_reason(), None);
    store.up.store(true, Ordering::SeqCst);
    assert!(done(a.send(alice.origin(), user("bob"), body())).is_ok());
}

/// In a cluster a message can still be on its way to a node (pub/sub)
/// when a new connection there reads positions that already count it. The
/// connection must not get it on top of its welcome: to its client that
/// is the same seq twice. A connection that was there before gets it.
#[test]
fn a_message_the_welcome_already_counts_is_not_delivered_on_top_of_it() {
    let store = Store::new();
    let b = node(&store, 2);
    let (mut before, _) = connect(&b, "bob");
    // Numbered in the store, not delivered yet.
    let stream = StreamName::Inbox(user("bob"));
    let mut message = protocol::Message {
        id: "m-late".into(),
        from: None,
        to: Some(user("bob")),
        group: None,
        body: Body::from_value(&json!("late")),
        ts: 0,
        stream: None,
        epoch: None,
        seq: None,
    };
    let (at, frame) = store.streams.append_frame(&stream, Instant::now(), |at| {
        encode_at(&mut message, &stream, at)
    });
    assert_eq!(at.seq, 1);
    let (mut after, _) = connect(&b, "bob");
    // Now it arrives.
    let placed = Placed {
        stream: stream.clone(),
        frame,
        skip: None,
    };
    for h in store.hubs().iter() {
        h.placed(&placed);
    }
    assert_eq!(bodies(&mut before), vec![json!("late")]);
    assert_eq!(bodies(&mut after), Vec::<serde_json::Value>::new());
    // What comes after the welcome's position reaches both.
    done(b.push(
        Target::User(user("bob")),
        Body::from_value(&json!("next")),
        None,
    ))
    .unwrap();
    assert_eq!(bodies(&mut before), vec![json!("next")]);
    assert_eq!(bodies(&mut after), vec![json!("next")]);
}
