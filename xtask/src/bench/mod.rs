//! `cargo xtask bench`: drives a release `wshub-server` over loopback from
//! separate load processes, runs the same load against two baselines, and
//! prints a table (JSON under `target/bench/`). See BENCHMARKS.md.

pub mod baseline;
pub mod load;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::cmd::{cargo, listening_addr, root, run as run_cmd, server_command, target_bin};

const SECRET: &str = "bench-secret-0123456789abcdef";
const API_KEY: &str = "bench-api-key";

/// Source addresses handed out so far in this run.
static NEXT_SOURCE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Small sizes, in place of the size flags: the whole suite in under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Scenarios to run, comma-separated, in order: burst,paced,direct,connect,idle
    /// (connect before idle: tearing down 19,000 sockets disturbs what follows).
    #[arg(
        long,
        default_value = "burst,paced,direct,connect,idle",
        value_delimiter = ','
    )]
    pub scenarios: Vec<String>,
    /// Subscribers in the fan-out group.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Pushes in the fan-out burst.
    #[arg(long, default_value_t = 200)]
    pub pushes: usize,
    /// Pushes per second in the paced fan-out.
    #[arg(long, default_value_t = 20)]
    pub paced_rate: u64,
    /// Seconds of paced fan-out.
    #[arg(long, default_value_t = 5)]
    pub paced_secs: u64,
    /// User pairs in the direct scenario.
    #[arg(long, default_value_t = 1_000)]
    pub pairs: usize,
    /// Messages per second each direct user sends.
    #[arg(long, default_value_t = 10)]
    pub direct_rate: u64,
    /// Seconds of direct messaging.
    #[arg(long, default_value_t = 5)]
    pub direct_secs: u64,
    /// Idle connection counts to measure, comma-separated.
    #[arg(long, default_value = "10000,19000", value_delimiter = ',')]
    pub idle: Vec<usize>,
    /// Connections opened in the connect-rate scenario.
    #[arg(long, default_value_t = 10_000)]
    pub connects: usize,
    /// Load processes.
    #[arg(long, default_value_t = 4)]
    pub procs: usize,
    /// Servers to measure: wshub,minimal-hub,raw-limit (baselines only run
    /// the scenarios they take part in).
    #[arg(
        long,
        default_value = "wshub,minimal-hub,raw-limit",
        value_delimiter = ','
    )]
    pub targets: Vec<String>,
    /// Pin the server to CPU 0 and the load processes to CPU 1 (taskset),
    /// so neither preempts the other; halves the server's cores.
    #[arg(long)]
    pub pin: bool,
}

/// Set from `--pin` before any process starts.
static PIN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `cmd` run under `taskset -c cpu` when pinning is on.
fn maybe_pinned(cmd: Command, cpu: &str) -> Command {
    if !PIN.load(std::sync::atomic::Ordering::Relaxed) {
        return cmd;
    }
    let mut pinned = Command::new("taskset");
    pinned
        .args(["-c", cpu])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => pinned.env(k, v),
            None => pinned.env_remove(k),
        };
    }
    pinned
}

impl BenchArgs {
    fn apply_quick(&mut self) {
        if self.quick {
            self.subscribers = 1_000;
            self.pushes = 50;
            self.paced_secs = 2;
            self.pairs = 100;
            self.direct_secs = 2;
            self.idle = vec![2_000];
            self.connects = 2_000;
            self.procs = 2;
        }
    }
}

pub fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    args.apply_quick();
    PIN.store(args.pin, std::sync::atomic::Ordering::Relaxed);
    let mut build = cargo();
    build.args(["build", "--release", "-p", "wshub-server", "-p", "xtask"]);
    run_cmd(build)?;

    let mut results = Vec::new();
    let mut load_cpu = 0.0;
    for scenario in args.scenarios.clone() {
        let targets: &[Target] = match scenario.as_str() {
            "burst" | "paced" | "idle" => &[Target::Wshub, Target::Hub, Target::Raw],
            "direct" | "connect" => &[Target::Wshub],
            other => bail!("unknown scenario {other}"),
        };
        let sizes: Vec<usize> = if scenario == "idle" {
            args.idle.clone()
        } else {
            vec![0]
        };
        for size in sizes {
            for target in targets {
                if !args.targets.iter().any(|t| t == target.name()) {
                    continue;
                }
                if scenario == "idle" && *target == Target::Raw {
                    continue; // the raw limit holds no per-connection state worth comparing
                }
                eprintln!(
                    "bench: {scenario} {} {}",
                    target.name(),
                    if size > 0 {
                        size.to_string()
                    } else {
                        String::new()
                    }
                );
                let server = ServerProc::start(*target)?;
                let r = match scenario.as_str() {
                    "burst" => fanout(&args, &server, false),
                    "paced" => fanout(&args, &server, true),
                    "direct" => direct(&args, &server),
                    "idle" => idle(&args, &server, size),
                    _ => connect_rate(&args, &server),
                };
                let mut r = r.with_context(|| format!("{scenario} against {}", target.name()))?;
                load_cpu += r["load_cpu_s"].as_f64().unwrap_or(0.0);
                r["scenario"] = json!(scenario);
                r["target"] = json!(target.name());
                eprintln!("  {r}");
                results.push(r);
            }
        }
    }
    let report = json!({
        "machine": machine(),
        "quick": args.quick,
        "pinned": args.pin,
        "load_cpu_seconds": load_cpu,
        "results": results,
    });
    print_table(&report);
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(dir.join(format!("bench-{stamp}.json")), &text)?;
    std::fs::write(dir.join("latest.json"), &text)?;
    eprintln!("wrote target/bench/latest.json");
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Wshub,
    Hub,
    Raw,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Wshub => "wshub",
            Target::Hub => "minimal-hub",
            Target::Raw => "raw-limit",
        }
    }
}

