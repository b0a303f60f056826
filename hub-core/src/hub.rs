//! The local hub: who is connected (user → connections) and who is in which
//! group (group → users), and delivery of encoded frames to their queues.
//!
//! Both maps are sharded behind std mutexes. The critical sections are short
//! and never await (a push is a `try_send`), so a blocking mutex is cheaper
//! than an async one. When both kinds of shard are held, a group shard is
//! always taken first, then a user shard, and never two of one kind: that
//! order is what keeps concurrent join/leave/publish/disconnect free of
//! deadlock.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, MutexGuard};

use protocol::{GroupId, UserId};

use crate::broker::{Publication, Target};
use crate::disconnect::Disconnect;
use crate::queue::{ConnId, Pushed, QueueSender};
use crate::stats::Stats;

const SHARDS: usize = 64;

#[derive(Debug, Default)]
struct UserEntry {
    conns: Vec<QueueSender>,
    /// Sorted, because the welcome frame and the API list groups sorted.
    groups: BTreeSet<GroupId>,
}

impl UserEntry {
    fn is_empty(&self) -> bool {
        self.conns.is_empty() && self.groups.is_empty()
    }
}

type UserShard = HashMap<UserId, UserEntry>;
type GroupShard = HashMap<GroupId, HashSet<UserId>>;

#[derive(Debug)]
pub struct Hub {
    users: Box<[Mutex<UserShard>]>,
    groups: Box<[Mutex<GroupShard>]>,
    hasher: RandomState,
    pub(crate) stats: Stats,
}

/// Locks a mutex, ignoring poisoning: the maps stay consistent at every
/// step, so a panic elsewhere leaves nothing half-done to protect.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            users: (0..SHARDS).map(|_| Mutex::default()).collect(),
            groups: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            stats: Stats::default(),
        }
    }
}

