//! A private, real `redis-server` as a child process for cluster-mode tests:
//! its own loopback port and temporary directory, its log captured, ready
//! when it logs `Ready to accept connections`, and the outage drills of
//! PROTOCOL.md §11 (kill, restart with or without its data, graceful stop,
//! freeze and thaw) plus `redis-cli` for assertions.
//!
//! There is no mock and no skip: a test that needs Redis and cannot find
//! `redis-server` fails, saying how to install it.
//!
//! The port is chosen below the kernel's ephemeral range. A port the kernel
//! handed out for `127.0.0.1:0` can be handed out again while this Redis is
//! down between `kill` and `restart` — as the local end of a wshub server's
//! own reconnect attempt to it (TCP self-connect), or to any other test's
//! listener — and the restart would then fail to bind. Ports outside the
//! range are only ever taken by someone naming them.
//!
//! Each process is watched by plain threads (one per output pipe, one for its
//! exit) so that the pipes are drained and the exit noticed whatever the
//! caller does; waiters are woken by every line and by the exit, async ones
//! through a `Notify` and blocking ones through a `Condvar`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use tokio::sync::Notify;

use crate::LIMIT;

/// The line Redis (7.0: `Ready to accept connections`, 7.2+: `... tcp`)
/// logs once it has loaded its data and listens.
const READY: &str = "Ready to accept connections";
/// How many fresh ports a first start tries when its port was taken between
/// choosing it and Redis binding it.
const PORT_ATTEMPTS: usize = 5;
/// The lowest port chosen; below are more services that might be running.
const LOWEST_PORT: u16 = 20000;

/// Where `redis-server` is: on `PATH`, else where distributions put it.
/// Panics, saying how to install it, when it is nowhere.
pub fn redis_server_bin() -> PathBuf {
    if let Some(bin) = find_program("redis-server") {
        return bin;
    }
    let required = ["CI", "WSHUB_REQUIRE_REDIS"]
        .into_iter()
        .filter(|v| std::env::var_os(v).is_some())
        .collect::<Vec<_>>();
    panic!("{}", missing_redis(&required));
}

/// Why a test fails without `redis-server`, and how to install it; `set`
/// names the variables (`CI`, `WSHUB_REQUIRE_REDIS`) that say it must be
/// there.
fn missing_redis(set: &[&str]) -> String {
    let why = if set.is_empty() {
        String::new()
    } else {
        format!(
            " {} is set: the machine running the tests must install it first, \
             as .ci/run does.",
            set.join(" and ")
        )
    };
    format!(
        "redis-server was not found on PATH nor in /usr/bin, /usr/sbin or \
         /usr/local/bin. The cluster-mode tests run a real Redis (7.0 or later) \
         and fail without one; they are never skipped.{why} Install it with \
         `sudo apt-get install -y redis-server` (Debian, Ubuntu) or \
         `brew install redis` (macOS), or give a path with \
         `RedisServer::builder().bin(..)`."
    )
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// How to start a Redis. Defaults: [`redis_server_bin`], persistence on
/// (AOF with `appendfsync no`: every write reaches the file before Redis
/// answers, so what it acknowledged is back after a `kill` and `restart`;
/// leaving the fsync to the kernel keeps a slow disk from stalling Redis
/// past the hub's one-second command timeout), no extra flags.
#[derive(Debug, Clone)]
pub struct RedisBuilder {
    bin: Option<PathBuf>,
    persistence: bool,
    args: Vec<String>,
}

impl Default for RedisBuilder {
    fn default() -> Self {
        RedisBuilder {
            bin: None,
            persistence: true,
            args: Vec::new(),
        }
    }
}

impl RedisBuilder {
    /// The `redis-server` to run (default: [`redis_server_bin`]).
    /// `redis-cli` is looked for next to it first.
    pub fn bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.bin = Some(path.into());
        self
    }

    /// With `false`, Redis keeps nothing on disk (`--appendonly no`): every
    /// restart is a restart without its data, as after losing its disk.
    pub fn persistence(mut self, on: bool) -> Self {
        self.persistence = on;
        self
    }

    /// More flags, after the ones the builder sets (a later flag wins), e.g.
    /// `["--enable-debug-command", "yes"]` or `["--replicaof", "127.0.0.1",
    /// "P"]`. A `--loglevel` above `notice` would hide the ready line.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Starts Redis and waits until it accepts connections.
    pub async fn start(self) -> RedisServer {
        let mut redis = self.prepare();
        for attempt in 1..=PORT_ATTEMPTS {
            redis.spawn();
            let outcome = redis.run.watch.wait_ready().await;
            if !redis.port_taken(outcome, attempt) {
                break;
            }
        }
        redis
    }

    /// [`start`](Self::start) for callers without an async runtime.
    pub fn start_blocking(self) -> RedisServer {
        let mut redis = self.prepare();
        for attempt in 1..=PORT_ATTEMPTS {
            redis.spawn();
            let outcome = redis.run.watch.blocking_wait_ready();
            if !redis.port_taken(outcome, attempt) {
                break;
            }
        }
        redis
    }

    fn prepare(self) -> RedisServer {
        let bin = self.bin.clone().unwrap_or_else(redis_server_bin);
        let cli = bin
            .parent()
            .map(|dir| dir.join("redis-cli"))
            .filter(|p| p.is_file())
            .or_else(|| find_program("redis-cli"))
            .unwrap_or_else(|| {
                panic!(
                    "redis-cli was not found next to {} nor on PATH; Debian's \
                     redis-server package brings it (in redis-tools): \
                     `sudo apt-get install -y redis-server`",
                    bin.display()
                )
            });
        RedisServer {
            bin,
            cli,
            persistence: self.persistence,
            args: self.args,
            port: free_port(),
            dir: TempDir::new(),
            run: Run::none(),
            earlier: Vec::new(),
            paused: false,
        }
    }
}

