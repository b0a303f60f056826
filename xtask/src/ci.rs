//! `cargo xtask ci`: what CI runs on a clean clone, and what a contributor
//! runs before pushing: format, clippy, every test, the end-to-end run on
//! one process and on a two-process cluster, the soak (two minutes on one
//! process, two on a cluster), a short pass of every fuzz target, and the
//! browser test.

use crate::cmd::{cargo, run as run_cmd};

/// Seconds per fuzz target in CI: seven targets, about a minute and a half
/// of fuzzing in all (the long runs are in docs/testing.md).
const CI_FUZZ_SECONDS: u64 = 12;

/// Minutes of load per soak run in CI (docs/testing.md, "Soak"): one run on
/// one process, one on a cluster; each adds about 10 s of start and drain.
const CI_SOAK_MINUTES: f64 = 2.0;

pub fn run() -> anyhow::Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run_cmd(fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run_cmd(clippy)?;
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    run_cmd(test)?;
    crate::e2e::run(false)?;
    // Cluster mode needs redis-server, which .ci/run installs; like the
    // cluster-mode tests, this fails (saying how to install it) without one.
    crate::e2e::run(true)?;
    // The soak: no loss, no duplicate, no panic, flat RSS, files and
    // threads. The cluster run needs redis-server like the e2e above.
    crate::soak::run_default(CI_SOAK_MINUTES, false, false)?;
    crate::soak::run_default(CI_SOAK_MINUTES, true, false)?;
    // And the fault drills (docs/testing.md, "Fault drills"): Redis killed
    // and paused, a server killed, the link to Redis starved, in a network
    // namespace of its own (root, which .ci/run has).
    crate::soak::run_default(CI_SOAK_MINUTES, true, true)?;
    // A short pass of every fuzz target (docs/testing.md): cargo-fuzz, which
    // .ci/run installs; a developer machine without it skips this.
    let fuzz_required = std::env::var_os("WSHUB_REQUIRE_FUZZ").is_some();
    match crate::fuzz::available() {
        Ok(()) => {
            let mut fmt = cargo();
            fmt.args(["fmt", "--manifest-path", "xtask/fuzz/Cargo.toml", "--check"]);
            run_cmd(fmt)?;
            crate::fuzz::run(crate::fuzz::FuzzArgs {
                seconds: CI_FUZZ_SECONDS,
                targets: Vec::new(),
                sanitizer: "none".to_owned(),
            })?;
        }
        Err(why) if !fuzz_required => eprintln!("ci: fuzzing skipped: {why}"),
        Err(why) => return Err(why),
    }
    // The browser test needs Chromium and npm; a developer machine may not
    // have them, CI (which sets WSHUB_REQUIRE_BROWSER) always does.
    let required = std::env::var_os("WSHUB_REQUIRE_BROWSER").is_some();
    match crate::browser::available() {
        Ok(()) => crate::browser::run(),
        Err(why) if !required => {
            eprintln!("ci: browser test skipped: {why}");
            Ok(())
        }
        Err(why) => Err(why),
    }
}
