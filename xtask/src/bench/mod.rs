//! `cargo xtask bench`: drives a release `wshub-server` over loopback from
//! separate load processes, runs the same load against the baselines
//! (`baseline.rs`: a careful minimal hub, a minimal hub that flushes every
//! frame, and the raw limit; their frames padded to wshub's length), and
//! prints a table (JSON under `target/bench/`). See BENCHMARKS.md.
//!
//! `--cluster` runs fan-out and direct against one process and against a
//! cluster (two processes on a private Redis) in the same run, then the
//! cluster's own measures (`cluster.rs`).

pub mod baseline;
mod cluster;
mod lines;
pub mod load;
mod load_args;
mod procs;
mod receiver;
mod report;
mod scenarios;
mod storm;
mod wire;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::ValueEnum;
use serde_json::json;

use crate::cmd::{cargo, root, run as run_cmd};
use procs::{RunContext, Servers, Target};
use report::{baseline_summary, cluster_summary, history_summary, machine, print_table, source};
use scenarios::{connect_rate, direct, fanout, idle};

pub(crate) const SECRET: &str = "bench-secret-0123456789abcdef";
pub(crate) const API_KEY: &str = "bench-api-key";

/// A choice as it is spelled on the command line, which is also how the
/// report names it.
pub(crate) fn spelling<T: ValueEnum>(choice: &T) -> String {
    choice
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Fan-out: pushes to the group as fast as the API answers
    /// (`--push-conns` at once), each push's API latency recorded.
    Burst,
    /// Fan-out: pushes at `--paced-rate` for `--paced-secs`.
    Paced,
    /// Pairs of users messaging each other.
    Direct,
    /// How fast connections open.
    Connect,
    /// Server memory per idle connection.
    Idle,
    /// Cluster: Redis commands per group push, at each of `--group-sizes`.
    #[value(name = "redis-commands")]
    RedisCommands,
    /// Cluster: from a restarted Redis accepting connections until every
    /// server serves again, holding `--subscribers` user channels.
    Resubscribe,
    /// History: `--storm-clients` group members away while
    /// `--storm-missed` pushes go out, then all reconnecting at once with
    /// `resume=1` (PROTOCOL.md §10).
    #[value(name = "resume-storm")]
    ResumeStorm,
}

impl Scenario {
    /// The servers this scenario compares. Only wshub has direct messages
    /// and tokens to verify; the raw limit holds no per-connection state
    /// worth comparing idle memory with; memory and connect rate are one
    /// process's.
    fn targets(self) -> &'static [Target] {
        match self {
            // Burst also against `--history 0`: what keeping history costs.
            Scenario::Burst => &[
                Target::Wshub,
                Target::WshubNoHistory,
                Target::CarefulHub,
                Target::Hub,
                Target::Raw,
                Target::Cluster,
            ],
            Scenario::Paced => &[
                Target::Wshub,
                Target::CarefulHub,
                Target::Hub,
                Target::Raw,
                Target::Cluster,
            ],
            Scenario::ResumeStorm => &[Target::Wshub, Target::Cluster],
            Scenario::Idle => &[Target::Wshub, Target::CarefulHub, Target::Hub],
            Scenario::Direct => &[Target::Wshub, Target::Cluster],
            Scenario::Connect => &[Target::Wshub],
            Scenario::RedisCommands | Scenario::Resubscribe => &[Target::Cluster],
        }
    }
}

