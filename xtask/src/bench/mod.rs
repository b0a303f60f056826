//! `cargo xtask bench`: drives a release `wshub-server` over loopback from
//! separate load processes, runs the same load against two baselines, and
//! prints a table (JSON under `target/bench/`). See BENCHMARKS.md.

pub mod baseline;
mod lines;
pub mod load;
mod load_args;
mod procs;
mod receiver;
mod report;
mod scenarios;
mod wire;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::ValueEnum;
use serde_json::json;

use crate::cmd::{cargo, root, run as run_cmd};
use procs::{RunContext, ServerProc, Target};
use report::{machine, print_table};
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
    /// Fan-out: pushes to the group as fast as the API answers.
    Burst,
    /// Fan-out: pushes at `--paced-rate` for `--paced-secs`.
    Paced,
    /// Pairs of users messaging each other.
    Direct,
    /// How fast connections open.
    Connect,
    /// Server memory per idle connection.
    Idle,
}

impl Scenario {
    /// The servers this scenario compares. Only wshub has direct messages
    /// and tokens to verify; the raw limit holds no per-connection state
    /// worth comparing idle memory with.
    fn targets(self) -> &'static [Target] {
        match self {
            Scenario::Burst | Scenario::Paced => &[Target::Wshub, Target::Hub, Target::Raw],
            Scenario::Idle => &[Target::Wshub, Target::Hub],
            Scenario::Direct | Scenario::Connect => &[Target::Wshub],
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Small sizes, in place of the size flags: the whole suite in under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Scenarios to run, comma-separated, in order (connect before idle by
    /// default: tearing down 19,000 sockets disturbs what follows).
    #[arg(
        long,
        value_enum,
        default_value = "burst,paced,direct,connect,idle",
        value_delimiter = ','
    )]
    pub scenarios: Vec<Scenario>,
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
    /// Servers to measure, comma-separated (baselines only run the
    /// scenarios they take part in).
    #[arg(
        long,
        value_enum,
        default_value = "wshub,minimal-hub,raw-limit",
        value_delimiter = ','
    )]
    pub targets: Vec<Target>,
    /// Pin the server to CPU 0 and the load processes to CPU 1 (taskset),
    /// so neither preempts the other; halves the server's cores.
    #[arg(long)]
    pub pin: bool,
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
    let mut ctx = RunContext::new(args.pin);
    let mut build = cargo();
    build.args(["build", "--release", "-p", "wshub-server", "-p", "xtask"]);
    run_cmd(build)?;

    let mut results = Vec::new();
    let mut load_cpu = 0.0;
    for &scenario in &args.scenarios {
        let sizes: Vec<usize> = if scenario == Scenario::Idle {
            args.idle.clone()
        } else {
            vec![0]
        };
        let name = spelling(&scenario);
        for size in sizes {
            for &target in scenario.targets() {
                if !args.targets.contains(&target) {
                    continue;
                }
                let target_name = spelling(&target);
                eprintln!(
                    "bench: {name} {target_name} {}",
                    if size > 0 {
                        size.to_string()
                    } else {
                        String::new()
                    }
                );
                let server = ServerProc::start(&ctx, target)?;
                let r = match scenario {
                    Scenario::Burst => fanout(&mut ctx, &args, &server, false),
                    Scenario::Paced => fanout(&mut ctx, &args, &server, true),
                    Scenario::Direct => direct(&mut ctx, &args, &server),
                    Scenario::Idle => idle(&mut ctx, &args, &server, size),
                    Scenario::Connect => connect_rate(&mut ctx, &args, &server),
                };
                let mut r = r.with_context(|| format!("{name} against {target_name}"))?;
                load_cpu += r["load_cpu_s"].as_f64().unwrap_or(0.0);
                r["scenario"] = json!(name);
                r["target"] = json!(target_name);
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
            args.scenarios,
            [
                Scenario::Burst,
                Scenario::Paced,
                Scenario::Direct,
                Scenario::Connect,
                Scenario::Idle
            ]
        );
        assert_eq!(args.targets, [Target::Wshub, Target::Hub, Target::Raw]);
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
        let args = parse(&["--targets", "raw-limit,minimal-hub", "--scenarios", "idle"]).unwrap();
        assert_eq!(args.targets, [Target::Raw, Target::Hub]);
        let names: Vec<String> = args.targets.iter().map(spelling).collect();
        assert_eq!(names, ["raw-limit", "minimal-hub"]);
        assert_eq!(spelling(&Scenario::Connect), "connect");
    }
}