struct ServerProc {
    target: Target,
    child: Child,
    addr: SocketAddr,
}

impl ServerProc {
    fn start(target: Target) -> anyhow::Result<Self> {
        let cmd = match target {
            Target::Wshub => {
                // At the default log level, as it would run: one line per
                // connection open and close is part of what it costs.
                let mut c = server_command("release", SECRET, API_KEY);
                c.env("RUST_LOG", "info");
                c
            }
            Target::Hub | Target::Raw => {
                let mut c = Command::new(target_bin("release", "xtask"));
                c.args([
                    "baseline",
                    "--kind",
                    if target == Target::Hub { "hub" } else { "raw" },
                ]);
                c
            }
        };
        let mut cmd = maybe_pinned(cmd, "0");
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = tx.send(addr);
                }
                // Other lines (per-connection logs) are dropped.
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .context("server did not start")?
            .parse()?;
        Ok(Self {
            target,
            child,
            addr,
        })
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0)
    }

    fn cpu(&self) -> f64 {
        load::cpu_seconds(&self.pid())
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running load process.
struct LoadProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl LoadProc {
    fn start(
        server: &ServerProc,
        index: usize,
        conns: usize,
        mode: &str,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let mut c = Command::new(target_bin("release", "xtask"));
        // Each process of the whole run gets a source address of its own,
        // so no address runs out of ephemeral ports or finds them held in
        // TIME_WAIT by an earlier scenario.
        // Runs start at a different place (by process id) in 127/8.
        let n = NEXT_SOURCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + (std::process::id() as usize % 200) * 1_000;
        let _ = index;
        let source = format!(
            "127.{}.{}.{}",
            1 + n / 62_500,
            1 + (n / 250) % 250,
            1 + n % 250
        );
        c.args([
            "load",
            "--server",
            &server.addr.to_string(),
            "--source",
            &source,
        ])
        .args(["--conns", &conns.to_string(), "--mode", mode])
        .args(["--prefix", &format!("p{index}u")])
        .args(extra);
        if server.target == Target::Wshub {
            c.args(["--secret", SECRET]);
        }
        let mut c = maybe_pinned(c, "1");
        let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Ok(Self {
            child,
            stdin,
            lines: rx,
        })
    }

    fn expect(&self, prefix: &str, limit: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .with_context(|| format!("no `{prefix}` from load process"))?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(serde_json::from_str(rest.trim())?);
            }
        }
    }

    fn say(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }
}

impl Drop for LoadProc {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_loads(
    server: &ServerProc,
    total: usize,
    procs: usize,
    mode: &str,
    extra: &[String],
    even: bool,
) -> anyhow::Result<(Vec<LoadProc>, Vec<Value>)> {
    let procs = procs.max(1);
    let mut per = total.div_ceil(procs);
    if even && per % 2 == 1 {
        per += 1;
    }
    let mut loads = Vec::new();
    let mut left = total;
    let mut i = 0;
    while left > 0 {
        let n = per.min(left);
        loads.push(LoadProc::start(server, i, n, mode, extra)?);
        left -= n;
        i += 1;
    }
    let mut ready = Vec::new();
    for l in &loads {
        let r = l.expect("ready ", Duration::from_secs(300))?;
        if r["failures"].as_u64().unwrap_or(0) > 0 {
            bail!("load process could not open all connections: {r}");
        }
        ready.push(r);
    }
    Ok((loads, ready))
}

fn collect(
    loads: &mut [LoadProc],
    limit: Duration,
) -> anyhow::Result<(Histogram<u64>, u64, u64, f64)> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let (mut received, mut last_ns, mut cpu) = (0, 0, 0.0);
    let deadline = Instant::now() + limit;
    for l in loads.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = match l.expect("result ", left) {
            Ok(r) => r,
            Err(_) => {
                l.say("stop");
                l.expect("result ", Duration::from_secs(30))?
            }
        };
        received += r["received"].as_u64().unwrap_or(0);
        last_ns = last_ns.max(r["last_ns"].as_u64().unwrap_or(0));
        cpu += r["cpu_s"].as_f64().unwrap_or(0.0);
        for pair in r["hist_us"].as_array().into_iter().flatten() {
            let v = pair[0].as_u64().unwrap_or(1).max(1);
            let n = pair[1].as_u64().unwrap_or(0);
            hist.record_n(v, n)?;
        }
    }
    Ok((hist, received, last_ns, cpu))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A keep-alive HTTP/1.1 connection for API pushes.
