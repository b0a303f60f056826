//! Fault drills during the cluster soak (`--cluster --drills`, issue 14
//! part 3; docs/testing.md, "Fault drills").
//!
//! After a warm-up, one drill about every 22 s (a 2-minute run has all
//! four once; a longer run cycles through them, at most one a minute):
//!
//! - `redis-kill`: SIGKILL to Redis, 2 s down, restarted on its port and
//!   directory (AOF: its data comes back);
//! - `server-kill`: SIGKILL to one server, 1 s down, restarted on its port
//!   (its clients lose their socket and resume elsewhere or there);
//! - `redis-pause`: SIGSTOP to Redis for 4 s (the servers' heartbeat probes
//!   every second with a one-second command timeout), then SIGCONT;
//! - `netem`: 10 s of delay and loss between the servers and Redis (which
//!   runs in a namespace of its own): netem on both ends of the veth pair,
//!   or, on a kernel without netem, random packet drops on both ends
//!   (classic BPF, netns.rs) and the delay in the relay the servers reach
//!   Redis through (link.rs).
//!
//! Each drill then measures its heal: probe rounds every 250 ms, each one
//! `GET /readyz` on every server and, once all are 200, an API push to a
//! canary user connected to each server, through that server; the hub is
//! healed at the end of the first round where every readyz is 200 and
//! every canary got its push within 2 s. What the clients and drivers saw
//! refused or lost meanwhile is counted against the drill's window (fault
//! to heal plus a grace of 3 s); outside every window it is a failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{api, netns, Ctx, Fleet, Phase, NO_DRILL, SECRET};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    RedisKill,
    ServerKill,
    RedisPause,
    Netem,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::RedisKill,
        Kind::ServerKill,
        Kind::RedisPause,
        Kind::Netem,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::RedisKill => "redis-kill",
            Kind::ServerKill => "server-kill",
            Kind::RedisPause => "redis-pause",
            Kind::Netem => "netem",
        }
    }

    /// How long the fault lasts before it is removed.
    pub fn fault(self) -> Duration {
        match self {
            Kind::RedisKill => Duration::from_secs(2),
            Kind::ServerKill => Duration::from_secs(1),
            Kind::RedisPause => Duration::from_secs(4),
            Kind::Netem => Duration::from_secs(10),
        }
    }
}

/// Seconds of load before the first drill.
const WARM_UP_S: f64 = 20.0;
/// Seconds kept free at the end of the load for the last heal.
const TAIL_S: f64 = 12.0;
/// Grace after a heal during which a late refusal still counts for the drill.
const GRACE: Duration = Duration::from_secs(3);
/// A hub not healed this long after the fault was removed fails the run.
const HEAL_LIMIT: Duration = Duration::from_secs(30);

/// When each drill starts (seconds into the load) and which it is: evenly
/// spaced after the warm-up, 20 to 60 s apart, cycling through the kinds.
pub(crate) fn schedule(load_s: f64) -> Vec<(f64, Kind)> {
    let warm = WARM_UP_S.min(load_s * 0.2);
    let avail = load_s - warm - TAIL_S;
    if avail < 15.0 {
        return Vec::new();
    }
    let spacing = (avail / Kind::ALL.len() as f64).clamp(20.0, 60.0);
    let n = ((avail / spacing).floor() as usize).max(1);
    (0..n)
        .map(|k| (warm + k as f64 * spacing, Kind::ALL[k % Kind::ALL.len()]))
        .collect()
}

/// One probe round: when it ended (seconds since the run started) and
/// whether every readyz was 200 and every canary got its push.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Round {
    pub t_s: f64,
    pub ready: bool,
    pub delivered: bool,
}

/// (ms from `removed_s` until every readyz answered 200, ms until the hub
/// was healed: the end of the first round with readyz and canaries good).
pub(crate) fn heal_ms(removed_s: f64, rounds: &[Round]) -> (Option<f64>, Option<f64>) {
    let after = |f: &dyn Fn(&Round) -> bool| {
        rounds
            .iter()
            .find(|r| f(r))
            .map(|r| ((r.t_s - removed_s) * 1000.0).max(0.0))
    };
    (after(&|r| r.ready), after(&|r| r.ready && r.delivered))
}

