//! The pub/sub side of cluster mode: one dedicated connection (never the
//! command connection), subscribed by interest, and what arrives on it.
//!
//! A process is subscribed to `all`, to its own node channel, to the
//! channel of every user it holds a connection of and of every group one
//! of them is in. New interest is subscribed before a connection is
//! welcomed (`ensure`); interest that went away is dropped by `sweep` two
//! sweeps later, so a user who reconnects at once does not cost an
//! unsubscribe and a subscribe. After a lost connection everything is
//! resubscribed from the hub's own list.
//!
//! Every channel carries one stream, numbered by the script that
//! published on it, so a node knows per channel the last seq it delivered
//! (`Track`). A seq past the next one (same epoch) means the node missed
//! messages: it holds that channel's arrivals, reads what it missed from
//! the stream's log in Redis (a spawned task: the read loop never waits)
//! and delivers it, then what it held, in order. After the pub/sub
//! connection was lost, every channel is held that way until the
//! heartbeat has filled it (`catch_up`) — before the node serves again, so
//! no connection welcomed meanwhile can get a message from before its
//! welcome position. Unlike centrifuge, which disconnects the client on a
//! gap (the spurious 3010s of centrifugo#1120), the gap is filled, and a
//! client sees a jump only for messages the log no longer holds.
//! A channel subscribed anew starts without a track: the first message
//! sets it (what came before belongs to positions read after the
//! subscribe).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use hub_core::{ConnId, Control, Epoch, Frame, Inbound, Placed, StreamName, Tag};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::backplane::{ReadAsk, RedisBackplane, StreamRead, Subscriptions};
use super::wire::{self, Arrived};
use hub_core::Unavailable;

/// Arrivals a channel holds while its gap is filled; past this, new ones
/// are dropped, and the next arrival after the fill is a gap again, filled
/// from the log in turn.
const MAX_HELD: usize = 10_000;
/// How soon a gap fill whose read failed tries again, first and at most.
/// It keeps trying while its channel is held: delivering what it holds
/// with the gap (as it did after five tries) left connected clients
/// without the missing messages until they reconnected, which a link that
/// stays bad for seconds made happen (the soak's drills). A pub/sub
/// reconnect takes the channel over (`catch_up`) and ends this fill.
const FILL_RETRY: Duration = Duration::from_millis(200);
const FILL_RETRY_MAX: Duration = Duration::from_secs(2);
/// Channels caught up at once after a reconnect.
const CATCH_UP_BATCH: usize = 64;

static NEXT_TRACK: AtomicU64 = AtomicU64::new(1);

/// Where one channel's stream stands on this node.
#[derive(Debug)]
pub struct Track {
    /// Tells a track from a newer one of the same channel (a fill of an
    /// old one must not touch it).
    id: u64,
    stream: StreamName,
    epoch: Epoch,
    /// The last seq delivered here.
    last: u64,
    /// While a fill runs: what arrived meanwhile, in order.
    held: Option<Vec<Arrival>>,
    /// Held since the pub/sub connection came back: the heartbeat fills it.
    catch_up: bool,
}

/// One placed message as it arrived.
#[derive(Debug)]
struct Arrival {
    stream: StreamName,
    epoch: Epoch,
    seq: u64,
    skip: Option<ConnId>,
    frame: Frame,
}

/// What a track makes of an arrival.
enum Step {
    Deliver,
    Drop,
    Gap,
}

fn tracks(bp: &RedisBackplane) -> MutexGuard<'_, std::collections::HashMap<String, Track>> {
    bp.tracks.lock().unwrap_or_else(|e| e.into_inner())
}

impl Track {
    fn step(&self, a: &Arrival) -> Step {
        if a.epoch != self.epoch {
            // Another numbering: from its start, or what came before is
            // missing (Redis lost its data and others published first).
            if a.seq <= 1 {
                Step::Deliver
            } else {
                Step::Gap
            }
        } else if a.seq <= self.last {
            Step::Drop
        } else if a.seq == self.last + 1 {
            Step::Deliver
        } else {
            Step::Gap
        }
    }

    fn deliver(&mut self, bp: &RedisBackplane, channel: &str, a: Arrival) {
        self.epoch = a.epoch;
        self.last = a.seq;
        bp.hub.deliver(&Placed {
            stream: a.stream,
            frame: a.frame,
            skip: a.skip,
        });
        // Under the tracks lock, as `routed` registers: none is missed.
        if bp.routed_waiting.load(SeqCst) > 0 {
            release_routed(bp, channel, self.epoch, self.last);
        }
    }
}

