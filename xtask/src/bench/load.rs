//! One load-generating process (`xtask load`, spawned by `xtask bench`).
//!
//! It opens its share of the connections from its own source address,
//! says `ready` on stdout, then does its part of the scenario and prints one
//! `result` line of JSON. tokio-tungstenite does the handshakes; after them
//! the sockets are plain non-blocking sockets driven by one polling loop
//! (`receiver.rs`), which says why it polls and what that costs.

use std::io::{BufRead, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::receiver;

type Ws = WebSocketStream<TcpStream>;

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    #[arg(long)]
    pub server: SocketAddr,
    /// Source address for this process's connections (127.x.y.z).
    #[arg(long)]
    pub source: IpAddr,
    #[arg(long)]
    pub conns: usize,
    /// subscribe | idle | direct | connect
    #[arg(long)]
    pub mode: String,
    /// Token secret; none for the baselines, which take no token.
    #[arg(long)]
    pub secret: Option<String>,
    /// User id prefix, unique per process.
    #[arg(long)]
    pub prefix: String,
    /// Messages each connection should receive before the run is done.
    #[arg(long, default_value_t = 0)]
    pub expect: u64,
    /// direct: messages per second each connection sends.
    #[arg(long, default_value_t = 10)]
    pub rate: u64,
    /// direct: seconds to send for.
    #[arg(long, default_value_t = 5)]
    pub secs: u64,
    /// Microseconds the run loop sleeps when no socket is ready.
    #[arg(long, default_value_t = 250)]
    pub poll_us: u64,
}

pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let commands = commands();
    let users: Vec<String> = (0..args.conns)
        .map(|i| format!("{}{i}", args.prefix))
        .collect();
    // One thread per load process: the load shares two cores with the
    // server, and fewer threads contend less. tokio is only used for the
    // handshakes; the run itself is `receiver::run`.
    let opened = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(open_all(&args, &users))?;
    say(&format!("ready {}", opened.ready));
    if args.mode == "connect" {
        say(&format!("result {}", json!({"cpu_s": cpu_seconds("self")})));
        return Ok(());
    }
    // Wait for "go" from the coordinator ("stop" or a closed stdin ends it).
    loop {
        match commands.recv() {
            Ok(l) if l.trim() == "go" => break,
            Ok(l) if l.trim() == "stop" => {
                return finish(&receiver::Outcome::empty()?, 0.0);
            }
            Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
    let cpu_at_go = cpu_seconds("self");
    let outcome = receiver::run(&args, opened.streams, &users, &commands)?;
    finish(&outcome, cpu_at_go)
}

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// CPU seconds this process has used (user + system).
pub fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the ")" that ends the command name; utime and stime are
    // the 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn token(secret: &str, user: &str, groups: &[&str]) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "exp": exp, "groups": groups}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

async fn connect(args: &LoadArgs, user: &str, groups: &[&str]) -> anyhow::Result<Ws> {
    let socket = if args.server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(args.source, 0))?;
    // Close with a reset when the process ends: no TIME_WAIT left behind to
    // slow the next run's port searches on the same source address.
    socket.set_zero_linger()?;
    let stream = socket.connect(args.server).await?;
    stream.set_nodelay(true)?;
    let url = match &args.secret {
        Some(secret) => format!(
            "ws://{}/ws?token={}",
            args.server,
            token(secret, user, groups)
        ),
        None => format!("ws://{}/ws?userId={user}", args.server),
    };
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    if args.secret.is_some() {
        // wshub greets first; wait for it so "ready" means registered.
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"welcome\"") => {}
            other => anyhow::bail!("no welcome: {other:?}"),
        }
    }
    Ok(ws)
}

/// Opens this process's connections (64 handshakes in flight) and returns
/// them as plain sockets, each at its user's index, so connection k is user
/// k and its partner is user k^1.
async fn open_all(args: &LoadArgs, users: &[String]) -> anyhow::Result<Opened> {
    let started = Instant::now();
    let groups: &[&str] = if args.mode == "subscribe" {
        &["bench"]
    } else {
        &[]
    };
    let mut conns = Vec::with_capacity(args.conns);
    let mut connect_lat = Histogram::<u64>::new(3)?;
    let mut pending =
        futures_util::stream::iter(users.iter().enumerate().map(|(i, u)| async move {
            let t0 = Instant::now();
            let ws = connect(args, u, groups).await;
            (i, ws, t0.elapsed())
        }))
        .buffer_unordered(64);
    let mut failures = 0u64;
    while let Some((i, ws, took)) = pending.next().await {
        match ws.and_then(|ws| Ok(ws.into_inner().into_std()?)) {
            Ok(stream) => {
                conns.push((i, stream));
                let _ = connect_lat.record(took.as_micros() as u64);
            }
            Err(_) => failures += 1,
        }
    }
    drop(pending);
    conns.sort_by_key(|(i, _)| *i);
    Ok(Opened {
        streams: conns.into_iter().map(|(_, s)| s).collect(),
        ready: json!({"conns": users.len() as u64 - failures, "failures": failures,
                      "connect_secs": started.elapsed().as_secs_f64(),
                      "connect_p50_us": connect_lat.value_at_quantile(0.5),
                      "connect_p99_us": connect_lat.value_at_quantile(0.99)}),
    })
}

struct Opened {
    streams: Vec<std::net::TcpStream>,
    ready: serde_json::Value,
}

/// Lines from the coordinator on stdin, read on a thread of their own so
/// the run loop only has to look at a channel.
fn commands() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A client text frame, masked with a zero key (RFC 6455 requires a mask,
/// any key will do, and a zero key leaves the payload as it is).
pub(crate) fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x81);
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

fn finish(outcome: &receiver::Outcome, cpu_at_go: f64) -> anyhow::Result<()> {
    let buckets = |h: &Histogram<u64>| -> Vec<(u64, u64)> {
        h.iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    };
    say(&format!(
        "result {}",
        json!({"received": outcome.received, "last_ns": outcome.last_ns,
               "hist_us": buckets(&outcome.hist), "read_hist_us": buckets(&outcome.read_hist),
               "shared_stamp": outcome.shared_stamp,
               "cpu_s": cpu_seconds("self") - cpu_at_go})
    ));
    Ok(())
}
