//! `cargo xtask soak --minutes N [--cluster]`: a bounded mixed load over
//! loopback for N minutes, with an exactly-once checker built on the
//! stream positions of PROTOCOL.md §10, and the server's RSS, open files and
//! threads sampled all along (docs/testing.md, "Soak").
//!
//! One release `wshub-server` (or, with `--cluster`, a private
//! `redis-server` with AOF and two servers on it). `--clients` users hold
//! one connection each and run the load themselves (chat to a partner,
//! publishes, frame joins and leaves, socket drops with resume, slow
//! readers, bad and oversized frames, short-lived tokens); driver tasks push
//! through the API (users, groups, broadcasts), join and remove members
//! through the API and kick users. Then the load stops, the clients drain
//! for a few seconds, and every checked stream of every client is compared
//! with the stream's top as the history API gives it.
//!
//! The checker ([`check`]) follows, per client and per stream it reads, the
//! last seq it has, the seqs it skipped (holes) and the seqs of its own
//! sends and publishes acknowledged ahead of the messages before them. A
//! message at or below the last seq is a duplicate, one that fills a hole
//! is out of order, a hole left at the end is a loss, and so is a last seq
//! below the stream's top at the end. A resume that answers
//! `recovered:true` keeps the client's expectations, `false` resets them to
//! the position in `welcome` (counted and listed).

mod check;
mod drills;
mod link;
mod load;
mod netns;
mod report;
mod sample;

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};
use test_support::{RedisServer, Server, ServerBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cmd::{cargo, run as run_cmd, target_bin};

pub(crate) const SECRET: &str = "soak-secret-7c1e9a4b2d6f8e3a";
pub(crate) const API_KEY: &str = "soak-api-key-5b8d2f";

/// Groups every client is put in (two each, through the API) and whose
/// streams are checked strictly.
pub(crate) const STABLE_GROUPS: usize = 5;
/// Groups joined and left all the time, by frames and through the API;
/// their streams are checked for order and duplicates on each connection
/// only (a membership change has no exact position on the stream).
pub(crate) const CHURN_GROUPS: usize = 4;

#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    /// Length of the load phase in minutes (fractions allowed).
    #[arg(long, default_value_t = 2.0)]
    pub minutes: f64,
    /// Length of the load phase in seconds; overrides --minutes.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// A private redis-server (AOF) and two servers on it; clients resume on
    /// a random server.
    #[arg(long)]
    pub cluster: bool,
    /// With --cluster: fault drills during the load (Redis killed and
    /// restarted, a server killed and restarted on its port, Redis paused,
    /// the network to Redis delayed and lossy), each followed by a measured
    /// heal. Redis then runs in a network namespace of its own: needs root.
    #[arg(long, requires = "cluster")]
    pub drills: bool,
    /// Users, one connection each (every client task ends with the run).
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Each client sends a direct message about this often (ms).
    #[arg(long, default_value_t = 2000)]
    pub send_every_ms: u64,
    /// Each client publishes to one of its groups about this often (ms).
    #[arg(long, default_value_t = 4000)]
    pub publish_every_ms: u64,
    /// Each client drops its socket (no close) about this often (s), then
    /// resumes on a random server.
    #[arg(long, default_value_t = 45.0)]
    pub drop_every_secs: f64,
    /// Each client joins or leaves a churn group by frame about this often (s).
    #[arg(long, default_value_t = 15.0)]
    pub churn_every_secs: f64,
    /// API pushes to users per second.
    #[arg(long, default_value_t = 10.0)]
    pub user_pushes: f64,
    /// API pushes to groups per second.
    #[arg(long, default_value_t = 3.0)]
    pub group_pushes: f64,
    /// API broadcasts per second.
    #[arg(long, default_value_t = 1.0)]
    pub broadcasts: f64,
    /// API membership changes (join or remove a user) per second.
    #[arg(long, default_value_t = 2.0)]
    pub api_members: f64,
    /// Kicks (DELETE /users/{u}/connections) per second.
    #[arg(long, default_value_t = 0.5)]
    pub kicks: f64,
    /// Bytes of padding in the API pushes each slow reader gets about once
    /// a second (0: none, the default), so that its backlog outgrows the
    /// socket buffers and `--queue` while it pauses (close 1013, then a
    /// resume). 16384 makes a few 1013 closes a minute; the server's RSS
    /// then takes longer than half of a short run to level off.
    #[arg(long, default_value_t = 0)]
    pub slow_push_bytes: usize,
    /// One client in this many is a slow reader, one a bad-frame sender,
    /// one has tokens that expire mid-run.
    #[arg(long, default_value_t = 20)]
    pub special_every: usize,
    /// The server's `--history` (messages kept per stream).
    #[arg(long, default_value_t = 1000)]
    pub history: u64,
    /// The server's `--history-ttl` (seconds): short, so that what history
    /// holds stops growing within the warm-up (a message is kept this long),
    /// and long enough for every planned absence (slow readers pause up to
    /// 20 s). A stream with no message for this long gets a new epoch, so
    /// the rates must keep every checked stream busier than that.
    #[arg(long, default_value_t = 25)]
    pub history_ttl: u64,
    /// The server's `--queue` (outbound frames per connection); below the
    /// default so that the slow readers meet it sooner.
    #[arg(long, default_value_t = 128)]
    pub queue: u64,
    /// Seconds between samples of the server processes.
    #[arg(long, default_value_t = 2.0)]
    pub sample_secs: f64,
    /// Seconds the clients keep reading (and reconnecting) after the load.
    #[arg(long, default_value_t = 6.0)]
    pub drain_secs: f64,
    /// Allowed growth of RSS, open files and threads over the last half of
    /// the load (the mean of its last tenth over the mean from 45 to 55 %
    /// of it), in percent.
    #[arg(long, default_value_t = 5.0)]
    pub max_growth_pct: f64,
    /// RSS growth fails the run only when it is past this many KiB as
    /// well: one high-water step of glibc's arenas is 0.5 to 1 MiB here,
    /// 3 to 6 % of a 17 MB server (docs/testing.md, "Resources").
    #[arg(long, default_value_t = 1536.0)]
    pub min_rss_growth_kib: f64,
    /// Seed of the clients' random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Self-test of the checker: the clients ignore one message in this
    /// many (0: none), as if it had been lost; the run must then fail.
    #[arg(long, default_value_t = 0, hide = true)]
    pub lose_one_in: u64,
    /// Skip `cargo build --release -p wshub-server` (use the binary there).
    #[arg(long)]
    pub no_build: bool,
}