/// The longest an ack waits for its own message to come back on pub/sub
/// (`routed`). Past it the ack goes anyway: it was published, so
/// refusing it would deliver a refused message.
pub const ROUTED_WAIT: Duration = Duration::from_secs(2);

/// Whether this node is subscribed to `channel` now.
pub fn reads(bp: &RedisBackplane, channel: &str) -> bool {
    subs(bp).subscribed.contains(channel)
}

/// What `routed` does on a channel whose stream this node has no track of
/// in the position's numbering.
#[derive(Debug, Clone, Copy)]
pub enum Untracked {
    /// Wait: the caller's own message is on its way and starts the track.
    Wait,
    /// Go at once: everything up to the position has arrived (a join's
    /// barrier came back behind it).
    Go,
}

/// An ack waiting for this node to route a seq of a channel's stream.
#[derive(Debug)]
pub struct RoutedWaiter {
    epoch: Epoch,
    seq: u64,
    tx: oneshot::Sender<()>,
}

/// Resolves once this node has routed seq `seq` (of `epoch`) of the stream
/// on `channel` to its connections, and with it every earlier one: the ack
/// of a `send` or `publish` reports that position (§3), and a client that
/// resumes from it must have had every message before it. Redis answers
/// the script on the command connection and publishes on the pub/sub one,
/// so an ack can overtake an earlier message still on its way; written
/// after this, it is queued behind that message (`Connection::queue_own`).
/// At once when this node does not read the channel, or already routed
/// the seq; at most `ROUTED_WAIT`. A join's ack, once its barrier came
/// back (backplane.rs), waits the same way for what a gap fill still
/// holds, but only on a channel with a track in the same numbering
/// (`Untracked::Go`): no message of its own is coming. `false` when it
/// gave up (the time ran out, or the pub/sub side stopped at shutdown):
/// the position must then not be given to the client.
pub async fn routed(
    bp: &RedisBackplane,
    channel: &str,
    epoch: Epoch,
    seq: u64,
    untracked: Untracked,
) -> bool {
    {
        // While the pub/sub connection is down nothing is subscribed, but
        // what it missed is filled in once it is back (`catch_up`): wait.
        let s = subs(bp);
        if s.sink.is_some() && !s.subscribed.contains(channel) {
            return true;
        }
    }
    let rx = {
        let all = tracks(bp);
        let mut waiting = routed_waiters(bp);
        // Nothing comes back once the pub/sub side has stopped (`run`).
        if bp.stopped.load(SeqCst) {
            return false;
        }
        let done = match (all.get(channel), untracked) {
            (Some(t), _) if t.epoch == epoch => t.last >= seq,
            (_, Untracked::Wait) => false,
            (_, Untracked::Go) => true,
        };
        if done {
            return true;
        }
        let (tx, rx) = oneshot::channel();
        waiting
            .entry(channel.to_owned())
            .or_default()
            .push(RoutedWaiter { epoch, seq, tx });
        bp.routed_waiting.fetch_add(1, SeqCst);
        rx
    };
    // Declared before the wait: dropped after it, also when the caller
    // goes away mid-wait, so no waiter outlives its receiver.
    let _prune = PruneWaiters { bp, channel };
    match tokio::time::timeout(ROUTED_WAIT, rx).await {
        Ok(Ok(())) => true,
        // Dropped: the pub/sub side stopped for good (`run`).
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::debug!(
                channel,
                seq,
                "ack sent without its position: its message did not come back"
            );
            false
        }
    }
}

/// Removes the waiters of a channel whose receivers are gone (timed out,
/// or their caller dropped).
struct PruneWaiters<'a> {
    bp: &'a RedisBackplane,
    channel: &'a str,
}

impl Drop for PruneWaiters<'_> {
    fn drop(&mut self) {
        let mut waiting = routed_waiters(self.bp);
        if let Some(list) = waiting.get_mut(self.channel) {
            let before = list.len();
            list.retain(|w| !w.tx.is_closed());
            self.bp
                .routed_waiting
                .fetch_sub(before - list.len(), SeqCst);
            if list.is_empty() {
                waiting.remove(self.channel);
            }
        }
    }
}

/// Lets the acks waiting on `channel` for a seq up to `last` go.
fn release_routed(bp: &RedisBackplane, channel: &str, epoch: Epoch, last: u64) {
    let mut waiting = routed_waiters(bp);
    let Some(list) = waiting.get_mut(channel) else {
        return;
    };
    let before = list.len();
    let mut kept = Vec::new();
    for w in list.drain(..) {
        if w.epoch == epoch && w.seq <= last {
            let _ = w.tx.send(());
        } else if !w.tx.is_closed() {
            kept.push(w);
        }
    }
    bp.routed_waiting.fetch_sub(before - kept.len(), SeqCst);
    if kept.is_empty() {
        waiting.remove(channel);
    } else {
        *list = kept;
    }
}

