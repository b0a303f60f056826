//! The scenarios only a cluster has (`--cluster`): how many Redis commands
//! a group push costs at two group sizes, and how long the servers take to
//! serve again after Redis restarts. Both read Redis itself with
//! `redis-cli` (`INFO commandstats`, `PUBSUB CHANNELS`, `CLIENT LIST`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use serde_json::{json, Value};
use test_support::RedisServer;

use super::lines::Order;
use super::load_args::{Mode, Tuning};
use super::procs::{collect, start_loads, LoadPlan, LogEvent, RunContext, Servers};
use super::scenarios::Pushers;
use super::BenchArgs;

/// `INFO commandstats`: calls and microseconds per command, as Redis
/// counts them. A script's own `redis.call`s are counted under their
/// commands as well as the script's `evalsha`, so the two are told apart
/// below.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandStats(BTreeMap<String, (u64, u64)>);

impl CommandStats {
    pub fn read(redis: &RedisServer) -> anyhow::Result<Self> {
        let text = redis
            .try_cli(&["INFO", "commandstats"])
            .map_err(|e| anyhow!("redis-cli INFO commandstats: {e}"))?;
        Ok(Self::parse(&text))
    }

    /// Lines like `cmdstat_evalsha:calls=3,usec=120,usec_per_call=40.00,...`.
    fn parse(text: &str) -> Self {
        let mut stats = BTreeMap::new();
        for line in text.lines() {
            let Some((name, fields)) = line
                .trim()
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            stats.insert(name.to_owned(), (field("calls"), field("usec")));
        }
        Self(stats)
    }

    /// What was counted since `before`.
    pub fn since(&self, before: &Self) -> Self {
        let delta = self
            .0
            .iter()
            .map(|(name, &(calls, usec))| {
                let (c0, u0) = before.0.get(name).copied().unwrap_or((0, 0));
                (
                    name.clone(),
                    (calls.saturating_sub(c0), usec.saturating_sub(u0)),
                )
            })
            .filter(|(_, (calls, _))| *calls > 0)
            .collect();
        Self(delta)
    }

    pub fn calls(&self, name: &str) -> u64 {
        self.0.get(name).map_or(0, |c| c.0)
    }

    pub fn usec(&self, name: &str) -> u64 {
        self.0.get(name).map_or(0, |c| c.1)
    }

    pub fn usec_per_call(&self, name: &str) -> f64 {
        self.usec(name) as f64 / self.calls(name).max(1) as f64
    }

