//! The resume storm (PROTOCOL.md §10): `--storm-clients` users, members of
//! one group by their tokens, connect once, note the group stream's
//! position from `welcome` and disconnect; `--storm-missed` pushes go to the
//! group meanwhile; then every client reconnects at once with `resume=1`,
//! sends its resume frame first and reads the replay up to the ack.
//!
//! The load side (`load`, run by `xtask load --mode resume`) is plain
//! tokio-tungstenite on one thread: each client does little, once, and the
//! replay's frames are checked by parsing them (seq continuity per client).
//! The driver side (`resume_storm`) starts those processes, pushes while
//! they are away, says "go" and adds up what they report.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::lines::{Buckets, Order, Ready, StormResult};
use super::load::{cpu_seconds, handshake, say};
use super::load_args::{LoadArgs, Mode, Tuning};
use super::procs::{start_loads, LoadPlan, RunContext, Servers};
use super::report::{latency_histogram, percentiles};
use super::scenarios::Pushers;
use super::wire::now_ns;
use super::BenchArgs;

/// Most sockets one storm process holds (the brief's bound, well under the
/// 20,000 open files a process may have).
const MAX_PER_PROC: usize = 5_000;

/// The group the storm's users belong to.
const GROUP: &str = "storm";

/// A stream position as `welcome` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    epoch: String,
    seq: u64,
}

/// The position of `stream` in a `welcome` frame's `streams`.
fn position_in(welcome: &str, stream: &str) -> Option<Position> {
    let v: Value = serde_json::from_str(welcome).ok()?;
    let p = &v["streams"][stream];
    Some(Position {
        epoch: p["epoch"].as_str()?.to_owned(),
        seq: p["seq"].as_u64()?,
    })
}

/// What one client's resume came to.
#[derive(Debug, Default, Clone, PartialEq)]
struct Resumed {
    recovered: Option<bool>,
    replayed: u64,
    duplicates: u64,
    gaps: u64,
}

/// Checks replayed frames against the position resumed from: each must be
/// the stream's next seq under the same epoch.
struct Continuity<'a> {
    stream: &'a str,
    epoch: &'a str,
    next: u64,
    out: Resumed,
}

impl<'a> Continuity<'a> {
    fn new(stream: &'a str, from: &'a Position) -> Self {
        Self {
            stream,
            epoch: &from.epoch,
            next: from.seq + 1,
            out: Resumed::default(),
        }
    }

    /// One server frame; true once it was the ack of the resume.
    fn frame(&mut self, v: &Value) -> bool {
        match v["type"].as_str() {
            Some("message") if v["stream"] == self.stream => {
                let seq = v["seq"].as_u64().unwrap_or(0);
                if v["epoch"] != self.epoch || seq < self.next {
                    self.out.duplicates += 1;
                } else {
                    self.out.gaps += seq - self.next;
                    self.next = seq + 1;
                    self.out.replayed += 1;
                }
                false
            }
            Some("ack") if v["id"] == "r" => {
                self.out.recovered = v["recovered"][self.stream].as_bool();
                true
            }
            _ => false,
        }
    }

    /// At the ack: messages up to `last` should all have come.
    fn finish(mut self, last: u64) -> Resumed {
        self.out.gaps += (last + 1).saturating_sub(self.next);
        self.out
    }
}

/// One client's reconnect: `resume=1`, the resume frame first, frames up
/// to the ack.
async fn resume_one(
    args: &LoadArgs,
    user: &str,
    stream: &str,
    from: &Position,
) -> anyhow::Result<Resumed> {
    let (mut ws, _) = handshake(args, user, &[&args.group], true).await?;
    let frame = json!({
        "type": "resume", "id": "r",
        "positions": {stream: {"epoch": from.epoch, "seq": from.seq}},
    });
    ws.send(Message::text(frame.to_string())).await?;
    let mut check = Continuity::new(stream, from);
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t)?;
                if check.frame(&v) {
                    break;
                }
            }
            Some(Ok(_)) => {}
            other => bail!("connection ended before the ack: {other:?}"),
        }
    }
    Ok(check.finish(from.seq + args.tuning.expect))
}