fn routed_waiters(
    bp: &RedisBackplane,
) -> MutexGuard<'_, std::collections::HashMap<String, Vec<RoutedWaiter>>> {
    bp.routed_waiters.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a subscribe may take before it counts as an outage.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Time between sweeps of channels no local connection reads.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

fn subs(bp: &RedisBackplane) -> std::sync::MutexGuard<'_, Subscriptions> {
    bp.subs.lock().unwrap_or_else(|e| e.into_inner())
}

/// The channels this process needs now.
pub fn wanted(bp: &RedisBackplane) -> HashSet<String> {
    let mut channels: HashSet<String> = bp
        .hub
        .topics()
        .iter()
        .map(|t| bp.names.topic_channel(t))
        .collect();
    channels.insert(bp.names.all_channel());
    channels.insert(bp.names.node_channel(bp.node));
    channels
}

/// Subscribes to whichever of `channels` this process is not subscribed
/// to yet, and returns once Redis confirmed it.
pub async fn ensure(bp: &RedisBackplane, channels: Vec<String>) -> Result<(), Unavailable> {
    let (mut sink, missing) = {
        let mut s = subs(bp);
        let sink = s.sink.clone().ok_or(Unavailable)?;
        // Read again: a sweep must not drop them now.
        for c in &channels {
            s.idle.remove(c);
        }
        let missing: Vec<String> = channels
            .into_iter()
            .filter(|c| !s.subscribed.contains(c))
            .collect();
        (sink, missing)
    };
    if missing.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(&missing)).await {
        Ok(Ok(())) => {
            // Whatever track these had is from before (an unsubscribe in
            // flight): the first message from now on sets it. Not for one
            // another `ensure` subscribed meanwhile: its track is current.
            let mut s = subs(bp);
            let fresh: Vec<String> = missing
                .into_iter()
                .filter(|c| !s.subscribed.contains(c))
                .collect();
            forget(bp, &fresh);
            s.subscribed.extend(fresh);
            Ok(())
        }
        _ => Err(Unavailable),
    }
}

/// Keeps the pub/sub connection: connects, subscribes to what the hub
/// needs, routes what arrives, and starts again when the connection ends;
/// at shutdown, stops for good and lets go of whatever waited for a
/// message to come back (a frame finishing as its connection closes is
/// answered without waiting for it, `ws/connection.rs`).
pub async fn run(bp: Arc<RedisBackplane>, shutdown: CancellationToken) {
    keep_subscribed(&bp, &shutdown).await;
    // Flag first, under the waiters' lock: a waiter that registers later
    // sees it (`routed`); every one registered before is dropped here.
    let dropped = {
        let mut waiting = routed_waiters(&bp);
        bp.stopped.store(true, SeqCst);
        std::mem::take(&mut *waiting)
    };
    drop(dropped);
    bp.stop_barriers();
}

async fn keep_subscribed(bp: &Arc<RedisBackplane>, shutdown: &CancellationToken) {
    let bp = bp.clone();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let connected = tokio::time::timeout(SUBSCRIBE_TIMEOUT, bp.client.get_async_pubsub()).await;
        let Ok(Ok(pubsub)) = connected else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                _ = shutdown.cancelled() => return,
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let channels: Vec<String> = wanted(&bp).into_iter().collect();
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(&channels)).await {
            Ok(Ok(())) => {}
            // Refused at once (a password missing, Redis still loading):
            // back off as for a failed connect rather than spin.
            _ => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        }
        // Whatever was published while no connection was subscribed is
        // missed: hold every channel until the heartbeat filled it. Tracks
        // of channels not subscribed again are dropped.
        {
            let keep: HashSet<&String> = channels.iter().collect();
            tracks(&bp).retain(|c, _| keep.contains(c));
        }
        hold_all(&bp);
        {
            let mut s = subs(&bp);
            s.sink = Some(sink);
            s.subscribed = channels.into_iter().collect();
            s.idle.clear();
        }
        bp.pubsub_generation.fetch_add(1, SeqCst);
        bp.pubsub_up.store(true, SeqCst);
        // Filled at once, while the logs still hold what was missed; the
        // heartbeat waits for it (and retries it) before serving again.
        {
            let bp = bp.clone();
            tokio::spawn(async move {
                let _ = catch_up(&bp).await;
            });
        }
        tracing::debug!(node = %bp.node, "pub/sub connected and subscribed");
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => route(
                        &bp,
                        msg.get_channel_name(),
                        Bytes::copy_from_slice(msg.get_payload_bytes()),
                    ),
                    None => break,
                },
                _ = shutdown.cancelled() => return,
            }
        }
        bp.pubsub_up.store(false, SeqCst);
        let mut s = subs(&bp);
        s.sink = None;
        s.subscribed.clear();
        drop(s);
        tracing::warn!(node = %bp.node, "pub/sub connection lost; reconnecting");
    }
}