impl SoakArgs {
    pub fn load_secs(&self) -> f64 {
        self.seconds.unwrap_or(self.minutes * 60.0).max(5.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Load,
    Drain,
    Done,
}

/// What every task shares: where the servers are, the phase, and the
/// tallies.
pub(crate) struct Ctx {
    pub args: SoakArgs,
    pub servers: Vec<SocketAddr>,
    pub start: Instant,
    pub load_end: Instant,
    pub phase: tokio::sync::watch::Receiver<Phase>,
    /// When each user was last kicked (ms since `start`, 0: never).
    pub kicked_at: Vec<AtomicU64>,
    /// The highest seq an API broadcast was given.
    pub broadcast_top: AtomicU64,
    /// Messages the clients received (all streams).
    pub received: AtomicU64,
    pub tally: Tally,
    /// The pid of each server (it changes when a drill restarts one).
    pub pids: Vec<AtomicU32>,
    /// The pid of Redis (0: none; it changes when a drill restarts it).
    pub redis_pid: AtomicU32,
    /// Bumped each time a drill kills that server: a client connected
    /// before the bump lost its socket for a reason it was told of.
    pub server_gen: Vec<AtomicU64>,
    pub drill: DrillState,
}

/// What the drills share with the load: which drill's window is open, what
/// was refused or lost in each, and what must never be delivered.
#[derive(Default)]
pub(crate) struct DrillState {
    /// The drill whose window (fault to heal, plus a grace) is open;
    /// `usize::MAX`: none.
    pub now: AtomicUsize,
    /// Each drill's window, ms since the start (end `u64::MAX` while open).
    pub windows: Mutex<Vec<(u64, u64)>>,
    /// Per drill: what was refused (`unavailable`), lost or not answered.
    pub counts: Mutex<Vec<BTreeMap<String, u64>>>,
    /// Keys (`from/k`, `api/k`) of sends, publishes and pushes refused
    /// with `unavailable` (§11: never delivered later), with the drill
    /// they were sent in, when (ms) and how long the refusal took (ms).
    pub refused: Mutex<BTreeMap<String, (usize, u64, u64)>>,
    /// Keys of every message delivered while drills run, to catch a
    /// refused one delivered before its refusal was read.
    pub delivered: Mutex<HashSet<String>>,
    /// Broadcasts whose outcome is unknown (no answer): each may have been
    /// stored, so the broadcast stream's top may be that much higher.
    pub broadcasts_unknown: AtomicU64,
}

pub(crate) const NO_DRILL: usize = usize::MAX;

impl Ctx {
    /// Counts `what` against the open drill window, if one is open (and
    /// in the tallies); false when no drill window is open.
    pub fn in_drill(&self, what: &str) -> bool {
        self.in_drill_at(what, self.ms()).is_some()
    }

    /// The first drill whose window overlaps `from_ms..=to_ms`, counting
    /// nothing.
    pub fn drill_during(&self, from_ms: u64, to_ms: u64) -> Option<usize> {
        if !self.args.drills {
            return None;
        }
        self.drill
            .windows
            .lock()
            .unwrap()
            .iter()
            .position(|&(a, b)| a <= to_ms && from_ms <= b)
    }

    /// [`in_drill`](Self::in_drill) for something that began at `t_ms`
    /// and ends now (a request sent then, answered now): the drill whose
    /// window overlapped it. A request sent just before a drill began can
    /// be caught by it.
    pub fn in_drill_at(&self, what: &str, t_ms: u64) -> Option<usize> {
        let i = self.drill_during(t_ms, self.ms().max(t_ms))?;
        let mut c = self.drill.counts.lock().unwrap();
        if c.len() <= i {
            c.resize_with(i + 1, BTreeMap::new);
        }
        *c[i].entry(what.to_owned()).or_default() += 1;
        drop(c);
        self.tally.count(what, 1);
        Some(i)
    }
}

/// Counts of what happened and of what went wrong, with a few examples.
#[derive(Default)]
pub(crate) struct Tally {
    counts: Mutex<BTreeMap<String, u64>>,
    failures: Mutex<BTreeMap<String, (u64, Vec<String>)>>,
    resets: Mutex<Vec<Value>>,
}

impl Tally {
    pub fn count(&self, what: &str, n: u64) {
        *self
            .counts
            .lock()
            .unwrap()
            .entry(what.to_owned())
            .or_default() += n;
    }

    pub fn fail(&self, kind: &str, detail: String) {
        let mut f = self.failures.lock().unwrap();
        let e = f.entry(kind.to_owned()).or_default();
        e.0 += 1;
        if e.1.len() < 5 {
            e.1.push(detail);
        }
    }

    pub fn reset(&self, v: Value) {
        let mut r = self.resets.lock().unwrap();
        if r.len() < 100 {
            r.push(v);
        }
    }

    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap().clone()
    }

    pub fn failures(&self) -> BTreeMap<String, (u64, Vec<String>)> {
        self.failures.lock().unwrap().clone()
    }

    pub fn resets(&self) -> Vec<Value> {
        self.resets.lock().unwrap().clone()
    }
}

impl Ctx {
    pub fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// A small deterministic generator (SplitMix64): no dependency, and a run
/// can be repeated with its seed.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An exponential wait with mean `mean` (a Poisson process).
    pub fn exp(&mut self, mean: Duration) -> Duration {
        let u = 1.0 - self.unit();
        mean.mul_f64((-u.ln()).min(10.0))
    }

