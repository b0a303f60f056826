//! Test harness: starts the real `wshub-server` binary on port 0 and talks
//! to it over real sockets. Waits are on signals (a log line, a frame, a
//! close); the timeouts only bound a broken run.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-which-is-long-enough";
pub const API_KEY: &str = "test-api-key";
/// Bound on any single wait; a healthy run never gets near it.
pub const LIMIT: Duration = Duration::from_secs(20);

pub struct Server {
    pub addr: SocketAddr,
    child: Child,
    logs: Arc<(Mutex<Vec<String>>, Notify)>,
}

impl Server {
    /// Starts a server with a secret and an API key plus `extra` flags.
    pub async fn start(extra: &[&str]) -> Server {
        let mut args = vec!["--secret", SECRET, "--api-key", API_KEY];
        args.extend_from_slice(extra);
        Server::start_raw(&args).await
    }

    /// Starts a server with exactly `args` (plus `--listen 127.0.0.1:0`).
    pub async fn start_raw(args: &[&str]) -> Server {
        Server::start_logging(args, "info").await
    }

    /// Like `start_raw`, with a `RUST_LOG` filter.
    pub async fn start_logging(args: &[&str], filter: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wshub-server"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", filter)
            .env_remove("WSHUB_SECRET")
            .env_remove("WSHUB_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start wshub-server");
        let stderr = child.stderr.take().expect("stderr");
        let logs: Arc<(Mutex<Vec<String>>, Notify)> = Arc::default();
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.0.lock().unwrap().push(line);
                sink.1.notify_waiters();
            }
        });
        let mut server = Server {
            addr: "127.0.0.1:1".parse().unwrap(),
            child,
            logs,
        };
        let line = server.wait_log("listening on").await;
        let addr = line
            .rsplit("listening on ")
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap();
        server.addr = addr.parse().expect("address in log line");
        server
    }

    /// Waits until a log line contains `needle`; returns it.
    pub async fn wait_log(&self, needle: &str) -> String {
        self.wait_log_n(needle, 1).await
    }

    /// Waits until `n` log lines contain `needle`; returns the last.
    pub async fn wait_log_n(&self, needle: &str, n: usize) -> String {
        let fut = async {
            loop {
                let notified = self.logs.1.notified();
                {
                    let logs = self.logs.0.lock().unwrap();
                    let hits: Vec<&String> = logs.iter().filter(|l| l.contains(needle)).collect();
                    if hits.len() >= n {
                        return hits[n - 1].clone();
                    }
                }
                notified.await;
            }
        };
        match tokio::time::timeout(LIMIT, fut).await {
            Ok(line) => line,
            Err(_) => panic!(
                "no log line with {needle:?}; logs:\n{}",
                self.logs().join("\n")
            ),
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.0.lock().unwrap().clone()
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws?{query}", self.addr)
    }

    pub fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("server did not exit")
            .unwrap()
    }

    /// Connects a client for `user` with a fresh token for `groups`.
    pub async fn client(&self, user: &str, groups: &[&str]) -> Client {
        let token = token(user, groups, 3600);
        Client::connect(&self.ws_url(&format!("token={token}"))).await
    }

    /// One HTTP request with the API key; returns status and JSON body.
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        http(
            self.addr,
            method,
            path,
            Some(API_KEY),
            body.map(|b| b.to_string()),
        )
        .await
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn token(user: &str, groups: &[&str], ttl: i64) -> String {
    sign(
        &json!({"sub": user, "groups": groups, "exp": now() as i64 + ttl}),
        SECRET,
    )
}

pub fn sign(claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub ws: Ws,
    pub welcome: Value,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("upgrade");
        Client::after_upgrade(ws).await
    }

    pub async fn after_upgrade(ws: Ws) -> Client {
        let mut c = Client {
            ws,
            welcome: Value::Null,
        };
        let welcome = c.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        c.welcome = welcome;
        c
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// The next text frame as JSON (pings are answered by tungstenite).
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(LIMIT, self.ws.next())
                .await
                .expect("no frame in time")
                .expect("stream ended")
                .expect("read error");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("JSON frame"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends `v` and returns the next frame.
    pub async fn request(&mut self, v: Value) -> Value {
        self.send(v).await;
        self.recv().await
    }

    /// Reads until the server's close frame; returns its code and reason.
    /// Text frames before it are returned too.
    pub async fn until_close(&mut self) -> (u16, String, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let next = tokio::time::timeout(LIMIT, self.ws.next())
                .await
                .expect("no close in time");
            match next {
                Some(Ok(Message::Close(frame))) => {
                    // Reading on sends tungstenite's close reply, which
                    // completes the handshake the server waits for.
                    let _ = tokio::time::timeout(LIMIT, self.ws.next()).await;
                    return match frame {
                        Some(CloseFrame { code, reason }) => {
                            (u16::from(code), reason.to_string(), before)
                        }
                        None => (1005, String::new(), before),
                    };
                }
                Some(Ok(Message::Text(t))) => before.push(serde_json::from_str(&t).unwrap()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
                None => panic!("stream ended without a close frame"),
            }
        }
    }
}

/// Tries an upgrade that should be refused; returns status and JSON body.
pub async fn refused(request: tungstenite::handshake::client::Request) -> (u16, Value) {
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("upgrade was accepted"),
        Err(tungstenite::Error::Http(res)) => {
            let status = res.status().as_u16();
            let body = res.body().clone().unwrap_or_default();
            let v = serde_json::from_slice(&body).unwrap_or_else(|_| {
                panic!(
                    "error body is not JSON: {:?}",
                    String::from_utf8_lossy(&body)
                )
            });
            (status, v)
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// A minimal HTTP/1.1 client: one request per connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<String>,
) -> (u16, Value) {
    let (status, _headers, body) = http_raw(addr, method, path, bearer, body, &[]).await;
    let v = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    (status, v)
}

pub async fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(b) = bearer {
        req.push_str(&format!("Authorization: Bearer {b}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or_default();
    req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut raw))
        .await
        .expect("no HTTP answer")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let len =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if len == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + len]);
        b = &b[eol + 2 + len + 2..];
    }
}
