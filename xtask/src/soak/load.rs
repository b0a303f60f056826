//! The soak's load: client tasks (one connection each, reconnecting with
//! resume), driver tasks (API pushes, membership changes, kicks), the
//! sampler, and the final comparison with every stream's top.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::check::{Seen, Seg};
use super::sample::{self, Sample};
use super::{
    api, drills, Ctx, DrillState, Fleet, Phase, Rng, SoakArgs, Tally, CHURN_GROUPS, NO_DRILL,
    SECRET, STABLE_GROUPS,
};

type Ws = WebSocketStream<TcpStream>;

/// A close code and reason, or the end of a connection without one.
#[derive(Debug)]
enum Got {
    Frame(Value),
    Closed(u16, String),
    Lost(String),
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// The client dropped its socket itself (churn).
    Dropped,
    Got(Got),
    /// The run is over.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Normal,
    /// Stops reading for a while, over a 4 KiB receive buffer.
    Slow,
    /// Sends bad frames and, now and then, an oversized one.
    Bad,
    /// Its tokens expire a few tens of seconds after each connect.
    Expiring,
}

/// Streams checked exactly: the inbox, broadcasts, and the stable groups.
fn strict(stream: &str) -> bool {
    stream == "inbox" || stream == "all" || stream.starts_with("group:s")
}

pub(crate) fn user(i: usize) -> String {
    format!("u{i}")
}

/// The stable groups of client `i`: two different ones (all of them for a
/// slow reader, so that its queue fills).
fn stable_groups(i: usize, slow: bool) -> Vec<String> {
    if slow {
        return (0..STABLE_GROUPS).map(|g| format!("s{g}")).collect();
    }
    let a = i % STABLE_GROUPS;
    let b = (a + 1 + (i / STABLE_GROUPS) % (STABLE_GROUPS - 1)) % STABLE_GROUPS;
    vec![format!("s{a}"), format!("s{b}")]
}

/// What a client hands back at the end.
pub(crate) struct ClientEnd {
    pub user: String,
    pub segs: HashMap<String, Seg>,
    pub connected: bool,
}

struct Client {
    idx: usize,
    user: String,
    kind: Kind,
    rng: Rng,
    stable: Vec<String>,
    segs: HashMap<String, Seg>,
    /// Churn-group streams: epoch and last seq on this connection.
    loose: HashMap<String, (String, u64)>,
    pending: HashMap<String, &'static str>,
    /// When each pending request was sent (ms since `t0`, the run's start).
    sent_at: HashMap<String, u64>,
    t0: Instant,
    next_id: u64,
    bad_noid: u32,
    oversized_sent: bool,
    token_exp: u64,
    /// The server of the current connection, and its kill count then.
    srv: usize,
    srv_gen: u64,
    away_since: Instant,
    last_rx: Instant,
    next_send: Instant,
    next_publish: Instant,
    next_drop: Instant,
    next_churn: Instant,
    next_bad: Instant,
    next_oversize: Instant,
    next_pause: Instant,
}

impl Client {
    fn new(args: &SoakArgs, idx: usize) -> Client {
        let every = args.special_every.max(4);
        let kind = match idx % every {
            0 => Kind::Slow,
            1 => Kind::Bad,
            2 => Kind::Expiring,
            _ => Kind::Normal,
        };
        let mut rng = Rng::new(args.seed.wrapping_mul(1_000_003).wrapping_add(idx as u64));
        let now = Instant::now();
        let send = Duration::from_millis(args.send_every_ms);
        let publish = Duration::from_millis(args.publish_every_ms);
        Client {
            idx,
            user: user(idx),
            kind,
            stable: stable_groups(idx, kind == Kind::Slow),
            segs: HashMap::new(),
            loose: HashMap::new(),
            pending: HashMap::new(),
            sent_at: HashMap::new(),
            t0: now,
            next_id: 0,
            bad_noid: 0,
            oversized_sent: false,
            token_exp: 0,
            srv: 0,
            srv_gen: 0,
            away_since: now,
            last_rx: now,
            next_send: now + rng.jitter(send),
            next_publish: now + rng.jitter(publish),
            next_drop: now + rng.exp(Duration::from_secs_f64(args.drop_every_secs)),
            next_churn: now + rng.exp(Duration::from_secs_f64(args.churn_every_secs)),
            next_bad: now + rng.jitter(Duration::from_secs(5)),
            next_oversize: now + rng.jitter(Duration::from_secs(30)),
            next_pause: now + rng.jitter(Duration::from_secs(20)),
            rng,
        }
    }

