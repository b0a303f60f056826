//! `cargo xtask ci`: what CI runs on a clean clone, and what a contributor
//! runs before pushing: format, clippy, every test, the end-to-end run on
//! one process and on a two-process cluster, and the browser test.

use crate::cmd::{cargo, run as run_cmd};

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
