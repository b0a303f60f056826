//! The real `wshub-server` as a child process: started with chosen flags on
//! a free port, its stderr log captured line by line, its address read from
//! its `listening on ADDR` line, stopped with SIGTERM.
//!
//! The log is read by a plain thread, not a task, so the pipe is drained
//! whatever the caller does (a blocking CLI test, a current-thread runtime
//! that is busy elsewhere): a server must never stall on a full stderr pipe
//! because of how it is being watched. Waiters are woken on every line, both
//! async ones (a `Notify`) and blocking ones (a `Condvar`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::{http, sign, token::now, Client, API_KEY, LIMIT, SECRET};

const BIN: &str = "wshub-server";

/// Where the `wshub-server` binary of this build is.
///
/// Cargo names it to the server package's own tests (`CARGO_BIN_EXE_*`, set
/// at run time by recent cargo); anyone else finds it next to their own
/// executable, in the same profile directory (`target/debug/deps/x-hash` →
/// `target/debug/wshub-server`), which `cargo test --workspace` builds along
/// with every test. Building it from inside a test instead would take
/// cargo's lock, could pick another profile, and hides a missing build step.
/// It panics, with the command to run, when the binary is not there.
pub fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os(concat!("CARGO_BIN_EXE_", "wshub-server")) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("path of the running executable");
    let mut dir = exe
        .parent()
        .expect("executable in a directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let bin = dir.join(format!("{BIN}{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        panic!(
            "{} does not exist. `cargo test --workspace` builds it; when testing \
             one package alone, run `cargo build -p wshub-server` first (with the \
             same --release/--profile as the tests)",
            bin.display()
        );
    }
    bin
}

/// The address in a `listening on ADDR` log line.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    line.split("listening on ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How to start a server. Defaults: the binary from [`server_bin`],
/// `--listen 127.0.0.1:0`, `RUST_LOG=info`, no secret, no API key, and no
/// `WSHUB_*` variable inherited from the caller's environment (so a
/// developer's own settings never change a test).
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    bin: Option<PathBuf>,
    listen: String,
    secret: Option<String>,
    api_key: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_filter: String,
    shell_prefix: Option<String>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            bin: None,
            listen: "127.0.0.1:0".into(),
            secret: None,
            api_key: None,
            args: Vec::new(),
            env: Vec::new(),
            log_filter: "info".into(),
            shell_prefix: None,
        }
    }
}

impl ServerBuilder {
    pub fn bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.bin = Some(path.into());
        self
    }

    /// `--listen` (default `127.0.0.1:0`), e.g. to restart on the address
    /// an earlier server had. Left out when `WSHUB_LISTEN` is set with
    /// [`env`](Self::env), so that the variable is what is tested.
    pub fn listen(mut self, addr: impl ToString) -> Self {
        self.listen = addr.to_string();
        self
    }

    /// `--secret`; [`Server::client`] signs with it.
    pub fn secret(mut self, secret: &str) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// `--api-key`; [`Server::api`] sends it.
    pub fn api_key(mut self, key: &str) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// More flags, after the ones above.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// `RUST_LOG` (default `info`, which logs `listening on`).
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = filter.into();
        self
    }

    /// Runs the server as `sh -c '<prefix> && exec server ARGS'`, e.g. to
    /// apply a `ulimit` first. `exec` keeps one process: the pid, the
    /// signals and the exit status are the server's own.
    pub fn shell_prefix(mut self, prefix: &str) -> Self {
        self.shell_prefix = Some(prefix.into());
        self
    }

    /// The command [`start`](Self::start) runs, stdio not yet set.
    pub fn command(&self) -> Command {
        let bin = self.bin.clone().unwrap_or_else(server_bin);
        let mut c = match &self.shell_prefix {
            None => Command::new(&bin),
            Some(prefix) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("{prefix} && exec \"$0\" \"$@\""))
                    .arg(&bin);
                c
            }
        };
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("WSHUB_")) {
                c.env_remove(key);
            }
        }
        if !self.env.iter().any(|(k, _)| k == "WSHUB_LISTEN") {
            c.args(["--listen", &self.listen]);
        }
        if let Some(s) = &self.secret {
            c.args(["--secret", s]);
        }
        if let Some(k) = &self.api_key {
            c.args(["--api-key", k]);
        }
        c.args(&self.args);
        c.env("RUST_LOG", &self.log_filter);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Starts the server and waits for its `listening on` line.
    pub async fn start(self) -> Server {
        let mut s = self.spawn();
        let found = s
            .wait_for(|lines| lines.iter().find_map(|l| listening_addr(l)))
            .await;
        s.addr = s.expect_found("`listening on ADDR`", found);
        s
    }

    /// [`start`](Self::start) for callers without an async runtime.
    pub fn start_blocking(self) -> Server {
        let mut s = self.spawn();
        let found = s.blocking_wait_for(|lines| lines.iter().find_map(|l| listening_addr(l)));
        s.addr = s.expect_found("`listening on ADDR`", found);
        s
    }

    fn spawn(self) -> Server {
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Logs::default());
        let sink = logs.clone();
        std::thread::spawn(move || sink.collect(stderr));
        Server {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            child,
            exited: None,
            logs,
            secret: self.secret,
            api_key: self.api_key,
        }
    }
}

