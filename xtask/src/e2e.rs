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

use crate::cmd::{cargo, listening_addr, run as run_cmd, server_command, target_bin};

const SECRET: &str = "e2e-secret-4f1c2a9b7d3e";
const API_KEY: &str = "e2e-api-key-8a7b6c";
const LIMIT: Duration = Duration::from_secs(20);

/// A child process whose stdout (or stderr) arrives line by line.
pub(crate) struct Proc {
    name: String,
    pub(crate) child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub(crate) fn spawn(name: &str, mut cmd: Command, read_stderr: bool) -> anyhow::Result<Proc> {
        cmd.stdin(Stdio::piped());
        if read_stderr {
            cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        } else {
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        }
        let mut child = cmd.spawn().with_context(|| format!("start {name}"))?;
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        let out: Box<dyn std::io::Read + Send> = if read_stderr {
            Box::new(child.stderr.take().context("stderr")?)
        } else {
            Box::new(child.stdout.take().context("stdout")?)
        };
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

    let mut server_cmd = server_command("debug", SECRET, API_KEY);
    server_cmd
        .args(["--public-group", "promo"])
        .env("RUST_LOG", "info");
    let mut server = Proc::spawn("server", server_cmd, true)?;
    let line = server.expect("listening on ")?;
    let addr = listening_addr(&line).context("address")?;
    let url = format!("ws://{addr}/ws");
    eprintln!("e2e: server on {addr}");

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

    let bob = Proc::spawn("bob", cli(&["--token", &bob_token, "listen"]), false)?;
    bob.expect("\"welcome\"")?;
    let alice1 = Proc::spawn("alice-phone", cli(&["--as", "alice", "listen"]), false)?;
    alice1.expect("\"welcome\"")?;
    let alice2 = Proc::spawn("alice-laptop", cli(&["--as", "alice", "listen"]), false)?;
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
    let mut carol = Proc::spawn("carol", cli(&["--as", "carol", "chat"]), false)?;
    carol.expect("connected as carol")?;
    carol.type_line("/join promo")?;
    carol.expect("* ok (chat-1)")?;
    let members = api_get(&addr, "/api/v1/groups/promo/members")?;
    check(
        "carol's join is acked and the API lists her in promo",
        members["members"][0]["user"] == "carol",
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
    let (code, after) = bad_frame(&url)?;
    check("a bad frame gets bad_request", code == "bad_request", &code)?;
    check(
        "the connection stays open after it",
        after == "pong",
        &after,
    )?;

    // SIGTERM: every client is closed with 1001 and every process ends.
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()?;
    check("SIGTERM sent", status.success(), status)?;
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
    let s = server.wait()?;
    check("the server exits 0", s.success(), s)?;
    eprintln!("e2e: all checks passed");
    Ok(())
}

/// `GET` on the server API (HTTP/1.1, one request per connection).
fn api_get(addr: &str, path: &str) -> anyhow::Result<Value> {
    use std::io::Read;
    let mut tcp = std::net::TcpStream::connect(addr)?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_KEY}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    tcp.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no HTTP head")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {head}");
    }
    Ok(serde_json::from_str(body)?)
}

/// Sends invalid JSON on a raw connection; returns the error code and the
/// type of the answer to a ping sent after it.
fn bad_frame(url: &str) -> anyhow::Result<(String, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub":"mallory","exp": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 60}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )?;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}?token={token}")).await?;
        // The welcome comes first.
        loop {
            if let Message::Text(_) = tokio::time::timeout(LIMIT, ws.next()).await?.context("closed")?? {
                break;
            }
        }
        ws.send(Message::text("{this is not json")).await?;
        ws.send(Message::text(r#"{"type":"ping","id":"after"}"#)).await?;
        let mut answers = Vec::new();
        for _ in 0..2 {
            match tokio::time::timeout(LIMIT, ws.next()).await?.context("closed")?? {
                Message::Text(t) => answers.push(serde_json::from_str::<Value>(&t)?),
                _ => continue,
            }
        }
        let code = answers[0]["code"].as_str().unwrap_or("").to_owned();
        let after = answers[1]["type"].as_str().unwrap_or("").to_owned();
        Ok((code, after))
    })
}