    fn id(&mut self, prefix: &str, kind: &'static str) -> String {
        self.next_id += 1;
        let id = format!("{prefix}{}", self.next_id);
        self.pending.insert(id.clone(), kind);
        self.sent_at
            .insert(id.clone(), self.t0.elapsed().as_millis() as u64);
        id
    }

    async fn connect(&mut self, ctx: &Ctx) -> Result<Ws, Got> {
        let since_last_message_ms = self.last_rx.elapsed().as_millis() as u64;
        self.srv = self.rng.below(ctx.servers.len() as u64) as usize;
        self.srv_gen = ctx.server_gen[self.srv].load(Ordering::SeqCst);
        let addr = ctx.servers[self.srv];
        let ttl = match self.kind {
            Kind::Expiring => 15 + self.rng.below(25),
            _ => 3600,
        };
        self.token_exp = test_support::now() + ttl;
        let token = test_support::sign(&json!({"sub": self.user, "exp": self.token_exp}), SECRET);
        let lost = |e: &dyn std::fmt::Display| Got::Lost(format!("connect to {addr}: {e}"));
        let sock = TcpSocket::new_v4().map_err(|e| lost(&e))?;
        if self.kind == Kind::Slow {
            sock.set_recv_buffer_size(test_support::SILENT_RCVBUF)
                .map_err(|e| lost(&e))?;
        }
        let limit = Duration::from_secs(10);
        let stream = tokio::time::timeout(limit, sock.connect(addr))
            .await
            .map_err(|e| lost(&e))?
            .map_err(|e| lost(&e))?;
        let url = format!("ws://{addr}/ws?token={token}&resume=1");
        let (mut ws, _) = tokio::time::timeout(limit, tokio_tungstenite::client_async(url, stream))
            .await
            .map_err(|e| lost(&e))?
            .map_err(|e| lost(&e))?;
        let welcome = match next(&mut ws, limit).await {
            Got::Frame(v) if v["type"] == "welcome" => v,
            Got::Frame(v) => return Err(Got::Lost(format!("first frame not welcome: {v}"))),
            other => return Err(other),
        };
        self.loose.clear();
        self.pending.clear();
        self.sent_at.clear();
        self.bad_noid = 0;
        self.oversized_sent = false;
        let empty = Map::new();
        let streams = welcome["streams"].as_object().unwrap_or(&empty);
        let mut positions = Map::new();
        for (k, s) in self.segs.iter_mut() {
            positions.insert(k.clone(), json!({"epoch": s.epoch, "seq": s.last}));
            s.resuming();
        }
        let named: Vec<String> = positions.keys().cloned().collect();
        for (k, p) in streams {
            if strict(k) && !self.segs.contains_key(k) {
                let epoch = p["epoch"].as_str().unwrap_or_default();
                self.segs
                    .insert(k.clone(), Seg::at(epoch, p["seq"].as_u64().unwrap_or(0)));
            }
        }
        let frame = json!({"type": "resume", "id": "r", "positions": positions});
        if let Err(e) = ws.send(Message::text(frame.to_string())).await {
            return Err(Got::Lost(format!("resume frame: {e}")));
        }
        let ack = loop {
            match next(&mut ws, Duration::from_secs(20)).await {
                Got::Frame(v) if v["type"] == "ack" && v["id"] == "r" => break v,
                Got::Frame(v) if v["type"] == "error" && v["id"] == "r" => {
                    return Err(Got::Lost(format!("resume answered {v}")))
                }
                Got::Frame(v) => self.frame(ctx, &v),
                other => return Err(other),
            }
        };
        for s in self.segs.values_mut() {
            s.resumed();
        }
        let away_ms = self.away_since.elapsed().as_millis() as u64;
        ctx.tally.count("resumes", 1);
        for k in named {
            match ack["recovered"][&k].as_bool() {
                Some(true) => ctx.tally.count("recovered_true", 1),
                Some(false) => {
                    ctx.tally.count("recovered_false", 1);
                    let p = &streams.get(&k).cloned().unwrap_or(Value::Null);
                    let old = self.segs.remove(&k).unwrap_or_default();
                    ctx.tally.reset(json!({
                        "t_s": ctx.ms() as f64 / 1000.0, "user": self.user, "stream": k,
                        "away_ms": away_ms,
                        "since_last_message_ms": since_last_message_ms, "had": {"epoch": old.epoch, "seq": old.last},
                        "welcome": p, "kind": format!("{:?}", self.kind),
                    }));
                    if let (Some(e), Some(s)) = (p["epoch"].as_str(), p["seq"].as_u64()) {
                        self.segs.insert(k.clone(), Seg::at(e, s));
                    }
                }
                None => ctx.tally.fail(
                    "resume ack without a named stream",
                    format!("{}: {k} in {ack}", self.user),
                ),
            }
        }
        Ok(ws)
    }

