//! wshub-cli against a real wshub-server: every subcommand, the errors a
//! user can act on, and the interactive chat driven in a pseudo-terminal.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

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

/// A running `listen`, its stdout and its stderr read line by line.
struct Listener {
    child: Child,
    lines: mpsc::Receiver<String>,
    errs: mpsc::Receiver<String>,
}

impl Listener {
    fn start(server: &Server, token: &str) -> Listener {
        Listener::at(&server.ws_url(""), token, &[])
    }

    /// `listen` on `url` with `extra` flags; returns once its welcome is out.
    fn at(url: &str, token: &str, extra: &[&str]) -> Listener {
        let mut child = cli_bare()
            .args(["--url", url, "--token", token, "listen"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = read_lines(child.stdout.take().unwrap());
        let errs = read_lines(child.stderr.take().unwrap());
        let l = Listener { child, lines, errs };
        let welcome = l.next();
        assert_eq!(welcome["type"], "welcome");
        l
    }

    fn next(&self) -> serde_json::Value {
        let line = self.lines.recv_timeout(LIMIT).expect("a line from listen");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not one JSON line: {line}"))
    }

    /// The next line on stderr.
    fn next_err(&self) -> String {
        self.errs
            .recv_timeout(LIMIT)
            .expect("a line from listen on stderr")
    }

    /// Waits for the process to end (its stderr closes first); returns its
    /// exit code and what it wrote on stderr meanwhile.
    fn exit(mut self) -> (Option<i32>, Vec<String>) {
        let mut errs = Vec::new();
        loop {
            match self.errs.recv_timeout(LIMIT) {
                Ok(line) => errs.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("listen still running: {errs:?}"),
            }
        }
        (self.child.wait().unwrap().code(), errs)
    }
}

fn read_lines(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
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
    chat_at(&server.ws_url(""), user)
}

fn chat_at(url: &str, user: &str) -> expectrl::Session {
    let mut cmd = Command::new(cli_bin());
    cmd.args(["--url", url, "--secret", SECRET, "--as", user, "chat"]);
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
    // A new process: the history of the old one is gone, and chat says so.
    p.expect("stream inbox could not be recovered; messages may be missing")
        .unwrap();
    // And it works on the new server.
    let listener = Listener::start(&s2, &token(&s2, "eve", &[]));
    p.send_line("@eve back again").unwrap();
    assert_eq!(listener.next()["body"], "back again");
    p.send_line("/quit").unwrap();
    p.expect(expectrl::Eof).unwrap();
}

/// SIGKILL, as a crash; returns once the process is gone.
fn kill(server: &mut Server) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(server.kill());
}

fn push_to(server: &Server, user: &str, body: &str) {
    ok(&run(cli(server).args([
        "--api-key",
        API_KEY,
        "push",
        "--user",
        user,
        body,
    ])));
}

/// A TCP proxy in front of the server that can cut every connection through
/// it and hold new ones until released: a drop on the client's side while
/// the same server process, and its history, live on.
struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    holding: bool,
    live: Vec<TcpStream>,
    held: Vec<TcpStream>,
    /// One flag per connection through the proxy: set, its bytes are
    /// dropped and its end is not passed on (a dead link TCP can't see).
    frozen: Vec<Arc<AtomicBool>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let mut s = shared.lock().unwrap();
                if s.holding {
                    s.held.push(client);
                } else {
                    pipe(client, upstream, &mut s);
                }
            }
        });
        Proxy {
            addr,
            upstream,
            state,
        }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Cuts every connection; holds new ones until `release`.
    fn cut_and_hold(&self) {
        let mut s = self.state.lock().unwrap();
        s.holding = true;
        for c in s.live.drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Lets nothing more through the connections open now, silently.
    fn freeze(&self) {
        let mut s = self.state.lock().unwrap();
        for f in s.frozen.drain(..) {
            f.store(true, Ordering::SeqCst);
        }
    }

    fn release(&self) {
        let mut s = self.state.lock().unwrap();
        s.holding = false;
        for client in std::mem::take(&mut s.held) {
            pipe(client, self.upstream, &mut s);
        }
    }
}

