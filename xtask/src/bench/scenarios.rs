//! The five scenarios the bench measures: fan-out burst and paced, direct
//! messages, idle connections and connect rate. Each returns one JSON row.
//! Fan-out and direct also run against a cluster (`--cluster`): the
//! subscribers split over its servers and pushes going through each in
//! turn; each direct pair's users on different servers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::cluster::{CommandStats, PushShare};
use super::lines::{LoadResult, Order};
use super::load_args::{Mode, Tuning};
use super::procs::{collect, start_loads, Layout, LoadPlan, RunContext, Servers, Target};
use super::report::{latency_histogram, percentiles};
use super::wire::{now_ns, push_body};
use super::{BenchArgs, API_KEY};

/// A keep-alive HTTP/1.1 connection for API pushes to one group.
pub struct Pusher {
    stream: TcpStream,
    buf: Vec<u8>,
    path: String,
    group: String,
    /// Pad bodies to wshub's frame length (`wire::push_body`): for a
    /// baseline, which sends the body as it came.
    like_wshub: bool,
}

impl Pusher {
    pub fn new(addr: SocketAddr, group: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
            path: format!("/api/v1/groups/{group}/messages"),
            group: group.to_owned(),
            like_wshub: false,
        })
    }

    /// A pusher to a baseline of `target`, whose bodies are padded.
    pub fn padded_for(mut self, target: Target) -> Self {
        self.like_wshub = target.is_baseline();
        self
    }

    /// Pushes a ~100-byte body carrying the send time; waits for the answer.
    pub fn push(&mut self) -> anyhow::Result<()> {
        self.push_nth(1).map(drop)
    }

    /// Pushes the group's `n`th message (from 1; only its digit count
    /// matters, for the padding); returns how long the API took to answer,
    /// from before the request was written to the end of the response.
    pub fn push_nth(&mut self, n: u64) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let body = push_body(now_ns(), &self.group, n, self.like_wshub);
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.path,
            body.len()
        );
        self.stream.write_all(req.as_bytes())?;
        // Read one response: head, then Content-Length bytes.
        self.buf.clear();
        let mut chunk = [0u8; 1024];
        loop {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("API connection closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                if !head.starts_with("http/1.1 200") {
                    bail!("push refused: {head}");
                }
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    let n = self.stream.read(&mut chunk)?;
                    if n == 0 {
                        bail!("API connection closed");
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                return Ok(t0.elapsed());
            }
        }
    }
}

/// One pusher per server, used in turn: on a cluster the pushes go
/// through every process.
pub struct Pushers(Vec<Pusher>);

impl Pushers {
    pub fn new(servers: &Servers, group: &str) -> anyhow::Result<Self> {
        let all = servers
            .addrs()
            .into_iter()
            .map(|a| Pusher::new(a, group))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self(all))
    }

    /// Push number `i`, through server `i` mod servers.
    pub fn push(&mut self, i: usize) -> anyhow::Result<()> {
        let n = self.0.len();
        self.0[i % n].push()
    }
}

