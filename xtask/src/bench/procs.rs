//! The processes of a benchmark run: what is under test (one wshub or
//! baseline process, or a cluster of wshub processes on a private Redis)
//! and the load processes, each spoken to over stdin/stdout.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use test_support::RedisServer;

use super::baseline::Kind;
use super::lines::{Line, LoadResult, Order, Ready};
use super::load_args::{LoadArgs, Mode, Tuning};
use super::report::latency_histogram;
use super::{load, spelling, API_KEY, SECRET};
use crate::cmd::{listening_addr, server_command, target_bin};

/// wshub processes in a cluster: the fewest that make every message
/// cross from one process to another.
pub const CLUSTER_SERVERS: usize = 2;

/// A server the bench measures; the command-line spelling of each is also
/// its name in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Wshub,
    /// The same wshub binary started with `--history 0`: numbers messages
    /// but keeps none, so a burst against it prices what history costs.
    #[value(name = "wshub-history-0")]
    WshubNoHistory,
    /// The careful minimal hub (`baseline.rs`): broadcast channel per
    /// group, small buffers, up to 64 frames per flush.
    #[value(name = "careful-hub")]
    CarefulHub,
    /// The minimal hub that flushes after every frame (`baseline.rs`);
    /// `minimal-hub`, its earlier name, still chooses it.
    #[value(name = "minimal-hub-flush-each", alias = "minimal-hub")]
    Hub,
    /// The same bytes written straight to every socket (`baseline.rs`).
    #[value(name = "raw-limit")]
    Raw,
    /// Two wshub processes with `--redis` on one private redis-server
    /// (persistence off): one hub.
    #[value(name = "wshub-cluster")]
    Cluster,
}

impl Target {
    /// The baseline process that plays this target; none for wshub.
    fn baseline(self) -> Option<Kind> {
        match self {
            Target::Wshub | Target::WshubNoHistory | Target::Cluster => None,
            Target::CarefulHub => Some(Kind::Careful),
            Target::Hub => Some(Kind::FlushEach),
            Target::Raw => Some(Kind::Raw),
        }
    }

    /// wshub verifies tokens; the baselines take `?userId=`.
    fn takes_token(self) -> bool {
        self.baseline().is_none()
    }

    /// A baseline: no envelope, so the bench pads what it pushes to it.
    pub fn is_baseline(self) -> bool {
        self.baseline().is_some()
    }
}

/// What every process started in one bench run has to agree on, handed to
/// whatever starts one.
pub struct RunContext {
    /// Server on CPU 0, load processes on CPU 1 (`--pin`).
    pin: bool,
    /// What `--redis-nice` gives Redis.
    redis_nice: i32,
    /// Source addresses handed out so far in this run.
    sources_used: usize,
    /// Where this run starts counting in 127/8, taken from the process id,
    /// so a run right after another does not start on the addresses whose
    /// ports the last one may still hold.
    source_base: usize,
}