    /// Uniform in `[0.5, 1.5)` times `mean`.
    pub fn jitter(&mut self, mean: Duration) -> Duration {
        mean.mul_f64(0.5 + self.unit())
    }
}

/// One request to the API of the server at `addr`, `Connection: close`,
/// bounded by 10 s; the status and the body (JSON when it is).
pub(crate) async fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, Value, String)> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .with_context(|| format!("{method} {path}: no answer within 10 s"))??;
    let res = test_support::Response::from_raw(&raw)
        .with_context(|| format!("{method} {path}: not an HTTP answer"))?;
    let text = res.text();
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok((res.status, v, text))
}

pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    if !args.no_build {
        let mut build = cargo();
        build.args(["build", "--release", "-p", "wshub-server"]);
        run_cmd(build)?;
    }
    anyhow::ensure!(args.clients >= 4, "--clients must be at least 4");
    anyhow::ensure!(
        args.clients <= 5_000,
        "--clients above 5000 is not a soak any more (bounded: far below 20,000 sockets)"
    );
    // Declared before the servers: dropped (deleted) after Redis.
    let netns = if args.drills {
        let ns = netns::Netns::create()?;
        eprintln!(
            "soak: network namespace {} ({} <-> {} on {}/{})",
            ns.name, ns.host_addr, ns.ns_addr, ns.host_if, ns.ns_if
        );
        Some(ns)
    } else {
        None
    };
    // Declared before the servers: dropped (killed) after them.
    let redis = match (&netns, args.cluster) {
        (_, false) => None,
        (None, true) => {
            // Panics, saying how to install it, when redis-server is missing;
            // with CI set that is a failure of the run, as in the tests.
            let r = RedisServer::start_blocking();
            Some((r.url(), r))
        }
        (Some(ns), true) => {
            let bin = ns.wrapper(&test_support::redis::redis_server_bin())?;
            let r = RedisServer::builder()
                .bin(bin)
                .args(&["--bind", &ns.ns_addr, "--protected-mode", "no"])
                .start_blocking();
            Some((format!("redis://{}:{}/0", ns.ns_addr, r.port()), r))
        }
    };
    let (mut redis_url, redis) = match redis {
        Some((u, r)) => {
            eprintln!("soak: redis-server (AOF) on {u} (pid {})", r.pid());
            (Some(u), Some(r))
        }
        None => (None, None),
    };
    // With drills the servers reach Redis through a relay that can delay
    // (link.rs): the link drill's delay where the kernel has no netem.
    let link = match (&netns, &redis) {
        (Some(ns), Some(r)) => {
            let upstream: SocketAddr = format!("{}:{}", ns.ns_addr, r.port()).parse()?;
            let l = link::DelayLink::start(upstream)?;
            eprintln!("soak: servers reach redis through a relay on {}", l.addr);
            redis_url = Some(format!("redis://{}/0", l.addr));
            Some(l)
        }
        _ => None,
    };
    let history = args.history.to_string();
    let queue = args.queue.to_string();
    let ttl = args.history_ttl.to_string();
    let url = redis_url.clone();
    let make: Arc<dyn Fn() -> ServerBuilder + Send + Sync> = Arc::new(move || {
        let mut b = Server::builder()
            .bin(target_bin("release", "wshub-server"))
            .secret(SECRET)
            .api_key(API_KEY)
            .args(&["--public-group", "s", "--public-group", "c"])
            .args(&["--history", &history, "--queue", &queue])
            .args(&["--history-ttl", &ttl]);
        if let Some(u) = &url {
            b = b.args(&["--redis", u]);
        }
        b
    });
    let start_server = |name: &str| -> Server {
        let s = make().start_blocking();
        if redis.is_some() {
            s.blocking_wait_log("broker up");
        }
        eprintln!("soak: {name} on {} (pid {})", s.addr, s.pid());
        s
    };
    let mut servers = vec![start_server("server 1")];
    if args.cluster {
        servers.push(start_server("server 2"));
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let fleet = Fleet {
        servers,
        link,
        redis,
        netns,
        make,
        old_logs: Vec::new(),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut outcome = rt.block_on(load::drive(args.clone(), addrs, fleet))?;
    drop(rt);
    let mut fleet = outcome.fleet.take().expect("the fleet comes back");

    let mut exits = Vec::new();
    let mut panics = Vec::new();
    let mut log_errors = 0u64;
    let mut scan = |who: String, lines: Vec<String>| {
        for l in lines {
            if l.contains("panicked") || l.contains("panic") {
                panics.push(format!("{who}: {l}"));
            }
            if l.contains(" ERROR ") {
                log_errors += 1;
            }
        }
    };
    for (i, lines) in std::mem::take(&mut fleet.old_logs) {
        scan(format!("server {} (killed by a drill)", i + 1), lines);
    }
    for (i, s) in fleet.servers.iter_mut().enumerate() {
        let status = s.blocking_stop();
        exits.push(json!({"server": i + 1, "status": status.to_string(), "ok": status.success()}));
        scan(format!("server {}", i + 1), s.logs());
    }
    drop(fleet);
    report::finish(&args, outcome, exits, panics, log_errors)
}

/// The processes of a run. Fields drop in order: servers, the relay,
/// Redis, then the network namespace Redis ran in.
pub(crate) struct Fleet {
    pub servers: Vec<Server>,
    /// The relay the servers reach Redis through (drills only).
    pub link: Option<link::DelayLink>,
    pub redis: Option<RedisServer>,
    pub netns: Option<netns::Netns>,
    /// How a server is started (a drill restarts one with `.listen(addr)`).
    pub make: Arc<dyn Fn() -> ServerBuilder + Send + Sync>,
    /// The logs of servers a drill killed, by index.
    pub old_logs: Vec<(usize, Vec<String>)>,
}

/// The soak as `cargo xtask ci` runs it: the defaults, `minutes` long.
pub fn run_default(minutes: f64, cluster: bool, drills: bool) -> anyhow::Result<()> {
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SoakArgs,
    }
    let mut argv = vec![
        "soak".to_owned(),
        "--minutes".to_owned(),
        minutes.to_string(),
    ];
    if cluster {
        argv.push("--cluster".to_owned());
    }
    if drills {
        argv.push("--drills".to_owned());
    }
    run(<Wrap as clap::Parser>::parse_from(argv).args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_uniform_enough_and_repeatable() {
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        let xs: Vec<u64> = (0..1000).map(|_| a.below(10)).collect();
        assert_eq!(xs, (0..1000).map(|_| b.below(10)).collect::<Vec<_>>());
        for d in 0..10 {
            let n = xs.iter().filter(|&&x| x == d).count();
            assert!((50..150).contains(&n), "{d}: {n}");
        }
        let mean = (0..10_000)
            .map(|_| a.exp(Duration::from_secs(1)).as_secs_f64())
            .sum::<f64>()
            / 10_000.0;
        assert!((0.9..1.1).contains(&mean), "{mean}");
    }
}
