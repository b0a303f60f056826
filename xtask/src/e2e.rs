//! `cargo xtask e2e`: the whole system with real processes. Builds, starts
//! `wshub-server` on a free port with a real secret and API key, and runs a
//! scripted scenario with `wshub-cli` processes, checking every step:
//! two users chat directly, a third joins a group, the backend pushes a
//! promotion to the group, a user with two connections gets everything on
//! both, and a bad frame gets its error. Then SIGTERM, and every process
//! must end: the listeners run with `--no-reconnect` (otherwise they would
//! wait for the server to come back) and exit 3, the server exits 0. Any
//! miss exits non-zero.
//!
//! `cargo xtask e2e --cluster` runs the same scenario on a cluster
//! (PROTOCOL.md §11): a private `redis-server` and two `wshub-server`
//! processes on it, with every conversation crossing between them (alice
//! has a connection on each, bob and carol are on different ones, pushes
//! and API calls go through the process that does not hold the recipient).
//! It also checks each process's broker health, and that stopping one
//! process leaves the other serving with exact counts.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use test_support::{RedisServer, Server};

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

/// How long a cluster's shared presence may take to count a connect or a
/// disconnect: the contract says 1 s; a busy CI machine gets some slack.
const PRESENCE_SETTLES: Duration = Duration::from_secs(3);

