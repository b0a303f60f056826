//! `cargo xtask e2e`: the whole system with real processes. Builds, starts
//! `wshub-server` on a free port with a real secret and API key, and runs a
//! scripted scenario with `wshub-cli` processes, checking every step:
//! two users chat directly, a third joins a group, the backend pushes a
//! promotion to the group, a user with two connections gets everything on
//! both, and a bad frame gets its error. Then SIGTERM, and every process
//! must end cleanly. Any miss exits non-zero.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use test_support::Server;

use crate::cmd::{cargo, run as run_cmd, target_bin};

const SECRET: &str = "e2e-secret-4f1c2a9b7d3e";
const API_KEY: &str = "e2e-api-key-8a7b6c";
const LIMIT: Duration = Duration::from_secs(20);

/// A `wshub-cli` process whose stdout arrives line by line.
pub(crate) struct Proc {
    name: String,
    pub(crate) child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub(crate) fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<Proc> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().with_context(|| format!("start {name}"))?;
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().context("stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Ok(Proc {
            name: name.to_owned(),
            child,
            stdin,
            lines: rx,
        })
    }

    /// The next line containing `needle`.
    pub(crate) fn expect(&self, needle: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .with_context(|| format!("{}: no line with {needle:?}", self.name))?;
            if line.contains(needle) {
                return Ok(line);
            }
        }
    }

    /// The next JSON line that is a message.
    fn message(&self) -> anyhow::Result<Value> {
        loop {
            let line = self.expect("{")?;
            let v: Value = serde_json::from_str(&line)
                .with_context(|| format!("{}: not JSON: {line}", self.name))?;
            if v["type"] == "message" {
                return Ok(v);
            }
        }
    }

    fn type_line(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for the process to exit; a watchdog kills it after `LIMIT`
    /// so a hang fails the run instead of stalling it.
    fn wait(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let pid = self.child.id().to_string();
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(LIMIT).is_err() {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                return true;
            }
            false
        });
        let status = self.child.wait()?;
        let _ = done_tx.send(());
        if watchdog.join().unwrap_or(false) {
            bail!("{} did not exit within {LIMIT:?}", self.name);
        }
        Ok(status)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check(what: &str, ok: bool, detail: impl std::fmt::Display) -> anyhow::Result<()> {
    if ok {
        eprintln!("  ok  {what}");
        Ok(())
    } else {
        bail!("MISS {what}: {detail}")
    }
}

