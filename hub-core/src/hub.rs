//! The local hub: who is connected (user → connections) and who is in which
//! group (group → users), and delivery of encoded frames to their queues.
//!
//! Both maps are sharded behind std mutexes. The critical sections are short
//! and never await (a push never waits for room), so a blocking mutex is cheaper
//! than an async one. A user's connections sit in one `Conns` shared by the
//! user map and every group the user is in, so a group fan-out goes straight
//! from member to queues, with no lookup or hashing per member. The fan-out
//! thread reaches a large group's connections through a flat list of them
//! instead, kept while they stay the same (`Hub::flat_list`).
//!
//! Lock order, which keeps concurrent join/leave/publish/disconnect free of
//! deadlock: `broadcast`, then a group shard, then a user shard, then a
//! group's flat list (`Tally::flat`), then a user's `Conns`, then one
//! connection's queue (`queue.rs`); never two locks of one kind at once.
//! (A close or leave only tries the flat list's lock, under `Conns`.) A
//! history shard (`history.rs`) is a leaf, taken under a group or user
//! shard and released before anything else.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use foldhash::fast::RandomState;
use protocol::{GroupId, Message, UserId};

use crate::backplane::Topic;
use crate::disconnect::Disconnect;
use crate::fanout::{Fanout, Job};
use crate::frame::Frame;
use crate::history::{Position, StreamName, Streams};
use crate::publication::{encode_at, Placed, Publication, Target};
use crate::queue::{ConnId, Pushed, QueueSender, Wakes};
use crate::stats::Stats;

const SHARDS: usize = 64;

/// One user's open connections.
#[derive(Debug, Default)]
struct Conns(Mutex<ConnList>);

impl Conns {
    fn lock(&self) -> MutexGuard<'_, ConnList> {
        lock(&self.0)
    }
}

/// A user's connections, and the tallies of the groups the user is in
/// (`Members::tally`), kept in step with them under the same lock: every
/// change to either happens here, so a group's count is exact at all times
/// and a push reads it instead of counting members.
#[derive(Debug, Default)]
struct ConnList {
    senders: Vec<QueueSender>,
    counts: Vec<Arc<Tally>>,
}

/// What a group's members' `ConnList`s keep up to date for it.
#[derive(Debug, Default)]
struct Tally {
    /// Connections of all members.
    connections: AtomicUsize,
    /// Moves with every join and leave and every connection of a member
    /// opened or closed: while it stands still, the members and their
    /// connections are the same.
    changes: AtomicU64,
    /// The members' connections in one flat list, made by a fan-out and
    /// used by the next ones while `changes` stands still
    /// (`Hub::flat_list`).
    flat: Mutex<Option<Flat>>,
}

impl Tally {
    fn add(&self, n: usize) {
        self.connections.fetch_add(n, Relaxed);
        self.changes.fetch_add(1, Relaxed);
    }

    fn sub(&self, n: usize) {
        self.connections.fetch_sub(n, Relaxed);
        self.changes.fetch_add(1, Relaxed);
        // The flat list is out of date now, and would keep the queues of
        // closed connections alive until the group's next push. Only
        // tried: the fan-out thread may hold it while it takes this
        // user's `Conns` lock, which our caller holds.
        match self.flat.try_lock() {
            Ok(mut flat) => *flat = None,
            Err(std::sync::TryLockError::Poisoned(p)) => *p.into_inner() = None,
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
    }
}

/// A group's connections as they were when `changes` (`Tally::changes`)
/// had this value.
#[derive(Debug)]
struct Flat {
    changes: u64,
    senders: Arc<[QueueSender]>,
}

/// The members a group message is for, as the push saw them: the list
/// (who was a member at the append) and the tally's `changes` then.
#[derive(Debug)]
pub(crate) struct Recipients {
    list: Arc<Vec<Arc<Conns>>>,
    tally: Arc<Tally>,
    changes: u64,
}

impl Recipients {
    /// The same members with their connections unchanged in between: one
    /// push can take the other's frames along.
    fn same_as(&self, other: &Recipients) -> bool {
        Arc::ptr_eq(&self.list, &other.list) && self.changes == other.changes
    }
}

impl std::ops::Deref for ConnList {
    type Target = [QueueSender];

