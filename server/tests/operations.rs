//! PROTOCOL.md §7–8: flags and their environment variables, refusals of bad
//! configuration, and logs that never carry secrets.

use std::process::Command;

use serde_json::json;
use test_support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

fn server() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wshub-server"));
    for (k, _) in std::env::vars() {
        if k.starts_with("WSHUB_") {
            c.env_remove(k);
        }
    }
    c
}

/// Runs the server expecting it to refuse to start.
fn refuses(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line please: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert!(err.starts_with("wshub-server: "), "{err}");
    err
}

#[test]
fn bad_configuration_is_one_clear_line() {
    let e = refuses(server().args(["--secret", "s", "--queue", "0"]));
    assert!(e.contains("--queue"), "{e}");
    let e = refuses(server().args(["--secret", "s", "--listen", "not-an-address"]));
    assert!(e.contains("--listen"), "{e}");
    let e = refuses(&mut server());
    assert!(e.contains("--secret"), "{e}");
    let e = refuses(server().args(["--insecure-dev", "--listen", "0.0.0.0:0"]));
    assert!(e.contains("loopback"), "{e}");
    let e = refuses(server().args(["--secret", "s", "--rate", "fast"]));
    assert!(e.contains("--rate"), "{e}");
    // The same through the environment.
    let e = refuses(server().env("WSHUB_SECRET", "s").env("WSHUB_QUEUE", "0"));
    assert!(e.contains("--queue"), "{e}");
    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let e = refuses(server().args(["--secret", "s", "--listen", &addr]));
    assert!(e.contains("cannot listen"), "{e}");
}

#[test]
fn help_lists_every_flag_and_its_variable() {
    let out = server().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env) in [
        ("--listen", "WSHUB_LISTEN"),
        ("--secret", "WSHUB_SECRET"),
        ("--api-key", "WSHUB_API_KEY"),
        ("--public-group", "WSHUB_PUBLIC_GROUP"),
        ("--allowed-origin", "WSHUB_ALLOWED_ORIGIN"),
        ("--max-frame", "WSHUB_MAX_FRAME"),
        ("--queue", "WSHUB_QUEUE"),
        ("--rate", "WSHUB_RATE"),
        ("--heartbeat", "WSHUB_HEARTBEAT"),
        ("--shutdown-grace", "WSHUB_SHUTDOWN_GRACE"),
        ("--insecure-dev", "WSHUB_INSECURE_DEV"),
    ] {
        assert!(
            help.contains(flag) && help.contains(env),
            "{flag} / {env} missing:\n{help}"
        );
    }
}

#[tokio::test]
async fn flags_come_from_the_environment_too() {
    // Env-only configuration (no flags at all): address, secret, heartbeat
    // and public groups.
    let s = Server::builder()
        .env("WSHUB_LISTEN", "127.0.0.1:0")
        .env("WSHUB_SECRET", SECRET)
        .env("WSHUB_HEARTBEAT", "7")
        .env("WSHUB_PUBLIC_GROUP", "pub-,news")
        .start()
        .await;
    let t = token("e", &[], 60);
    let mut client = Client::connect(&s.ws_url(&format!("token={t}"))).await;
    assert_eq!(client.welcome["heartbeat"], 7);
    for g in ["pub-1", "news"] {
        let ack = client
            .request(json!({"type":"join","group":g,"id":"j"}))
            .await;
        assert_eq!(ack["type"], "ack", "{g}");
    }
    let e = client
        .request(json!({"type":"join","group":"private","id":"j"}))
        .await;
    assert_eq!(e["code"], "forbidden");
}

#[tokio::test]
async fn logs_show_connections_but_never_secrets() {
    // Most verbose logging, to be sure nothing leaks at any level.
    let mut s = Server::builder()
        .secret(SECRET)
        .api_key(API_KEY)
        .log_filter("trace")
        .start()
        .await;
    let t = token("logged", &[], 60);
    let mut q = Client::connect(&s.ws_url(&format!("token={t}"))).await;
    let mut req = s.ws_url("").into_client_request().unwrap();
    let t2 = token("logged2", &[], 60);
    req.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {t2}")).unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut h = Client::after_upgrade(ws).await;
    let bad = sign(&json!({"sub":"x","exp":now()-10}), "wrong-secret");
    let _ = refused(
        s.ws_url(&format!("token={bad}"))
            .into_client_request()
            .unwrap(),
    )
    .await;
    s.api("GET", "/api/v1/stats", None).await;
    http(
        s.addr,
        "GET",
        "/api/v1/stats",
        Some("a-wrong-key-attempt"),
        None,
    )
    .await;
    q.request(json!({"type":"ping"})).await;
    h.request(json!({"type":"ping"})).await;
    drop(q);
    s.wait_log("connection closed").await;
    s.terminate();
    s.wait_exit().await;

    let logs = s.logs().join("\n");
    assert!(
        logs.contains("connection opened") && logs.contains("user=logged"),
        "{logs}"
    );
    assert!(logs.contains("connection closed"));
    for secret in [SECRET, API_KEY, &t, &t2, &bad, "a-wrong-key-attempt"] {
        assert!(!logs.contains(secret), "log carries a secret: {secret}");
    }
    // Token parts (a JWT's payload or signature) never appear either.
    for part in t.split('.').skip(1) {
        assert!(!logs.contains(part));
    }
}

/// Starts the server with a `ulimit` applied first; returns it once it is
/// listening.
fn start_with_ulimit(ulimit: &str) -> Server {
    Server::builder()
        .secret("s")
        .shell_prefix(&format!("ulimit {ulimit}"))
        .start_blocking()
}

fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].to_owned(), f[4].to_owned()) // soft, hard
}

#[test]
fn raises_its_open_file_limit_and_warns_when_the_hard_limit_is_low() {
    // A low soft limit under a higher hard one: raised to the hard limit.
    let hard = open_file_limits(std::process::id()).1;
    let s = start_with_ulimit("-Sn 256");
    let (soft, child_hard) = open_file_limits(s.pid());
    assert_eq!(soft, child_hard);
    assert_eq!(child_hard, hard);
    drop(s);

    // A hard limit below what 19,000 connections need: a warning.
    let s = start_with_ulimit("-n 1024");
    let line = s.blocking_wait_log("open-file hard limit");
    assert!(line.contains("WARN"), "{line}");
}