    /// One server frame (other than the welcome and the resume's ack).
    fn frame(&mut self, ctx: &Ctx, v: &Value) {
        match v["type"].as_str() {
            Some("message") => self.message(ctx, v),
            Some("ack") => {
                let id = v["id"].as_str().unwrap_or_default();
                match self.pending.remove(id) {
                    Some(kind @ ("send" | "publish")) => {
                        ctx.tally.count(&format!("{kind}_acked"), 1);
                        let stream = v["stream"].as_str().unwrap_or_default();
                        let placed = match self.segs.get_mut(stream) {
                            Some(seg) => {
                                let placed = seg.own(
                                    v["epoch"].as_str().unwrap_or_default(),
                                    v["seq"].as_u64().unwrap_or(0),
                                );
                                // Allowed, but counted: an ack that came
                                // before a message below it (cluster
                                // servers wait for it, for up to 2 s).
                                if placed && !seg.ahead.is_empty() {
                                    ctx.tally.count("acks_ahead_of_their_stream", 1);
                                }
                                placed
                            }
                            None => false,
                        };
                        if !placed {
                            ctx.tally
                                .fail("ack position", format!("{}: {v}", self.user));
                        }
                    }
                    Some(kind @ ("join" | "leave")) => {
                        ctx.tally.count(&format!("frame_{kind}s"), 1);
                    }
                    Some(other) => ctx
                        .tally
                        .fail("ack of a bad frame", format!("{}: {other} {v}", self.user)),
                    None => ctx
                        .tally
                        .fail("ack nobody waits for", format!("{}: {v}", self.user)),
                }
            }
            Some("error") => {
                let code = v["code"].as_str().unwrap_or_default();
                let id = v["id"].as_str().unwrap_or_default().to_owned();
                match v["id"].as_str().map(|id| self.pending.remove(id)) {
                    Some(Some("bad")) => ctx.tally.count(&format!("error_{code}_expected"), 1),
                    Some(Some(kind)) if code == "unavailable" && ctx.args.drills => {
                        // §11: refused while Redis is out, so never delivered
                        // later and not expected by the checker (no ack, no
                        // position); outside a drill's window it is a failure.
                        let now = ctx.ms();
                        let sent = self.sent_at.remove(&id).unwrap_or(now);
                        let drill = ctx.in_drill_at(&format!("unavailable_{kind}"), sent);
                        if let (Some(d), "send" | "publish") = (drill, kind) {
                            ctx.drill.refused.lock().unwrap().insert(
                                format!("{}/{id}", self.user),
                                (d, sent, now.saturating_sub(sent)),
                            );
                        }
                        if drill.is_none() {
                            ctx.tally.fail(
                                "unavailable outside a drill",
                                format!(
                                    "{}: {kind} sent at {sent} ms, answered at {now} ms: {v}",
                                    self.user
                                ),
                            );
                        }
                    }
                    None if self.bad_noid > 0 => {
                        self.bad_noid -= 1;
                        ctx.tally.count(&format!("error_{code}_expected"), 1);
                    }
                    _ => ctx.tally.fail(
                        &format!("unexpected error {code}"),
                        format!("{}: {v}", self.user),
                    ),
                }
            }
            Some("pong") => {}
            _ => ctx
                .tally
                .fail("unexpected frame", format!("{}: {v}", self.user)),
        }
    }