fn canary(i: usize) -> String {
    format!("canary-{}", i + 1)
}

/// A canary user's connection to server `i`, reconnected to the same
/// server whenever it is lost; the highest canary number it received.
async fn canary_task(ctx: Arc<Ctx>, i: usize, seen: Arc<AtomicU64>) {
    let addr = ctx.servers[i];
    let prefix = format!("{}-", canary(i));
    while *ctx.phase.borrow() != Phase::Done {
        let token = test_support::sign(
            &json!({"sub": canary(i), "exp": test_support::now() + 7200}),
            SECRET,
        );
        let url = format!("ws://{addr}/ws?token={token}");
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(url),
        )
        .await;
        let Ok(Ok((mut ws, _))) = connected else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            let m = tokio::select! {
                m = ws.next() => m,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if *ctx.phase.borrow() == Phase::Done { break; }
                    continue;
                }
            };
            match m {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    let k = v["body"]["k"].as_str().unwrap_or_default();
                    if let Some(n) = k.strip_prefix(&prefix).and_then(|n| n.parse().ok()) {
                        seen.fetch_max(n, Ordering::SeqCst);
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One probe round (numbered `n`): every readyz, then a push to each
/// canary through its server, each awaited for up to 2 s.
async fn probe(ctx: &Ctx, seen: &[Arc<AtomicU64>], n: u64) -> Round {
    let mut ready = true;
    for &addr in &ctx.servers {
        ready &= matches!(api(addr, "GET", "/readyz", None).await, Ok((200, _, _)));
    }
    let mut delivered = ready;
    if ready {
        for (i, &addr) in ctx.servers.iter().enumerate() {
            let body = json!({"body": {"k": format!("{}-{n}", canary(i))}}).to_string();
            let path = format!("/api/v1/users/{}/messages", canary(i));
            if !matches!(api(addr, "POST", &path, Some(&body)).await, Ok((200, _, _))) {
                delivered = false;
                break;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while delivered && seen.iter().any(|s| s.load(Ordering::SeqCst) < n) {
            if Instant::now() >= deadline {
                delivered = false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Round {
        t_s: ctx.start.elapsed().as_secs_f64(),
        ready,
        delivered,
    }
}

/// Probe rounds every 250 ms until one is good or [`HEAL_LIMIT`] is past.
async fn heal(ctx: &Ctx, seen: &[Arc<AtomicU64>], n: &mut u64) -> Vec<Round> {
    let limit = Instant::now() + HEAL_LIMIT;
    let mut rounds = Vec::new();
    loop {
        *n += 1;
        let r = probe(ctx, seen, *n).await;
        rounds.push(r);
        if (r.ready && r.delivered) || Instant::now() >= limit {
            return rounds;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the drills of [`schedule`] while the load lasts; hands the fleet
/// back with one record per drill.
pub(crate) async fn run(ctx: Arc<Ctx>, mut fleet: Fleet) -> (Fleet, Vec<Value>) {
    let seen: Vec<Arc<AtomicU64>> = ctx.servers.iter().map(|_| Arc::default()).collect();
    let canaries: Vec<_> = seen
        .iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(canary_task(ctx.clone(), i, s.clone())))
        .collect();
    let mut n = 0u64;
    let mut records = Vec::new();
    let load_s = ctx.args.load_secs();
    let plan = schedule(load_s);
    eprintln!(
        "soak: drills at {}",
        plan.iter()
            .map(|(t, k)| format!("{t:.0} s {}", k.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (i, (at, kind)) in plan.into_iter().enumerate() {
        tokio::time::sleep_until((ctx.start + Duration::from_secs_f64(at)).into()).await;
        if *ctx.phase.borrow() != Phase::Load {
            break;
        }
        // The hub must be whole before the fault (the previous heal may
        // have been measured on a round that only just passed).
        let before = heal(&ctx, &seen, &mut n).await;
        let whole_before = before.last().is_some_and(|r| r.ready && r.delivered);
        ctx.drill
            .counts
            .lock()
            .unwrap()
            .resize_with(i + 1, Default::default);
        ctx.drill.now.store(i, Ordering::SeqCst);
        ctx.drill.windows.lock().unwrap().push((ctx.ms(), u64::MAX));
        let started_s = ctx.start.elapsed().as_secs_f64();
        let mut detail = json!({});
        let victim = i / Kind::ALL.len() % ctx.servers.len();
        match kind {
            Kind::RedisKill => {
                let redis = fleet.redis.as_mut().expect("drills run with --cluster");
                tokio::task::block_in_place(|| redis.kill());
                tokio::time::sleep(kind.fault()).await;
                redis.restart().await;
                ctx.redis_pid.store(redis.pid(), Ordering::SeqCst);
                detail = json!({"redis_pid_after": redis.pid()});
            }
            Kind::ServerKill => {
                ctx.server_gen[victim].fetch_add(1, Ordering::SeqCst);
                let s = &mut fleet.servers[victim];
                let addr = s.addr;
                let status = s.kill().await;
                fleet.old_logs.push((victim, s.logs()));
                tokio::time::sleep(kind.fault()).await;
                let new = (fleet.make)().listen(addr).start().await;
                ctx.pids[victim].store(new.pid(), Ordering::SeqCst);
                detail = json!({
                    "server": victim + 1, "addr": addr.to_string(),
                    "killed_status": status.to_string(), "pid_after": new.pid(),
                });
                fleet.servers[victim] = new;
            }
            Kind::RedisPause => {
                let redis = fleet.redis.as_mut().expect("drills run with --cluster");
                tokio::task::block_in_place(|| redis.pause());
                tokio::time::sleep(kind.fault()).await;
                redis.resume();
            }
            Kind::Netem => {
                let ns = fleet.netns.as_ref().expect("drills run in a namespace");
                match ns.shape() {
                    Ok((shaping, how)) => {
                        let (base, jitter) = netns::DELAY_MS;
                        let delay = match (shaping, &fleet.link) {
                            (netns::Shaping::Netem, _) => None,
                            (netns::Shaping::LossOnly, Some(link)) => {
                                link.set_delay(base, jitter);
                                Some(format!("{base} ms ± {jitter} ms, each way, in the relay"))
                            }
                            (netns::Shaping::LossOnly, None) => {
                                ctx.tally
                                    .fail("netem drill", "no relay to delay in".to_owned());
                                None
                            }
                        };
                        tokio::time::sleep(kind.fault()).await;
                        let counts = ns.drop_counts();
                        detail = json!({
                            "shaped": how, "delay": delay,
                            "packets": counts.map(|c| c.0), "dropped": counts.map(|c| c.1),
                            "devices": [&ns.host_if, &ns.ns_if],
                        });
                    }
                    Err(e) => ctx
                        .tally
                        .fail("netem drill", format!("cannot shape the veth: {e:#}")),
                }
                if let Some(link) = &fleet.link {
                    link.set_delay(0, 0);
                }
                ns.unshape();
            }
        }
        let removed_s = ctx.start.elapsed().as_secs_f64();
        let rounds = heal(&ctx, &seen, &mut n).await;
        let (ready_ms, healed_ms) = heal_ms(removed_s, &rounds);
        if healed_ms.is_none() {
            ctx.tally.fail(
                "not healed",
                format!(
                    "{} at {started_s:.1} s: not healed {HEAL_LIMIT:?} after the fault was removed \
                     (readyz {}, canaries {})",
                    kind.name(),
                    if ready_ms.is_some() { "200" } else { "not 200" },
                    if rounds.last().is_some_and(|r| r.delivered) { "reached" } else { "not reached" }
                ),
            );
        }
        tokio::time::sleep(GRACE).await;
        ctx.drill.now.store(NO_DRILL, Ordering::SeqCst);
        ctx.drill.windows.lock().unwrap()[i].1 = ctx.ms();
        let counts = ctx.drill.counts.lock().unwrap()[i].clone();
        let r = json!({
            "drill": kind.name(),
            "started_s": started_s,
            "fault_removed_s": removed_s,
            "fault_ms": (removed_s - started_s) * 1000.0,
            "ready_after_ms": ready_ms,
            "healed_after_ms": healed_ms,
            "probe_rounds": rounds.len(),
            "whole_before": whole_before,
            "during": counts,
            "detail": detail,
        });
        eprintln!(
            "soak: drill {} at {started_s:.1} s: fault {:.1} s, readyz after {}, healed after {}; {}",
            kind.name(),
            removed_s - started_s,
            ready_ms.map_or("never".into(), |m| format!("{m:.0} ms")),
            healed_ms.map_or("never".into(), |m| format!("{m:.0} ms")),
            r["during"]
        );
        records.push(r);
    }
    for c in canaries {
        c.abort();
    }
    (fleet, records)
}

/// A message key for the refused/delivered check: `from/k` for a client's
/// own send or publish, `api/k` for an API push.
pub(crate) fn key(body: &Value) -> Option<String> {
    let k = body["k"].as_str()?;
    Some(match body["from"].as_str() {
        Some(from) => format!("{from}/{k}"),
        None => format!("api/{k}"),
    })
}

/// Messages delivered that had been refused (`unavailable`): key, drill,
/// sent at (ms), refused after (ms).
pub(crate) fn refused_delivered(ctx: &Ctx) -> Vec<(String, usize, u64, u64)> {
    let refused = ctx.drill.refused.lock().unwrap();
    let delivered = ctx.drill.delivered.lock().unwrap();
    refused
        .iter()
        .filter(|(k, _)| delivered.contains(*k))
        .map(|(k, &(d, t, took))| (k.clone(), d, t, took))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_minutes_hold_each_drill_once_after_the_warm_up() {
        let plan = schedule(120.0);
        let kinds: Vec<Kind> = plan.iter().map(|p| p.1).collect();
        assert_eq!(kinds, Kind::ALL);
        assert_eq!(plan[0].0, 20.0);
        let gaps: Vec<f64> = plan.windows(2).map(|w| w[1].0 - w[0].0).collect();
        assert!(gaps.iter().all(|g| (20.0..=25.0).contains(g)), "{gaps:?}");
        let (last, kind) = plan[3];
        assert!(last + kind.fault().as_secs_f64() + 5.0 < 120.0);
    }

    #[test]
    fn long_runs_cycle_and_short_ones_have_none() {
        let plan = schedule(1800.0);
        assert!(plan.len() >= 28, "{}", plan.len());
        assert_eq!(plan[4].1, Kind::RedisKill);
        assert!(plan.windows(2).all(|w| w[1].0 - w[0].0 <= 60.0));
        assert!(schedule(20.0).is_empty());
        assert_eq!(schedule(60.0).len(), 1);
    }

    #[test]
    fn heal_is_the_first_round_with_readyz_and_canaries() {
        let r = |t_s, ready, delivered| Round {
            t_s,
            ready,
            delivered,
        };
        let rounds = [
            r(10.2, false, false),
            r(10.5, true, false),
            r(10.9, true, true),
        ];
        let (ready, healed) = heal_ms(10.0, &rounds);
        assert!((ready.unwrap() - 500.0).abs() < 1e-6);
        assert!((healed.unwrap() - 900.0).abs() < 1e-6);
        assert_eq!(heal_ms(10.0, &[r(11.0, true, false)]), (Some(1000.0), None));
        assert_eq!(heal_ms(10.0, &[]), (None, None));
    }

    #[test]
    fn keys_tell_client_messages_from_api_pushes() {
        assert_eq!(
            key(&json!({"k": "s5", "from": "u3"})).as_deref(),
            Some("u3/s5")
        );
        assert_eq!(
            key(&json!({"k": "user_push-9"})).as_deref(),
            Some("api/user_push-9")
        );
        assert_eq!(key(&json!("hi")), None);
    }
}