pub fn run() -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "-p", "wshub-server", "-p", "wshub-cli"]);
    run_cmd(build)?;
    let cli_bin = target_bin("debug", "wshub-cli");
    // For the few steps that speak HTTP or WebSocket themselves.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // The binary just built, whatever test executable is (or is not) next
    // to this one.
    let mut server = Server::builder()
        .bin(target_bin("debug", "wshub-server"))
        .secret(SECRET)
        .api_key(API_KEY)
        .args(&["--public-group", "promo"])
        .start_blocking();
    let url = server.ws_url("");
    eprintln!("e2e: server on {}", server.addr);

    let cli = |args: &[&str]| {
        let mut c = Command::new(&cli_bin);
        c.args(["--url", &url, "--secret", SECRET, "--api-key", API_KEY])
            .args(args);
        c
    };
    let output = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        Ok(cli(args).stdin(Stdio::null()).output()?)
    };

    // A token minted by the CLI is accepted by the server.
    let out = output(&["token", "--user", "bob", "--ttl", "10m"])?;
    let bob_token = String::from_utf8(out.stdout)?.trim().to_owned();
    check(
        "token mints a token",
        out.status.success() && bob_token.split('.').count() == 3,
        &bob_token,
    )?;

    let bob = Proc::spawn("bob", cli(&["--token", &bob_token, "listen"]))?;
    bob.expect("\"welcome\"")?;
    let alice1 = Proc::spawn("alice-phone", cli(&["--as", "alice", "listen"]))?;
    alice1.expect("\"welcome\"")?;
    let alice2 = Proc::spawn("alice-laptop", cli(&["--as", "alice", "listen"]))?;
    alice2.expect("\"welcome\"")?;

    // Two users chat directly.
    let out = output(&["--as", "alice", "send", "--to", "bob", "hi bob"])?;
    let ack: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    check(
        "alice's send is acked, delivered to bob's one connection",
        out.status.success() && ack["delivered"] == 1,
        &ack,
    )?;
    let m = bob.message()?;
    check(
        "bob gets alice's message",
        m["from"] == "alice" && m["body"] == "hi bob",
        &m,
    )?;
    let out = output(&[
        "--as",
        "bob",
        "send",
        "--to",
        "alice",
        r#"{"text":"hi alice"}"#,
    ])?;
    let ack: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    check(
        "bob's reply reaches both of alice's connections",
        ack["delivered"] == 2,
        &ack,
    )?;
    for a in [&alice1, &alice2] {
        // alice's own "hi bob" is copied to her other connections first.
        let mut m = a.message()?;
        if m["from"] == "alice" {
            m = a.message()?;
        }
        check(
            &format!("{} gets bob's reply", a.name),
            m["from"] == "bob" && m["body"]["text"] == "hi alice",
            &m,
        )?;
    }

    // A third user joins a group (through the chat, typed lines).
    let mut carol = Proc::spawn("carol", cli(&["--as", "carol", "chat"]))?;
    carol.expect("connected as carol")?;
    carol.type_line("/join promo")?;
    carol.expect("* ok (chat-1)")?;
    let (status, members) = rt.block_on(server.api("GET", "/api/v1/groups/promo/members", None));
    check(
        "carol's join is acked and the API lists her in promo",
        status == 200 && members["members"][0]["user"] == "carol",
        &members,
    )?;
    let out = output(&["push", "--user", "alice", "to both devices"])?;
    check(
        "a push to alice is delivered twice",
        String::from_utf8_lossy(&out.stdout).contains("\"delivered\":2"),
        String::from_utf8_lossy(&out.stdout),
    )?;
    for a in [&alice1, &alice2] {
        let m = a.message()?;
        check(
            &format!("{} gets the push", a.name),
            m["body"] == "to both devices" && m.get("from").is_none(),
            &m,
        )?;
    }

    // The backend pushes a promotion to the group.
    let promo = json!({"messageType":1,"title":"Weekend sale","content":"30% off"});
    let out = output(&["push", "--group", "promo", &promo.to_string()])?;
    check(
        "the promotion push is delivered to carol",
        String::from_utf8_lossy(&out.stdout).contains("\"delivered\":1"),
        String::from_utf8_lossy(&out.stdout),
    )?;
    let line = carol.expect("#promo")?;
    check(
        "carol's chat shows the promotion",
        line.contains("Weekend sale") && line.contains("(server)"),
        &line,
    )?;

    // A bad frame gets its error, and the connection stays usable.
    let (code, after) = rt.block_on(bad_frame(&server));
    check("a bad frame gets bad_request", code == "bad_request", &code)?;
    check(
        "the connection stays open after it",
        after == "pong",
        &after,
    )?;

    // SIGTERM: every client is closed with 1001 and every process ends.
    server.terminate();
    let mut bob = bob;
    let mut alice1 = alice1;
    let mut alice2 = alice2;
    for p in [&mut bob, &mut alice1, &mut alice2] {
        let s = p.wait()?;
        check(
            &format!("{}'s listen ends cleanly on 1001", p.name),
            s.success(),
            s,
        )?;
    }
    carol.expect("disconnected")?;
    carol.type_line("/quit")?;
    carol.wait()?;
    let s = server.blocking_wait_exit();
    check("the server exits 0", s.success(), s)?;
    eprintln!("e2e: all checks passed");
    Ok(())
}

/// Sends invalid JSON on a connection of its own; returns the error code
/// and the type of the answer to a ping sent after it.
async fn bad_frame(server: &Server) -> (String, String) {
    let mut c = server.client("mallory", &[]).await;
    c.send_text("{this is not json").await;
    let error = c.recv().await;
    let after = c.request(json!({"type":"ping","id":"after"})).await;
    let code = error["code"].as_str().unwrap_or("").to_owned();
    let after = after["type"].as_str().unwrap_or("").to_owned();
    (code, after)
}