    fn message(&mut self, ctx: &Ctx, v: &Value) {
        let n = ctx.received.fetch_add(1, Ordering::Relaxed) + 1;
        if ctx.args.lose_one_in > 0 && n.is_multiple_of(ctx.args.lose_one_in) {
            ctx.tally.count("self_test_ignored", 1);
            return;
        }
        self.last_rx = Instant::now();
        if ctx.args.drills {
            // Compared with what was refused at the end (a refusal may be
            // read after the message it refused was delivered).
            if let Some(k) = drills::key(&v["body"]) {
                ctx.drill.delivered.lock().unwrap().insert(k);
            }
        }
        let stream = v["stream"].as_str().unwrap_or_default();
        let epoch = v["epoch"].as_str().unwrap_or_default();
        let Some(seq) = v["seq"].as_u64() else {
            ctx.tally
                .fail("message without seq", format!("{}: {v}", self.user));
            return;
        };
        if !strict(stream) {
            let (last_epoch, last) = self
                .loose
                .entry(stream.to_owned())
                .or_insert_with(|| (epoch.to_owned(), 0));
            if last_epoch != epoch {
                // A churn group gets few messages: one quiet for longer
                // than --history-ttl is forgotten and numbered anew (§10).
                ctx.tally.count("churn_group_new_epochs_seen", 1);
                *last_epoch = epoch.to_owned();
                *last = seq;
            } else if seq <= *last {
                ctx.tally.fail(
                    "churn group: repeat or reorder on one connection",
                    format!("{}: {stream} {seq} after {last}", self.user),
                );
            } else {
                *last = seq;
            }
            ctx.tally.count("messages_churn_groups", 1);
            return;
        }
        let Some(seg) = self.segs.get_mut(stream) else {
            ctx.tally.fail(
                "message of a stream not read",
                format!("{}: {v}", self.user),
            );
            return;
        };
        match seg.message(epoch, seq) {
            Seen::InOrder => ctx.tally.count("messages_checked_in_order", 1),
            Seen::Skipped(n) => {
                ctx.tally.count("messages_checked_in_order", 1);
                ctx.tally.count("seqs_skipped_provisionally", n);
            }
            Seen::OutOfOrder => ctx.tally.fail(
                "out of order",
                format!("{}: {stream} seq {seq} after {}", self.user, seg.last),
            ),
            Seen::Duplicate => ctx.tally.fail(
                if ctx.in_drill("duplicate_seen") {
                    "duplicate (in a drill's window)"
                } else {
                    "duplicate"
                },
                format!("{}: {stream} seq {seq}, last {}", self.user, seg.last),
            ),
            Seen::OtherEpoch => ctx.tally.fail(
                "epoch changed",
                format!("{}: {stream} {epoch} (had {})", self.user, seg.epoch),
            ),
        }
    }

    async fn send(&mut self, ws: &mut Ws, frame: Value) -> Option<End> {
        ws.send(Message::text(frame.to_string()))
            .await
            .err()
            .map(|e| End::Got(Got::Lost(format!("send: {e}"))))
    }

    /// The client's own actions, due ones only; `Some` ends the session.
    async fn act(&mut self, ctx: &Ctx, ws: &mut Ws) -> Option<End> {
        let args = &ctx.args;
        let now = Instant::now();
        if now >= self.next_send {
            self.next_send = now + self.rng.jitter(Duration::from_millis(args.send_every_ms));
            let n = args.clients as u64;
            let to = if self.rng.below(5) == 0 {
                self.rng.below(n) as usize
            } else {
                (self.idx ^ 1).min(args.clients - 1)
            };
            let id = self.id("s", "send");
            let f = json!({"type":"send","to":user(to),"id":id,"body":{"k":id,"from":self.user}});
            if let Some(end) = self.send(ws, f).await {
                return Some(end);
            }
        }
        if now >= self.next_publish {
            self.next_publish = now
                + self
                    .rng
                    .jitter(Duration::from_millis(args.publish_every_ms));
            let g = self.stable[self.rng.below(self.stable.len() as u64) as usize].clone();
            let id = self.id("p", "publish");
            let f = json!({"type":"publish","group":g,"id":id,"body":{"k":id,"from":self.user}});
            if let Some(end) = self.send(ws, f).await {
                return Some(end);
            }
        }
        if now >= self.next_churn {
            self.next_churn = now + self.rng.exp(Duration::from_secs_f64(args.churn_every_secs));
            let g = format!("c{}", self.rng.below(CHURN_GROUPS as u64));
            let (t, kind) = if self.rng.below(2) == 0 {
                ("join", "join")
            } else {
                ("leave", "leave")
            };
            let id = self.id("m", kind);
            if let Some(end) = self.send(ws, json!({"type":t,"group":g,"id":id})).await {
                return Some(end);
            }
        }
        if self.kind == Kind::Bad && now >= self.next_bad {
            self.next_bad = now + self.rng.jitter(Duration::from_secs(5));
            ctx.tally.count("bad_frames_sent", 1);
            let r = match self.rng.below(4) {
                0 => {
                    self.bad_noid += 1;
                    ws.send(Message::text("{not json")).await
                }
                1 => {
                    self.bad_noid += 1;
                    ws.send(Message::binary(vec![1u8, 2, 3])).await
                }
                2 => {
                    let id = self.id("b", "bad");
                    ws.send(Message::text(json!({"type":"nope","id":id}).to_string()))
                        .await
                }
                _ => {
                    let id = self.id("b", "bad");
                    ws.send(Message::text(json!({"type":"send","id":id}).to_string()))
                        .await
                }
            };
            if let Err(e) = r {
                return Some(End::Got(Got::Lost(format!("send: {e}"))));
            }
        }
        if self.kind == Kind::Bad && now >= self.next_oversize {
            self.next_oversize = now + self.rng.jitter(Duration::from_secs(30));
            ctx.tally.count("oversized_frames_sent", 1);
            self.oversized_sent = true;
            let big = format!(
                r#"{{"type":"send","to":"u0","body":"{}"}}"#,
                "x".repeat(70_000)
            );
            if let Err(e) = ws.send(Message::text(big)).await {
                return Some(End::Got(Got::Lost(format!("send: {e}"))));
            }
        }
        if self.kind == Kind::Slow && now >= self.next_pause {
            self.next_pause = now + self.rng.jitter(Duration::from_secs(25));
            let pause = Duration::from_secs(6 + self.rng.below(7));
            if ctx.load_end.saturating_duration_since(now) > pause + Duration::from_secs(2) {
                ctx.tally.count("slow_pauses", 1);
                tokio::time::sleep(pause).await;
            }
        }
        if now >= self.next_drop {
            self.next_drop = now + self.rng.exp(Duration::from_secs_f64(args.drop_every_secs));
            return Some(End::Dropped);
        }
        None
    }