/// A running private Redis; killed (SIGKILL, by its pid) and its directory
/// removed when dropped.
pub struct RedisServer {
    bin: PathBuf,
    cli: PathBuf,
    persistence: bool,
    args: Vec<String>,
    port: u16,
    dir: TempDir,
    /// The current (or last) process.
    run: Run,
    /// The log lines of the processes before it, for failure messages.
    earlier: Vec<String>,
    paused: bool,
}

impl RedisServer {
    /// A builder with the defaults described on [`RedisBuilder`].
    pub fn builder() -> RedisBuilder {
        RedisBuilder::default()
    }

    /// A Redis with the defaults (persistent), ready.
    pub async fn start() -> RedisServer {
        RedisServer::builder().start().await
    }

    /// [`start`](Self::start) for callers without an async runtime.
    pub fn start_blocking() -> RedisServer {
        RedisServer::builder().start_blocking()
    }

    /// `redis://127.0.0.1:PORT/0`, what `wshub-server --redis` takes.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The pid of the current (or last) process; it changes on restart.
    pub fn pid(&self) -> u32 {
        self.run.pid
    }

    /// Its `--dir`, where the AOF lives.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// Whether the process has not exited (a paused one is running).
    pub fn is_running(&self) -> bool {
        self.run.watch.lock().exit.is_none()
    }

    /// Every log line so far, of this process and the ones before it.
    pub fn logs(&self) -> Vec<String> {
        let mut lines = self.earlier.clone();
        lines.extend(self.run.watch.lock().lines.iter().cloned());
        lines
    }

