//! `cargo xtask browser`: the chat page at GET / in headless Chromium.
//! Builds the server, mints two tokens, and runs the playwright-core scripts
//! in `e2e/browser/`, which start (and restart or kill) the real servers
//! themselves:
//!
//! 1. `chat.test.mjs` on one process;
//! 2. `cluster.test.mjs` on a cluster (PROTOCOL.md §11): xtask starts a
//!    private, persistent (AOF) `redis-server` and passes its URL as
//!    `WSHUB_REDIS`; the script starts two processes on it, kills one and
//!    starts it again on the same address. Like every cluster-mode test this
//!    fails, saying how to install it, without `redis-server`.
//!
//! Screenshots land in `target/browser/`.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::bail;
use serde_json::json;
use test_support::RedisServer;

use crate::cmd::{cargo, root, run as run_cmd, target_bin};

const SECRET: &str = "browser-secret-6d2f9a";
const API_KEY: &str = "browser-api-key-1b3c";

fn token(user: &str, groups: &[&str]) -> anyhow::Result<String> {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 600;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp, "groups": groups}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )?)
}

fn chromium() -> anyhow::Result<String> {
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(c).exists() {
            return Ok(c.to_owned());
        }
    }
    bail!("Chromium not found: install Debian's `chromium` package (.ci/run does)")
}

/// Whether this machine can run the browser test.
pub fn available() -> anyhow::Result<()> {
    chromium()?;
    if Command::new("npm").arg("--version").output().is_err() {
        bail!("npm not found");
    }
    Ok(())
}

pub fn run() -> anyhow::Result<()> {
    let chromium = chromium()?;
    let dir = root().join("e2e/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir);
        run_cmd(npm)?;
    }
    let mut build = cargo();
    build.args(["build", "-p", "wshub-server"]);
    run_cmd(build)?;

    let node = |script: &str| -> anyhow::Result<Command> {
        let mut node = Command::new("node");
        node.arg(script)
            .current_dir(&dir)
            .env("WSHUB_SERVER", target_bin("debug", "wshub-server"))
            .env("WSHUB_SECRET", SECRET)
            .env("ALICE_TOKEN", token("alice", &["promo"])?)
            .env("BOB_TOKEN", token("bob", &[])?)
            .env("API_KEY", API_KEY)
            .env("SHOTS", root().join("target/browser"))
            .env("CHROMIUM", &chromium);
        Ok(node)
    };
    run_cmd(node("chat.test.mjs")?)?;

    // The data must survive the kill of a wshub process, not of Redis; the
    // AOF (not fsynced: a slow disk must not stall Redis past the hub's
    // command timeout) is what server/tests/cluster.rs uses too. Killed
    // when dropped, whatever the script's outcome.
    let redis = RedisServer::builder()
        .args(&["--appendfsync", "no"])
        .start_blocking();
    eprintln!("browser: redis-server on {}", redis.url());
    let mut cluster = node("cluster.test.mjs")?;
    cluster.env("WSHUB_REDIS", redis.url());
    run_cmd(cluster)
}