fn pipe(client: TcpStream, upstream: SocketAddr, s: &mut ProxyState) {
    let server = TcpStream::connect(upstream).unwrap();
    let frozen = Arc::new(AtomicBool::new(false));
    for (mut from, mut to) in [
        (client.try_clone().unwrap(), server.try_clone().unwrap()),
        (server.try_clone().unwrap(), client.try_clone().unwrap()),
    ] {
        let frozen = frozen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                if !frozen.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            if !frozen.load(Ordering::SeqCst) {
                let _ = to.shutdown(Shutdown::Both);
            }
        });
    }
    s.frozen.push(frozen);
    s.live.push(client);
    s.live.push(server);
}

#[test]
fn listen_resumes_after_a_drop_and_replays_what_it_missed_once() {
    let s = start("127.0.0.1:0");
    let proxy = Proxy::start(s.addr);
    let l = Listener::at(&proxy.ws_url(), &token(&s, "rita", &[]), &[]);
    push_to(&s, "rita", "before");
    let m = l.next();
    assert_eq!(
        (m["body"].as_str(), m["seq"].as_u64()),
        (Some("before"), Some(1))
    );

    // The connection drops; the server lives on and keeps the history.
    proxy.cut_and_hold();
    let err = l.next_err();
    assert!(
        err.contains("connection lost") && err.contains("reconnecting"),
        "{err}"
    );
    push_to(&s, "rita", "missed");
    proxy.release();

    // The new welcome, the missed message replayed once, then the ack.
    assert_eq!(l.next()["type"], "welcome");
    let m = l.next();
    assert_eq!(
        (m["body"].as_str(), m["seq"].as_u64()),
        (Some("missed"), Some(2))
    );
    let ack = l.next();
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["recovered"]["inbox"], true, "{ack}");
    // Live delivery goes on right after it, nothing twice.
    push_to(&s, "rita", "after");
    let m = l.next();
    assert_eq!(
        (m["body"].as_str(), m["seq"].as_u64()),
        (Some("after"), Some(3))
    );
}

#[test]
fn listen_reconnects_to_a_restarted_server_and_reports_the_lost_history() {
    let mut s = start("127.0.0.1:0");
    let l = Listener::start(&s, &token(&s, "sam", &[]));
    push_to(&s, "sam", "one");
    assert_eq!(l.next()["body"], "one");

    kill(&mut s);
    assert!(l.next_err().contains("connection lost"));
    // A new process on the same address: the old history is gone.
    let s2 = start(&s.addr.to_string());
    let welcome = l.next();
    assert_eq!(welcome["type"], "welcome");
    let ack = l.next();
    assert_eq!(ack["recovered"]["inbox"], false, "{ack}");
    let err = loop {
        let err = l.next_err();
        if err.contains("stream inbox") {
            break err;
        }
    };
    assert_eq!(
        err,
        "wshub-cli: stream inbox could not be recovered; messages may be missing"
    );
    // The same listen goes on, from the new server's numbering.
    push_to(&s2, "sam", "two");
    let m = l.next();
    assert_eq!(m["body"], "two");
    assert_eq!(m["epoch"], welcome["streams"]["inbox"]["epoch"]);
}

#[test]
fn listen_no_reconnect_exits_3_when_the_connection_drops() {
    let mut s = start("127.0.0.1:0");
    let l = Listener::at(&s.ws_url(""), &token(&s, "nora", &[]), &["--no-reconnect"]);
    kill(&mut s);
    let (code, errs) = l.exit();
    assert_eq!(code, Some(3), "{errs:?}");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("connection lost"), "{errs:?}");
}

