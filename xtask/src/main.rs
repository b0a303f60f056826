//! `cargo xtask <command>`: the project's own automation, as typed Rust
//! subcommands instead of shell scripts (rust-analyzer's convention).
//!
//! - `ci`: format check, clippy, every test, the end-to-end run.
//! - `e2e`: the whole system with real processes, checked step by step;
//!   `e2e --cluster` the same on two servers sharing a private Redis.
//! - `browser`: the chat page in headless Chromium.
//! - `bench`: the benchmark suite against a release server over loopback.
//! - `fuzz`: every fuzz target of `xtask/fuzz` for N seconds (cargo-fuzz).
//! - `soak`: a bounded mixed load for N minutes with an exactly-once checker
//!   and RSS, open-file and thread samples (`--cluster`: on two servers).

mod bench;
mod browser;
mod ci;
mod cmd;
mod e2e;
mod fuzz;
mod soak;
mod tidy;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "wshub project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything CI checks: fmt, clippy, tests, e2e.
    Ci,
    /// Build, start a server and run a scripted scenario with wshub-cli.
    E2e {
        /// Run it on a cluster instead: a private redis-server and two
        /// wshub-server processes on it, clients on different processes.
        #[arg(long)]
        cluster: bool,
    },
    /// Drive the chat page in headless Chromium (needs `chromium` and npm).
    Browser,
    /// Run every fuzz target for `--seconds` each (needs cargo-fuzz; see
    /// docs/testing.md).
    Fuzz(fuzz::FuzzArgs),
    /// A bounded mixed load for `--minutes` with an exactly-once checker and
    /// resource samples (see docs/testing.md, "Soak").
    Soak(soak::SoakArgs),
    /// Run the benchmark suite (see BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Internal: one load-generating process of the benchmark.
    #[command(hide = true)]
    Load(bench::load::LoadArgs),
    /// Internal: the baseline servers the benchmark compares against.
    #[command(hide = true)]
    Baseline(bench::baseline::BaselineArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ci => ci::run(),
        Command::E2e { cluster } => e2e::run(cluster),
        Command::Browser => browser::run(),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Load(args) => bench::load::run(args),
        Command::Baseline(args) => bench::baseline::run(args),
    }
}