/// Cluster mode only: waits until the API of `server` counts `n`
/// connections of `user` on the whole hub, and checks that it does within
/// [`PRESENCE_SETTLES`]. Used before a step whose `delivered` depends on a
/// connection that opened or closed just before it.
fn settle(
    rt: &tokio::runtime::Runtime,
    server: (&str, &Server),
    user: &str,
    n: u64,
) -> anyhow::Result<()> {
    let (name, server) = server;
    let start = Instant::now();
    loop {
        let (status, v) = rt.block_on(server.api("GET", &format!("/api/v1/users/{user}"), None));
        let waited = start.elapsed();
        if (status == 200 && v["connections"] == n) || waited > PRESENCE_SETTLES {
            return check(
                &format!(
                    "{name}'s API counts {n} connection(s) of {user} on the whole hub \
                     (after {} ms)",
                    waited.as_millis()
                ),
                status == 200 && v["connections"] == n,
                format!("{status} {v}"),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Cluster mode only: the broker health each process reports (PROTOCOL.md
/// §7 and §11) while Redis is up.
fn broker_health(rt: &tokio::runtime::Runtime, server: (&str, &Server)) -> anyhow::Result<()> {
    let (name, server) = server;
    let (status, health) = rt.block_on(server.api("GET", "/healthz", None));
    check(
        &format!("{name}'s /healthz is 200 with \"broker\":\"up\""),
        status == 200 && health["status"] == "ok" && health["broker"] == "up",
        format!("{status} {health}"),
    )?;
    let (status, ready) = rt.block_on(server.api("GET", "/readyz", None));
    check(
        &format!("{name}'s /readyz is 200"),
        status == 200 && ready["status"] == "ready",
        format!("{status} {ready}"),
    )?;
    let metrics = rt
        .block_on(test_support::request(
            server.addr,
            "GET",
            "/metrics",
            None,
            None,
            &[],
        ))
        .text();
    let has = |line: &str| metrics.lines().any(|l| l == line);
    check(
        &format!("{name}'s /metrics has wshub_broker_up 1 and no reconnect yet"),
        has("wshub_broker_up 1") && has("wshub_broker_reconnects_total 0"),
        metrics
            .lines()
            .filter(|l| l.starts_with("wshub_broker"))
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// Runs the scenario on one process, or with `cluster` on two processes
/// sharing a private Redis.
pub fn run(cluster: bool) -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "-p", "wshub-server", "-p", "wshub-cli"]);
    run_cmd(build)?;
    let cli_bin = target_bin("debug", "wshub-cli");
    // For the few steps that speak HTTP or WebSocket themselves.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // Killed when dropped, after the servers (declared first).
    let redis = cluster.then(|| {
        let redis = RedisServer::start_blocking();
        eprintln!("e2e: redis-server on {}", redis.url());
        redis
    });
    let start = |name: &str| {
        // The binary just built, whatever test executable is (or is not)
        // next to this one.
        let mut builder = Server::builder()
            .bin(target_bin("debug", "wshub-server"))
            .secret(SECRET)
            .api_key(API_KEY)
            .args(&["--public-group", "promo"]);
        if let Some(redis) = &redis {
            builder = builder.args(&["--redis", &redis.url()]);
        }
        let server = builder.start_blocking();
        if redis.is_some() {
            // Serving before that would answer `unavailable`.
            server.blocking_wait_log("broker up");
        }
        eprintln!("e2e: {name} on {}", server.addr);
        server
    };
    let mut one = start(if cluster { "server 1" } else { "server" });
    // On one process, everything goes through that process.
    let mut two = cluster.then(|| start("server 2"));
    let s1 = ("server 1", &one);
    let s2 = two.as_ref().map_or(s1, |two| ("server 2", two));
    let (url1, url2) = (s1.1.ws_url(""), s2.1.ws_url(""));
    if cluster {
        broker_health(&rt, s1)?;
        broker_health(&rt, s2)?;
    }

    let cli = |url: &str, args: &[&str]| {
        let mut c = Command::new(&cli_bin);
        c.args(["--url", url, "--secret", SECRET, "--api-key", API_KEY])
            .args(args);
        c
    };
    let output = |url: &str, args: &[&str]| -> anyhow::Result<std::process::Output> {
        Ok(cli(url, args).stdin(Stdio::null()).output()?)
    };

    // A token minted by the CLI is accepted by the server.
    let out = output(&url1, &["token", "--user", "bob", "--ttl", "10m"])?;
    let bob_token = String::from_utf8(out.stdout)?.trim().to_owned();
    check(
        "token mints a token",
        out.status.success() && bob_token.split('.').count() == 3,
        &bob_token,
    )?;

    // In a cluster, bob is on server 2 and alice has a connection on each.
    let bob = Proc::spawn(
        "bob",
        cli(&url2, &["--token", &bob_token, "listen", "--no-reconnect"]),
    )?;
    bob.expect("\"welcome\"")?;
    let alice1 = Proc::spawn(
        "alice-phone",
        cli(&url1, &["--as", "alice", "listen", "--no-reconnect"]),
    )?;
    alice1.expect("\"welcome\"")?;
    let alice2 = Proc::spawn(
        "alice-laptop",
        cli(&url2, &["--as", "alice", "listen", "--no-reconnect"]),
    )?;
    alice2.expect("\"welcome\"")?;
    if cluster {
        settle(&rt, s1, "bob", 1)?;
        settle(&rt, s1, "alice", 2)?;
    }

    // Two users chat directly (in a cluster: alice through server 1 to bob
    // on server 2, bob through server 2 to alice on both).
    let out = output(&url1, &["--as", "alice", "send", "--to", "bob", "hi bob"])?;
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
    if cluster {
        // alice's sending connection has closed.
        settle(&rt, s2, "alice", 2)?;
    }
    let out = output(
        &url2,
        &[
            "--as",
            "bob",
            "send",
            "--to",
            "alice",
            r#"{"text":"hi alice"}"#,
        ],
    )?;
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

    // A third user joins a group (through the chat, typed lines; in a
    // cluster on server 1, and server 2's API sees it).
    let mut carol = Proc::spawn("carol", cli(&url1, &["--as", "carol", "chat"]))?;
    carol.expect("connected as carol")?;
    carol.type_line("/join promo")?;
    carol.expect("* ok (chat-1)")?;
    let (status, members) = rt.block_on(s2.1.api("GET", "/api/v1/groups/promo/members", None));
    check(
        "carol's join is acked and the API lists her in promo",
        status == 200 && members["members"][0]["user"] == "carol",
        &members,
    )?;
    let out = output(&url2, &["push", "--user", "alice", "to both devices"])?;
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

    // The backend pushes a promotion to the group (in a cluster through
    // server 2, to carol on server 1).
    let promo = json!({"messageType":1,"title":"Weekend sale","content":"30% off"});
    let out = output(&url2, &["push", "--group", "promo", &promo.to_string()])?;
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
    let (code, after) = rt.block_on(bad_frame(s2.1));
    check("a bad frame gets bad_request", code == "bad_request", &code)?;
    check(
        "the connection stays open after it",
        after == "pong",
        &after,
    )?;

    let mut bob = bob;
    let mut alice1 = alice1;
    let mut alice2 = alice2;
    if let Some(two) = &mut two {
        // SIGTERM to server 2: its clients are closed with 1001, it leaves
        // the shared presence at once, and server 1 goes on serving.
        two.terminate();
        for p in [&mut bob, &mut alice2] {
            let s = p.wait()?;
            check(
                &format!(
                    "{}'s listen --no-reconnect ends (exit 3) on 1001 from server 2",
                    p.name
                ),
                s.code() == Some(3),
                s,
            )?;
        }
        let s = two.blocking_wait_exit();
        check("server 2 exits 0", s.success(), s)?;
        settle(&rt, ("server 1", &one), "bob", 0)?;
        settle(&rt, ("server 1", &one), "alice", 1)?;
        let out = output(&url1, &["push", "--user", "alice", "after server 2"])?;
        check(
            "a push through server 1 reaches alice's connection there only",
            String::from_utf8_lossy(&out.stdout).contains("\"delivered\":1"),
            String::from_utf8_lossy(&out.stdout),
        )?;
        let m = alice1.message()?;
        check("alice-phone gets it", m["body"] == "after server 2", &m)?;
    }

    // SIGTERM: every client is closed with 1001 and every process ends.
    one.terminate();
    let left: Vec<&mut Proc> = if cluster {
        vec![&mut alice1]
    } else {
        vec![&mut bob, &mut alice1, &mut alice2]
    };
    for p in left {
        let s = p.wait()?;
        check(
            &format!("{}'s listen --no-reconnect ends (exit 3) on 1001", p.name),
            s.code() == Some(3),
            s,
        )?;
    }
    carol.expect("disconnected")?;
    carol.type_line("/quit")?;
    carol.wait()?;
    let s = one.blocking_wait_exit();
    let name = if cluster { "server 1" } else { "the server" };
    check(&format!("{name} exits 0"), s.success(), s)?;
    drop(redis);
    eprintln!(
        "e2e{}: all checks passed",
        if cluster { " --cluster" } else { "" }
    );
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
