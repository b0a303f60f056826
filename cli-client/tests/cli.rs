//! wshub-cli against a real wshub-server: every subcommand, the errors a
//! user can act on, and the interactive chat driven in a pseudo-terminal.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

use test_support::{Server, API_KEY, LIMIT, SECRET};

fn cli_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wshub-cli"))
}

/// A server with a secret, an API key and the public prefix `pub`, on
/// `listen`. The binary is the one next to this test's own (see
/// `test_support::server_bin`).
fn start(listen: &str) -> Server {
    Server::builder()
        .secret(SECRET)
        .api_key(API_KEY)
        .args(&["--public-group", "pub"])
        .listen(listen)
        .start_blocking()
}

/// `wshub-cli` with no WSHUB_* variables from the test's environment.
fn cli_bare() -> Command {
    let mut c = Command::new(cli_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("WSHUB_") {
            c.env_remove(k);
        }
    }
    c
}

fn cli(server: &Server) -> Command {
    let mut c = cli_bare();
    c.args(["--url", &server.ws_url("")]);
    c
}

fn run(c: &mut Command) -> Output {
    c.stdin(Stdio::null()).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Exit code and the one line on stderr.
fn failed(out: &Output) -> (i32, String) {
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line please: {err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"));
    (out.status.code().unwrap(), err)
}

fn token(server: &Server, user: &str, extra: &[&str]) -> String {
    let out = run(cli(server)
        .args(["--secret", SECRET, "token", "--user", user])
        .args(extra));
    ok(&out).trim().to_owned()
}

/// A running `listen`, its stdout read line by line.
struct Listener {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Listener {
    fn start(server: &Server, token: &str) -> Listener {
        let mut child = cli(server)
            .args(["--token", token, "listen"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let l = Listener { child, lines: rx };
        let welcome = l.next();
        assert_eq!(welcome["type"], "welcome");
        l
    }

    fn next(&self) -> serde_json::Value {
        let line = self.lines.recv_timeout(LIMIT).expect("a line from listen");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not one JSON line: {line}"))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn token_send_publish_listen_push() {
    let s = start("127.0.0.1:0");
    let bob = Listener::start(&s, &token(&s, "bob", &["--groups", "team"]));
    let alice = token(&s, "alice", &["--groups", "team,x", "--ttl", "10m"]);

    // send: the ack on stdout, the message at bob's listen.
    let out = ok(&run(cli(&s).args([
        "--token",
        &alice,
        "send",
        "--to",
        "bob",
        "hello bob",
    ])));
    let ack: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (ack["type"].as_str(), ack["delivered"].as_u64()),
        (Some("ack"), Some(1))
    );
    let m = bob.next();
    assert_eq!(
        (m["from"].as_str(), m["body"].as_str()),
        (Some("alice"), Some("hello bob"))
    );

    // BODY is JSON when it parses as JSON.
    ok(&run(cli(&s).args([
        "--token",
        &alice,
        "publish",
        "--group",
        "team",
        r#"{"n":1}"#,
    ])));
    let m = bob.next();
    assert_eq!(
        (m["group"].as_str(), &m["body"]),
        (Some("team"), &serde_json::json!({"n":1}))
    );

    // The server's error: exit 1 with code and message on stderr.
    let (code, err) = failed(&run(
        cli(&s).args(["--token", &alice, "publish", "--group", "other", "x"])
    ));
    assert_eq!(code, 1);
    assert!(
        err.contains("forbidden") && err.contains("not a member"),
        "{err}"
    );

    // push through the API: user, group, everyone.
    let push = |args: &[&str]| run(cli(&s).args(["--api-key", API_KEY, "push"]).args(args));
    let out = ok(&push(&["--user", "bob", "direct"]));
    assert!(out.contains("\"delivered\":1"), "{out}");
    assert_eq!(bob.next()["body"], "direct");
    ok(&push(&[
        "--group",
        "team",
        r#"{"messageType":1,"title":"t","content":"c"}"#,
    ]));
    assert_eq!(bob.next()["body"]["title"], "t");
    ok(&push(&["--all", "null"]));
    assert_eq!(bob.next()["body"], serde_json::Value::Null);
    let (code, err) = failed(&run(cli(&s).args([
        "--api-key",
        "wrong",
        "push",
        "--all",
        "x",
    ])));
    assert_eq!(code, 1);
    assert!(err.contains("401") && err.contains("unauthorized"), "{err}");

    // --secret with --as mints a token on the fly.
    ok(&run(cli(&s).args([
        "--secret",
        SECRET,
        "--as",
        "carol",
        "send",
        "--to",
        "bob",
        "from carol",
    ])));
    assert_eq!(bob.next()["from"], "carol");
}

#[test]
fn errors_a_user_can_act_on() {
    let s = start("127.0.0.1:0");
    let good = token(&s, "u", &[]);

    let (code, err) = failed(&run(cli_bare().args([
        "--url",
        "http://nope",
        "--token",
        &good,
        "send",
        "--to",
        "b",
        "x",
    ])));
    assert_eq!(code, 2);
    assert!(err.contains("invalid --url"), "{err}");

    // Nothing listens on port 1.
    let (code, err) = failed(&run(cli_bare().args([
        "--url",
        "ws://127.0.0.1:1/ws",
        "--token",
        &good,
        "listen",
    ])));
    assert_eq!(code, 3);
    assert!(err.contains("connection refused"), "{err}");

    let (code, err) = failed(&run(cli(&s).args(["--token", "garbage", "listen"])));
    assert_eq!(code, 3);
    assert!(err.contains("401") && err.contains("malformed"), "{err}");

    let expired = token(&s, "u", &["--ttl", "1s"]);
    // While the token is valid, `listen` is accepted and held until the
    // server closes it with 1008 as the token runs out (exit 1); after that
    // the server refuses it at the upgrade (exit 3). No timing guesses.
    let mut attempts = 0;
    let err = loop {
        let out = run(cli(&s).args(["--token", &expired, "listen"]));
        if out.status.code() == Some(3) {
            break failed(&out);
        }
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        attempts += 1;
        assert!(
            attempts < 3,
            "still accepted after it was closed as expired"
        );
    };
    assert_eq!(err.0, 3);
    assert!(err.1.contains("token expired"), "{}", err.1);

    let (code, err) = failed(&run(cli_bare().args([
        "--url",
        &s.ws_url("userId=someone-else"),
        "--token",
        &good,
        "listen",
    ])));
    assert_eq!(code, 3);
    assert!(err.contains("403"), "{err}");

    let (code, err) = failed(&run(cli(&s).args(["send", "--to", "b", "x"])));
    assert_eq!(code, 2);
    assert!(err.contains("--token"), "{err}");

    let (code, _) = failed(&run(cli(&s).args(["token", "--user", "u"])));
    assert_eq!(code, 2);
}

fn chat(server: &Server, user: &str) -> expectrl::Session {
    let mut cmd = Command::new(cli_bin());
    cmd.args([
        "--url",
        &server.ws_url(""),
        "--secret",
        SECRET,
        "--as",
        user,
        "chat",
    ]);
    let mut p = expectrl::Session::spawn(cmd).expect("spawn chat in a pty");
    p.set_expect_timeout(Some(LIMIT));
    p
}

#[test]
fn chat_in_a_terminal() {
    let s = start("127.0.0.1:0");
    let bob = Listener::start(&s, &token(&s, "bob", &[]));
    let mut p = chat(&s, "alice");
    p.expect("connected as alice").unwrap();
    p.expect("> ").unwrap();

    // Outgoing: @user text.
    p.send_line("@bob hi bob").unwrap();
    let m = bob.next();
    assert_eq!(
        (m["from"].as_str(), m["body"].as_str()),
        (Some("alice"), Some("hi bob"))
    );

    // Incoming while a line is half typed: the message is shown with time
    // and sender, and the typed text survives intact.
    p.send("@bob half-").unwrap();
    p.expect("half-").unwrap();
    ok(&run(cli(&s).args([
        "--secret",
        SECRET,
        "--as",
        "bob",
        "send",
        "--to",
        "alice",
        "incoming!",
    ])));
    p.expect(expectrl::Regex(r"\[\d\d:\d\d:\d\d\] bob: incoming!"))
        .unwrap();
    p.send_line("typed").unwrap();
    // bob's listen sees the copy of what bob sent, then alice's line.
    assert_eq!(bob.next()["body"], "incoming!");
    let m = bob.next();
    assert_eq!(m["body"], "half-typed");

    // Groups.
    p.send_line("/join pub-room").unwrap();
    p.expect("ok (chat-").unwrap();
    p.send_line("/join secret").unwrap();
    p.expect("! forbidden").unwrap();
    p.send_line("#nowhere hi").unwrap();
    p.expect("! forbidden").unwrap();
    p.send_line("/help").unwrap();
    p.expect("/leave group").unwrap();
    p.send_line("/leave pub-room").unwrap();
    p.expect("ok (chat-").unwrap();
    p.send_line("/quit").unwrap();
    p.expect(expectrl::Eof).unwrap();
}

#[test]
fn chat_reconnects_when_the_server_comes_back() {
    let mut s = start("127.0.0.1:0");
    let mut p = chat(&s, "dora");
    p.expect("connected as dora").unwrap();
    assert!(s.blocking_stop().success());
    p.expect("disconnected").unwrap();
    p.expect("reconnecting in").unwrap();
    // The same address, where the client keeps trying.
    let s2 = start(&s.addr.to_string());
    p.expect("connected as dora").unwrap();
    // And it works on the new server.
    let listener = Listener::start(&s2, &token(&s2, "eve", &[]));
    p.send_line("@eve back again").unwrap();
    assert_eq!(listener.next()["body"], "back again");
    p.send_line("/quit").unwrap();
    p.expect(expectrl::Eof).unwrap();
}