    async fn session(&mut self, ctx: &Ctx, ws: &mut Ws, phase: &watch::Receiver<Phase>) -> End {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                m = ws.next() => match read(m) {
                    Some(Got::Frame(v)) => self.frame(ctx, &v),
                    Some(other) => return End::Got(other),
                    None => {}
                },
                _ = tick.tick() => {
                    let p = *phase.borrow();
                    if p == Phase::Done {
                        return End::Done;
                    }
                    if p == Phase::Load {
                        if let Some(end) = self.act(ctx, ws).await {
                            return end;
                        }
                    }
                }
            }
        }
    }

    /// Whether a close was one this client caused or was told of.
    fn judge(&self, ctx: &Ctx, got: &Got) {
        let kicked = ctx.kicked_at[self.idx].load(Ordering::Relaxed);
        let recently_kicked = kicked > 0 && ctx.ms().saturating_sub(kicked) < 15_000;
        let server_killed = ctx.server_gen[self.srv].load(Ordering::SeqCst) != self.srv_gen;
        match got {
            Got::Lost(_) | Got::Closed(1006, _) if server_killed => {
                if !ctx.in_drill("lost_server_killed") {
                    ctx.tally.count("lost_server_killed", 1);
                }
            }
            Got::Closed(1008, reason)
                if reason.contains("expired")
                    && self.kind == Kind::Expiring
                    && test_support::now() + 2 >= self.token_exp =>
            {
                ctx.tally.count("close_1008_token_expired", 1)
            }
            Got::Closed(1008, _) if recently_kicked => ctx.tally.count("close_1008_kicked", 1),
            Got::Closed(1009, _) if self.oversized_sent => {
                ctx.tally.count("close_1009_too_large", 1)
            }
            Got::Closed(1013, _) if self.kind == Kind::Slow => {
                ctx.tally.count("close_1013_slow_consumer", 1)
            }
            Got::Lost(_) if self.kind == Kind::Slow || self.oversized_sent => {
                ctx.tally.count("lost_after_slow_or_oversized", 1)
            }
            Got::Closed(code, reason) => ctx.tally.fail(
                &format!("unexpected close {code}"),
                format!("{} ({:?}): {reason:?}", self.user, self.kind),
            ),
            Got::Lost(e) => ctx.tally.fail(
                "connection lost",
                format!("{} ({:?}): {e}", self.user, self.kind),
            ),
            Got::Frame(v) => ctx
                .tally
                .fail("unexpected frame", format!("{}: {v}", self.user)),
        }
    }

    async fn run(mut self, ctx: Arc<Ctx>) -> ClientEnd {
        self.t0 = ctx.start;
        let mut phase = ctx.phase.clone();
        for g in self.stable.clone() {
            let addr = ctx.servers[self.idx % ctx.servers.len()];
            let path = format!("/api/v1/groups/{g}/members/{}", self.user);
            match api(addr, "PUT", &path, None).await {
                Ok((200, _, _)) => ctx.tally.count("api_joins", 1),
                Ok((s, _, t)) => ctx.tally.fail("api join", format!("{s} {t}")),
                Err(e) => ctx.tally.fail("api join", format!("{e:#}")),
            }
        }
        let mut connected = false;
        let mut backoff = Duration::from_millis(200);
        let mut last_chance: Option<Instant> = None;
        loop {
            if *phase.borrow_and_update() == Phase::Done {
                // A client between two connections when the run ends (its
                // token just expired, say) connects and resumes once more,
                // so that its streams are checked: only failing to for
                // this long is "not connected at the end".
                let until =
                    *last_chance.get_or_insert_with(|| Instant::now() + Duration::from_secs(15));
                if Instant::now() >= until {
                    break;
                }
            }
            let mut ws = match self.connect(&ctx).await {
                Ok(ws) => {
                    backoff = Duration::from_millis(200);
                    ws
                }
                Err(got) => {
                    ctx.tally.count("connect_interrupted", 1);
                    // A drill refuses connections (a server down, 503 while
                    // Redis is out): retried with backoff, on a random server.
                    let refused = matches!(got, Got::Lost(_) | Got::Closed(1006 | 1011 | 1013, _));
                    if !(refused && ctx.in_drill("connect_refused")) {
                        self.judge(&ctx, &got);
                    }
                    tokio::time::sleep(self.rng.jitter(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            ctx.tally.count("connections", 1);
            let end = self.session(&ctx, &mut ws, &phase).await;
            self.away_since = Instant::now();
            match end {
                End::Done => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    connected = true;
                    break;
                }
                End::Dropped => {
                    ctx.tally.count("drops", 1);
                    drop(ws);
                }
                End::Got(Got::Lost(e)) if e.starts_with("send:") => {
                    // A write failed: the close that explains it may be
                    // waiting to be read, behind messages sent before it.
                    let deadline = Instant::now() + Duration::from_secs(3);
                    let got = loop {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match next(&mut ws, left).await {
                            Got::Frame(v) => self.frame(&ctx, &v),
                            Got::Lost(_) => break Got::Lost(e),
                            closed => break closed,
                        }
                    };
                    self.judge(&ctx, &got);
                }
                End::Got(got) => self.judge(&ctx, &got),
            }
            tokio::time::sleep(Duration::from_millis(self.rng.below(250))).await;
        }
        ClientEnd {
            user: self.user,
            segs: self.segs,
            connected,
        }
    }
}

fn read(m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> Option<Got> {
    match m {
        Some(Ok(Message::Text(t))) => Some(match serde_json::from_str(&t) {
            Ok(v) => Got::Frame(v),
            Err(e) => Got::Frame(json!({"type": "not json", "error": e.to_string()})),
        }),
        Some(Ok(Message::Close(f))) => Some(match f {
            Some(f) => Got::Closed(f.code.into(), f.reason.to_string()),
            None => Got::Closed(1005, String::new()),
        }),
        Some(Ok(_)) => None,
        Some(Err(e)) => Some(Got::Lost(e.to_string())),
        None => Some(Got::Lost("end of stream".into())),
    }
}

/// The next frame, close or end within `limit`.
async fn next(ws: &mut Ws, limit: Duration) -> Got {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Got::Lost(format!("nothing within {limit:?}")),
            Ok(m) => {
                if let Some(got) = read(m) {
                    return got;
                }
            }
        }
    }
}

/// A driver task: `what` at `rate` per second (Poisson) while the load
/// lasts.
async fn driver(ctx: Arc<Ctx>, what: &'static str, rate: f64, seed: u64) {
    if rate <= 0.0 {
        return;
    }
    let mut rng = Rng::new(seed);
    let mean = Duration::from_secs_f64(1.0 / rate);
    let n = ctx.args.clients as u64;
    let mut k = 0u64;
    while *ctx.phase.borrow() == Phase::Load {
        tokio::time::sleep(rng.exp(mean)).await;
        if *ctx.phase.borrow() != Phase::Load {
            break;
        }
        k += 1;
        let addr = ctx.servers[rng.below(ctx.servers.len() as u64) as usize];
        let mut u = rng.below(n) as usize;
        let mut body = json!({"body": {"k": format!("{what}-{k}")}}).to_string();
        if what == "slow_push" {
            // A slow reader (index 0 modulo --special-every), with a big body:
            // so that what waits for it outgrows the socket buffers and the
            // queue while it does not read.
            let every = ctx.args.special_every.max(4);
            u = every * rng.below(n.div_ceil(every as u64)) as usize;
            let pad = "x".repeat(ctx.args.slow_push_bytes);
            body = json!({"body": {"k": format!("{what}-{k}"), "pad": pad}}).to_string();
        }
        let (method, path, body) = match what {
            "user_push" | "slow_push" => (
                "POST",
                format!("/api/v1/users/{}/messages", user(u)),
                Some(body),
            ),
            "group_push" => {
                let g = if rng.below(3) == 0 {
                    format!("c{}", rng.below(CHURN_GROUPS as u64))
                } else {
                    format!("s{}", rng.below(STABLE_GROUPS as u64))
                };
                ("POST", format!("/api/v1/groups/{g}/messages"), Some(body))
            }
            "broadcast" => ("POST", "/api/v1/broadcast".to_owned(), Some(body)),
            "api_member" => {
                let g = format!("c{}", rng.below(CHURN_GROUPS as u64));
                let m = if rng.below(2) == 0 { "PUT" } else { "DELETE" };
                (m, format!("/api/v1/groups/{g}/members/{}", user(u)), None)
            }
            "kick" => {
                ctx.kicked_at[u].store(ctx.ms().max(1), Ordering::Relaxed);
                (
                    "DELETE",
                    format!("/api/v1/users/{}/connections", user(u)),
                    None,
                )
            }
            _ => unreachable!("no driver {what}"),
        };
        let sent = ctx.ms();
        match api(addr, method, &path, body.as_deref()).await {
            Ok((200, v, _)) => {
                ctx.tally.count(&format!("{what}_ok"), 1);
                if what == "broadcast" {
                    ctx.broadcast_top
                        .fetch_max(v["seq"].as_u64().unwrap_or(0), Ordering::Relaxed);
                }
                if what == "kick" {
                    ctx.tally
                        .count("kicked_connections", v["closed"].as_u64().unwrap_or(0));
                }
            }
            Ok((503, v, _))
                if v["error"]["code"] == "unavailable"
                    && ctx
                        .in_drill_at(&format!("{what}_unavailable"), sent)
                        .is_some() =>
            {
                let d = ctx.drill_during(sent, ctx.ms()).unwrap_or(0);
                let b = body
                    .as_deref()
                    .and_then(|b| serde_json::from_str::<Value>(b).ok());
                if let Some(k) = b.and_then(|b| drills::key(&b["body"])) {
                    let took = ctx.ms().saturating_sub(sent);
                    ctx.drill.refused.lock().unwrap().insert(k, (d, sent, took));
                }
            }
            Ok((s, _, t)) => ctx.tally.fail(
                &format!("{what} answered {s}"),
                format!("{method} {path}: {t}"),
            ),
            Err(e)
                if ctx
                    .in_drill_at(&format!("{what}_no_answer"), sent)
                    .is_some() =>
            {
                // Refused connection (a server down) or no answer: the
                // outcome is unknown; a broadcast may then have been stored.
                if what == "broadcast" {
                    ctx.drill.broadcasts_unknown.fetch_add(1, Ordering::Relaxed);
                }
                let _ = e;
            }
            Err(e) => ctx.tally.fail(&format!("{what} failed"), format!("{e:#}")),
        }
    }
}

/// Everything the run measured, for the report.
pub(crate) struct Outcome {
    pub ctx: Arc<Ctx>,
    pub samples: Vec<Sample>,
    pub checked_streams: u64,
    pub not_connected_at_end: u64,
    pub elapsed_s: f64,
    pub fleet: Option<Fleet>,
    pub drills: Vec<Value>,
}

pub(crate) async fn drive(
    args: SoakArgs,
    servers: Vec<SocketAddr>,
    fleet: Fleet,
) -> anyhow::Result<Outcome> {
    let (tx, rx) = watch::channel(Phase::Load);
    let start = Instant::now();
    let load = Duration::from_secs_f64(args.load_secs());
    let ctx = Arc::new(Ctx {
        kicked_at: (0..args.clients).map(|_| AtomicU64::new(0)).collect(),
        args: args.clone(),
        start,
        load_end: start + load,
        phase: rx,
        broadcast_top: AtomicU64::new(0),
        received: AtomicU64::new(0),
        tally: Tally::default(),
        pids: fleet
            .servers
            .iter()
            .map(|s| AtomicU32::new(s.pid()))
            .collect(),
        redis_pid: AtomicU32::new(fleet.redis.as_ref().map_or(0, |r| r.pid())),
        server_gen: servers.iter().map(|_| AtomicU64::new(0)).collect(),
        drill: DrillState {
            now: AtomicUsize::new(NO_DRILL),
            ..DrillState::default()
        },
        servers,
    });
    eprintln!(
        "soak: {} clients on {} server(s), {:.0} s of load, then {:.0} s to drain",
        args.clients,
        ctx.servers.len(),
        load.as_secs_f64(),
        args.drain_secs
    );
    let sampler = tokio::spawn(sample::run(ctx.clone()));
    let (mut fleet, drill_task) = if args.drills {
        (None, Some(tokio::spawn(drills::run(ctx.clone(), fleet))))
    } else {
        (Some(fleet), None)
    };
    let clients: Vec<_> = (0..args.clients)
        .map(|i| tokio::spawn(Client::new(&args, i).run(ctx.clone())))
        .collect();
    let drivers: Vec<_> = [
        ("user_push", args.user_pushes),
        ("group_push", args.group_pushes),
        ("broadcast", args.broadcasts),
        ("api_member", args.api_members),
        ("kick", args.kicks),
        (
            "slow_push",
            if args.slow_push_bytes > 0 {
                args.clients.div_ceil(args.special_every.max(4)) as f64
            } else {
                0.0
            },
        ),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (what, rate))| {
        tokio::spawn(driver(
            ctx.clone(),
            what,
            rate,
            args.seed.wrapping_add(7919 * (i as u64 + 1)),
        ))
    })
    .collect();
    tokio::time::sleep_until(ctx.load_end.into()).await;
    let _ = tx.send(Phase::Drain);
    for d in drivers {
        d.await?;
    }
    let mut drill_records = Vec::new();
    if let Some(t) = drill_task {
        let (f, records) = t.await?;
        fleet = Some(f);
        drill_records = records;
    }
    tokio::time::sleep(Duration::from_secs_f64(args.drain_secs)).await;
    let _ = tx.send(Phase::Done);
    let mut ends = Vec::new();
    for c in clients {
        ends.push(tokio::time::timeout(Duration::from_secs(60), c).await??);
    }
    let (checked_streams, not_connected_at_end) = final_check(&ctx, &ends).await;
    // What the final check attributed to each drill (refused messages
    // delivered after all) joins its record.
    let counts = ctx.drill.counts.lock().unwrap().clone();
    for (r, c) in drill_records.iter_mut().zip(counts) {
        r["during"] = json!(c);
    }
    let samples = sampler.await?;
    Ok(Outcome {
        elapsed_s: start.elapsed().as_secs_f64(),
        ctx,
        samples,
        checked_streams,
        not_connected_at_end,
        fleet,
        drills: drill_records,
    })
}