impl RunContext {
    pub fn new(pin: bool, redis_nice: i32) -> Self {
        Self {
            pin,
            redis_nice,
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

    /// Places a Redis that test-support started: on the servers' CPU when
    /// pinning is on, at `--redis-nice` when that is not 0.
    pub fn place_redis(&self, pid: u32) -> anyhow::Result<()> {
        if self.pin {
            let mut c = Command::new("taskset");
            c.args(["-a", "-p", "-c", "0", &pid.to_string()])
                .stdout(Stdio::null());
            crate::cmd::run(c)?;
        }
        if self.redis_nice != 0 {
            // A nice value belongs to a thread on Linux: give it to each.
            let threads = std::fs::read_dir(format!("/proc/{pid}/task"))?
                .filter_map(|t| t.ok()?.file_name().into_string().ok());
            let mut c = Command::new("renice");
            c.args(["-n", &self.redis_nice.to_string(), "-p"])
                .args(threads)
                .stdout(Stdio::null());
            crate::cmd::run(c)?;
        }
        Ok(())
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

/// A line of a wshub server's log the bench waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEvent {
    /// Cluster mode: Redis answers and the process serves again.
    BrokerUp,
    /// Cluster mode: the heartbeat found Redis gone.
    BrokerDown,
}

impl LogEvent {
    fn of(line: &str) -> Option<Self> {
        if line.contains("broker up") {
            Some(LogEvent::BrokerUp)
        } else if line.contains("broker down") {
            Some(LogEvent::BrokerDown)
        } else {
            None
        }
    }
}

/// The events a server logged, each with when the bench read it.
#[derive(Default)]
struct Events {
    seen: Mutex<Vec<(Instant, LogEvent)>>,
    changed: Condvar,
}

pub struct ServerProc {
    child: Child,
    pub addr: SocketAddr,
    events: Arc<Events>,
}

impl ServerProc {
    /// Starts `target`'s server (with `--redis URL` for a cluster node)
    /// and returns once it listens.
    fn start(ctx: &RunContext, target: Target, redis: Option<&str>) -> anyhow::Result<Self> {
        let cmd = match target.baseline() {
            None => {
                // At the default log level, as it would run: one line per
                // connection open and close is part of what it costs.
                let mut c = server_command("release", SECRET, API_KEY);
                c.env("RUST_LOG", "info");
                if let Some(url) = redis {
                    c.args(["--redis", url]);
                }
                if target == Target::WshubNoHistory {
                    c.args(["--history", "0"]);
                }
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
        let events = Arc::new(Events::default());
        let seen = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = tx.send(addr);
                } else if let Some(event) = LogEvent::of(&line) {
                    let now = Instant::now();
                    let mut list = seen.seen.lock().unwrap_or_else(PoisonError::into_inner);
                    list.push((now, event));
                    seen.changed.notify_all();
                }
                // Other lines (per-connection logs) are dropped.
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .context("server did not start")?
            .parse()?;
        Ok(Self {
            child,
            addr,
            events,
        })
    }

    /// When the server first logged `event` at or after `since`, waiting
    /// for it at most `limit`.
    pub fn wait_for(
        &self,
        event: LogEvent,
        since: Instant,
        limit: Duration,
    ) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + limit;
        let mut seen = self
            .events
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some((at, _)) = seen.iter().find(|(at, e)| *e == event && *at >= since) {
                return Ok(*at);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "server {} did not log {event:?} within {limit:?}",
                    self.addr
                );
            }
            seen = self
                .events
                .changed
                .wait_timeout(seen, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
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

    /// One sample of the server's `GET /metrics`: the value on the line
    /// whose name (with its labels, as printed) is `key`; `None` when the
    /// server prints no such line.
    pub fn metric(&self, key: &str) -> anyhow::Result<Option<f64>> {
        let mut s = std::net::TcpStream::connect(self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut s, &mut text)?;
        Ok(metric_value(&text, key))
    }

    /// Waits (at most `limit`) until the `key` gauge reads `want`.
    pub fn wait_metric(&self, key: &str, want: f64, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.metric(key)?;
            if now == Some(want) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "server {}: {key} is {now:?}, not {want}, after {limit:?}",
                    self.addr
                );
            }
            std::thread::sleep(Duration::from_millis(50)); // polling the server's gauge
        }
    }
}

/// The value of the Prometheus text line named `key` (labels included).
fn metric_value(text: &str, key: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == key).then(|| value.trim().parse().ok())?
    })
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one scenario runs against: one server process, or for
/// [`Target::Cluster`] a private Redis and [`CLUSTER_SERVERS`] wshub
/// processes on it, each started fresh.
pub struct Servers {
    pub target: Target,
    /// Declared before `redis`, so the servers are stopped first.
    pub procs: Vec<ServerProc>,
    pub redis: Option<RedisServer>,
}