#[test]
fn listen_stops_when_kicked() {
    let s = start("127.0.0.1:0");
    let l = Listener::start(&s, &token(&s, "kim", &[]));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, _) = rt.block_on(s.api("DELETE", "/api/v1/users/kim/connections", None));
    assert!((200..300).contains(&status), "{status}");
    let (code, errs) = l.exit();
    assert_eq!(code, Some(1), "{errs:?}");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("1008"), "{errs:?}");
}

/// §9: `listen --no-reconnect` exits 3 when its connection ends, however
/// it ends: a kick (1008) too.
#[test]
fn listen_no_reconnect_exits_3_when_kicked() {
    let s = start("127.0.0.1:0");
    let l = Listener::at(&s.ws_url(""), &token(&s, "kai", &[]), &["--no-reconnect"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, _) = rt.block_on(s.api("DELETE", "/api/v1/users/kai/connections", None));
    assert!((200..300).contains(&status), "{status}");
    let (code, errs) = l.exit();
    assert_eq!(code, Some(3), "{errs:?}");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("connection lost") && errs[0].contains("1008"),
        "{errs:?}"
    );
}

#[test]
fn chat_shows_what_it_missed_while_reconnecting() {
    let s = start("127.0.0.1:0");
    let proxy = Proxy::start(s.addr);
    let mut p = chat_at(&proxy.ws_url(), "ugo");
    p.expect("connected as ugo").unwrap();
    push_to(&s, "ugo", "first");
    p.expect("(server): first").unwrap();
    proxy.cut_and_hold();
    p.expect("reconnecting in").unwrap();
    push_to(&s, "ugo", "while away");
    proxy.release();
    p.expect("connected as ugo").unwrap();
    p.expect("(server): while away").unwrap();
    push_to(&s, "ugo", "live again");
    // Nothing twice, nothing reported lost: the next thing shown is live.
    let seen = p.expect("(server): live again").unwrap();
    let before = String::from_utf8_lossy(seen.before()).into_owned();
    assert!(
        !before.contains("could not be recovered") && !before.contains("while away"),
        "{before}"
    );
    p.send_line("/quit").unwrap();
    p.expect(expectrl::Eof).unwrap();
}

#[test]
fn listen_notices_a_silent_dead_link_and_resumes() {
    // Pings every second: three silent seconds mean the link is dead.
    let s = Server::builder()
        .secret(SECRET)
        .api_key(API_KEY)
        .args(&["--heartbeat", "1"])
        .start_blocking();
    let proxy = Proxy::start(s.addr);
    let l = Listener::at(&proxy.ws_url(), &token(&s, "vic", &[]), &[]);
    push_to(&s, "vic", "a");
    assert_eq!(l.next()["body"], "a");
    // Nothing gets through any more, and no end of connection either.
    proxy.freeze();
    push_to(&s, "vic", "b");
    let err = l.next_err();
    assert!(err.contains("no sign of life"), "{err}");
    assert_eq!(l.next()["type"], "welcome");
    let m = l.next();
    assert_eq!(
        (m["body"].as_str(), m["seq"].as_u64()),
        (Some("b"), Some(2))
    );
    assert_eq!(l.next()["recovered"]["inbox"], true);
}

/// A Redis whose data survives a SIGKILL and a restart (AOF, written before
/// each answer, not fsynced: see server/tests/cluster.rs). Without
/// `redis-server` this fails, saying how to install it; it is never skipped.
fn redis_with_aof() -> test_support::RedisServer {
    test_support::RedisServer::builder()
        .args(&["--appendfsync", "no"])
        .start_blocking()
}

/// A cluster process (PROTOCOL.md §11) on `redis`, like [`start`], on
/// `listen`; returns once it has reached Redis.
fn start_cluster(redis: &test_support::RedisServer, listen: &str) -> Server {
    let s = Server::builder()
        .secret(SECRET)
        .api_key(API_KEY)
        .args(&["--public-group", "pub", "--redis", &redis.url()])
        .listen(listen)
        .start_blocking();
    s.blocking_wait_log("broker up");
    s
}