/// Hands one payload to the hub. Never awaits: the pub/sub connection
/// buffers without bound behind this loop, so anything slow is spawned.
fn route(bp: &Arc<RedisBackplane>, channel: &str, payload: Bytes) {
    let hub = &bp.hub;
    match wire::decode(payload) {
        Some(Arrived::Message(p, part)) => {
            let Some(stream) = p.stream(part) else {
                return;
            };
            let arrival = Arrival {
                epoch: p.epoch,
                seq: p.seq,
                skip: p.origin.as_ref().map(|o| o.conn),
                frame: p.frame.tagged(Tag {
                    stream: stream.key_at(&p.epoch),
                    seq: p.seq,
                }),
                stream,
            };
            arrive(bp, channel, arrival);
        }
        Some(Arrived::Control(control, ack)) => {
            hub.control(&control);
            if let (Control::Joined { group, .. }, Some((node, token))) = (&control, ack) {
                // Subscribe to the group, then tell the joining node, so a
                // push right after the join's answer reaches this node.
                let bp = bp.clone();
                let channel = bp.names.group_channel(group);
                tokio::spawn(async move {
                    if ensure(&bp, vec![channel]).await.is_ok() {
                        bp.send_join_ack(node, token).await;
                    }
                });
            }
        }
        Some(Arrived::JoinAck(token)) => bp.join_acked(token),
        Some(Arrived::Barrier(node, token)) if node == bp.node.0 => bp.join_acked(token),
        Some(Arrived::Barrier(..)) => {}
        None => tracing::debug!("unreadable pub/sub payload ignored"),
    }
}

/// The first message of a channel seen here starts its track.
fn start_track(
    bp: &RedisBackplane,
    all: &mut std::collections::HashMap<String, Track>,
    channel: &str,
    a: Arrival,
) {
    let mut track = Track {
        id: NEXT_TRACK.fetch_add(1, SeqCst),
        stream: a.stream.clone(),
        epoch: a.epoch,
        last: a.seq,
        held: None,
        catch_up: false,
    };
    track.deliver(bp, channel, a);
    all.insert(channel.to_owned(), track);
}

/// A placed message on `channel`: delivered in seq order, a gap filled
/// first.
fn arrive(bp: &Arc<RedisBackplane>, channel: &str, a: Arrival) {
    let mut all = tracks(bp);
    let Some(track) = all.get_mut(channel) else {
        start_track(bp, &mut all, channel, a);
        return;
    };
    if let Some(held) = &mut track.held {
        if held.len() < MAX_HELD {
            held.push(a);
        }
        return;
    }
    match track.step(&a) {
        Step::Deliver => track.deliver(bp, channel, a),
        Step::Drop => {}
        Step::Gap => {
            tracing::debug!(
                channel,
                last = track.last,
                seq = a.seq,
                "gap: filling from the log"
            );
            track.held = Some(vec![a]);
            let id = track.id;
            drop(all);
            let bp = bp.clone();
            let channel = channel.to_owned();
            tokio::spawn(async move { fill(&bp, &channel, id).await });
        }
    }
}

/// What to read to fill `channel` (track `id`), if it is still held.
fn fill_ask(bp: &RedisBackplane, channel: &str, id: u64) -> Option<ReadAsk> {
    let all = tracks(bp);
    match all.get(channel) {
        Some(t) if t.id == id && t.held.is_some() => {
            // `~`: this numbering after `last`, or another one from its
            // start.
            let limit = bp.history.max_messages;
            Some((t.stream.clone(), format!("~{}", t.epoch), t.last, limit))
        }
        _ => None,
    }
}