/// A running server; killed when dropped.
pub struct Server {
    /// Where it listens, from its `listening on` line.
    pub addr: SocketAddr,
    child: Child,
    exited: Option<ExitStatus>,
    logs: Arc<Logs>,
    secret: Option<String>,
    api_key: Option<String>,
}

#[derive(Default)]
struct Logs {
    state: Mutex<LogState>,
    changed: Condvar,
    notify: Notify,
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// stderr reached its end: the process is exiting or gone.
    ended: bool,
}

impl Logs {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn collect(&self, stderr: ChildStderr) {
        let mut reader = BufReader::new(stderr);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            // Bytes, not `lines()`: one non-UTF-8 byte must not end the log.
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned();
                    self.update(|s| s.lines.push(line));
                }
            }
        }
        self.update(|s| s.ended = true);
    }

    fn update(&self, change: impl FnOnce(&mut LogState)) {
        change(&mut self.lock());
        self.changed.notify_all();
        self.notify.notify_waiters();
    }
}

enum Waited<T> {
    Found(T),
    Ended,
    TimedOut,
}

impl Server {
    /// A builder with the defaults described on [`ServerBuilder`].
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Starts a server with [`SECRET`] and [`API_KEY`] plus `extra` flags.
    pub async fn start(extra: &[&str]) -> Server {
        Server::builder()
            .secret(SECRET)
            .api_key(API_KEY)
            .args(extra)
            .start()
            .await
    }

    /// Starts a cluster-mode server (PROTOCOL.md §11) on the Redis at
    /// `redis_url` (e.g. [`RedisServer::url`](crate::RedisServer::url)),
    /// with [`SECRET`] and [`API_KEY`] as every process of one hub must
    /// share, plus `extra` flags. Call it once per process of the cluster.
    pub async fn start_cluster(redis_url: &str, extra: &[&str]) -> Server {
        Server::builder()
            .secret(SECRET)
            .api_key(API_KEY)
            .args(&["--redis", redis_url])
            .args(extra)
            .start()
            .await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://ADDR/ws`, with `?query` when `query` is not empty.
    pub fn ws_url(&self, query: &str) -> String {
        if query.is_empty() {
            format!("ws://{}/ws", self.addr)
        } else {
            format!("ws://{}/ws?{query}", self.addr)
        }
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().lines.clone()
    }

    /// Waits until a log line contains `needle`; returns it.
    pub async fn wait_log(&self, needle: &str) -> String {
        self.wait_log_n(needle, 1).await
    }

    /// Waits until `n` log lines contain `needle`; returns the `n`th.
    pub async fn wait_log_n(&self, needle: &str, n: usize) -> String {
        let found = self.wait_for(|lines| nth_match(lines, needle, n)).await;
        self.expect_found(&format!("{n} line(s) with {needle:?}"), found)
    }

    /// [`wait_log`](Self::wait_log) for callers without an async runtime.
    pub fn blocking_wait_log(&self, needle: &str) -> String {
        let found = self.blocking_wait_for(|lines| nth_match(lines, needle, 1));
        self.expect_found(&format!("a line with {needle:?}"), found)
    }

    /// Sends SIGTERM (the graceful shutdown of PROTOCOL.md §5).
    pub fn terminate(&self) {
        assert!(self.exited.is_none(), "the server has already exited");
        // The child is not reaped before `exited` is set, so its pid is
        // still its own.
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    }

    /// SIGKILL, as a crash: no shutdown, nothing more written or sent.
    /// Returns once the process is gone (reaped), so what a test checks next
    /// happens without it.
    pub async fn kill(&mut self) -> ExitStatus {
        assert!(self.exited.is_none(), "the server has already exited");
        // Not reaped yet (`exited` is unset), so the pid is still its own.
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL).expect("SIGKILL");
        self.wait_exit().await
    }