/// Every checked stream of every client against the stream's top: nothing
/// missing, nothing past it, the same epoch.
async fn final_check(ctx: &Ctx, ends: &[ClientEnd]) -> (u64, u64) {
    let addr = ctx.servers[0];
    let top = |path: String| async move {
        match api(addr, "GET", &path, None).await {
            Ok((200, v, _)) => Some((
                v["epoch"].as_str().unwrap_or_default().to_owned(),
                v["seq"].as_u64().unwrap_or(0),
            )),
            Ok((s, _, t)) => {
                ctx.tally
                    .fail("history answered", format!("{s} {path}: {t}"));
                None
            }
            Err(e) => {
                ctx.tally.fail("history failed", format!("{path}: {e:#}"));
                None
            }
        }
    };
    let mut groups = HashMap::new();
    for g in 0..STABLE_GROUPS {
        let path = format!("/api/v1/groups/s{g}/history?limit=1");
        if let Some(t) = top(path).await {
            groups.insert(format!("group:s{g}"), t);
        }
    }
    let all_top = ctx.broadcast_top.load(Ordering::Relaxed);
    // A broadcast with no answer during a drill may have been stored.
    let all_slack = ctx.drill.broadcasts_unknown.load(Ordering::Relaxed);
    for (k, d, t, took) in drills::refused_delivered(ctx) {
        ctx.in_drill_at("refused_then_delivered", t);
        ctx.tally.fail(
            "refused message delivered",
            format!("{k}: sent at {t} ms in drill {d}, refused after {took} ms"),
        );
    }
    let (mut checked, mut absent) = (0, 0);
    for end in ends {
        if !end.connected {
            absent += 1;
            ctx.tally.fail("not connected at the end", end.user.clone());
            continue;
        }
        for (stream, seg) in &end.segs {
            let want = match stream.as_str() {
                "inbox" => {
                    let path = format!(
                        "/api/v1/users/{}/history?since={}&limit=1",
                        end.user, seg.last
                    );
                    top(path).await
                }
                "all" => Some((seg.epoch.clone(), all_top)),
                g => groups.get(g).cloned(),
            };
            let Some((epoch, top)) = want else { continue };
            checked += 1;
            if epoch != seg.epoch {
                ctx.tally.fail(
                    "epoch at the end",
                    format!("{} {stream}: {} vs {epoch}", end.user, seg.epoch),
                );
                continue;
            }
            let missing = seg.missing_to(top);
            if missing > 0 {
                ctx.tally.count("messages_lost", missing);
                ctx.tally.fail(
                    "lost",
                    format!(
                        "{} {stream}: {missing} missing up to {top} (last {}, holes {:?})",
                        end.user,
                        seg.last,
                        seg.holes.iter().take(5).collect::<Vec<_>>()
                    ),
                );
            }
            let slack = if stream == "all" { all_slack } else { 0 };
            if seg.last > top + slack {
                ctx.tally.fail(
                    "past the top",
                    format!("{} {stream}: last {} > top {top}", end.user, seg.last),
                );
            }
        }
    }
    (checked, absent)
}