    fn deref(&self) -> &[QueueSender] {
        &self.senders
    }
}

impl ConnList {
    fn add(&mut self, sender: QueueSender) {
        self.senders.push(sender);
        for c in &self.counts {
            c.add(1);
        }
    }

    fn take_where(&mut self, mut gone: impl FnMut(&QueueSender) -> bool) -> usize {
        let before = self.senders.len();
        self.senders.retain(|c| !gone(c));
        let removed = before - self.senders.len();
        if removed > 0 {
            for c in &self.counts {
                c.sub(removed);
            }
        }
        removed
    }

    /// Counts these connections in a group the user joins.
    fn count_in(&mut self, group: &Arc<Tally>) {
        group.add(self.senders.len());
        self.counts.push(group.clone());
    }

    /// Stops counting them in a group the user leaves.
    fn uncount_in(&mut self, group: &Arc<Tally>) {
        group.sub(self.senders.len());
        self.counts.retain(|c| !Arc::ptr_eq(c, group));
    }
}

#[derive(Debug, Default)]
struct UserEntry {
    conns: Arc<Conns>,
    /// Sorted, because the welcome frame and the API list groups sorted.
    groups: BTreeSet<GroupId>,
    /// Connections admitted under the per-user cap whose upgrade has not
    /// registered yet: counted against the cap, so concurrent upgrades of
    /// one user cannot all slip under it.
    admitted: usize,
}

impl UserEntry {
    fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.is_idle()
    }

    /// No connection here, and none admitted on its way.
    fn is_idle(&self) -> bool {
        self.admitted == 0 && self.conns.lock().is_empty()
    }
}

/// A user is already in as many groups as the cap allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupCapReached;

// foldhash: fast, and seeded per process so ids cannot be picked to collide.
type UserShard = HashMap<UserId, UserEntry, RandomState>;
type GroupShard = HashMap<GroupId, Members, RandomState>;

/// A group's members on this node.
#[derive(Debug, Default)]
struct Members {
    by_user: HashMap<UserId, Arc<Conns>, RandomState>,
    /// The same connections as one list, which a push hands the fan-out
    /// thread whole (copied on write only while a push still holds it).
    list: Arc<Vec<Arc<Conns>>>,
    /// Connections of all members and changes to them (`ConnList` keeps
    /// it in step).
    tally: Arc<Tally>,
}

#[derive(Debug)]
pub struct Hub {
    users: Box<[Mutex<UserShard>]>,
    groups: Box<[Mutex<GroupShard>]>,
    hasher: RandomState,
    /// Orders broadcasts: one at a time is appended and fanned out.
    broadcast: Mutex<()>,
    /// Group fan-outs and positioned acks, when a thread runs them.
    fanout: Fanout<Recipients>,
    pub(crate) stats: Stats,
}