    /// SIGKILL, as a crash: no shutdown, nothing more written. Returns once
    /// the process is gone and its port free. With persistence every write
    /// Redis acknowledged is in its AOF file (the process dies, not the
    /// machine, so the kernel still holds what was not yet synced).
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        self.paused = false;
        self.expect_exit("exit after SIGKILL");
    }

    /// SIGTERM, Redis's graceful shutdown, and waits for the exit (a paused
    /// Redis is woken to act on it).
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        if std::mem::take(&mut self.paused) {
            self.signal(Signal::SIGCONT);
        }
        self.expect_exit("exit after SIGTERM")
    }

    /// SIGSTOP: the process stays, its port keeps accepting TCP connections
    /// (the kernel does that), but nothing is answered — a frozen Redis, not
    /// a gone one. Returns once the process is stopped.
    pub fn pause(&mut self) {
        assert!(!self.paused, "redis is already paused");
        self.signal(Signal::SIGSTOP);
        self.paused = true;
        // The signal takes effect asynchronously; a test that pauses and then
        // checks that nothing is answered must not race the last answers.
        // WNOWAIT: the exit watcher must still see an exit, and a stop report
        // is cleared by SIGCONT anyway.
        let pid = Pid::from_raw(self.run.pid as i32);
        let flags = WaitPidFlag::WSTOPPED | WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
        // Any other error (ECHILD: reaped already) means it exited: said
        // below.
        while let Err(Errno::EINTR) = waitid(Id::Pid(pid), flags) {}
        assert!(
            self.is_running(),
            "redis exited instead of stopping; its log:\n{}",
            self.logs().join("\n")
        );
    }

    /// SIGCONT: a paused Redis answers again, the requests it received while
    /// paused first.
    pub fn resume(&mut self) {
        assert!(self.paused, "redis is not paused");
        self.signal(Signal::SIGCONT);
        self.paused = false;
    }

    /// Starts Redis again on the same port and directory and waits until it
    /// accepts connections: with persistence its data is back. Panics while
    /// the process still runs (`kill` or `stop` it first).
    pub async fn restart(&mut self) {
        self.respawn();
        let outcome = self.run.watch.wait_ready().await;
        self.expect_ready(outcome);
    }

    /// [`restart`](Self::restart) for callers without an async runtime.
    pub fn restart_blocking(&mut self) {
        self.respawn();
        let outcome = self.run.watch.blocking_wait_ready();
        self.expect_ready(outcome);
    }

    /// [`restart`](Self::restart) after deleting everything in its
    /// directory: Redis comes back without its data (PROTOCOL.md §11,
    /// "came back without its data").
    pub async fn restart_empty(&mut self) {
        self.empty_dir();
        self.restart().await;
    }

    /// [`restart_empty`](Self::restart_empty) for callers without an async
    /// runtime.
    pub fn restart_empty_blocking(&mut self) {
        self.empty_dir();
        self.restart_blocking();
    }

    /// Runs `redis-cli -p PORT ARGS` and returns its output without the last
    /// line end: raw replies, as redis-cli prints them to a pipe (`DBSIZE` →
    /// `0`, a missing key → empty; `INFO` lines end in `\r`). Panics when the
    /// command fails (an error reply, Redis unreachable) or hangs for
    /// [`LIMIT`] (a paused Redis).
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|e| {
            panic!("redis-cli {} failed: {e}", args.join(" "));
        })
    }

    /// [`cli`](Self::cli), with a failure (an error reply, Redis not
    /// answering) as `Err` with what redis-cli said.
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(&self.cli);
        // -e: an error reply fails the command, instead of being printed as
        // if it were a value.
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-e"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        // Waited for on a thread so that a hang is bounded. A redis-cli left
        // hanging is not killed: it ends when this Redis does (at the latest
        // when it is dropped), and killing it by pid could hit a reused pid.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(LIMIT) {
            Ok(out) => out.unwrap_or_else(|e| panic!("redis-cli: {e}")),
            Err(_) => return Err(format!("no answer within {LIMIT:?} (is Redis paused?)")),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stdout = stdout.strip_suffix('\n').unwrap_or(&stdout).to_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(format!("{} {}{}", out.status, stdout, stderr.trim_end()))
        }
    }

    fn signal(&self, signal: Signal) {
        assert!(
            self.run.signal(signal),
            "cannot send {signal} to redis: it has exited; its log:\n{}",
            self.logs().join("\n")
        );
    }

    fn expect_exit(&self, what: &str) -> ExitStatus {
        self.run.blocking_wait_exit().unwrap_or_else(|| {
            panic!(
                "redis did not {what} within {LIMIT:?}; its log:\n{}",
                self.logs().join("\n")
            )
        })
    }

    fn respawn(&mut self) {
        assert!(
            !self.is_running(),
            "redis is still running (pid {}): kill() or stop() it before a restart",
            self.run.pid
        );
        self.spawn();
    }

    fn empty_dir(&self) {
        assert!(
            !self.is_running(),
            "redis is still running (pid {}): kill() or stop() it before emptying its directory",
            self.run.pid
        );
        let dir = self.dir();
        for entry in std::fs::read_dir(dir).expect("read redis's directory") {
            let path = entry.expect("an entry of redis's directory").path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.unwrap_or_else(|e| panic!("cannot remove {}: {e}", path.display()));
        }
    }

    /// Starts a process (on `self.port`) as the current run.
    fn spawn(&mut self) {
        let mut cmd = Command::new(&self.bin);
        let persistence: &[&str] = if self.persistence {
            &["--appendonly", "yes", "--appendfsync", "no"]
        } else {
            &["--appendonly", "no"]
        };
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir())
            // No RDB snapshots: they fork, and a fork would outlive a
            // SIGKILL holding the log pipe. The AOF alone is the data.
            .args(["--save", ""])
            .args(persistence)
            .args(["--daemonize", "no", "--logfile", "", "--loglevel", "notice"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let old = std::mem::replace(&mut self.run, Run::watch(child));
        let old_lines = std::mem::take(&mut old.watch.lock().lines);
        self.earlier.extend(old_lines);
    }

    /// After a first start's wait: whether to try again on another port.
    fn port_taken(&mut self, outcome: Started, attempt: usize) -> bool {
        let taken = matches!(outcome, Started::Exited)
            && self
                .run
                .watch
                .lock()
                .lines
                .iter()
                .any(|l| l.contains("Address already in use"));
        if taken && attempt < PORT_ATTEMPTS {
            self.port = free_port();
            return true;
        }
        self.expect_ready(outcome);
        false
    }

    fn expect_ready(&self, outcome: Started) {
        match outcome {
            Started::Ready => {}
            Started::Exited => panic!(
                "redis on port {} exited before {READY:?}; its log:\n{}",
                self.port,
                self.logs().join("\n")
            ),
            Started::TimedOut => panic!(
                "redis on port {} did not log {READY:?} within {LIMIT:?}; its log:\n{}",
                self.port,
                self.logs().join("\n")
            ),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // By pid, never by name: other tests' Redis servers run alongside.
        // SIGKILL works on a paused process too.
        if self.run.signal(Signal::SIGKILL) {
            // Bounded, and no panic: this may run while a test unwinds.
            let _ = self.run.blocking_wait_exit();
        }
        // `TempDir` is dropped after this, with the process gone.
    }
}

/// One `redis-server` process and its watchers.
struct Run {
    pid: u32,
    watch: Arc<Watch>,
}

impl Run {
    /// A placeholder before the first spawn, already "exited".
    fn none() -> Run {
        let watch = Watch::default();
        watch.lock().exit = Some(ExitStatus::default());
        watch.lock().open_pipes = 0;
        Run {
            pid: 0,
            watch: Arc::new(watch),
        }
    }

    fn watch(mut child: Child) -> Run {
        let watch = Arc::new(Watch::default());
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let w = watch.clone();
        std::thread::spawn(move || w.collect(stdout));
        let w = watch.clone();
        std::thread::spawn(move || w.collect(stderr));
        let pid = child.id();
        let w = watch.clone();
        std::thread::spawn(move || w.await_exit(child));
        Run { pid, watch }
    }

    /// Sends `signal` unless the process has exited; whether it was sent.
    fn signal(&self, signal: Signal) -> bool {
        // Under the lock, which the reaper holds while it reaps: an unreaped
        // pid is still this process's (at worst a zombie), never a reused one.
        let state = self.watch.lock();
        if state.exit.is_some() {
            return false;
        }
        kill(Pid::from_raw(self.pid as i32), signal)
            .unwrap_or_else(|e| panic!("{signal} to redis (pid {}): {e}", self.pid));
        true
    }

    fn blocking_wait_exit(&self) -> Option<ExitStatus> {
        self.watch.blocking_wait(|s| s.exit)
    }
}

#[derive(Default)]
struct Watch {
    state: Mutex<RunState>,
    changed: Condvar,
    notify: Notify,
}

struct RunState {
    lines: Vec<String>,
    /// stdout and stderr not yet at their end.
    open_pipes: u8,
    exit: Option<ExitStatus>,
}

impl Default for RunState {
    fn default() -> Self {
        RunState {
            lines: Vec::new(),
            open_pipes: 2,
            exit: None,
        }
    }
}

/// How a wait for the ready line ended.
enum Started {
    Ready,
    /// Exited, and its last words are read.
    Exited,
    TimedOut,
}

fn ready(state: &RunState) -> Option<Started> {
    if state.lines.iter().any(|l| l.contains(READY)) {
        Some(Started::Ready)
    } else if state.exit.is_some() && state.open_pipes == 0 {
        Some(Started::Exited)
    } else {
        None
    }
}

impl Watch {
    fn lock(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut RunState)) {
        change(&mut self.lock());
        self.changed.notify_all();
        self.notify.notify_waiters();
    }

    fn collect(&self, pipe: impl Read) {
        let mut reader = BufReader::new(pipe);
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
        self.update(|s| s.open_pipes -= 1);
    }

    /// Waits for the exit without reaping (WNOWAIT), then reaps and records
    /// it in one step under the lock, so that `Run::signal` never signals a
    /// pid that could already belong to another process.
    fn await_exit(&self, mut child: Child) {
        let pid = Pid::from_raw(child.id() as i32);
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
        while let Err(Errno::EINTR) = waitid(Id::Pid(pid), flags) {}
        self.update(|s| {
            let status = child.wait().expect("reap redis-server");
            s.exit = Some(status);
        });
    }

    async fn wait_ready(&self) -> Started {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            // Made before looking, so a line logged in between still wakes
            // this waiter (`notify_waiters` reaches futures once created).
            let notified = self.notify.notified();
            if let Some(r) = ready(&self.lock()) {
                return r;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Started::TimedOut;
            }
        }
    }

    fn blocking_wait_ready(&self) -> Started {
        self.blocking_wait(ready).unwrap_or(Started::TimedOut)
    }

    /// Waits until `find` finds something, at most [`LIMIT`].
    fn blocking_wait<T>(&self, find: impl Fn(&RunState) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + LIMIT;
        let mut state = self.lock();
        loop {
            if let Some(t) = find(&state) {
                return Some(t);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A fresh directory under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let dir = base.join(format!(
                "wshub-redis-{}-{:016x}",
                std::process::id(),
                random()
            ));
            // `create_dir`, not `create_dir_all`: it fails on an existing
            // directory, so the one returned is ours alone.
            match std::fs::create_dir(&dir) {
                Ok(()) => return TempDir(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", dir.display()),
            }
        }
        panic!("cannot create a fresh directory in {}", base.display());
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A random number from the standard library's per-process random keys,
/// mixed with a counter so that calls differ.
fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The kernel's ephemeral port range, `(low, high)`.
fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse().ok());
    Some((parts.next()??, parts.next()??))
}

/// A loopback port nobody listens on, from `[LOWEST_PORT, low)` where `low`
/// starts the ephemeral range (see the module's doc for why); when that range
/// is too small, one the kernel hands out. Redis may still lose a race for it,
/// which `start` handles by choosing again.
pub(crate) fn free_port() -> u16 {
    let below = ephemeral_range().map_or(32768, |(low, _)| low);
    if below > LOWEST_PORT + 1000 {
        for _ in 0..100 {
            let port = LOWEST_PORT + (random() % u64::from(below - LOWEST_PORT)) as u16;
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_below_the_ephemeral_range_and_free() {
        let (low, _) = ephemeral_range().expect("a Linux ephemeral port range");
        for _ in 0..20 {
            let port = free_port();
            if low > LOWEST_PORT + 1000 {
                assert!((LOWEST_PORT..low).contains(&port), "{port} not below {low}");
            }
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the port is free");
        }
    }

    #[test]
    fn a_missing_program_is_not_mistaken_for_one() {
        assert_eq!(find_program("surely-not-a-program-wshub"), None);
    }

    #[test]
    fn a_missing_redis_says_how_to_install_it() {
        let local = missing_redis(&[]);
        assert!(local.contains("apt-get install -y redis-server"), "{local}");
        assert!(!local.contains("is set"), "{local}");
        let ci = missing_redis(&["CI"]);
        assert!(ci.contains("CI is set") && ci.contains(".ci/run"), "{ci}");
    }
}