struct Pusher {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Pusher {
    fn new(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Pushes a ~100-byte body carrying the send time; waits for the answer.
    fn push(&mut self) -> anyhow::Result<()> {
        let body = format!(
            r#"{{"body":{{"t":{},"pad":"{}"}}}}"#,
            now_ns(),
            "x".repeat(64)
        );
        let req = format!(
            "POST /api/v1/groups/bench/messages HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
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
                return Ok(());
            }
        }
    }
}

fn percentiles(h: &Histogram<u64>) -> Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({"p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999), "max_ms": h.max() as f64 / 1000.0, "samples": h.len()})
}

fn fanout(args: &BenchArgs, server: &ServerProc, paced: bool) -> anyhow::Result<Value> {
    let pushes = if paced {
        (args.paced_rate * args.paced_secs) as usize
    } else {
        args.pushes
    };
    let extra = vec![
        "--expect".to_owned(),
        pushes.to_string(),
        "--secs".to_owned(),
        "60".to_owned(),
    ];
    let (mut loads, _) = start_loads(
        server,
        args.subscribers,
        args.procs,
        "subscribe",
        &extra,
        false,
    )?;
    let mut pusher = Pusher::new(server.addr)?;
    let cpu0 = server.cpu();
    for l in loads.iter_mut() {
        l.say("go");
    }
    let start = now_ns();
    let t0 = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / args.paced_rate.max(1) as f64);
    for i in 0..pushes {
        if paced {
            let due = t0 + interval * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait); // pacing the load, not waiting for a result
            }
        }
        pusher.push()?;
    }
    let push_secs = t0.elapsed().as_secs_f64();
    let (hist, received, last_ns, load_cpu) = collect(&mut loads, Duration::from_secs(120))?;
    let secs = (last_ns.saturating_sub(start)) as f64 / 1e9;
    let expected = (pushes * args.subscribers) as u64;
    Ok(json!({
        "subscribers": args.subscribers, "pushes": pushes,
        "deliveries": received, "expected": expected,
        "deliveries_per_s": if secs > 0.0 { received as f64 / secs } else { 0.0 },
        "push_secs": push_secs,
        "latency": percentiles(&hist),
        "server_cpu_s": server.cpu() - cpu0,
        "load_cpu_s": load_cpu,
    }))
}

fn direct(args: &BenchArgs, server: &ServerProc) -> anyhow::Result<Value> {
    let extra = vec![
        "--rate".to_owned(),
        args.direct_rate.to_string(),
        "--secs".to_owned(),
        args.direct_secs.to_string(),
    ];
    let (mut loads, _) = start_loads(server, args.pairs * 2, args.procs, "direct", &extra, true)?;
    let cpu0 = server.cpu();
    for l in loads.iter_mut() {
        l.say("go");
    }
    // Let the run go for its length, plus a moment for the last messages.
    std::thread::sleep(Duration::from_secs(args.direct_secs) + Duration::from_millis(500));
    for l in loads.iter_mut() {
        l.say("stop");
    }
    let (hist, received, _, load_cpu) = collect(&mut loads, Duration::from_secs(60))?;
    Ok(json!({
        "pairs": args.pairs, "rate_per_user": args.direct_rate, "secs": args.direct_secs,
        "received": received,
        "expected": args.pairs as u64 * 2 * args.direct_rate * args.direct_secs,
        "latency": percentiles(&hist),
        "server_cpu_s": server.cpu() - cpu0,
        "load_cpu_s": load_cpu,
    }))
}