/// Closes a connection with `reason` unless it is closing already; either
/// way it is on its way out.
fn close_anyway(c: &QueueSender, reason: Disconnect) -> bool {
    c.close(reason);
    true
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
            hasher: RandomState::default(),
            broadcast: Mutex::new(()),
            fanout: Fanout::default(),
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

    /// The connections of `user`, if the hub knows the user.
    fn conns_of(&self, user: &UserId) -> Option<Arc<Conns>> {
        self.user_shard(user).get(user).map(|e| e.conns.clone())
    }

    /// Reserves a place for one more connection of `user` if the user holds
    /// fewer than `max` connections and reservations on this node. A
    /// reservation ends in `register` or `release`.
    pub(crate) fn admit(&self, user: &UserId, max: usize) -> bool {
        let mut shard = self.user_shard(user);
        let entry = shard.entry(user.clone()).or_default();
        let held = entry.conns.lock().len() + entry.admitted;
        if held >= max {
            if entry.is_empty() {
                shard.remove(user);
            }
            return false;
        }
        entry.admitted += 1;
        true
    }

    /// Forgets the memberships this node keeps for `user` when it only
    /// keeps them on behalf of a shared store (a cluster) and the user has
    /// no connection here any more.
    pub(crate) fn forget_if_idle(&self, user: &UserId) {
        let groups = self.groups_if_idle(user);
        self.leave_all_if_idle(&groups, user);
    }

    /// The groups `user` is in here, if the user has no connection here
    /// and none on its way.
    fn groups_if_idle(&self, user: &UserId) -> Vec<GroupId> {
        match self.user_shard(user).get(user) {
            Some(e) if e.is_idle() => e.groups.iter().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Leaves `groups` for `user`, each only while the user is still idle,
    /// checked under the locks of the leave: a connection of the user
    /// admitted since `groups_if_idle` (a reconnect to this process) keeps
    /// the memberships it has just loaded.
    fn leave_all_if_idle(&self, groups: &[GroupId], user: &UserId) {
        for g in groups {
            self.leave_unless(g, user, |e| !e.is_idle());
        }
    }

    /// Gives back a reservation of `admit` that never registered.
    pub(crate) fn release(&self, user: &UserId) {
        let mut shard = self.user_shard(user);
        if let Some(entry) = shard.get_mut(user) {
            entry.admitted = entry.admitted.saturating_sub(1);
            if entry.is_empty() {
                shard.remove(user);
            }
        }
    }

    /// Adds a connection, turning a reservation of `admit` into it.
    pub(crate) fn register(&self, user: &UserId, queue: QueueSender) {
        let mut shard = self.user_shard(user);
        let entry = shard.entry(user.clone()).or_default();
        entry.admitted = entry.admitted.saturating_sub(1);
        let mut conns = entry.conns.lock();
        if conns.is_empty() {
            self.stats.users.fetch_add(1, Relaxed);
        }
        conns.add(queue);
        self.stats.connections.fetch_add(1, Relaxed);
    }

    /// Removes a connection (if a close has not removed it already). Its
    /// user's memberships stay.
    pub(crate) fn unregister(&self, user: &UserId, conn: ConnId) {
        let mut shard = self.user_shard(user);
        let Some(entry) = shard.get_mut(user) else {
            return;
        };
        self.remove_where(&entry.conns, |c| c.id == conn);
        if entry.is_empty() {
            shard.remove(user);
        }
    }

    /// Takes the connections `gone` picks out of `conns`, keeping the
    /// gauges exact. A connection told to close leaves the registry here and
    /// then, not when its task gets round to the close handshake: presence,
    /// stats and `delivered` never count a connection that is on its way out.
    fn remove_where(&self, conns: &Conns, gone: impl FnMut(&QueueSender) -> bool) -> usize {
        let mut conns = conns.lock();
        let removed = conns.take_where(gone);
        self.count_removed(removed, conns.is_empty());
        removed
    }

    fn count_removed(&self, removed: usize, now_empty: bool) {
        if removed > 0 {
            self.stats.connections.fetch_sub(removed as i64, Relaxed);
            if now_empty {
                self.stats.users.fetch_sub(1, Relaxed);
            }
        }
    }

    /// Adds `user` to `group` unless that would put the user in more than
    /// `max` groups. Idempotent; `Ok(true)` when it was new.
    pub(crate) fn join(
        &self,
        group: &GroupId,
        user: &UserId,
        max: usize,
    ) -> Result<bool, GroupCapReached> {
        self.join_where(group, user, max, false)
    }

    /// A join another node made, mirrored here only while `user` has a
    /// connection here or one on its way (checked under the join's locks,
    /// so a connection admitted meanwhile is never missed). Joined for an
    /// absent user, the group would be kept here until the user came and
    /// went again.
    pub(crate) fn join_if_connected(&self, group: &GroupId, user: &UserId) {
        let _ = self.join_where(group, user, usize::MAX, true);
    }

    fn join_where(
        &self,
        group: &GroupId,
        user: &UserId,
        max: usize,
        if_connected: bool,
    ) -> Result<bool, GroupCapReached> {
        let mut groups = self.group_shard(group);
        let conns = {
            let mut users = self.user_shard(user);
            if if_connected && users.get(user).is_none_or(UserEntry::is_idle) {
                return Ok(false);
            }
            let entry = users.entry(user.clone()).or_default();
            if !entry.groups.contains(group) && entry.groups.len() >= max {
                if entry.is_empty() {
                    users.remove(user);
                }
                return Err(GroupCapReached);
            }
            entry.groups.insert(group.clone());
            entry.conns.clone()
        };
        let members = match groups.entry(group.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                self.stats.groups.fetch_add(1, Relaxed);
                e.insert(Members::default())
            }
        };
        if members.by_user.contains_key(user) {
            return Ok(false);
        }
        conns.lock().count_in(&members.tally);
        Arc::make_mut(&mut members.list).push(conns.clone());
        members.by_user.insert(user.clone(), conns);
        Ok(true)
    }

    /// Removes `user` from `group`. Idempotent; returns true when it was a member.
    pub fn leave(&self, group: &GroupId, user: &UserId) -> bool {
        self.leave_unless(group, user, |_| false)
    }

    /// `leave`, unless `keep` says otherwise of the user's entry; decided
    /// under the locks the leave holds (group shard, then user shard, the
    /// order `join` takes them in).
    fn leave_unless(
        &self,
        group: &GroupId,
        user: &UserId,
        keep: impl Fn(&UserEntry) -> bool,
    ) -> bool {
        let mut groups = self.group_shard(group);
        let mut users = self.user_shard(user);
        if users.get(user).is_some_and(keep) {
            return false;
        }
        let Some(members) = groups.get_mut(group) else {
            return false;
        };
        let removed = members.by_user.remove(user);
        if let Some(conns) = &removed {
            conns.lock().uncount_in(&members.tally);
            Arc::make_mut(&mut members.list).retain(|c| !Arc::ptr_eq(c, conns));
        }
        let removed = removed.is_some();
        if members.by_user.is_empty() {
            groups.remove(group);
            self.stats.groups.fetch_sub(1, Relaxed);
        }
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
            .is_some_and(|m| m.by_user.contains_key(user))
    }

    /// Connections held by `user` and the groups the user is in (sorted).
    pub fn user_info(&self, user: &UserId) -> (usize, Vec<GroupId>) {
        let shard = self.user_shard(user);
        match shard.get(user) {
            Some(e) => (e.conns.lock().len(), e.groups.iter().cloned().collect()),
            None => (0, Vec::new()),
        }
    }

    /// Members of `group` (sorted) with their connection counts.
    pub fn group_members(&self, group: &GroupId) -> Vec<(UserId, usize)> {
        let groups = self.group_shard(group);
        let mut members: Vec<(UserId, usize)> = groups
            .get(group)
            .map(|m| {
                m.by_user
                    .iter()
                    .map(|(u, conns)| (u.clone(), conns.lock().len()))
                    .collect()
            })
            .unwrap_or_default();
        drop(groups);
        members.sort();
        members
    }

    /// Makes the memberships this node mirrors for `user` exactly `groups`.
    pub fn set_groups(&self, user: &UserId, groups: &[GroupId]) {
        let current = self.user_info(user).1;
        for g in current.iter().filter(|g| !groups.contains(g)) {
            self.leave(g, user);
        }
        for g in groups.iter().filter(|g| !current.contains(g)) {
            let _ = self.join(g, user, usize::MAX);
        }
    }

    /// Forgets every membership this node mirrors: the shared store they
    /// came from lost its data.
    pub fn forget_all_groups(&self) {
        let mut pairs = Vec::new();
        for shard in self.users.iter() {
            let shard = lock(shard);
            for (user, e) in shard.iter() {
                pairs.extend(e.groups.iter().map(|g| (g.clone(), user.clone())));
            }
        }
        for (g, u) in pairs {
            self.leave(&g, &u);
        }
    }

    /// Connections per user on this node, for a shared presence to be
    /// rewritten from.
    pub fn connection_counts(&self) -> Vec<(UserId, usize)> {
        let mut out = Vec::new();
        for shard in self.users.iter() {
            let shard = lock(shard);
            for (user, e) in shard.iter() {
                let n = e.conns.lock().len();
                if n > 0 {
                    out.push((user.clone(), n));
                }
            }
        }
        out
    }

    /// What this node reads: every user with a connection here (or one
    /// admitted and on its way), and every group one of them is in.
    pub fn topics(&self) -> Vec<Topic> {
        let mut groups = BTreeSet::new();
        let mut topics = Vec::new();
        for shard in self.users.iter() {
            let shard = lock(shard);
            for (user, e) in shard.iter() {
                if e.admitted == 0 && e.conns.lock().is_empty() {
                    continue;
                }
                topics.push(Topic::User(user.clone()));
                groups.extend(e.groups.iter().cloned());
            }
        }
        topics.extend(groups.into_iter().map(Topic::Group));
        topics
    }

    /// Tells every connection of `user` to close and takes them out of the
    /// registry. Returns how many.
    pub fn close_user(&self, user: &UserId, reason: Disconnect) -> usize {
        self.conns_of(user).map_or(0, |conns| {
            self.remove_where(&conns, |c| close_anyway(c, reason))
        })
    }

    /// Tells every connection on this node to close and takes them out of
    /// the registry.
    pub fn close_all(&self, reason: Disconnect) -> usize {
        let mut n = 0;
        for shard in self.users.iter() {
            let shard = lock(shard);
            for e in shard.values() {
                n += self.remove_where(&e.conns, |c| close_anyway(c, reason));
            }
        }
        n
    }

    /// Routes a publication on one process: numbers it in each stream it
    /// enters, keeps it in `streams`, and queues it to the local readers,
    /// each append and its fan-out under the one lock that orders that
    /// stream's deliveries (the recipient's user shard for an inbox, the
    /// group's shard for a group, `broadcast` for `all`), so every reader
    /// gets a stream in seq order however publishers race. Returns
    /// `delivered` (§3: not counting the sender's copies) and the position
    /// the ack reports.
    pub(crate) fn route(
        &self,
        p: &mut Publication,
        streams: &Streams,
        now: Instant,
    ) -> (usize, (StreamName, Position)) {
        let skip = p.origin.as_ref().map(|o| o.conn);
        let origin = p.origin.as_ref().map(|o| &o.user);
        let message = &mut p.message;
        let mut delivered = 0;
        let mut copies = 0;
        let place = match &p.target {
            Target::User(to) => {
                let stream = StreamName::Inbox(to.clone());
                let (at, n) = self.append_to_user(to, &stream, message, streams, now, skip);
                delivered += n;
                match origin {
                    // The sender's copy, in the sender's own inbox.
                    Some(from) if from != to => {
                        let own = StreamName::Inbox(from.clone());
                        let (at, n) = self.append_to_user(from, &own, message, streams, now, skip);
                        copies += n;
                        (own, at)
                    }
                    _ => (stream, at),
                }
            }
            Target::Group(group) => {
                let stream = StreamName::Group(group.clone());
                let groups = self.group_shard(group);
                let (at, frame) =
                    streams.append_frame(&stream, now, |at| encode_at(message, &stream, at));
                // A connection's publish is fanned out here, after what
                // the thread has not done yet: its ack, queued next, must
                // not overtake a message of the group with a smaller seq.
                let _turn = (self.fanout.is_attached() && skip.is_some()).then(|| {
                    self.fanout
                        .exclusive(|jobs| self.run_jobs(jobs, &mut Wakes::Now))
                });
                if self.fanout.is_attached() && skip.is_none() {
                    // The thread pushes; here only the members' list and
                    // their connection count, both kept up to date by
                    // membership and registration (fanout.rs).
                    if let Some(members) = groups.get(group) {
                        delivered = members.tally.connections.load(Relaxed);
                        if let Some(own) = origin.and_then(|o| members.by_user.get(o)) {
                            delivered = delivered.saturating_sub(own.lock().len());
                        }
                        self.fanout.submit(Job {
                            frame,
                            members: Recipients {
                                list: members.list.clone(),
                                tally: members.tally.clone(),
                                changes: members.tally.changes.load(Relaxed),
                            },
                            skip,
                        });
                    }
                    drop(groups);
                    return (delivered, (stream, at));
                }
                if let Some(members) = groups.get(group) {
                    for (member, conns) in &members.by_user {
                        let n = self.push_all(conns, &frame, skip);
                        if origin == Some(member) {
                            copies += n;
                        } else {
                            delivered += n;
                        }
                    }
                }
                drop(groups);
                (stream, at)
            }
            Target::All => {
                let _order = lock(&self.broadcast);
                let stream = StreamName::All;
                let (at, frame) =
                    streams.append_frame(&stream, now, |at| encode_at(message, &stream, at));
                delivered += self.push_everyone(&frame, skip);
                (stream, at)
            }
        };
        self.stats
            .messages_delivered
            .fetch_add((delivered + copies) as u64, Relaxed);
        (delivered, place)
    }

    /// Appends to `user`'s inbox and queues the frame to the user's
    /// connections, under the user's shard lock: a connection registering
    /// at the same time either gets the frame or reads a position that
    /// includes it.
    fn append_to_user(
        &self,
        user: &UserId,
        stream: &StreamName,
        message: &mut Message,
        streams: &Streams,
        now: Instant,
        skip: Option<ConnId>,
    ) -> (Position, usize) {
        let shard = self.user_shard(user);
        let (at, frame) = streams.append_frame(stream, now, |at| encode_at(message, stream, at));
        let n = shard
            .get(user)
            .map_or(0, |entry| self.push_all(&entry.conns, &frame, skip));
        (at, n)
    }

    fn push_everyone(&self, frame: &Frame, skip: Option<ConnId>) -> usize {
        let mut n = 0;
        for shard in self.users.iter() {
            let shard = lock(shard);
            for entry in shard.values() {
                n += self.push_all(&entry.conns, frame, skip);
            }
        }
        n
    }

    /// Queues a message another node placed in a stream to this node's
    /// readers of that stream. Returns how many connections it reached.
    pub fn deliver(&self, placed: &Placed) -> usize {
        let skip = placed.skip;
        let frame = &placed.frame;
        let n = match &placed.stream {
            StreamName::Inbox(user) => self
                .conns_of(user)
                .map_or(0, |conns| self.push_all(&conns, frame, skip)),
            StreamName::Group(group) => {
                let groups = self.group_shard(group);
                groups.get(group).map_or(0, |members| {
                    members
                        .by_user
                        .values()
                        .map(|conns| self.push_all(conns, frame, skip))
                        .sum()
                })
            }
            StreamName::All => self.push_everyone(frame, skip),
        };
        self.stats.messages_delivered.fetch_add(n as u64, Relaxed);
        n
    }

    /// Runs queued group fan-outs and acks on the calling thread, for as
    /// long as the process lives; from the first call on, `route` hands
    /// group fan-outs to it instead of doing them itself (fanout.rs).
    ///
    /// The writers' wake-ups are handed to `wake` a few hundred at a time
    /// (the server passes them to its WebSocket runtime, which wakes them
    /// from a worker).
    pub fn run_fanout(&self, wake: impl Fn(Vec<std::task::Waker>)) -> ! {
        self.fanout.run(|jobs| {
            let mut wakes = Wakes::Collect {
                wakers: Vec::new(),
                hand_off: &wake,
            };
            self.run_jobs(jobs, &mut wakes);
        })
    }

    /// Runs every fan-out queued so far for `group` (and all queued before
    /// them). Taking the group's lock first waits out a push between its
    /// append and its job: a position of the group read before this call
    /// is then covered by what the connections have queued.
    pub(crate) fn drain_fanout_of(&self, group: &GroupId) {
        if !self.fanout.is_attached() {
            return;
        }
        let _groups = self.group_shard(group);
        let _turn = self
            .fanout
            .exclusive(|jobs| self.run_jobs(jobs, &mut Wakes::Now));
    }

    pub(crate) fn has_fanout_thread(&self) -> bool {
        self.fanout.is_attached()
    }

    pub fn run_fanout_pending(&self) {
        let _turn = self
            .fanout
            .exclusive(|jobs| self.run_jobs(jobs, &mut Wakes::Now));
    }

    /// Runs queued fan-outs in order. Consecutive messages to the same
    /// members (a burst to one group) go out together: one lock and at
    /// most one wake-up per connection for all of them, and the writer
    /// finds them queued together and writes them with one system call.
    fn run_jobs(&self, jobs: &mut VecDeque<Job<Recipients>>, wakes: &mut Wakes) {
        /// Most messages pushed to a connection in one go.
        const MOST: usize = 64;
        let mut frames = Vec::new();
        while let Some(first) = jobs.pop_front() {
            frames.clear();
            frames.push(first.frame);
            while frames.len() < MOST {
                match jobs.front() {
                    Some(next)
                        if next.skip == first.skip && next.members.same_as(&first.members) =>
                    {
                        if let Some(next) = jobs.pop_front() {
                            frames.push(next.frame);
                        }
                    }
                    _ => break,
                }
            }
            let n = match self.flat_list(&first.members) {
                Some(senders) => {
                    self.push_flat(&senders, &first.members, &frames, first.skip, wakes)
                }
                None => first
                    .members
                    .list
                    .iter()
                    .map(|conns| self.push_all_many(conns, &frames, first.skip, wakes))
                    .sum(),
            };
            wakes.flush();
            self.stats.messages_delivered.fetch_add(n as u64, Relaxed);
        }
    }

    /// The connections of `members` in one flat list, for a group large
    /// enough to gain by it: the list an earlier fan-out made, while
    /// nothing has changed since, or one made now. Through the member list,
    /// each recipient costs its user's `Conns` and the user's list of
    /// connections before its queue, each a fetch from memory of its own
    /// once the group is too large for the cache; through a flat list, its
    /// queue alone.
    ///
    /// A list made for `changes` is used for messages pushed while the
    /// tally stood at `changes`. A connection registered after such a push
    /// is missed, and may be: it read its positions after registering, so
    /// after that push's append, and they cover the message.
    fn flat_list(&self, members: &Recipients) -> Option<Arc<[QueueSender]>> {
        /// Smaller groups are fanned out from the member list: what a flat
        /// list saves them is less than what it costs to keep.
        const FLAT_FROM: usize = 32;
        let tally = &members.tally;
        let mut flat = lock(&tally.flat);
        if tally.connections.load(Relaxed) < FLAT_FROM {
            *flat = None;
            return None;
        }
        if let Some(f) = flat.as_ref().filter(|f| f.changes == members.changes) {
            return Some(f.senders.clone());
        }
        // Worth making only to keep for later pushes, and kept only if
        // nothing changed since this one: then it shows the connections as
        // they were at its `changes`. A group whose connections keep
        // changing is fanned out from the member list, as a small one: a
        // list made for one push would cost a clone of every sender.
        if tally.changes.load(Relaxed) != members.changes {
            *flat = None;
            return None;
        }
        let mut senders = Vec::with_capacity(tally.connections.load(Relaxed));
        for conns in members.list.iter() {
            senders.extend_from_slice(&conns.lock());
        }
        let senders: Arc<[QueueSender]> = senders.into();
        // A close while it was made could not drop it (`Tally::sub`), and
        // it must not keep that connection's queue.
        *flat = (tally.changes.load(Relaxed) == members.changes).then(|| Flat {
            changes: members.changes,
            senders: senders.clone(),
        });
        Some(senders)
    }

    /// `push_all_many` over a flat list (`flat_list`) of `members`'
    /// connections.
    fn push_flat(
        &self,
        senders: &[QueueSender],
        members: &Recipients,
        frames: &[Frame],
        skip: Option<ConnId>,
        wakes: &mut Wakes,
    ) -> usize {
        /// Connections looked at together before any of them is pushed to.
        const AHEAD: usize = 16;
        let mut queued = 0;
        let mut overflowed = false;
        for chunk in senders.chunks(AHEAD) {
            // A push takes its queue's lock, and a locked instruction waits
            // for every read of memory before it: one push after another,
            // a group too large for the cache pays its trips to memory one
            // at a time. A first look at each queue of the chunk (is it
            // closing?) sends those trips out together.
            let mut open = [false; AHEAD];
            for (open, c) in open.iter_mut().zip(chunk) {
                *open = !c.is_closing();
            }
            for (c, open) in chunk.iter().zip(open) {
                if !open || Some(c.id) == skip {
                    continue;
                }
                let (n, overflow) = self.push_counted(c, frames, wakes);
                queued += n;
                overflowed |= overflow;
            }
        }
        // Rare: a slow consumer leaves the registry when this fan-out ends
        // (in `push_all_many`, when its user's connections are done).
        if overflowed {
            for conns in members.list.iter() {
                let mut conns = conns.lock();
                let removed = conns.take_where(QueueSender::is_closing);
                self.count_removed(removed, conns.is_empty());
            }
        }
        queued
    }

    /// `push_many_then` to one connection of a fan-out: how many frames
    /// were queued, and whether that overflowed the queue (a slow
    /// consumer, counted here; the caller takes it out of the registry).
    fn push_counted(&self, c: &QueueSender, frames: &[Frame], wakes: &mut Wakes) -> (usize, bool) {
        let (pushed, n) = c.push_many_then(frames, wakes);
        let overflowed = pushed == Pushed::Overflowed;
        if overflowed {
            self.stats.slow_consumer_closes.fetch_add(1, Relaxed);
        }
        (n, overflowed)
    }

    /// Queues `frames` to every connection in `conns` but `skip`; returns
    /// how many frames were queued in all.
    fn push_all_many(
        &self,
        conns: &Conns,
        frames: &[Frame],
        skip: Option<ConnId>,
        wakes: &mut Wakes,
    ) -> usize {
        let mut queued = 0;
        let mut overflowed = false;
        let mut conns = conns.lock();
        for c in conns.iter() {
            if Some(c.id) == skip {
                continue;
            }
            let (n, overflow) = self.push_counted(c, frames, wakes);
            queued += n;
            overflowed |= overflow;
        }
        // Rare, so the common fan-out pays nothing for it: a slow consumer
        // leaves the registry at once (see `remove_where`).
        if overflowed {
            let removed = conns.take_where(QueueSender::is_closing);
            self.count_removed(removed, conns.is_empty());
        }
        queued
    }

    fn push_all(&self, conns: &Conns, frame: &Frame, skip: Option<ConnId>) -> usize {
        self.push_all_many(conns, std::slice::from_ref(frame), skip, &mut Wakes::Now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{channel, NodeId};

    /// In a cluster a process forgets the memberships it mirrors for a user
    /// whose last connection here went. A reconnect of that user to this
    /// process between the look and the leave has loaded them again, and
    /// keeps them.
    #[test]
    fn a_reconnect_between_the_look_and_the_leave_keeps_its_memberships() {
        let hub = Hub::default();
        let (u, g) = (UserId::new("u").unwrap(), GroupId::new("g").unwrap());
        let id = ConnId {
            node: NodeId(1),
            n: 1,
        };
        assert!(hub.admit(&u, 10));
        let (tx, _rx) = channel(id, 8);
        hub.register(&u, tx);
        hub.join(&g, &u, 10).unwrap();
        hub.unregister(&u, id);

        let groups = hub.groups_if_idle(&u);
        assert_eq!(groups, vec![g.clone()]);
        // The user comes back here before the leave runs.
        assert!(hub.admit(&u, 10));
        hub.leave_all_if_idle(&groups, &u);
        assert!(hub.is_member(&g, &u));

        // Gone for good: forgotten.
        hub.release(&u);
        hub.forget_if_idle(&u);
        assert!(!hub.is_member(&g, &u));
        assert_eq!(hub.user_info(&u), (0, Vec::new()));
    }

    /// A large group's flat list (`flat_list`) holds its connections'
    /// queues: once a connection closes the list is out of date, and it is
    /// let go at once rather than at the group's next push.
    #[test]
    fn a_close_lets_go_of_the_flat_list_that_held_its_queue() {
        let hub = Hub::default();
        let g = GroupId::new("g").unwrap();
        let users: Vec<(UserId, ConnId)> = (0..40)
            .map(|n| {
                let u = UserId::new(&format!("u{n}")).unwrap();
                let id = ConnId { node: NodeId(1), n };
                assert!(hub.admit(&u, 10));
                hub.register(&u, channel(id, 8).0);
                hub.join(&g, &u, 10).unwrap();
                (u, id)
            })
            .collect();
        let recipients = {
            let groups = hub.group_shard(&g);
            let members = &groups[&g];
            Recipients {
                list: members.list.clone(),
                tally: members.tally.clone(),
                changes: members.tally.changes.load(Relaxed),
            }
        };
        let flat = hub.flat_list(&recipients).expect("a flat list of 40");
        assert_eq!(flat.len(), 40);
        assert!(
            lock(&recipients.tally.flat).is_some(),
            "kept for the next push"
        );
        hub.unregister(&users[7].0, users[7].1);
        assert!(lock(&recipients.tally.flat).is_none());
    }

    /// A join made on another node is mirrored here only for a user with a
    /// connection here, registered or on its way; for anyone else it would
    /// stay until that user came and went.
    #[test]
    fn a_join_from_elsewhere_is_mirrored_only_for_a_user_connected_here() {
        let hub = Hub::default();
        let (u, g) = (UserId::new("u").unwrap(), GroupId::new("g").unwrap());
        hub.join_if_connected(&g, &u);
        assert!(!hub.is_member(&g, &u));
        assert_eq!(hub.stats.snapshot().groups, 0);

        assert!(hub.admit(&u, 10));
        hub.join_if_connected(&g, &u);
        assert!(hub.is_member(&g, &u));
    }
}