/// A storm load process: connect, note, disconnect, "ready"; on "go" all
/// clients reconnect at once, each stopping at its ack or at `--secs`.
pub fn load(args: &LoadArgs, commands: &Receiver<Order>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let users: Vec<String> = (0..args.conns)
        .map(|i| format!("{}{i}", args.prefix))
        .collect();
    let stream = format!("group:{}", args.group);
    // The first visit: 64 handshakes in flight, each connection dropped
    // (reset: zero linger) as soon as its welcome is read.
    let started = Instant::now();
    let mut connect_lat = latency_histogram()?;
    let first: Vec<(usize, Option<Position>, Duration)> = rt.block_on(
        futures_util::stream::iter(users.iter().enumerate().map(|(i, u)| {
            let stream = &stream;
            async move {
                let t0 = Instant::now();
                let pos = match handshake(args, u, &[&args.group], false).await {
                    Ok((ws, welcome)) => {
                        drop(ws);
                        position_in(&welcome, stream)
                    }
                    Err(_) => None,
                };
                (i, pos, t0.elapsed())
            }
        }))
        .buffer_unordered(64)
        .collect(),
    );
    let mut positions = vec![None; users.len()];
    let mut failures = 0;
    for (i, pos, took) in first {
        if pos.is_none() {
            failures += 1;
        }
        let _ = connect_lat.record((took.as_micros() as u64).max(1));
        positions[i] = pos;
    }
    say(&Ready {
        conns: users.len() as u64 - failures,
        failures,
        connect_secs: started.elapsed().as_secs_f64(),
        connect_hist_us: Buckets::of(&connect_lat),
    })?;
    match commands.recv() {
        Ok(Order::Go) => {}
        Ok(Order::Stop) => return say(&StormResult::default()),
        Err(_) => return Ok(()),
    }
    let cpu_at_go = cpu_seconds("self");
    let limit = Duration::from_secs(args.tuning.secs.max(1));
    let first_start_ns = now_ns();
    // The storm: every client at once.
    let outcomes: Vec<(anyhow::Result<Resumed>, Duration, u64)> = rt.block_on(
        futures_util::stream::iter(users.iter().zip(&positions).map(|(u, pos)| {
            let stream = &stream;
            async move {
                let t0 = Instant::now();
                let r = match pos {
                    Some(from) => tokio::time::timeout(limit, resume_one(args, u, stream, from))
                        .await
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("no ack within {limit:?}"))),
                    None => Err(anyhow::anyhow!("no position from the first visit")),
                };
                (r, t0.elapsed(), now_ns())
            }
        }))
        .buffer_unordered(users.len().max(1))
        .collect(),
    );
    let mut out = StormResult {
        clients: users.len() as u64,
        first_start_ns,
        ..StormResult::default()
    };
    let mut acks = latency_histogram()?;
    for (r, took, at) in outcomes {
        match r {
            Ok(r) => {
                out.acks += 1;
                out.recovered += u64::from(r.recovered == Some(true));
                out.replayed += r.replayed;
                out.duplicates += r.duplicates;
                out.gaps += r.gaps;
                out.last_ack_ns = out.last_ack_ns.max(at);
                let _ = acks.record((took.as_micros() as u64).max(1));
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    out.ack_hist_us = Buckets::of(&acks);
    out.cpu_s = cpu_seconds("self") - cpu_at_go;
    say(&out)
}

/// The driver's side: one row for the report.
pub fn resume_storm(
    ctx: &mut RunContext,
    args: &BenchArgs,
    servers: &Servers,
) -> anyhow::Result<Value> {
    let clients = args.storm_clients;
    let missed = args.storm_missed;
    let tuning = Tuning {
        expect: missed as u64,
        secs: 60,
        ..Tuning::default()
    };
    let procs = args.procs.max(clients.div_ceil(MAX_PER_PROC));
    let mut plan = LoadPlan::new(clients, procs, Mode::Resume, tuning);
    plan.group = GROUP.into();
    let (mut loads, _) = start_loads(ctx, servers, &plan)?;
    // Everyone away before the pushes: the server has seen every close.
    for p in &servers.procs {
        p.wait_metric("wshub_connections", 0.0, Duration::from_secs(30))
            .context("waiting for the first visits to close")?;
    }
    let recoveries = |result: &str| -> anyhow::Result<f64> {
        let key = format!(r#"wshub_recoveries_total{{result="{result}"}}"#);
        let mut n = 0.0;
        for p in &servers.procs {
            n += p.metric(&key)?.unwrap_or(0.0);
        }
        Ok(n)
    };
    let (recovered0, reset0) = (recoveries("recovered")?, recoveries("reset")?);
    let mut pushers = Pushers::new(servers, GROUP)?;
    for i in 0..missed {
        pushers.push(i)?;
    }
    drop(pushers);
    let cpu0 = servers.cpu();
    for l in loads.iter_mut() {
        l.say(Order::Go);
    }
    let mut hist = latency_histogram()?;
    let mut all = StormResult {
        first_start_ns: u64::MAX,
        ..StormResult::default()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    for l in &loads {
        let left = deadline.saturating_duration_since(Instant::now());
        let r: StormResult = l.expect(left)?;
        all.clients += r.clients;
        all.acks += r.acks;
        all.recovered += r.recovered;
        all.replayed += r.replayed;
        all.duplicates += r.duplicates;
        all.gaps += r.gaps;
        all.errors += r.errors;
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
        all.first_start_ns = all.first_start_ns.min(r.first_start_ns);
        all.last_ack_ns = all.last_ack_ns.max(r.last_ack_ns);
        all.cpu_s += r.cpu_s;
        r.ack_hist_us.add_to(&mut hist)?;
    }
    let storm_ms = all.last_ack_ns.saturating_sub(all.first_start_ns) as f64 / 1e6;
    let expected = (clients * missed) as u64;
    let server_recovered = recoveries("recovered")? - recovered0;
    let server_reset = recoveries("reset")? - reset0;
    Ok(json!({
        "clients": all.clients, "missed": missed, "servers": servers.procs.len(),
        "load_procs": loads.len(),
        "acks": all.acks, "recovered_true": all.recovered,
        "all_recovered": all.recovered == clients as u64,
        "replayed": all.replayed, "expected_replayed": expected,
        "duplicates": all.duplicates, "gaps": all.gaps,
        "replay_exact": all.replayed == expected && all.duplicates == 0 && all.gaps == 0,
        "errors": all.errors, "first_error": all.first_error,
        "first_reconnect_to_last_ack_ms": storm_ms,
        "resumes_per_s": if storm_ms > 0.0 { all.acks as f64 * 1000.0 / storm_ms } else { 0.0 },
        "latency": percentiles(&hist),
        "server_recoveries": {"recovered": server_recovered, "reset": server_reset},
        "server_cpu_s": servers.cpu() - cpu0,
        "load_cpu_s": all.cpu_s,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(epoch: &str, seq: u64) -> Value {
        json!({"type":"message","stream":"group:g","epoch":epoch,"seq":seq,"body":{}})
    }

    #[test]
    fn the_position_is_read_from_welcome() {
        let w = r#"{"type":"welcome","user":"u","conn":"c","groups":["g"],"heartbeat":30,
            "streams":{"inbox":{"epoch":"A","seq":3},"group:g":{"epoch":"Zt7w","seq":9}}}"#;
        assert_eq!(
            position_in(w, "group:g"),
            Some(Position {
                epoch: "Zt7w".into(),
                seq: 9
            })
        );
        assert_eq!(position_in(w, "group:h"), None);
    }

    #[test]
    fn a_whole_replay_in_order_is_exact() {
        let from = Position {
            epoch: "E".into(),
            seq: 4,
        };
        let mut c = Continuity::new("group:g", &from);
        for seq in 5..=7 {
            assert!(!c.frame(&msg("E", seq)));
        }
        assert!(c.frame(&json!({"type":"ack","id":"r","recovered":{"group:g":true}})));
        let r = c.finish(7);
        assert_eq!(
            r,
            Resumed {
                recovered: Some(true),
                replayed: 3,
                duplicates: 0,
                gaps: 0
            }
        );
    }

    #[test]
    fn repeats_skips_and_short_replays_are_counted() {
        let from = Position {
            epoch: "E".into(),
            seq: 0,
        };
        let mut c = Continuity::new("group:g", &from);
        for (epoch, seq) in [("E", 1), ("E", 1), ("E", 3), ("X", 4)] {
            c.frame(&msg(epoch, seq));
        }
        // Another stream's message and an ack for another id change nothing.
        c.frame(&json!({"type":"message","stream":"inbox","epoch":"E","seq":9}));
        assert!(!c.frame(&json!({"type":"ack","id":"x"})));
        assert!(c.frame(&json!({"type":"ack","id":"r","recovered":{"group:g":false}})));
        let r = c.finish(5);
        // 1 and 3 replayed; a repeat of 1 and a foreign epoch; 2, 4 and 5 missing.
        assert_eq!(
            r,
            Resumed {
                recovered: Some(false),
                replayed: 2,
                duplicates: 2,
                gaps: 3
            }
        );
    }
}
