//! Presence and liveness of one process in the cluster: a heartbeat every
//! second marks the node live for `NODE_TTL` (so a process that dies drops
//! out of every count within that time), tells an outage from service,
//! and notices a Redis that came back without its data (its dataset id is
//! gone). Coming back is done in order: the pub/sub side resubscribes, the
//! node's presence is rewritten from what it holds, the channels it reads
//! are filled from the streams' logs with what the lost pub/sub connection
//! missed, and only then does the backplane answer again.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::backplane::{local_now_ms, RedisBackplane};
use super::subscriber;

const EVERY: Duration = Duration::from_secs(1);
/// A node not heard from for this long is dead to the others.
pub const NODE_TTL: Duration = Duration::from_secs(6);
/// Presence is rewritten whole this often (in beats) even when nothing went
/// wrong, repairing any change that did not get through.
const SYNC_EVERY: u32 = 30;

pub async fn run(bp: Arc<RedisBackplane>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(EVERY);
    let mut run_id: Option<String> = None;
    let mut beats_since_sync = 0u32;
    let mut ever_up = false;
    let mut beats = 0u64;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        // A fresh id each time: whoever finds the key gone writes a value
        // no node has seen, so every node notices the loss.
        beats += 1;
        let candidate = format!("{}-{:x}-{beats}", bp.node, local_now_ms());
        let was_up = bp.up();
        // Bounded by the beat, not by the commands' longer wait for an
        // answer: a Redis that does not answer in a second is down for new
        // work at once, while what was sent before waits for its answer.
        let beat = tokio::time::timeout(EVERY, bp.heartbeat(NODE_TTL, &candidate)).await;
        let (run, redis_now, lapsed) = match beat {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) | Err(_) => {
                if bp.heartbeat_ok.swap(false, SeqCst) {
                    tracing::warn!(node = %bp.node, "broker down: Redis does not answer");
                }
                continue;
            }
        };
        bp.clock_offset_ms.store(redis_now - local_now_ms(), SeqCst);
        if run_id.as_ref().is_some_and(|known| known != &run) {
            // Redis lost its data: memberships that lived only there are
            // gone, and this node's mirror of them must go too.
            tracing::warn!(node = %bp.node, "Redis came back without its data");
            bp.hub.forget_all_groups();
            beats_since_sync = SYNC_EVERY;
        }
        run_id = Some(run);
        beats_since_sync += 1;
        let generation = bp.pubsub_generation.load(SeqCst);
        let resubscribed = generation != bp.synced_generation.load(SeqCst);
        let heartbeat_was_ok = bp.heartbeat_ok.load(SeqCst);
        // `lapsed`: this process stalled past `NODE_TTL` (a pause, a frozen
        // VM) without losing Redis; another node's beat may have dropped
        // its presence as a dead node's. Rewritten now, not at the next
        // periodic sync up to 30 s later.
        if lapsed && ever_up {
            tracing::warn!(node = %bp.node, "this node was taken for dead; rewriting its presence");
        }
        if !heartbeat_was_ok || resubscribed || lapsed || beats_since_sync >= SYNC_EVERY {
            // Presence, then the memberships the node mirrors, then the
            // channels those need, before the node answers again.
            let synced = bp.sync_presence().await.is_ok()
                && bp.resync_memberships().await.is_ok()
                && subscriber::ensure(&bp, subscriber::wanted(&bp).into_iter().collect())
                    .await
                    .is_ok()
                // What the pub/sub side missed while it was away, before
                // anything new is welcomed.
                && subscriber::catch_up(&bp).await.is_ok();
            if !synced {
                bp.heartbeat_ok.store(false, SeqCst);
                continue;
            }
            beats_since_sync = 0;
            bp.synced_generation.store(generation, SeqCst);
        }
        bp.heartbeat_ok.store(true, SeqCst);
        if !was_up && bp.up() {
            if ever_up {
                bp.reconnects.fetch_add(1, SeqCst);
            }
            ever_up = true;
            tracing::info!(node = %bp.node, "broker up");
        }
    }
}

/// Starts the background tasks of a cluster node.
pub fn start(bp: &Arc<RedisBackplane>, shutdown: &CancellationToken) {
    tokio::spawn(super::subscriber::run(bp.clone(), shutdown.clone()));
    tokio::spawn(super::subscriber::sweep(bp.clone(), shutdown.clone()));
    tokio::spawn(run(bp.clone(), shutdown.clone()));
}
