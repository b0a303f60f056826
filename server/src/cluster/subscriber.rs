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

use std::collections::HashSet;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use hub_core::{Control, Inbound, Placed, StreamName};
use tokio_util::sync::CancellationToken;

use super::backplane::{RedisBackplane, Subscriptions};
use super::wire::{self, Arrived, Part};
use hub_core::Unavailable;

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
            let mut s = subs(bp);
            s.subscribed.extend(missing);
            Ok(())
        }
        _ => Err(Unavailable),
    }
}

/// Keeps the pub/sub connection: connects, subscribes to what the hub
/// needs, routes what arrives, and starts again when the connection ends.
pub async fn run(bp: Arc<RedisBackplane>, shutdown: CancellationToken) {
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
        {
            let mut s = subs(&bp);
            s.sink = Some(sink);
            s.subscribed = channels.into_iter().collect();
            s.idle.clear();
        }
        bp.pubsub_generation.fetch_add(1, SeqCst);
        bp.pubsub_up.store(true, SeqCst);
        tracing::debug!(node = %bp.node, "pub/sub connected and subscribed");
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => route(&bp, Bytes::copy_from_slice(msg.get_payload_bytes())),
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
fn route(bp: &Arc<RedisBackplane>, payload: Bytes) {
    let hub = &bp.hub;
    match wire::decode(payload) {
        Some(Arrived::Message(p, Part::Target)) => {
            hub.deliver(&Placed {
                stream: p.target.stream(),
                skip: p.origin.as_ref().map(|o| o.conn),
                frame: p.frame,
            });
        }
        Some(Arrived::Message(p, Part::SenderCopies)) => {
            if let Some(origin) = p.origin {
                hub.deliver(&Placed {
                    stream: StreamName::Inbox(origin.user),
                    skip: Some(origin.conn),
                    frame: p.frame,
                });
            }
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
        None => tracing::debug!("unreadable pub/sub payload ignored"),
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
