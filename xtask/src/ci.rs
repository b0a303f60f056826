//! `cargo xtask ci`: what CI runs on a clean clone, and what a contributor
//! runs before pushing.

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
    crate::e2e::run()
}
