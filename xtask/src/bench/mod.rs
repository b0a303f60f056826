//! `cargo xtask bench`: drives a release `wshub-server` over loopback from
//! separate load processes, runs the same load against two baselines, and
//! prints a table (JSON under `target/bench/`). See BENCHMARKS.md.

pub mod baseline;
pub mod load;
mod procs;
mod receiver;
mod report;
mod scenarios;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::json;

use crate::cmd::{cargo, root, run as run_cmd};
use procs::{ServerProc, Target};
use report::{machine, print_table};
use scenarios::{connect_rate, direct, fanout, idle};

pub(crate) const SECRET: &str = "bench-secret-0123456789abcdef";
pub(crate) const API_KEY: &str = "bench-api-key";

/// Source addresses handed out so far in this run.
pub(crate) static NEXT_SOURCE: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

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
    /// Microseconds a load process sleeps when none of its sockets is ready
    /// (it polls rather than waits; see xtask/src/bench/receiver.rs).
    #[arg(long, default_value_t = 250)]
    pub poll_us: u64,
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
pub(crate) fn maybe_pinned(cmd: Command, cpu: &str) -> Command {
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