/// Delivers what the log gave for a held channel, then what it held, in
/// order. What is still missing is not in the log any more (or Redis is
/// gone): delivered jumps and all.
fn fill_apply(bp: &RedisBackplane, channel: &str, id: u64, read: Option<StreamRead>) {
    let mut all = tracks(bp);
    let Some(track) = all.get_mut(channel).filter(|t| t.id == id) else {
        return;
    };
    if let Some(read) = read {
        if read.current.epoch != track.epoch {
            track.epoch = read.current.epoch;
            track.last = 0;
        }
        for e in read.entries {
            if e.seq > track.last {
                let arrival = Arrival {
                    stream: track.stream.clone(),
                    epoch: read.current.epoch,
                    seq: e.seq,
                    skip: e.origin,
                    frame: e.frame,
                };
                track.deliver(bp, channel, arrival);
            }
        }
    }
    for a in track.held.take().unwrap_or_default() {
        match track.step(&a) {
            Step::Drop => {}
            Step::Deliver | Step::Gap => track.deliver(bp, channel, a),
        }
    }
    track.catch_up = false;
}

/// Fills one held channel (a gap seen on it), retrying a failed read for
/// as long as the channel is held by this fill.
async fn fill(bp: &RedisBackplane, channel: &str, id: u64) {
    let mut pause = FILL_RETRY;
    loop {
        let Some(ask) = fill_ask(bp, channel, id) else {
            return;
        };
        let read = match bp.read_streams(std::slice::from_ref(&ask)).await {
            Ok(mut r) => r.pop(),
            Err(_) => None,
        };
        if read.is_none() {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(FILL_RETRY_MAX);
            continue;
        }
        fill_apply(bp, channel, id, read);
        return;
    }
}

/// After the pub/sub connection came back: fills every channel held since
/// (`run` holds them before it reads the new connection), `CATCH_UP_BATCH`
/// channels per read of Redis. Fails when Redis did not answer; those
/// channels stay held and the heartbeat tries again.
pub async fn catch_up(bp: &RedisBackplane) -> Result<(), Unavailable> {
    let due: Vec<(String, u64)> = tracks(bp)
        .iter()
        .filter(|(_, t)| t.catch_up)
        .map(|(c, t)| (c.clone(), t.id))
        .collect();
    for batch in due.chunks(CATCH_UP_BATCH) {
        let (held, asks): (Vec<&(String, u64)>, Vec<ReadAsk>) = batch
            .iter()
            .filter_map(|c| fill_ask(bp, &c.0, c.1).map(|a| (c, a)))
            .unzip();
        let reads = bp.read_streams(&asks).await?;
        for ((channel, id), read) in held.into_iter().zip(reads) {
            fill_apply(bp, channel, *id, Some(read));
        }
    }
    Ok(())
}

/// Holds every tracked channel until `catch_up` has filled what the lost
/// connection missed.
fn hold_all(bp: &RedisBackplane) {
    for t in tracks(bp).values_mut() {
        t.catch_up = true;
        if t.held.is_none() {
            t.held = Some(Vec::new());
        }
    }
}

/// Forgets the tracks of `channels`: subscribed anew, or not any more.
fn forget(bp: &RedisBackplane, channels: &[String]) {
    let mut all = tracks(bp);
    for c in channels {
        all.remove(c);
    }
}

/// Drops channels that no local connection has read for two sweeps, and
/// subscribes any the hub reads but the connection lacks (memberships a
/// resync restored, a subscribe an unsubscribe overtook).
pub async fn sweep(bp: Arc<RedisBackplane>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let reading = wanted(&bp);
        let (sink, stale) = {
            let mut s = subs(&bp);
            let Some(sink) = s.sink.clone() else { continue };
            let unread: HashSet<String> = s.subscribed.difference(&reading).cloned().collect();
            let stale: Vec<String> = unread.intersection(&s.idle).cloned().collect();
            s.idle = unread
                .difference(&stale.iter().cloned().collect())
                .cloned()
                .collect();
            for c in &stale {
                s.subscribed.remove(c);
            }
            (sink, stale)
        };
        let missing: Vec<String> = {
            let s = subs(&bp);
            reading.difference(&s.subscribed).cloned().collect()
        };
        if !missing.is_empty() {
            let _ = ensure(&bp, missing).await;
        }
        if !stale.is_empty() {
            let mut sink = sink;
            let _ = tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.unsubscribe(&stale)).await;
            forget(&bp, &stale);
            // A connection that arrived while the unsubscribe was on its
            // way may need one of them again: subscribe it back.
            let now_wanted = wanted(&bp);
            let again: Vec<String> = stale
                .into_iter()
                .filter(|c| now_wanted.contains(c))
                .collect();
            if !again.is_empty() {
                let _ = ensure(&bp, again).await;
            }
        }
    }
}
