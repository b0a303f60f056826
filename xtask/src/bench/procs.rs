//! The processes of a benchmark run: the server under test (wshub or a
//! baseline) and the load processes, each spoken to over stdin/stdout.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::Value;

use super::report::latency_histogram;
use super::{load, maybe_pinned, API_KEY, NEXT_SOURCE, SECRET};
use crate::cmd::{listening_addr, server_command, target_bin};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Wshub,
    Hub,
    Raw,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Wshub => "wshub",
            Target::Hub => "minimal-hub",
            Target::Raw => "raw-limit",
        }
    }
}

pub struct ServerProc {
    pub target: Target,
    child: Child,
    pub addr: SocketAddr,
}

impl ServerProc {
    pub fn start(target: Target) -> anyhow::Result<Self> {
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

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0)
    }

    pub fn cpu(&self) -> f64 {
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
pub struct LoadProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl LoadProc {
    pub fn start(
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

    pub fn expect(&self, prefix: &str, limit: Duration) -> anyhow::Result<Value> {
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

    pub fn say(&mut self, line: &str) {
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

pub fn start_loads(
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

/// What the load processes of one run saw, merged.
pub struct Collected {
    /// Send to kernel receive time (see `receiver.rs`).
    pub hist: Histogram<u64>,
    /// Send to the time the load process read the frame.
    pub read_hist: Histogram<u64>,
    pub received: u64,
    pub shared_stamp: u64,
    pub last_ns: u64,
    pub cpu_s: f64,
}

pub fn collect(loads: &mut [LoadProc], limit: Duration) -> anyhow::Result<Collected> {
    let mut all = Collected {
        hist: latency_histogram()?,
        read_hist: latency_histogram()?,
        received: 0,
        shared_stamp: 0,
        last_ns: 0,
        cpu_s: 0.0,
    };
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
        all.received += r["received"].as_u64().unwrap_or(0);
        all.shared_stamp += r["shared_stamp"].as_u64().unwrap_or(0);
        all.last_ns = all.last_ns.max(r["last_ns"].as_u64().unwrap_or(0));
        all.cpu_s += r["cpu_s"].as_f64().unwrap_or(0.0);
        for (key, hist) in [
            ("hist_us", &mut all.hist),
            ("read_hist_us", &mut all.read_hist),
        ] {
            for pair in r[key].as_array().into_iter().flatten() {
                let v = pair[0].as_u64().unwrap_or(1).max(1);
                let n = pair[1].as_u64().unwrap_or(0);
                hist.record_n(v, n)?;
            }
        }
    }
    Ok(all)
}