/// The scenarios and targets a plain run measures.
const DEFAULT_SCENARIOS: [Scenario; 6] = [
    Scenario::Burst,
    Scenario::Paced,
    Scenario::Direct,
    Scenario::ResumeStorm,
    Scenario::Connect,
    Scenario::Idle,
];
const DEFAULT_TARGETS: [Target; 5] = [
    Target::Wshub,
    Target::WshubNoHistory,
    Target::CarefulHub,
    Target::Hub,
    Target::Raw,
];
/// What `--cluster` measures: one process against a cluster, same run.
const CLUSTER_SCENARIOS: [Scenario; 4] = [
    Scenario::Burst,
    Scenario::Direct,
    Scenario::RedisCommands,
    Scenario::Resubscribe,
];
const CLUSTER_TARGETS: [Target; 2] = [Target::Wshub, Target::Cluster];

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Small sizes, in place of the size flags: the whole suite in under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Cluster mode against one process in the same run: burst and direct
    /// against `wshub` and `wshub-cluster` (two servers with `--redis` on a
    /// private redis-server, which must be installed), then
    /// redis-commands and resubscribe. Changes the defaults of
    /// `--scenarios` and `--targets`.
    #[arg(long)]
    pub cluster: bool,
    /// Scenarios to run, comma-separated, in order [default:
    /// burst,paced,direct,resume-storm,connect,idle; with --cluster:
    /// burst,direct,redis-commands,resubscribe] (connect before idle:
    /// tearing down 19,000 sockets disturbs what follows).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenarios: Option<Vec<Scenario>>,
    /// Subscribers in the fan-out group.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Pushes in the fan-out burst.
    #[arg(long, default_value_t = 200)]
    pub pushes: usize,
    /// burst and paced: API connections pushing at once, each waiting for
    /// its answer before its next push (so at most this many pushes in
    /// flight); every push's API latency is reported.
    #[arg(long, default_value_t = 16)]
    pub push_conns: usize,
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
    /// Microseconds a load process sleeps when none of its sockets is ready
    /// (it polls rather than waits; see xtask/src/bench/receiver.rs).
    #[arg(long, default_value_t = 250)]
    pub poll_us: u64,
    /// Servers to measure, comma-separated [default:
    /// wshub,wshub-history-0,careful-hub,minimal-hub-flush-each,raw-limit;
    /// with --cluster: wshub,wshub-cluster] (each only runs the scenarios
    /// it takes part in). The baselines: careful-hub (broadcast channel
    /// per group, tokio-tungstenite with 8 KiB read and 16 KiB write
    /// buffers, up to 64 frames per flush), minimal-hub-flush-each
    /// (default buffers, a flush per frame; `minimal-hub` also chooses
    /// it), raw-limit (one pre-framed buffer written to every socket);
    /// none has auth or an envelope, and the bodies pushed to them are
    /// padded so their frames are as long as wshub's.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub targets: Option<Vec<Target>>,
    /// redis-commands: group sizes to push to, comma-separated
    /// (`--pushes` pushes each).
    #[arg(long, default_value = "100,10000", value_delimiter = ',')]
    pub group_sizes: Vec<usize>,
    /// resubscribe: Redis restarts to measure.
    #[arg(long, default_value_t = 3)]
    pub restarts: u32,
    /// resume-storm: clients (distinct users of one group) that leave and
    /// come back all at once.
    #[arg(long, default_value_t = 5_000)]
    pub storm_clients: usize,
    /// resume-storm: pushes to the group while they are away.
    #[arg(long, default_value_t = 20)]
    pub storm_missed: usize,
    /// burst: messages pushed after it, 100 to each of as many new groups
    /// as that takes, to weigh what history holds per message against
    /// `wshub-history-0` (0: only what the burst left).
    #[arg(long, default_value_t = 100_000)]
    pub history_fill: usize,
    /// Runs of every scenario against every target, the targets' order
    /// reversed every other round; summaries report medians. These
    /// machines are noisy: two runs of one server differ by up to a
    /// quarter, so a comparison within 10 % needs several rounds.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Pin the server to CPU 0 and the load processes to CPU 1 (taskset),
    /// so neither preempts the other; halves the server's cores.
    #[arg(long)]
    pub pin: bool,
    /// Cluster: the nice value Redis runs at (renice; negative is a higher
    /// priority). On a machine where Redis shares its cores with the
    /// servers and the load, a Redis taken off its core in the middle of a
    /// command holds up every server (BENCHMARKS.md); 0 leaves it as
    /// started.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub redis_nice: i32,
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
            self.group_sizes = vec![100, 1_000];
            self.restarts = 1;
            self.storm_clients = 1_000;
            self.history_fill = 20_000;
        }
    }

    fn scenarios(&self) -> Vec<Scenario> {
        self.scenarios.clone().unwrap_or_else(|| {
            if self.cluster {
                CLUSTER_SCENARIOS.to_vec()
            } else {
                DEFAULT_SCENARIOS.to_vec()
            }
        })
    }

    fn targets(&self) -> Vec<Target> {
        self.targets.clone().unwrap_or_else(|| {
            if self.cluster {
                CLUSTER_TARGETS.to_vec()
            } else {
                DEFAULT_TARGETS.to_vec()
            }
        })
    }
}

/// Set for the bench run by the release build of xtask (`run` re-runs
/// itself there), to the source the servers were built from (`source`,
/// as JSON), read before the build.
const DRIVER_ENV: &str = "WSHUB_BENCH_DRIVER";