/// `pushes` pushes to `group` from `conns` API connections at once (each
/// waits for its answer before its next push; connection j goes to server
/// j mod servers), each push at its due time when `interval` is given.
/// Returns each push's API latency (microseconds) and the seconds it took.
fn push_concurrently(
    servers: &Servers,
    group: &str,
    pushes: usize,
    conns: usize,
    interval: Option<Duration>,
) -> anyhow::Result<(Histogram<u64>, f64)> {
    let addrs = servers.addrs();
    let pushers = (0..conns.clamp(1, pushes.max(1)))
        .map(|j| Ok(Pusher::new(addrs[j % addrs.len()], group)?.padded_for(servers.target)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let next = AtomicUsize::new(0);
    let t0 = Instant::now();
    let hists = std::thread::scope(|s| {
        let workers: Vec<_> = pushers
            .into_iter()
            .map(|mut p| {
                let next = &next;
                s.spawn(move || -> anyhow::Result<Histogram<u64>> {
                    let mut h = latency_histogram()?;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= pushes {
                            return Ok(h);
                        }
                        if let Some(every) = interval {
                            let due = t0 + every * i as u32;
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait); // pacing the load, not waiting for a result
                            }
                        }
                        let took = p.push_nth(i as u64 + 1)?;
                        h.record((took.as_micros() as u64).max(1))?;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| anyhow::anyhow!("push thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let secs = t0.elapsed().as_secs_f64();
    let mut all = latency_histogram()?;
    for h in &hists {
        all.add(h)?;
    }
    Ok((all, secs))
}

pub fn fanout(
    ctx: &mut RunContext,
    args: &BenchArgs,
    servers: &Servers,
    paced: bool,
) -> anyhow::Result<Value> {
    let pushes = if paced {
        (args.paced_rate * args.paced_secs) as usize
    } else {
        args.pushes
    };
    // History's weight is one process's memory: wshub with and without it,
    // weighed with the subscribers still connected (their memory freed
    // would take in what history adds, unseen by RSS).
    let weigh = !paced && matches!(servers.target, Target::Wshub | Target::WshubNoHistory);
    let tuning = Tuning {
        expect: pushes as u64,
        secs: 60,
        poll_us: args.poll_us,
        hold: weigh,
        ..Tuning::default()
    };
    let plan = LoadPlan::new(args.subscribers, args.procs, Mode::Subscribe, tuning);
    let (mut loads, _) = start_loads(ctx, servers, &plan)?;
    let rss_before_pushes = servers.first().rss_kib();
    let stats0 = servers.redis.as_ref().map(CommandStats::read).transpose()?;
    let (cpu0, redis_cpu0) = (servers.cpu(), servers.redis_cpu());
    for l in loads.iter_mut() {
        l.say(Order::Go);
    }
    let start = now_ns();
    let interval = paced.then(|| Duration::from_secs_f64(1.0 / args.paced_rate.max(1) as f64));
    let (push_hist, push_secs) =
        push_concurrently(servers, &plan.group, pushes, args.push_conns, interval)?;
    // Redis as the pushes left it (the load processes close their
    // connections as they finish, which Redis hears of too).
    let redis_row = match (&servers.redis, stats0) {
        (Some(redis), Some(before)) => {
            let delta = CommandStats::read(redis)?.since(&before);
            let share = PushShare::of(&delta);
            Some(json!({
                "cpu_s": servers.redis_cpu() - redis_cpu0,
                "evalsha_per_push": share.evalsha as f64 / pushes.max(1) as f64,
                "inside_script_per_push": share.inside as f64 / pushes.max(1) as f64,
                "background_scripts": share.background_scripts,
                "membership_reload_smembers": share.smembers_alone,
                "heartbeats": delta.calls("zadd"),
                "evalsha_usec": delta.usec("evalsha"),
                "evalsha_usec_per_call": delta.usec_per_call("evalsha"),
                "commands": delta.to_json(),
            }))
        }
        _ => None,
    };
    let got = collect(&mut loads, Duration::from_secs(120))?;
    let secs = (got.last_ns.saturating_sub(start)) as f64 / 1e9;
    let expected = (pushes * args.subscribers) as u64;
    let mut row = json!({
        "subscribers": args.subscribers, "pushes": pushes,
        "servers": servers.procs.len(),
        "deliveries": got.received, "expected": expected,
        "deliveries_per_s": if secs > 0.0 { got.received as f64 / secs } else { 0.0 },
        "push_secs": push_secs,
        "push_conns": args.push_conns.clamp(1, pushes.max(1)),
        "push_latency": percentiles(&push_hist),
        "bytes_per_delivery": got.frame_bytes as f64 / got.received.max(1) as f64,
        "latency": percentiles(&got.hist),
        "read_latency": percentiles(&got.read_hist),
        "shared_stamp": got.shared_stamp,
        "server_cpu_s": servers.cpu() - cpu0,
        "load_cpu_s": got.cpu_s,
    });
    if let Some(redis) = redis_row {
        row["redis"] = redis;
    }
    if weigh {
        row["history"] = history_weight(args, servers, rss_before_pushes)?;
    }
    drop(loads);
    Ok(row)
}

/// What the server holds for history after a burst (its subscribers still
/// connected), then after `--history-fill` more pushes: 100 to each of as
/// many new groups, 4 API connections at a time. The bytes per held message
/// come from comparing this growth with `wshub-history-0`'s
/// (`report::history_summary`).
fn history_weight(
    args: &BenchArgs,
    servers: &Servers,
    rss_before_pushes: u64,
) -> anyhow::Result<Value> {
    let server = servers.first();
    let held =
        || -> anyhow::Result<f64> { Ok(server.metric("wshub_history_messages")?.unwrap_or(0.0)) };
    let (held_after_burst, rss_after_burst) = (held()?, server.rss_kib());
    let groups = args.history_fill.div_ceil(FILL_PER_GROUP);
    let t0 = Instant::now();
    let pushed = std::thread::scope(|s| {
        let workers: Vec<_> = (0..FILL_THREADS)
            .map(|w| {
                s.spawn(move || -> anyhow::Result<usize> {
                    let mut n = 0;
                    for g in (w..groups).step_by(FILL_THREADS) {
                        let mut p = Pusher::new(server.addr, &format!("fill-{g}"))?;
                        let left = args.history_fill - g * FILL_PER_GROUP;
                        for _ in 0..left.min(FILL_PER_GROUP) {
                            p.push()?;
                            n += 1;
                        }
                    }
                    Ok(n)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| anyhow::anyhow!("fill thread panicked"))?
            })
            .sum::<anyhow::Result<usize>>()
    })?;
    let fill_secs = t0.elapsed().as_secs_f64();
    let (held_after_fill, rss_after_fill) = (held()?, server.rss_kib());
    Ok(json!({
        "rss_before_pushes_kib": rss_before_pushes,
        "held_after_burst": held_after_burst,
        "rss_after_burst_kib": rss_after_burst,
        "fill_pushed": pushed, "fill_groups": groups, "fill_secs": fill_secs,
        "held_after_fill": held_after_fill,
        "rss_after_fill_kib": rss_after_fill,
    }))
}

/// `--history-fill`: messages per new group (the server's default
/// `--history`, so each is held), and API connections pushing at once.
const FILL_PER_GROUP: usize = 100;
const FILL_THREADS: usize = 4;

pub fn direct(ctx: &mut RunContext, args: &BenchArgs, servers: &Servers) -> anyhow::Result<Value> {
    let tuning = Tuning {
        rate: args.direct_rate,
        secs: args.direct_secs,
        poll_us: args.poll_us,
        ..Tuning::default()
    };
    let mut plan = LoadPlan::new(args.pairs * 2, args.procs, Mode::Direct, tuning);
    // One process: pairs inside each load process, as always. A cluster:
    // each pair's users on different servers, so every message crosses.
    let cross = servers.target == Target::Cluster;
    plan.layout = if cross {
        Layout::CrossPairs
    } else {
        Layout::Pairs
    };
    let (mut loads, _) = start_loads(ctx, servers, &plan)?;
    let (cpu0, redis_cpu0) = (servers.cpu(), servers.redis_cpu());
    let stats0 = match &servers.redis {
        Some(r) => Some(CommandStats::read(r)?),
        None => None,
    };
    for l in loads.iter_mut() {
        l.say(Order::Go);
    }
    // Let the run go for its length, plus a moment for the last messages.
    std::thread::sleep(Duration::from_secs(args.direct_secs) + Duration::from_millis(500));
    for l in loads.iter_mut() {
        l.say(Order::Stop);
    }
    let got = collect(&mut loads, Duration::from_secs(60))?;
    let mut row = json!({
        "pairs": args.pairs, "rate_per_user": args.direct_rate, "secs": args.direct_secs,
        "servers": servers.procs.len(), "cross_process": cross,
        "received": got.received,
        "expected": args.pairs as u64 * 2 * args.direct_rate * args.direct_secs,
        "latency": percentiles(&got.hist),
        "read_latency": percentiles(&got.read_hist),
        "shared_stamp": got.shared_stamp,
        "server_cpu_s": servers.cpu() - cpu0,
        "load_cpu_s": got.cpu_s,
    });
    if let (Some(r), Some(before)) = (&servers.redis, stats0) {
        // What Redis spent its time on, per command (inside scripts too).
        let commands = CommandStats::read(r)?.since(&before).to_json();
        row["redis"] = json!({"cpu_s": servers.redis_cpu() - redis_cpu0, "commands": commands});
    }
    Ok(row)
}

pub fn idle(
    ctx: &mut RunContext,
    args: &BenchArgs,
    servers: &Servers,
    n: usize,
) -> anyhow::Result<Value> {
    let tuning = Tuning::default();
    let server = servers.first();
    // Warm up allocator and runtime with a few connections first, so the
    // delta is per-connection cost rather than one-time setup.
    let warm_plan = LoadPlan::new(100, 1, Mode::Idle, tuning);
    let (warm, _) = start_loads(ctx, servers, &warm_plan)?;
    let before = server.rss_kib();
    let procs = args.procs.max(n.div_ceil(5_000));
    let (loads, ready) = start_loads(ctx, servers, &LoadPlan::new(n, procs, Mode::Idle, tuning))?;
    let after = server.rss_kib();
    let held: u64 = ready.iter().map(|r| r.conns).sum();
    drop(loads);
    drop(warm);
    Ok(json!({
        "connections": held,
        "rss_before_kib": before, "rss_after_kib": after,
        "kib_per_connection": (after.saturating_sub(before)) as f64 / held.max(1) as f64,
        "load_cpu_s": 0.0,
    }))
}

pub fn connect_rate(
    ctx: &mut RunContext,
    args: &BenchArgs,
    servers: &Servers,
) -> anyhow::Result<Value> {
    let t0 = Instant::now();
    let cpu0 = servers.cpu();
    let plan = LoadPlan::new(args.connects, args.procs, Mode::Connect, Tuning::default());
    let (loads, ready) = start_loads(ctx, servers, &plan)?;
    let wall = t0.elapsed().as_secs_f64();
    let slowest = ready.iter().map(|r| r.connect_secs).fold(0.0, f64::max);
    let held: u64 = ready.iter().map(|r| r.conns).sum();
    // Percentiles over every handshake of every process: a per-process
    // percentile says nothing about the whole run's.
    let mut handshakes = latency_histogram()?;
    for r in &ready {
        r.connect_hist_us.add_to(&mut handshakes)?;
    }
    let ms = |q: f64| handshakes.value_at_quantile(q) as f64 / 1000.0;
    let mut load_cpu = 0.0;
    for l in &loads {
        if let Ok(r) = l.expect::<LoadResult>(Duration::from_secs(10)) {
            load_cpu += r.cpu_s;
        }
    }
    Ok(json!({
        "connections": held,
        "connects_per_s": held as f64 / slowest.max(1e-9),
        "wall_secs_incl_process_start": wall,
        "p50_connect_ms": ms(0.5),
        "p99_connect_ms": ms(0.99),
        "server_cpu_s": servers.cpu() - cpu0,
        "load_cpu_s": load_cpu,
    }))
}
