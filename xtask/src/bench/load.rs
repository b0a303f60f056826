//! One load-generating process (`xtask load`, spawned by `xtask bench`).
//!
//! It opens its share of the connections from its own source address,
//! says `ready` on stdout, then does its part of the scenario and prints one
//! `result` line of JSON. tokio-tungstenite does the handshake; after it the
//! sockets are read and written raw, so the load side costs little: the
//! receive path walks frame headers and finds the `"t":` timestamp, with no
//! JSON parsing. Each connection's reader keeps its own latency record; the
//! records are merged into one histogram at the end.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

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
}

pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    // One thread per load process: the load shares two cores with the
    // server, and fewer threads contend less.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(main(args))
}

fn now_ns() -> u64 {
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

async fn main(args: LoadArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let users: Vec<String> = (0..args.conns)
        .map(|i| format!("{}{i}", args.prefix))
        .collect();
    let groups: &[&str] = if args.mode == "subscribe" {
        &["bench"]
    } else {
        &[]
    };

    // Open connections, 64 at a time.
    let mut conns = Vec::with_capacity(args.conns);
    let mut connect_lat = Histogram::<u64>::new(3)?;
    let mut pending = futures_util::stream::iter(users.iter().enumerate().map(|(i, u)| {
        let args = &args;
        async move {
            let t0 = Instant::now();
            let ws = connect(args, u, groups).await;
            (i, ws, t0.elapsed())
        }
    }))
    .buffer_unordered(64);
    let mut failures = 0u64;
    while let Some((i, ws, took)) = pending.next().await {
        match ws {
            Ok(ws) => {
                conns.push((i, ws));
                let _ = connect_lat.record(took.as_micros() as u64);
            }
            Err(_) => failures += 1,
        }
    }
    drop(pending);
    // Connections finish out of order; put each back at its user's index,
    // so connection k is user k and its partner is user k^1.
    conns.sort_by_key(|(i, _)| *i);
    let conns: Vec<Ws> = conns.into_iter().map(|(_, ws)| ws).collect();
    let connect_secs = started.elapsed().as_secs_f64();
    say(&format!(
        "ready {}",
        json!({"conns": conns.len(), "failures": failures, "connect_secs": connect_secs,
               "connect_p50_us": connect_lat.value_at_quantile(0.5),
               "connect_p99_us": connect_lat.value_at_quantile(0.99)})
    ));
    if args.mode == "connect" {
        say(&format!("result {}", json!({"cpu_s": cpu_seconds("self")})));
        return Ok(());
    }

    // Wait for "go" (or "stop"/EOF) from the coordinator.
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        match stdin.next_line().await? {
            Some(l) if l.trim() == "go" => break,
            Some(l) if l.trim() == "stop" => return finish(Vec::new(), 0, 0, cpu_seconds("self")),
            None => return Ok(()),
            _ => {}
        }
    }

    let cpu_at_go = cpu_seconds("self");
    receive(&args, conns, &users, stdin, cpu_at_go).await
}

/// After "go": one reader task per connection, with no WebSocket library
/// in the way (read raw bytes, walk the unmasked server frames, note each
/// `"t":`), each recording latencies in its own vector, merged into one
/// histogram at the end. In `direct` mode one sender task also writes
/// pre-masked frames (zero mask key) at the configured rate.
async fn receive(
    args: &LoadArgs,
    conns: Vec<Ws>,
    users: &[String],
    mut stdin: tokio::io::Lines<BufReader<tokio::io::Stdin>>,
    cpu_at_go: f64,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut readers = Vec::with_capacity(conns.len());
    let mut writers = Vec::with_capacity(conns.len());
    for ws in conns {
        let (read, write) = ws.into_inner().into_split();
        let writer = std::sync::Arc::new(tokio::sync::Mutex::new(write));
        readers.push(tokio::spawn(raw_reader(
            read,
            writer.clone(),
            args.expect,
            stop_rx.clone(),
        )));
        writers.push(writer);
    }
    if args.mode == "direct" {
        tokio::spawn(send_direct(args.clone(), users.to_vec(), writers));
    }
    tokio::spawn(async move {
        while let Ok(Some(l)) = stdin.next_line().await {
            if l.trim() == "stop" {
                break;
            }
        }
        let _ = stop_tx.send(true);
    });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let (mut received, mut last_ns) = (0, 0);
    for h in readers {
        let (lat, r, l) = h.await.context("reader task")?;
        for v in lat {
            let _ = hist.record(u64::from(v).max(1));
        }
        received += r;
        last_ns = last_ns.max(l);
    }
    finish(vec![hist], received, last_ns, cpu_at_go)
}