/// Runs this same `bench` command in the release build of xtask, which
/// `run` has just built, and returns how that went. `cargo xtask` is a
/// debug build, and the driver shares the two cores with what it measures:
/// unoptimized, its reading of a server's log (a line per connection
/// opened and closed, which only wshub writes) took 2 % of the machine
/// during the connect scenario.
fn run_optimized_driver(source: &serde_json::Value) -> anyhow::Result<()> {
    let mut driver = std::process::Command::new(crate::cmd::target_bin("release", "xtask"));
    driver
        .args(std::env::args_os().skip(1))
        .env(DRIVER_ENV, source.to_string());
    let status = driver.status().context("cannot run the release xtask")?;
    if !status.success() {
        anyhow::bail!("bench failed: {status}");
    }
    Ok(())
}

pub fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    let Some(source) = std::env::var(DRIVER_ENV)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
    else {
        // Read before the build, which builds whatever the tree holds now.
        let source = source();
        let mut build = cargo();
        build.args(["build", "--release", "-p", "wshub-server", "-p", "xtask"]);
        run_cmd(build)?;
        return run_optimized_driver(&source);
    };
    args.apply_quick();
    let mut ctx = RunContext::new(args.pin, args.redis_nice);

    let targets = args.targets();
    let mut results = Vec::new();
    let mut load_cpu = 0.0;
    for scenario in args.scenarios() {
        let sizes: Vec<usize> = if scenario == Scenario::Idle {
            args.idle.clone()
        } else {
            vec![0]
        };
        let name = spelling(&scenario);
        if !scenario.targets().iter().any(|t| targets.contains(t)) {
            let takes: Vec<String> = scenario.targets().iter().map(spelling).collect();
            eprintln!(
                "bench: {name} skipped: it runs against {}, none of them in --targets",
                takes.join(", ")
            );
            continue;
        }
        for size in sizes {
            // Several rounds alternate the order of the targets (forward,
            // then backward), so neither always runs first on a warm or a
            // cold machine; summaries take the median over rounds.
            for round in 0..args.rounds.max(1) {
                let mut order: Vec<Target> = scenario
                    .targets()
                    .iter()
                    .copied()
                    .filter(|t| targets.contains(t))
                    .collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for target in order {
                    let target_name = spelling(&target);
                    eprintln!(
                        "bench: {name} {target_name} {}{}",
                        if size > 0 {
                            size.to_string()
                        } else {
                            String::new()
                        },
                        if args.rounds > 1 {
                            format!(" (round {})", round + 1)
                        } else {
                            String::new()
                        }
                    );
                    let mut servers = Servers::start(&ctx, target)
                        .with_context(|| format!("starting {target_name}"))?;
                    let r = match scenario {
                        Scenario::Burst => fanout(&mut ctx, &args, &servers, false),
                        Scenario::Paced => fanout(&mut ctx, &args, &servers, true),
                        Scenario::Direct => direct(&mut ctx, &args, &servers),
                        Scenario::Idle => idle(&mut ctx, &args, &servers, size),
                        Scenario::Connect => connect_rate(&mut ctx, &args, &servers),
                        Scenario::RedisCommands => {
                            cluster::redis_commands(&mut ctx, &args, &servers)
                        }
                        Scenario::Resubscribe => {
                            cluster::resubscribe(&mut ctx, &args, &mut servers)
                        }
                        Scenario::ResumeStorm => storm::resume_storm(&mut ctx, &args, &servers),
                    };
                    let mut r = r.with_context(|| format!("{name} against {target_name}"))?;
                    load_cpu += r["load_cpu_s"].as_f64().unwrap_or(0.0);
                    r["scenario"] = json!(name);
                    r["target"] = json!(target_name);
                    r["round"] = json!(round + 1);
                    eprintln!("  {r}");
                    results.push(r);
                }
            }
        }
    }
    let mut report = json!({
        "machine": machine(),
        "commit": source,
        "quick": args.quick,
        "pinned": args.pin,
        "redis_nice": args.redis_nice,
        "load_cpu_seconds": load_cpu,
        "results": results,
    });
    if let Some(summary) = cluster_summary(&report["results"]) {
        report["cluster"] = summary;
    }
    if let Some(summary) = history_summary(&report["results"]) {
        report["history"] = summary;
    }
    if let Some(summary) = baseline_summary(&report["results"]) {
        report["baselines"] = summary;
    }
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn defaults_run_every_scenario_against_every_target() {
        let args = parse(&[]).unwrap();
        assert_eq!(
            args.scenarios(),
            [
                Scenario::Burst,
                Scenario::Paced,
                Scenario::Direct,
                Scenario::ResumeStorm,
                Scenario::Connect,
                Scenario::Idle
            ]
        );
        assert_eq!(
            args.targets(),
            [
                Target::Wshub,
                Target::WshubNoHistory,
                Target::CarefulHub,
                Target::Hub,
                Target::Raw
            ]
        );
        // The burst compares wshub with the careful hub and the raw limit
        // in one invocation, with 16 pushes in flight.
        for t in [Target::Wshub, Target::CarefulHub, Target::Raw] {
            assert!(Scenario::Burst.targets().contains(&t), "{t:?}");
        }
        assert_eq!(args.push_conns, 16);
        // History's price: burst against both; the storm against wshub.
        assert!(Scenario::Burst.targets().contains(&Target::WshubNoHistory));
        assert_eq!(Scenario::ResumeStorm.targets()[0], Target::Wshub);
    }

    #[test]
    fn history_measures_are_spelled_as_the_issue_names_them() {
        let args = parse(&[
            "--targets",
            "wshub,wshub-history-0",
            "--scenarios",
            "burst,resume-storm",
        ])
        .unwrap();
        assert_eq!(args.targets(), [Target::Wshub, Target::WshubNoHistory]);
        assert_eq!(args.scenarios(), [Scenario::Burst, Scenario::ResumeStorm]);
        assert_eq!(
            (args.storm_clients, args.storm_missed, args.history_fill),
            (5_000, 20, 100_000)
        );
        let mut quick = parse(&["--quick"]).unwrap();
        quick.apply_quick();
        assert_eq!((quick.storm_clients, quick.history_fill), (1_000, 20_000));
    }

    #[test]
    fn cluster_compares_one_process_with_a_cluster() {
        let args = parse(&["--cluster"]).unwrap();
        assert_eq!(
            args.scenarios(),
            [
                Scenario::Burst,
                Scenario::Direct,
                Scenario::RedisCommands,
                Scenario::Resubscribe
            ]
        );
        assert_eq!(args.targets(), [Target::Wshub, Target::Cluster]);
        for s in args.scenarios() {
            assert!(s.targets().contains(&Target::Cluster), "{s:?}");
        }
        // Explicit choices still win.
        let args = parse(&["--cluster", "--scenarios", "resubscribe"]).unwrap();
        assert_eq!(args.scenarios(), [Scenario::Resubscribe]);
        assert_eq!(spelling(&Target::Cluster), "wshub-cluster");
        assert_eq!(spelling(&Scenario::RedisCommands), "redis-commands");
    }

    #[test]
    fn quick_keeps_the_cluster_measures_small() {
        let mut args = parse(&["--cluster", "--quick"]).unwrap();
        args.apply_quick();
        assert_eq!(args.group_sizes, [100, 1_000]);
        assert_eq!(args.restarts, 1);
        assert_eq!(args.subscribers, 1_000);
    }

    #[test]
    fn a_mistyped_choice_is_refused_with_the_valid_ones() {
        let err = parse(&["--scenarios", "burst,bursst"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        let text = err.to_string();
        assert!(text.contains("bursst"), "{text}");
        assert!(text.contains("connect"), "{text}");
        assert!(parse(&["--targets", "minimal"]).is_err());
    }

    #[test]
    fn the_report_names_are_the_flag_spellings() {
        let args = parse(&[
            "--targets",
            "raw-limit,minimal-hub-flush-each,careful-hub",
            "--scenarios",
            "idle",
        ])
        .unwrap();
        assert_eq!(
            args.targets(),
            [Target::Raw, Target::Hub, Target::CarefulHub]
        );
        let names: Vec<String> = args.targets().iter().map(spelling).collect();
        assert_eq!(
            names,
            ["raw-limit", "minimal-hub-flush-each", "careful-hub"]
        );
        // The old name still chooses the hub that flushes every frame, and
        // the report calls it by its new one.
        let old = parse(&["--targets", "minimal-hub"]).unwrap();
        assert_eq!(old.targets(), [Target::Hub]);
        assert_eq!(spelling(&Target::Hub), "minimal-hub-flush-each");
        assert_eq!(spelling(&Scenario::Connect), "connect");
    }
}
