//! `cargo xtask fuzz --seconds N`: builds the fuzz targets of `xtask/fuzz`
//! with cargo-fuzz (libFuzzer) and runs every one for N seconds, each on
//! its working corpus (`xtask/fuzz/corpus/<target>`, not kept) grown from
//! the seeds kept in the repo (`xtask/fuzz/seeds/<target>`). Any crash or
//! failed assertion fails the command, leaving the input under
//! `xtask/fuzz/artifacts/<target>/`. Ends with a table of executions and
//! coverage per target (docs/testing.md).
//!
//! On the stable toolchain cargo-fuzz builds without a sanitizer
//! (`--sanitizer none`: coverage instrumentation, debug assertions and
//! overflow checks only); `--sanitizer address` adds AddressSanitizer, which
//! needs nightly flags and so `RUSTC_BOOTSTRAP=1`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::cmd::{cargo, root, show};

/// Where the fuzz crate lives, relative to the workspace root.
const FUZZ_DIR: &str = "xtask/fuzz";

#[derive(clap::Args, Debug, Clone)]
pub struct FuzzArgs {
    /// Seconds to fuzz each target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Only these targets (repeatable); default: every target.
    #[arg(long = "target")]
    pub targets: Vec<String>,
    /// `none` (works on stable) or `address` (sets RUSTC_BOOTSTRAP=1).
    #[arg(long, default_value = "none")]
    pub sanitizer: String,
}

/// What libFuzzer reported at the end of one run.
#[derive(Debug, Default)]
struct Stats {
    target: String,
    execs: u64,
    cov: u64,
    ft: u64,
    corpus: u64,
    secs: u64,
}

/// `cargo fuzz` with the fuzz dir and the sanitizer settings.
fn cargo_fuzz(args: &FuzzArgs, sub: &str) -> Command {
    let mut c = cargo();
    c.args([
        "fuzz",
        sub,
        "--fuzz-dir",
        FUZZ_DIR,
        "--sanitizer",
        &args.sanitizer,
    ]);
    if args.sanitizer != "none" {
        // The sanitizer flags are nightly-only (-Zsanitizer).
        c.env("RUSTC_BOOTSTRAP", "1");
    }
    c
}

/// Whether cargo-fuzz is installed, and how to get it otherwise.
pub fn available() -> anyhow::Result<()> {
    let ok = cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        bail!("cargo-fuzz is not installed (cargo install cargo-fuzz --locked)")
    }
}

pub fn run(args: FuzzArgs) -> anyhow::Result<()> {
    available()?;
    let targets = if args.targets.is_empty() {
        list_targets()?
    } else {
        args.targets.clone()
    };
    let mut build = cargo_fuzz(&args, "build");
    if let [one] = args.targets.as_slice() {
        build.arg(one);
    }
    crate::cmd::run(build)?;
    let mut table = Vec::new();
    let mut failed = Vec::new();
    for target in &targets {
        match run_one(&args, target) {
            Ok(stats) => table.push(stats),
            Err(e) => {
                eprintln!("fuzz: {target}: {e:#}");
                failed.push(target.clone());
            }
        }
    }
    eprintln!("\n| target | seconds | executions | exec/s | cov | ft | corpus |");
    eprintln!("|---|---:|---:|---:|---:|---:|---:|");
    for s in &table {
        eprintln!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            s.target,
            s.secs,
            s.execs,
            s.execs / s.secs.max(1),
            s.cov,
            s.ft,
            s.corpus
        );
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs under {FUZZ_DIR}/artifacts/)",
            failed.join(", ")
        );
    }
    Ok(())
}

fn list_targets() -> anyhow::Result<Vec<String>> {
    let out = cargo()
        .args(["fuzz", "list", "--fuzz-dir", FUZZ_DIR])
        .output()
        .context("cannot run cargo fuzz list")?;
    if !out.status.success() {
        bail!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let targets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("no fuzz targets in {FUZZ_DIR}");
    }
    Ok(targets)
}

fn run_one(args: &FuzzArgs, target: &str) -> anyhow::Result<Stats> {
    let dir = root().join(FUZZ_DIR);
    let corpus = dir.join("corpus").join(target);
    let seeds = dir.join("seeds").join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    if !seeds.is_dir() {
        bail!("no seeds for {target}: {} is missing", seeds.display());
    }
    let mut c = cargo_fuzz(args, "run");
    // New inputs go to the first directory, the working corpus; the seeds
    // are only read.
    c.arg(target).arg(&corpus).arg(&seeds).args([
        "--".to_owned(),
        format!("-max_total_time={}", args.seconds),
        "-timeout=10".to_owned(),
        "-rss_limit_mb=2048".to_owned(),
        "-print_final_stats=1".to_owned(),
    ]);
    eprintln!("$ {}", show(&c));
    let mut child = c
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", show(&c)))?;
    let mut stats = Stats {
        target: target.to_owned(),
        ..Stats::default()
    };
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines() {
            let line = line.context("reading the fuzzer's output")?;
            read_stats(&line, &mut stats);
            // libFuzzer logs every new input; keep the milestones and
            // everything that is not a progress line (crash reports).
            let progress = line.starts_with('#')
                && !["INITED", "DONE", "pulse"].iter().any(|w| line.contains(w));
            if !progress && !line.starts_with("\tNEW_FUNC") {
                eprintln!("{line}");
            }
        }
    }
    let status = child.wait().context("waiting for the fuzzer")?;
    if !status.success() {
        bail!("{target} found a failing input ({status})");
    }
    Ok(stats)
}

/// Picks the final numbers out of libFuzzer's output: the `DONE` line
/// (`#N DONE cov: C ft: F corp: K/..`) and `-print_final_stats`.
fn read_stats(line: &str, s: &mut Stats) {
    let number_after = |key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?.trim_start();
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    if line.contains("DONE") {
        s.cov = number_after("cov:").unwrap_or(s.cov);
        s.ft = number_after("ft:").unwrap_or(s.ft);
        s.corpus = number_after("corp:").unwrap_or(s.corpus);
    }
    if let Some(n) = number_after("stat::number_of_executed_units:") {
        s.execs = n;
    }
    if line.starts_with("Done ") {
        s.secs = number_after(" runs in ").unwrap_or(s.secs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_lines() {
        let mut s = Stats::default();
        for line in [
            "#1048576 DONE   cov: 1234 ft: 5678 corp: 321/12Kb lim: 4096 exec/s: 17476 rss: 80Mb",
            "Done 1048576 runs in 61 second(s)",
            "stat::number_of_executed_units: 1048576",
        ] {
            read_stats(line, &mut s);
        }
        assert_eq!(
            (s.execs, s.cov, s.ft, s.corpus, s.secs),
            (1048576, 1234, 5678, 321, 61)
        );
    }
}