impl Hub {
    fn user_shard(&self, user: &UserId) -> MutexGuard<'_, UserShard> {
        let i = self.hasher.hash_one(user.as_str()) as usize % SHARDS;
        lock(&self.users[i])
    }

    fn group_shard(&self, group: &GroupId) -> MutexGuard<'_, GroupShard> {
        let i = self.hasher.hash_one(group.as_str()) as usize % SHARDS;
        lock(&self.groups[i])
    }

    /// Adds a connection and returns the user's groups at that moment.
    pub(crate) fn register(&self, user: &UserId, queue: QueueSender) -> Vec<GroupId> {
        let mut shard = self.user_shard(user);
        let entry = shard.entry(user.clone()).or_default();
        if entry.conns.is_empty() {
            self.stats.users.fetch_add(1, Relaxed);
        }
        entry.conns.push(queue);
        self.stats.connections.fetch_add(1, Relaxed);
        entry.groups.iter().cloned().collect()
    }

    /// Removes a connection. Its user's memberships stay.
    pub(crate) fn unregister(&self, user: &UserId, conn: ConnId) {
        let mut shard = self.user_shard(user);
        let Some(entry) = shard.get_mut(user) else {
            return;
        };
        let before = entry.conns.len();
        entry.conns.retain(|c| c.id != conn);
        if entry.conns.len() < before {
            self.stats.connections.fetch_sub(1, Relaxed);
            if entry.conns.is_empty() {
                self.stats.users.fetch_sub(1, Relaxed);
            }
        }
        if entry.is_empty() {
            shard.remove(user);
        }
    }

    /// Adds `user` to `group`. Idempotent; returns true when it was new.
    pub fn join(&self, group: &GroupId, user: &UserId) -> bool {
        let mut groups = self.group_shard(group);
        let members = match groups.entry(group.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                self.stats.groups.fetch_add(1, Relaxed);
                e.insert(HashSet::new())
            }
        };
        let added = members.insert(user.clone());
        let mut users = self.user_shard(user);
        users
            .entry(user.clone())
            .or_default()
            .groups
            .insert(group.clone());
        added
    }

    /// Removes `user` from `group`. Idempotent; returns true when it was a member.
    pub fn leave(&self, group: &GroupId, user: &UserId) -> bool {
        let mut groups = self.group_shard(group);
        let Some(members) = groups.get_mut(group) else {
            return false;
        };
        let removed = members.remove(user);
        if members.is_empty() {
            groups.remove(group);
            self.stats.groups.fetch_sub(1, Relaxed);
        }
        let mut users = self.user_shard(user);
        if let Some(entry) = users.get_mut(user) {
            entry.groups.remove(group);
            if entry.is_empty() {
                users.remove(user);
            }
        }
        removed
    }

    pub fn is_member(&self, group: &GroupId, user: &UserId) -> bool {
        self.group_shard(group)
            .get(group)
            .is_some_and(|m| m.contains(user))
    }

    /// Connections held by `user` and the groups the user is in (sorted).
    pub fn user_info(&self, user: &UserId) -> (usize, Vec<GroupId>) {
        let shard = self.user_shard(user);
        match shard.get(user) {
            Some(e) => (e.conns.len(), e.groups.iter().cloned().collect()),
            None => (0, Vec::new()),
        }
    }

    /// Members of `group` (sorted) with their connection counts.
    pub fn group_members(&self, group: &GroupId) -> Vec<(UserId, usize)> {
        let mut members: Vec<UserId> = self
            .group_shard(group)
            .get(group)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default();
        members.sort();
        members
            .into_iter()
            .map(|u| {
                let n = self.user_shard(&u).get(&u).map_or(0, |e| e.conns.len());
                (u, n)
            })
            .collect()
    }

    /// Tells every connection of `user` to close. Returns how many.
    pub fn close_user(&self, user: &UserId, reason: Disconnect) -> usize {
        let shard = self.user_shard(user);
        shard.get(user).map_or(0, |e| {
            e.conns.iter().filter(|c| c.signal.close(reason)).count()
        })
    }

    /// Tells every connection on this node to close.
    pub fn close_all(&self, reason: Disconnect) -> usize {
        let mut n = 0;
        for shard in self.users.iter() {
            let shard = lock(shard);
            for e in shard.values() {
                n += e.conns.iter().filter(|c| c.signal.close(reason)).count();
            }
        }
        n
    }

    /// Queues a publication's frame to its local recipients. Returns the
    /// `delivered` count: connections of the recipients, not counting the
    /// copies that go to the sender's other connections (PROTOCOL.md §3).
    pub fn deliver(&self, p: &Publication) -> usize {
        let origin_conn = p.origin.as_ref().map(|o| o.conn);
        let mut delivered = 0;
        let mut copies = 0;
        match &p.target {
            Target::User(to) => {
                delivered += self.push_to_user(to, p, origin_conn);
                if let Some(origin) = &p.origin {
                    if &origin.user != to {
                        copies += self.push_to_user(&origin.user, p, origin_conn);
                    }
                }
            }
            Target::Group(group) => {
                let groups = self.group_shard(group);
                if let Some(members) = groups.get(group) {
                    for member in members {
                        let n = self.push_to_user(member, p, origin_conn);
                        match &p.origin {
                            Some(o) if &o.user == member => copies += n,
                            _ => delivered += n,
                        }
                    }
                }
            }
            Target::All => {
                for shard in self.users.iter() {
                    let shard = lock(shard);
                    for entry in shard.values() {
                        delivered += self.push_all(&entry.conns, p, origin_conn);
                    }
                }
            }
        }
        self.stats
            .messages_delivered
            .fetch_add((delivered + copies) as u64, Relaxed);
        delivered
    }

    fn push_to_user(&self, user: &UserId, p: &Publication, skip: Option<ConnId>) -> usize {
        let shard = self.user_shard(user);
        shard
            .get(user)
            .map_or(0, |e| self.push_all(&e.conns, p, skip))
    }

    fn push_all(&self, conns: &[QueueSender], p: &Publication, skip: Option<ConnId>) -> usize {
        let mut queued = 0;
        for c in conns {
            if Some(c.id) == skip {
                continue;
            }
            match c.push(&p.frame) {
                Pushed::Queued => queued += 1,
                Pushed::Overflowed => {
                    self.stats.slow_consumer_closes.fetch_add(1, Relaxed);
                }
                Pushed::Gone => {}
            }
        }
        queued
    }
}