    pub fn to_json(&self) -> Value {
        self.0
            .iter()
            .map(|(name, (calls, usec))| (name.clone(), json!({"calls": calls, "usec": usec})))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// A window's commands split into the group pushes and what the servers
/// do by themselves meanwhile. This reads the scripts of
/// server/src/cluster/scripts.rs: the group push script runs `TIME`,
/// `SMEMBERS` (once each), `HGETALL` (once per member), `ZSCORE` (once per
/// node) and `PUBLISH`; only the heartbeat script calls `ZADD` (once) and
/// `TIME` besides it; only a presence rewrite calls `DEL` (once, with one
/// `SMEMBERS`); only a presence change calls `HINCRBY` (twice). Any other
/// `SMEMBERS` is sent on its own: a node reloading the memberships of its
/// users (one per user). redis-rs sends a script's `EVALSHA` again after
/// loading it when Redis did not have it yet (one `SCRIPT LOAD` each, and
/// the first `EVALSHA` failed). The load processes hold their connections
/// until the window is closed, so no presence changes there; a burst's
/// loads close theirs as they finish.
#[derive(Debug, PartialEq, Eq)]
pub struct PushShare {
    /// Top-level commands the servers sent for the pushes.
    pub evalsha: u64,
    /// Commands the push script ran inside Redis.
    pub inside: u64,
    /// Heartbeats, presence rewrites and changes in the window.
    pub background_scripts: u64,
    /// `SMEMBERS` sent on their own (membership reloads).
    pub smembers_alone: u64,
}

impl PushShare {
    pub fn of(d: &CommandStats) -> Self {
        let heartbeats = d.calls("zadd");
        let rewrites = d.calls("del");
        // A push's append numbers its stream with one HINCRBY and logs it
        // with one XADD (history on, as the bench runs it); the rest of the
        // HINCRBYs are presence changes, two per change.
        let appends = d.calls("xadd");
        let presence = d.calls("hincrby").saturating_sub(appends) / 2;
        let reloads = d.calls("script|load");
        let pushes = d
            .calls("evalsha")
            .saturating_sub(heartbeats + rewrites + presence + reloads);
        let smembers_alone = d.calls("smembers").saturating_sub(pushes + rewrites);
        let inside = d.calls("time").saturating_sub(heartbeats)
            + d.calls("smembers")
                .saturating_sub(rewrites + smembers_alone)
            + d.calls("hgetall")
            + d.calls("zscore")
            + d.calls("publish")
            + appends * 2
            + d.calls("hget")
            + d.calls("pexpire");
        Self {
            evalsha: pushes,
            inside,
            background_scripts: heartbeats + rewrites + presence,
            smembers_alone,
        }
    }
}

/// Pub/sub commands in a window: a push must add none.
fn pubsub_commands(d: &CommandStats) -> u64 {
    ["subscribe", "unsubscribe", "ping"]
        .iter()
        .map(|c| d.calls(c))
        .sum()
}

/// Pushes `--pushes` times to a group of each of `--group-sizes` connected
/// members (split over the servers, pushes through each in turn) and reads
/// `INFO commandstats` before and after the pushes.
pub fn redis_commands(
    ctx: &mut RunContext,
    args: &BenchArgs,
    servers: &Servers,
) -> anyhow::Result<Value> {
    let redis = servers
        .redis
        .as_ref()
        .context("redis-commands needs a cluster")?;
    let mut sizes = Vec::new();
    let mut load_cpu = 0.0;
    for &size in &args.group_sizes {
        // Held: a load process that has its pushes must not close its
        // connections (presence updates) while the window is open.
        // One push through each server first, outside the window, so the
        // script is in Redis's cache and each server's connection is warm.
        let warm = servers.procs.len();
        let tuning = Tuning {
            expect: (warm + args.pushes) as u64,
            secs: 60,
            poll_us: args.poll_us,
            hold: true,
            ..Tuning::default()
        };
        let mut plan = LoadPlan::new(size, args.procs, Mode::Subscribe, tuning);
        plan.group = format!("bench-{size}");
        plan.tag = format!("g{size}");
        let (mut loads, _) = start_loads(ctx, servers, &plan)?;
        let mut pushers = Pushers::new(servers, &plan.group)?;
        for l in loads.iter_mut() {
            l.say(Order::Go);
        }
        for i in 0..warm {
            pushers.push(i)?;
        }
        let before = CommandStats::read(redis)?;
        let redis_cpu0 = servers.redis_cpu();
        let t0 = Instant::now();
        for i in 0..args.pushes {
            pushers.push(i)?;
        }
        let push_secs = t0.elapsed().as_secs_f64();
        let delta = CommandStats::read(redis)?.since(&before);
        let redis_cpu = servers.redis_cpu() - redis_cpu0;
        let got = collect(&mut loads, Duration::from_secs(120))?;
        load_cpu += got.cpu_s;
        for l in loads.iter_mut() {
            l.say(Order::Stop);
        }
        drop(loads);
        let share = PushShare::of(&delta);
        let n = args.pushes.max(1) as f64;
        sizes.push(json!({
            "members": size,
            "pushes": args.pushes,
            "deliveries": got.received,
            "expected": (size * (warm + args.pushes)) as u64,
            "evalsha_per_push": share.evalsha as f64 / n,
            "evalsha_per_push_raw": delta.calls("evalsha") as f64 / n,
            "background_scripts": share.background_scripts,
            "pubsub_commands": pubsub_commands(&delta),
            "membership_reload_smembers": share.smembers_alone,
            "heartbeats": delta.calls("zadd"),
            "window_secs": push_secs,
            "inside_script_per_push": share.inside as f64 / n,
            "hgetall_per_push": delta.calls("hgetall") as f64 / n,
            "evalsha_usec_per_call": delta.usec_per_call("evalsha"),
            "ms_per_push_api": push_secs * 1e3 / n,
            "redis_cpu_s": redis_cpu,
            "commands": delta.to_json(),
        }));
    }
    Ok(json!({
        "servers": servers.procs.len(),
        "sizes": sizes,
        "load_cpu_s": load_cpu,
    }))
}

/// Lines of a `redis-cli` answer that start with `prefix`.
fn count_lines(redis: &RedisServer, args: &[&str], prefix: &str) -> anyhow::Result<usize> {
    let text = redis
        .try_cli(args)
        .map_err(|e| anyhow!("redis-cli {}: {e}", args.join(" ")))?;
    Ok(text.lines().filter(|l| l.starts_with(prefix)).count())
}

/// Channels each pub/sub client holds, from `CLIENT LIST TYPE pubsub`.
fn subscriptions(redis: &RedisServer) -> anyhow::Result<Vec<u64>> {
    let text = redis
        .try_cli(&["CLIENT", "LIST", "TYPE", "pubsub"])
        .map_err(|e| anyhow!("redis-cli CLIENT LIST: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("sub="))
                .and_then(|v| v.parse().ok())
        })
        .collect())
}

/// `--subscribers` connections (distinct users, in one group) held over
/// the servers, so the servers hold that many user channels; then Redis is
/// killed, and once every server has noticed (logged "broker down") it is
/// started again on its port, empty. Measured: from Redis logging that it
/// accepts connections until every server has logged "broker up" again.
pub fn resubscribe(
    ctx: &mut RunContext,
    args: &BenchArgs,
    servers: &mut Servers,
) -> anyhow::Result<Value> {
    let plan = LoadPlan::new(
        args.subscribers,
        args.procs,
        Mode::Subscribe,
        Tuning::default(),
    );
    // Held, never told "go": the connections are what is measured.
    let (loads, ready) = start_loads(ctx, servers, &plan)?;
    let held: u64 = ready.iter().map(|r| r.conns).sum();
    let user_channels = ["PUBSUB", "CHANNELS", "*:u:*"];
    let redis = servers
        .redis
        .as_ref()
        .context("resubscribe needs a cluster")?;
    let channels_before = count_lines(redis, &user_channels, "wshub:")?;
    let subs_before = subscriptions(redis)?;
    let mut rounds = Vec::new();
    for _ in 0..args.restarts.max(1) {
        let redis = servers
            .redis
            .as_mut()
            .context("resubscribe needs a cluster")?;
        let killed = Instant::now();
        redis.kill();
        for p in &servers.procs {
            p.wait_for(LogEvent::BrokerDown, killed, Duration::from_secs(15))?;
        }
        let spawned = Instant::now();
        redis.restart_blocking();
        let accepting = Instant::now();
        ctx.place_redis(redis.pid())?;
        let mut up_ms = Vec::new();
        for p in &servers.procs {
            let up = p.wait_for(LogEvent::BrokerUp, killed, Duration::from_secs(30))?;
            up_ms.push(up.saturating_duration_since(accepting).as_secs_f64() * 1e3);
        }
        let redis = servers
            .redis
            .as_ref()
            .context("resubscribe needs a cluster")?;
        rounds.push(json!({
            "down_noticed_ms": spawned.duration_since(killed).as_secs_f64() * 1e3,
            "start_to_accepting_ms": accepting.duration_since(spawned).as_secs_f64() * 1e3,
            "broker_up_ms": up_ms,
            "all_up_ms": up_ms.iter().copied().fold(0.0, f64::max),
            "user_channels_after": count_lines(redis, &user_channels, "wshub:")?,
            "subscriptions_after": subscriptions(redis)?,
        }));
    }
    drop(loads);
    let worst = rounds
        .iter()
        .filter_map(|r| r["all_up_ms"].as_f64())
        .fold(0.0, f64::max);
    Ok(json!({
        "servers": servers.procs.len(),
        "connections": held,
        "user_channels": channels_before,
        "subscriptions": subs_before,
        "restarts": rounds.len(),
        "rounds": rounds,
        "all_up_ms_worst": worst,
        "load_cpu_s": 0.0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Commandstats\r\n\
        cmdstat_evalsha:calls=205,usec=1000,usec_per_call=4.88,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_zadd:calls=4,usec=8,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_hgetall:calls=20000,usec=9000,usec_per_call=0.45,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn commandstats_parse_and_subtract() {
        let after = CommandStats::parse(INFO);
        assert_eq!(after.calls("evalsha"), 205);
        assert_eq!(after.usec("hgetall"), 9000);
        assert_eq!(after.calls("missing"), 0);
        let before = CommandStats::parse(
            "cmdstat_evalsha:calls=5,usec=100,usec_per_call=20.00\r\ncmdstat_zadd:calls=4,usec=8",
        );
        let d = after.since(&before);
        assert_eq!(d.calls("evalsha"), 200);
        assert_eq!(d.usec_per_call("evalsha"), 4.5);
        // Unchanged commands are left out.
        assert_eq!(d.to_json().as_object().unwrap().len(), 2);
    }

    #[test]
    fn heartbeats_and_rewrites_are_not_counted_as_pushes() {
        let d = CommandStats::parse(
            "cmdstat_evalsha:calls=104\r\n\
             cmdstat_zadd:calls=3\r\n\
             cmdstat_del:calls=1\r\n\
             cmdstat_time:calls=103\r\n\
             cmdstat_smembers:calls=101\r\n\
             cmdstat_hgetall:calls=10000\r\n\
             cmdstat_zscore:calls=200\r\n\
             cmdstat_publish:calls=100\r\n\
             cmdstat_hincrby:calls=10\r\n\
             cmdstat_script|load:calls=1\r\n",
        );
        let share = PushShare::of(&d);
        assert_eq!(share.evalsha, 94);
        assert_eq!(share.background_scripts, 9);
        // 101 SMEMBERS: 94 pushes, 1 rewrite, 6 sent alone.
        assert_eq!(share.smembers_alone, 6);
        assert_eq!(share.inside, 100 + 94 + 10_000 + 200 + 100);
    }
}
