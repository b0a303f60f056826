//! The processes of a benchmark run: the server under test (wshub or a
//! baseline) and the load processes, each spoken to over stdin/stdout.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;

use super::baseline::Kind;
use super::lines::{Line, LoadResult, Order, Ready};
use super::load_args::{LoadArgs, Mode, Tuning};
use super::report::latency_histogram;
use super::{load, spelling, API_KEY, SECRET};
use crate::cmd::{listening_addr, server_command, target_bin};

/// A server the bench measures; the command-line spelling of each is also
/// its name in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Wshub,
    #[value(name = "minimal-hub")]
    Hub,
    #[value(name = "raw-limit")]
    Raw,
}

impl Target {
    /// The baseline process that plays this target; none for wshub.
    fn baseline(self) -> Option<Kind> {
        match self {
            Target::Wshub => None,
            Target::Hub => Some(Kind::Hub),
            Target::Raw => Some(Kind::Raw),
        }
    }
}

/// What every process started in one bench run has to agree on, handed to
/// whatever starts one.
pub struct RunContext {
    /// Server on CPU 0, load processes on CPU 1 (`--pin`).
    pin: bool,
    /// Source addresses handed out so far in this run.
    sources_used: usize,
    /// Where this run starts counting in 127/8, taken from the process id,
    /// so a run right after another does not start on the addresses whose
    /// ports the last one may still hold.
    source_base: usize,
}

impl RunContext {
    pub fn new(pin: bool) -> Self {
        Self {
            pin,
            sources_used: 0,
            source_base: (std::process::id() as usize % 200) * 1_000,
        }
    }

    /// A source address no other load process of this run has had, so no
    /// address runs out of ephemeral ports or finds them held in TIME_WAIT
    /// by an earlier scenario.
    fn next_source(&mut self) -> IpAddr {
        let n = self.source_base + self.sources_used;
        self.sources_used += 1;
        IpAddr::V4(Ipv4Addr::new(
            127,
            (1 + n / 62_500) as u8,
            (1 + (n / 250) % 250) as u8,
            (1 + n % 250) as u8,
        ))
    }

    /// `cmd` run under `taskset -c cpu` when pinning is on.
    fn pinned(&self, cmd: Command, cpu: &str) -> Command {
        if !self.pin {
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
}

pub struct ServerProc {
    pub target: Target,
    child: Child,
    pub addr: SocketAddr,
}

impl ServerProc {
    pub fn start(ctx: &RunContext, target: Target) -> anyhow::Result<Self> {
        let cmd = match target.baseline() {
            None => {
                // At the default log level, as it would run: one line per
                // connection open and close is part of what it costs.
                let mut c = server_command("release", SECRET, API_KEY);
                c.env("RUST_LOG", "info");
                c
            }
            Some(kind) => {
                let mut c = Command::new(target_bin("release", "xtask"));
                c.args(["baseline", "--kind", &spelling(&kind)]);
                c
            }
        };
        let mut cmd = ctx.pinned(cmd, "0");
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
    fn start(
        ctx: &mut RunContext,
        server: &ServerProc,
        index: usize,
        conns: usize,
        mode: Mode,
        tuning: Tuning,
    ) -> anyhow::Result<Self> {
        let args = LoadArgs {
            server: server.addr,
            source: ctx.next_source(),
            conns,
            mode,
            secret: (server.target == Target::Wshub).then(|| SECRET.to_owned()),
            prefix: format!("p{index}u"),
            tuning,
        };
        let mut c = Command::new(target_bin("release", "xtask"));
        c.arg("load").args(args.to_args());
        let mut c = ctx.pinned(c, "1");
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

    /// The next `L` line the process prints within `limit`.
    pub fn expect<L: Line>(&self, limit: Duration) -> anyhow::Result<L> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .with_context(|| format!("no `{}` from load process", L::TAG))?;
            if let Some(parsed) = L::parse(&line) {
                return parsed.with_context(|| format!("load process said: {line}"));
            }
        }
    }

    pub fn say(&mut self, order: Order) {
        if let Some(stdin) = self.stdin.as_mut() {
            // A process that has exited reads nothing; its missing result
            // is what reports the failure.
            let _ = writeln!(stdin, "{}", order.word());
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

/// `total` connections over `procs` load processes (an even number each
/// when `even`, so no direct-message pair is split), returned once every
/// process is ready, with what each said when it was.
pub fn start_loads(
    ctx: &mut RunContext,
    server: &ServerProc,
    total: usize,
    procs: usize,
    mode: Mode,
    tuning: Tuning,
    even: bool,
) -> anyhow::Result<(Vec<LoadProc>, Vec<Ready>)> {
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
        loads.push(LoadProc::start(ctx, server, i, n, mode, tuning)?);
        left -= n;
        i += 1;
    }
    let mut ready = Vec::new();
    for l in &loads {
        let r: Ready = l.expect(Duration::from_secs(300))?;
        if r.failures > 0 {
            bail!(
                "load process could not open all connections: {} of {} failed",
                r.failures,
                r.conns + r.failures
            );
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
        let r: LoadResult = match l.expect(left) {
            Ok(r) => r,
            Err(_) => {
                l.say(Order::Stop);
                l.expect(Duration::from_secs(30))?
            }
        };
        all.received += r.received;
        all.shared_stamp += r.shared_stamp;
        all.last_ns = all.last_ns.max(r.last_ns);
        all.cpu_s += r.cpu_s;
        r.hist_us.add_to(&mut all.hist)?;
        r.read_hist_us.add_to(&mut all.read_hist)?;
    }
    Ok(all)
}