    /// Waits for the process to exit; fails the test after [`LIMIT`].
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let found = self.wait_for(|_| None::<()>).await;
        self.reap("exit", found)
    }

    /// [`wait_exit`](Self::wait_exit) for callers without an async runtime.
    pub fn blocking_wait_exit(&mut self) -> ExitStatus {
        let found = self.blocking_wait_for(|_| None::<()>);
        self.reap("exit", found)
    }

    /// SIGTERM, then waits for the exit.
    pub fn blocking_stop(&mut self) -> ExitStatus {
        self.terminate();
        self.blocking_wait_exit()
    }

    /// Connects a client for `user` with a fresh token (an hour) joining
    /// `groups`, signed with the secret the server was started with.
    pub async fn client(&self, user: &str, groups: &[&str]) -> Client {
        let secret = self
            .secret
            .as_deref()
            .expect("started without .secret(): sign a token and use Client::connect");
        let t = sign(
            &json!({"sub": user, "groups": groups, "exp": now() + 3600}),
            secret,
        );
        Client::connect(&self.ws_url(&format!("token={t}"))).await
    }

    /// Connects `user` like `client`, but over a socket whose receive
    /// buffer is 4 KiB (`SILENT_RCVBUF`), so what the server has not
    /// written yet waits in its queue, not in this host's kernel.
    pub async fn silent_client(&self, user: &str, groups: &[&str]) -> Client {
        let secret = self.secret.as_deref().expect("started without .secret()");
        let t = sign(
            &json!({"sub": user, "groups": groups, "exp": now() + 3600}),
            secret,
        );
        silent_connect(self.addr, &self.ws_url(&format!("token={t}"))).await
    }

    /// One request to the server API with the key it was started with;
    /// returns the status and the JSON body.
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        http(
            self.addr,
            method,
            path,
            self.api_key.as_deref(),
            body.as_deref(),
        )
        .await
    }

    async fn wait_for<T>(&self, find: impl Fn(&[String]) -> Option<T>) -> Waited<T> {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            // Made before looking, so a line logged in between still wakes
            // this waiter (`notify_waiters` reaches futures once created).
            let notified = self.logs.notify.notified();
            {
                let state = self.logs.lock();
                if let Some(t) = find(&state.lines) {
                    return Waited::Found(t);
                }
                if state.ended {
                    return Waited::Ended;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Waited::TimedOut;
            }
        }
    }

    fn blocking_wait_for<T>(&self, find: impl Fn(&[String]) -> Option<T>) -> Waited<T> {
        let deadline = Instant::now() + LIMIT;
        let mut state = self.logs.lock();
        loop {
            if let Some(t) = find(&state.lines) {
                return Waited::Found(t);
            }
            if state.ended {
                return Waited::Ended;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Waited::TimedOut;
            }
            state = self
                .logs
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn expect_found<T>(&self, what: &str, waited: Waited<T>) -> T {
        match waited {
            Waited::Found(t) => t,
            Waited::Ended => panic!(
                "the server exited before logging {what}; its log:\n{}",
                self.logs().join("\n")
            ),
            Waited::TimedOut => panic!(
                "the server logged no {what} within {LIMIT:?}; its log:\n{}",
                self.logs().join("\n")
            ),
        }
    }

    fn reap(&mut self, what: &str, waited: Waited<()>) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        match waited {
            // stderr closes as the process exits, so this wait is short.
            Waited::Ended => {
                let status = self.child.wait().expect("wait for the server");
                self.exited = Some(status);
                status
            }
            Waited::Found(()) | Waited::TimedOut => panic!(
                "the server did not {what} within {LIMIT:?}; its log:\n{}",
                self.logs().join("\n")
            ),
        }
    }
}

fn nth_match(lines: &[String], needle: &str, n: usize) -> Option<String> {
    lines
        .iter()
        .filter(|l| l.contains(needle))
        .nth(n.checked_sub(1).expect("n counts from 1"))
        .cloned()
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Connects to `url` (at `addr`) over a socket whose receive buffer is
/// `SILENT_RCVBUF`, and reads the welcome: `Server::silent_client` for a
/// caller on another runtime, which cannot share the `Server`.
pub async fn silent_connect(addr: SocketAddr, url: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(crate::SILENT_RCVBUF)
        .expect("SO_RCVBUF");
    let stream = socket.connect(addr).await.expect("connect");
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .expect("upgrade");
    Client::after_upgrade(ws).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_address_of_a_listening_line() {
        let line = "2026-01-01T00:00:00.000001Z  INFO wshub_server: listening on 127.0.0.1:4321";
        assert_eq!(
            listening_addr(line),
            Some("127.0.0.1:4321".parse().unwrap())
        );
        assert_eq!(
            listening_addr("listening on [::1]:80 (dev)"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(listening_addr("INFO wshub_server: stopped"), None);
        assert_eq!(listening_addr("listening on nowhere"), None);
    }
}