type Writer = std::sync::Arc<tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>>;

/// Every connection sends `rate` messages/s to its partner (pairs are
/// (2k, 2k+1)), spread over 2 ms ticks; each frame carries its send time.
async fn send_direct(args: LoadArgs, users: Vec<String>, writers: Vec<Writer>) {
    use tokio::io::AsyncWriteExt;
    if writers.is_empty() {
        return;
    }
    let start = Instant::now();
    let until = start + Duration::from_secs(args.secs);
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Messages owed are computed from elapsed time, not counted per tick,
    // so a late tick does not lower the rate.
    let per_sec = args.rate as f64 * writers.len() as f64;
    let mut sent = 0u64;
    let pad = "x".repeat(60);
    while Instant::now() < until {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64().min(args.secs as f64) * per_sec) as u64;
        while sent < due {
            let k = sent as usize % writers.len();
            sent += 1;
            let partner = &users[k ^ 1];
            let payload = format!(
                r#"{{"type":"send","to":"{partner}","body":{{"t":{},"p":"{pad}"}}}}"#,
                now_ns()
            );
            let frame = masked_text_frame(payload.as_bytes());
            let _ = writers[k].lock().await.write_all(&frame).await;
        }
    }
}

/// A client text frame, masked with a zero key (RFC 6455 requires a mask,
/// any key will do, and a zero key leaves the payload as it is).
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
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

async fn raw_reader(
    mut read: tokio::net::tcp::OwnedReadHalf,
    writer: Writer,
    expect: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<u32>, u64, u64) {
    use bytes::Buf;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = bytes::BytesMut::with_capacity(16 * 1024);
    let mut lat = Vec::with_capacity(expect as usize);
    let (mut received, mut last_ns) = (0u64, 0u64);
    loop {
        if expect > 0 && received >= expect {
            break;
        }
        tokio::select! {
            n = read.read_buf(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            _ = stop.changed() => break,
        }
        loop {
            if buf.len() < 2 {
                break;
            }
            let (b0, b1) = (buf[0], buf[1]);
            let (len, off) = match b1 & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&buf[2..10]);
                    (u64::from_be_bytes(n) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if buf.len() < off + len {
                break;
            }
            let payload = &buf[off..off + len];
            match b0 & 0x0f {
                1 | 2 => {
                    if let Some(t0) = find_t_bytes(payload) {
                        let now = now_ns();
                        lat.push((now.saturating_sub(t0) / 1000).min(u64::from(u32::MAX)) as u32);
                        last_ns = now;
                    }
                    received += 1;
                }
                // A ping is answered, so the server's heartbeat keeps us.
                9 if len <= 125 => {
                    let mut pong = vec![0x8a];
                    pong.extend_from_slice(&masked_text_frame(payload)[1..]);
                    let _ = writer.lock().await.write_all(&pong).await;
                }
                8 => return (lat, received, last_ns),
                _ => {}
            }
            buf.advance(off + len);
        }
    }
    (lat, received, last_ns)
}

/// The `"t":<ns>` value in a frame, found without parsing the JSON.
fn find_t_bytes(b: &[u8]) -> Option<u64> {
    let at = b.windows(4).position(|w| w == b"\"t\":")? + 4;
    let mut v = 0u64;
    let mut any = false;
    for &c in b[at..].iter().skip_while(|c| **c == b' ') {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        any = true;
    }
    any.then_some(v)
}

fn finish(
    hists: Vec<Histogram<u64>>,
    received: u64,
    last_ns: u64,
    cpu_at_go: f64,
) -> anyhow::Result<()> {
    let mut merged = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    for h in &hists {
        merged.add(h)?;
    }
    let buckets: Vec<(u64, u64)> = merged
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    say(&format!(
        "result {}",
        json!({"received": received, "last_ns": last_ns, "hist_us": buckets,
               "cpu_s": cpu_seconds("self") - cpu_at_go})
    ));
    Ok(())
}
