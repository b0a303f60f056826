//! Helpers the hub-core integration tests share: running a one-process
//! node's calls, which complete at once, and connecting a user.

#![allow(dead_code)]

use futures_util::FutureExt;
use hub_core::{Connection, Node, Session};
use protocol::{GroupId, UserId};

/// Runs a call that completes at once (a one-process node, or the
/// in-memory store of `cluster.rs`).
pub fn done<T>(call: impl std::future::Future<Output = T>) -> T {
    call.now_or_never()
        .expect("a one-process node answers at once")
}

/// Admits and registers one connection of `user`, joining `groups` as a
/// token's groups would be.
pub fn connect(node: &Node, user: UserId, groups: &[GroupId]) -> (Connection, Vec<GroupId>) {
    let (conn, groups, _) = connect_at(node, user, groups);
    (conn, groups)
}

/// `connect`, with the welcome's stream positions.
#[allow(dead_code)]
pub fn connect_at(
    node: &Node,
    user: UserId,
    groups: &[GroupId],
) -> (Connection, Vec<GroupId>, protocol::Positions) {
    let session = Session {
        token_groups: groups.to_vec(),
        ..Session::new(user)
    };
    let admission = done(node.admit(&session)).unwrap();
    done(node.connect(admission, &session))
}