fn publish_to(server: &Server, group: &str, body: &str) {
    ok(&run(cli(server).args([
        "--api-key",
        API_KEY,
        "push",
        "--group",
        group,
        body,
    ])));
}

#[test]
fn listen_on_a_killed_cluster_process_resumes_from_redis_what_another_process_took() {
    let redis = redis_with_aof();
    let mut a = start_cluster(&redis, "127.0.0.1:0");
    let b = start_cluster(&redis, "127.0.0.1:0");
    let l = Listener::start(&a, &token(&a, "tess", &["--groups", "team"]));

    // Through the other process: the inbox and a group, each numbered from 1.
    push_to(&b, "tess", "inbox 1");
    publish_to(&b, "team", "team 1");
    let mut last = std::collections::BTreeMap::new();
    let mut take = |m: &serde_json::Value, body: &str| {
        assert_eq!(m["type"], "message", "{m}");
        assert_eq!(m["body"], body, "{m}");
        let stream = m["stream"].as_str().unwrap().to_owned();
        let seq = m["seq"].as_u64().unwrap();
        let prev = last.insert(stream.clone(), seq).unwrap_or(0);
        assert_eq!(
            seq,
            prev + 1,
            "{stream} goes on without a gap or a repeat: {m}"
        );
    };
    take(&l.next(), "inbox 1");
    take(&l.next(), "team 1");

    // The process `listen` is on crashes; the hub goes on through `b`,
    // whose appends land in Redis.
    kill(&mut a);
    let err = l.next_err();
    assert!(err.contains("connection lost"), "{err}");
    let missed = ["inbox 2", "team 2", "inbox 3", "team 3", "inbox 4"];
    for body in missed {
        if body.starts_with("inbox") {
            push_to(&b, "tess", body);
        } else {
            publish_to(&b, "team", body);
        }
    }

    // A new process on the same address and the same Redis: the history
    // (and its epochs) is still there.
    let a2 = start_cluster(&redis, &a.addr.to_string());
    let welcome = l.next();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    // Every message sent meanwhile, once, in order within its stream (the
    // order across streams is not promised), then the ack.
    let mut replayed = Vec::new();
    let ack = loop {
        let f = l.next();
        if f["type"] != "message" {
            break f;
        }
        replayed.push(f);
    };
    assert_eq!(ack["type"], "ack", "{ack}");
    for stream in ["inbox", "group:team"] {
        let prefix = if stream == "inbox" { "inbox" } else { "team" };
        let got: Vec<_> = replayed.iter().filter(|m| m["stream"] == stream).collect();
        let want: Vec<_> = missed.iter().filter(|b| b.starts_with(prefix)).collect();
        assert_eq!(got.len(), want.len(), "{stream}: {replayed:?}");
        for (m, body) in got.into_iter().zip(want) {
            take(m, body);
        }
    }
    assert_eq!(replayed.len(), missed.len(), "{replayed:?}");
    assert_eq!(
        (&ack["recovered"]["inbox"], &ack["recovered"]["group:team"]),
        (&serde_json::json!(true), &serde_json::json!(true)),
        "{ack}"
    );
    // The epochs did not change: the welcome's positions are the last seen.
    assert_eq!(welcome["streams"]["inbox"]["seq"], 4, "{welcome}");
    assert_eq!(welcome["streams"]["group:team"]["seq"], 3, "{welcome}");

    // Live delivery goes on, through either process, nothing twice.
    push_to(&b, "tess", "inbox 5");
    take(&l.next(), "inbox 5");
    publish_to(&a2, "team", "team 4");
    take(&l.next(), "team 4");
    push_to(&a2, "tess", "inbox 6");
    take(&l.next(), "inbox 6");
    // Nothing was reported lost on the way.
    while let Ok(err) = l.errs.try_recv() {
        assert!(!err.contains("could not be recovered"), "{err}");
    }
}
