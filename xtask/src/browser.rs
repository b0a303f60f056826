//! `cargo xtask browser`: the chat page at GET / in headless Chromium.
//! Builds the server, mints two tokens, and runs the playwright-core script
//! in `e2e/browser/`, which starts (and restarts) the real server itself.
//! Screenshots land in `target/browser/`.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::bail;
use serde_json::json;

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

    let mut node = Command::new("node");
    node.arg("chat.test.mjs")
        .current_dir(&dir)
        .env("WSHUB_SERVER", target_bin("debug", "wshub-server"))
        .env("WSHUB_SECRET", SECRET)
        .env("ALICE_TOKEN", token("alice", &["promo"])?)
        .env("BOB_TOKEN", token("bob", &[])?)
        .env("API_KEY", API_KEY)
        .env("SHOTS", root().join("target/browser"))
        .env("CHROMIUM", chromium);
    run_cmd(node)
}