impl Servers {
    /// Starts `target`; a cluster is returned once every server logged
    /// "broker up" (before that it refuses connections as unavailable).
    pub fn start(ctx: &RunContext, target: Target) -> anyhow::Result<Self> {
        if target != Target::Cluster {
            return Ok(Self {
                target,
                procs: vec![ServerProc::start(ctx, target, None)?],
                redis: None,
            });
        }
        let since = Instant::now();
        let redis = RedisServer::builder().persistence(false).start_blocking();
        ctx.place_redis(redis.pid())?;
        let url = redis.url();
        let procs = (0..CLUSTER_SERVERS)
            .map(|_| ServerProc::start(ctx, target, Some(&url)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for p in &procs {
            p.wait_for(LogEvent::BrokerUp, since, Duration::from_secs(20))?;
        }
        Ok(Self {
            target,
            procs,
            redis: Some(redis),
        })
    }

    /// The first (or only) server.
    pub fn first(&self) -> &ServerProc {
        &self.procs[0]
    }

    /// CPU seconds the server processes have used, together.
    pub fn cpu(&self) -> f64 {
        self.procs.iter().map(ServerProc::cpu).sum()
    }

    /// CPU seconds the current Redis process has used (0 without one).
    pub fn redis_cpu(&self) -> f64 {
        self.redis
            .as_ref()
            .map_or(0.0, |r| load::cpu_seconds(&r.pid().to_string()))
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.procs.iter().map(|p| p.addr).collect()
    }
}

/// A running load process.
pub struct LoadProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl LoadProc {
    fn start(ctx: &RunContext, args: &LoadArgs) -> anyhow::Result<Self> {
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

/// How a scenario's connections are laid over load processes and, in a
/// cluster, over the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// An even share each; process i connects to server i mod servers.
    Spread,
    /// Direct pairs inside each process (user k with user k^1): an even
    /// number of connections each.
    Pairs,
    /// Direct pairs across processes: processes in couples, the first on
    /// server 2j mod servers and the second on the next one, user k of one
    /// the partner of user k of the other. On a cluster every message
    /// crosses from one wshub process to the other.
    CrossPairs,
}

/// What load processes to start for one scenario.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub total: usize,
    pub procs: usize,
    pub mode: Mode,
    pub tuning: Tuning,
    pub layout: Layout,
    /// The group subscribers join.
    pub group: String,
    /// Put in front of user ids: users of two starts in one cluster (whose
    /// memberships outlive their connections) stay apart.
    pub tag: String,
}

impl LoadPlan {
    pub fn new(total: usize, procs: usize, mode: Mode, tuning: Tuning) -> Self {
        Self {
            total,
            procs,
            mode,
            tuning,
            layout: Layout::Spread,
            group: "bench".into(),
            tag: String::new(),
        }
    }

    /// Each process's connection count, server index and partner process.
    fn shares(&self, servers: usize) -> Vec<(usize, usize, Option<usize>)> {
        let servers = servers.max(1);
        match self.layout {
            Layout::Spread | Layout::Pairs => {
                let procs = self.procs.max(1).max(servers);
                let mut per = self.total.div_ceil(procs);
                if self.layout == Layout::Pairs && per % 2 == 1 {
                    per += 1;
                }
                let mut out = Vec::new();
                let mut left = self.total;
                while left > 0 {
                    let n = per.min(left);
                    out.push((n, out.len() % servers, None));
                    left -= n;
                }
                out
            }
            Layout::CrossPairs => {
                let couples = self.procs.div_ceil(2).max(1);
                let pairs = self.total / 2;
                let per = pairs.div_ceil(couples);
                let mut out = Vec::new();
                let mut left = pairs;
                while left > 0 {
                    let n = per.min(left);
                    let a = out.len();
                    out.push((n, a % servers, Some(a + 1)));
                    out.push((n, (a + 1) % servers, Some(a)));
                    left -= n;
                }
                out
            }
        }
    }
}

/// Starts `plan`'s load processes against `servers`, returned once every
/// process is ready, with what each said when it was.
pub fn start_loads(
    ctx: &mut RunContext,
    servers: &Servers,
    plan: &LoadPlan,
) -> anyhow::Result<(Vec<LoadProc>, Vec<Ready>)> {
    let prefix = |i: usize| format!("{}p{i}u", plan.tag);
    let mut loads = Vec::new();
    for (i, (conns, server, partner)) in plan.shares(servers.procs.len()).into_iter().enumerate() {
        let args = LoadArgs {
            server: servers.procs[server].addr,
            source: ctx.next_source(),
            conns,
            mode: plan.mode,
            secret: servers.target.takes_token().then(|| SECRET.to_owned()),
            prefix: prefix(i),
            group: plan.group.clone(),
            partner_prefix: partner.map(prefix),
            tuning: plan.tuning,
        };
        loads.push(LoadProc::start(ctx, &args)?);
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
    /// Bytes of the data frames received, headers included.
    pub frame_bytes: u64,
}

pub fn collect(loads: &mut [LoadProc], limit: Duration) -> anyhow::Result<Collected> {
    let mut all = Collected {
        hist: latency_histogram()?,
        read_hist: latency_histogram()?,
        received: 0,
        shared_stamp: 0,
        last_ns: 0,
        cpu_s: 0.0,
        frame_bytes: 0,
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
        all.frame_bytes += r.frame_bytes;
        r.hist_us.add_to(&mut all.hist)?;
        r.read_hist_us.add_to(&mut all.read_hist)?;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(total: usize, procs: usize, layout: Layout) -> LoadPlan {
        let mut p = LoadPlan::new(total, procs, Mode::Direct, Tuning::default());
        p.layout = layout;
        p
    }

    #[test]
    fn spread_alternates_servers_and_covers_every_connection() {
        let shares = plan(10_000, 4, Layout::Spread).shares(2);
        assert_eq!(
            shares,
            [
                (2_500, 0, None),
                (2_500, 1, None),
                (2_500, 0, None),
                (2_500, 1, None)
            ]
        );
        // One server: as before, every process on it.
        let one = plan(1_001, 2, Layout::Pairs).shares(1);
        assert_eq!(one, [(502, 0, None), (499, 0, None)]);
        // Fewer processes than servers would leave a server without load.
        assert_eq!(plan(10, 1, Layout::Spread).shares(2).len(), 2);
    }

    #[test]
    fn metric_lines_are_found_by_name_and_labels() {
        let text = "# HELP wshub_connections x\n# TYPE wshub_connections gauge\nwshub_connections 12\nwshub_history_messages 300\nwshub_recoveries_total{result=\"recovered\"} 7\nwshub_recoveries_total{result=\"reset\"} 1\n# EOF\n";
        assert_eq!(metric_value(text, "wshub_connections"), Some(12.0));
        assert_eq!(metric_value(text, "wshub_history_messages"), Some(300.0));
        assert_eq!(
            metric_value(text, r#"wshub_recoveries_total{result="reset"}"#),
            Some(1.0)
        );
        assert_eq!(metric_value(text, "wshub_users"), None);
    }

    #[test]
    fn cross_pairs_put_partners_on_different_servers() {
        let shares = plan(2_000, 4, Layout::CrossPairs).shares(2);
        assert_eq!(
            shares,
            [
                (500, 0, Some(1)),
                (500, 1, Some(0)),
                (500, 0, Some(3)),
                (500, 1, Some(2))
            ]
        );
        let total: usize = shares.iter().map(|s| s.0).sum();
        assert_eq!(total, 2_000);
        for (i, &(n, server, partner)) in shares.iter().enumerate() {
            let (pn, pserver, back) = shares[partner.unwrap()];
            assert_eq!((pn, back), (n, Some(i)));
            assert_ne!(server, pserver);
        }
    }
}