fn idle(args: &BenchArgs, server: &ServerProc, n: usize) -> anyhow::Result<Value> {
    // Warm up allocator and runtime with a few connections first, so the
    // delta is per-connection cost rather than one-time setup.
    let (warm, _) = start_loads(server, 100, 1, "idle", &[], false)?;
    let before = server.rss_kib();
    let procs = args.procs.max(n.div_ceil(5_000));
    let (loads, ready) = start_loads(server, n, procs, "idle", &[], false)?;
    let after = server.rss_kib();
    let held: u64 = ready.iter().map(|r| r["conns"].as_u64().unwrap_or(0)).sum();
    drop(loads);
    drop(warm);
    Ok(json!({
        "connections": held,
        "rss_before_kib": before, "rss_after_kib": after,
        "kib_per_connection": (after.saturating_sub(before)) as f64 / held.max(1) as f64,
        "load_cpu_s": 0.0,
    }))
}

fn connect_rate(args: &BenchArgs, server: &ServerProc) -> anyhow::Result<Value> {
    let t0 = Instant::now();
    let cpu0 = server.cpu();
    let (loads, ready) = start_loads(server, args.connects, args.procs, "connect", &[], false)?;
    let wall = t0.elapsed().as_secs_f64();
    let slowest = ready
        .iter()
        .map(|r| r["connect_secs"].as_f64().unwrap_or(0.0))
        .fold(0.0, f64::max);
    let held: u64 = ready.iter().map(|r| r["conns"].as_u64().unwrap_or(0)).sum();
    let mut load_cpu = 0.0;
    for l in &loads {
        if let Ok(r) = l.expect("result ", Duration::from_secs(10)) {
            load_cpu += r["cpu_s"].as_f64().unwrap_or(0.0);
        }
    }
    Ok(json!({
        "connections": held,
        "connects_per_s": held as f64 / slowest.max(1e-9),
        "wall_secs_incl_process_start": wall,
        "p50_connect_ms": ready.iter().map(|r| r["connect_p50_us"].as_f64().unwrap_or(0.0)).fold(0.0, f64::max) / 1000.0,
        "p99_connect_ms": ready.iter().map(|r| r["connect_p99_us"].as_f64().unwrap_or(0.0)).fold(0.0, f64::max) / 1000.0,
        "server_cpu_s": server.cpu() - cpu0,
        "load_cpu_s": load_cpu,
    }))
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": kernel.trim(),
        "mem_kib": mem,
    })
}

fn print_table(report: &Value) {
    let m = &report["machine"];
    println!(
        "\nwshub bench on {} ({} cores, kernel {})",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?")
    );
    println!(
        "{:<8} {:<18} {:>14} {:>10} {:>10} {:>10} {:>12}",
        "scenario", "target", "rate", "p50 ms", "p99 ms", "p999 ms", "KiB/conn"
    );
    let results = report["results"].as_array().cloned().unwrap_or_default();
    let find = |scenario: &str, target: &str, size: Option<u64>| {
        results
            .iter()
            .find(|r| {
                r["scenario"] == scenario
                    && r["target"] == target
                    && size.is_none_or(|s| r["connections"].as_u64() == Some(s))
            })
            .cloned()
    };
    for r in &results {
        let lat = &r["latency"];
        let rate = r["deliveries_per_s"]
            .as_f64()
            .or(r["connects_per_s"].as_f64());
        let f = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.2}"));
        println!(
            "{:<8} {:<18} {:>14} {:>10} {:>10} {:>10} {:>12}",
            r["scenario"].as_str().unwrap_or(""),
            match (r["scenario"].as_str(), r["connections"].as_u64()) {
                (Some("idle"), Some(n)) => format!("{} {n}", r["target"].as_str().unwrap_or("")),
                _ => r["target"].as_str().unwrap_or("").to_owned(),
            },
            rate.map_or("-".to_owned(), |x| format!("{x:.0}/s")),
            f(&lat["p50_ms"]),
            f(&lat["p99_ms"]),
            f(&lat["p999_ms"]),
            f(&r["kib_per_connection"]),
        );
    }
    // wshub as a fraction of each baseline.
    for scenario in ["burst", "paced"] {
        if let Some(w) = find(scenario, "wshub", None) {
            for base in ["minimal-hub", "raw-limit"] {
                if let Some(b) = find(scenario, base, None) {
                    let (wr, br) = (
                        w["deliveries_per_s"].as_f64().unwrap_or(0.0),
                        b["deliveries_per_s"].as_f64().unwrap_or(0.0),
                    );
                    if br > 0.0 {
                        println!(
                            "{scenario}: wshub delivers at {:.0}% of {base}",
                            100.0 * wr / br
                        );
                    }
                }
            }
        }
    }
    println!(
        "load side used {:.1} CPU-seconds in all",
        report["load_cpu_seconds"].as_f64().unwrap_or(0.0)
    );
}
