//! One load-generating process (`xtask load`, spawned by `xtask bench`).
//!
//! It opens its share of the connections from its own source address,
//! says `ready` on stdout, then does its part of the scenario and prints one
//! `result` line of JSON. tokio-tungstenite does the handshakes; after them
//! the sockets are plain non-blocking sockets driven by one polling loop
//! (`receiver.rs`), which says why it polls and what that costs.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::lines::{Buckets, Line, LoadResult, Order, Ready};
pub use super::load_args::LoadArgs;
use super::load_args::Mode;
use super::receiver;
use super::report::latency_histogram;

pub(super) type Ws = WebSocketStream<TcpStream>;

pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let commands = commands();
    if args.mode == Mode::Resume {
        return super::storm::load(&args, &commands);
    }
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
    say(&opened.ready)?;
    if args.mode == Mode::Connect {
        return say(&LoadResult {
            cpu_s: cpu_seconds("self"),
            ..LoadResult::default()
        });
    }
    // Wait for "go" from the coordinator ("stop" or a closed stdin ends it).
    match commands.recv() {
        Ok(Order::Go) => {}
        Ok(Order::Stop) => return finish(&receiver::Outcome::empty()?, 0.0),
        Err(_) => return Ok(()),
    }
    let cpu_at_go = cpu_seconds("self");
    // Direct partners: user k^1 of this process, or user k of the process
    // named by `--partner-prefix` (on another server of a cluster).
    let partners: Vec<String> = match &args.partner_prefix {
        Some(prefix) => (0..args.conns).map(|k| format!("{prefix}{k}")).collect(),
        None => (0..args.conns)
            .map(|k| users.get(k ^ 1).cloned().unwrap_or_default())
            .collect(),
    };
    let (outcome, streams) = receiver::run(&args, opened.streams, &partners, &commands)?;
    finish(&outcome, cpu_at_go)?;
    if args.tuning.hold && !outcome.stopped {
        // Until "stop" or a closed stdin.
        let _ = commands.recv();
    }
    drop(streams);
    Ok(())
}

/// CPU seconds (user + system) process `pid` has used; `"self"` is this one.
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

pub(super) fn say(line: &impl Line) -> anyhow::Result<()> {
    let line = line.render()?;
    let mut out = std::io::stdout().lock();
    // A driver that has gone away reads nothing either way.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    Ok(())
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
    Ok(handshake(args, user, groups, false).await?.0)
}

/// Opens one connection from this process's source address; against wshub
/// (a secret given) also reads the welcome, returned as its text. With
/// `resume`, the URL asks for `resume=1` (PROTOCOL.md §10).
pub(super) async fn handshake(
    args: &LoadArgs,
    user: &str,
    groups: &[&str],
    resume: bool,
) -> anyhow::Result<(Ws, String)> {
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
    let mut url = match &args.secret {
        Some(secret) => format!(
            "ws://{}/ws?token={}",
            args.server,
            token(secret, user, groups)
        ),
        // A baseline has no tokens: the user, and the group to join.
        None => {
            let mut url = format!("ws://{}/ws?userId={user}", args.server);
            for g in groups {
                url.push_str(&format!("&group={g}"));
            }
            url
        }
    };
    if resume {
        url.push_str("&resume=1");
    }
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    let mut welcome = String::new();
    if args.secret.is_some() {
        // wshub greets first; wait for it so "ready" means registered.
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"welcome\"") => welcome = t.to_string(),
            other => anyhow::bail!("no welcome: {other:?}"),
        }
    }
    Ok((ws, welcome))
}

/// Opens this process's connections (64 handshakes in flight) and returns
/// them as plain sockets, each at its user's index, so connection k is user
/// k and its partner is user k^1.
async fn open_all(args: &LoadArgs, users: &[String]) -> anyhow::Result<Opened> {
    let started = Instant::now();
    let subscribe = [args.group.as_str()];
    let groups: &[&str] = if args.mode == Mode::Subscribe {
        &subscribe
    } else {
        &[]
    };
    let mut conns = Vec::with_capacity(args.conns);
    let mut connect_lat = latency_histogram()?;
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
                let _ = connect_lat.record((took.as_micros() as u64).max(1));
            }
            Err(_) => failures += 1,
        }
    }
    drop(pending);
    conns.sort_by_key(|(i, _)| *i);
    Ok(Opened {
        streams: conns.into_iter().map(|(_, s)| s).collect(),
        ready: Ready {
            conns: users.len() as u64 - failures,
            failures,
            connect_secs: started.elapsed().as_secs_f64(),
            connect_hist_us: Buckets::of(&connect_lat),
        },
    })
}

struct Opened {
    streams: Vec<std::net::TcpStream>,
    ready: Ready,
}

/// Orders from the coordinator on stdin, read on a thread of their own so
/// the run loop only has to look at a channel. The channel closes with
/// stdin, which ends the run as "stop" would.
fn commands() -> mpsc::Receiver<Order> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let lines = std::io::stdin().lock().lines().map_while(Result::ok);
        for order in lines.filter_map(|l| Order::parse(&l)) {
            if tx.send(order).is_err() {
                break;
            }
        }
    });
    rx
}

fn finish(outcome: &receiver::Outcome, cpu_at_go: f64) -> anyhow::Result<()> {
    say(&LoadResult {
        received: outcome.received,
        last_ns: outcome.last_ns,
        hist_us: Buckets::of(&outcome.hist),
        read_hist_us: Buckets::of(&outcome.read_hist),
        shared_stamp: outcome.shared_stamp,
        cpu_s: cpu_seconds("self") - cpu_at_go,
        frame_bytes: outcome.frame_bytes,
    })
}
