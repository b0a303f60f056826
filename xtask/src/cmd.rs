//! The one way xtask runs programs: print the command, run it, fail loudly.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs `c` to completion with inherited output; errors unless it exits 0.
pub fn run(mut c: Command) -> anyhow::Result<()> {
    eprintln!("$ {}", show(&c));
    let status = c
        .status()
        .with_context(|| format!("cannot run {}", show(&c)))?;
    if !status.success() {
        bail!("`{}` failed: {status}", show(&c));
    }
    Ok(())
}

pub fn show(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Path of a binary built by `cargo build` in `profile`.
pub fn target_bin(profile: &str, name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    target.join(profile).join(name)
}

/// `wshub-server` of `profile` on a free loopback port with a secret and
/// an API key; callers add their own flags.
pub fn server_command(profile: &str, secret: &str, api_key: &str) -> Command {
    let mut c = Command::new(target_bin(profile, "wshub-server"));
    c.args([
        "--listen",
        "127.0.0.1:0",
        "--secret",
        secret,
        "--api-key",
        api_key,
    ]);
    c
}

/// The address in a server's `listening on ADDR` log line (test-support's
/// reading of it, which the tests and e2e use too).
pub fn listening_addr(line: &str) -> Option<String> {
    test_support::listening_addr(line).map(|addr| addr.to_string())
}
