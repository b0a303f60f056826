"use strict";
// A client of the wshub protocol (PROTOCOL.md): welcome, send/publish,
// join/leave with acks, error frames shown in words, and reconnect with
// backoff when the connection drops, resuming every stream it reads
// (section 10) so that what arrived meanwhile is shown once, in order.
// A file of its own, not an inline <script> or on* attributes, so the page's
// Content-Security-Policy can allow scripts from this server only
// (server/src/http/page.rs).
const $ = (id) => document.getElementById(id);
const state = {
  ws: null, me: null, groups: new Set(), nextId: 1, pending: new Map(), wanted: false, backoff: 500, timer: null,
  // Frames other than the resume wait until the welcome has been answered
  // with it: the resume must be the connection's first frame.
  ready: false,
  // The last position seen per stream, {"inbox": {epoch, seq}, ...}, and the
  // user they belong to; kept across reconnects (and a sign-out, for the
  // same user) so a new connection can resume where the last one left off.
  positions: {}, positionsOf: null,
  // The welcome's positions on this connection, for streams the resume
  // could not recover.
  welcomed: {},
  // Ids of recent messages. The server delivers a recovered stream exactly
  // once; this only guards (and warns, for whoever watches the console)
  // against a bug that would show one message twice.
  seen: new Set(), seenOrder: [],
};
const SEEN_MAX = 2000;
const WORDS = {
  bad_request: "The server could not understand that",
  unknown_type: "The server does not know that kind of frame",
  unauthorized: "Not signed in: the token is missing, invalid or expired",
  forbidden: "Not allowed",
  not_found: "Not found",
  too_large: "That message is too large",
  rate_limited: "Slow down: too many messages at once",
  slow_consumer: "This connection fell too far behind and was closed",
  unavailable: "The server is unavailable right now",
  internal: "The server had a problem",
};
const CLOSES = { 1001: "the server is going away (restart or shutdown)", 1008: "closed by policy (kicked, expired token or too many messages)", 1009: "a message was too large", 1013: "the connection fell too far behind" };

function setState(text, cls) { const s = $("state"); s.textContent = text; s.className = cls || ""; }
function time(ts) { return new Date(ts || Date.now()).toLocaleTimeString(); }
function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }
function add(node) { const log = $("log"); log.appendChild(node); log.scrollTop = log.scrollHeight; }
function note(text) { add(el("div", "note", text)); }
function showError(code, message) {
  const e = el("div", "error");
  e.textContent = (WORDS[code] || "Error") + (message ? ": " + message : "") + " (" + code + ")";
  e.dataset.code = code;
  add(e);
}
function renderGroups() {
  const ul = $("groups"); ul.textContent = "";
  [...state.groups].sort().forEach((g) => ul.appendChild(el("li", "", "#" + g)));
  if (!state.groups.size) ul.appendChild(el("li", "", "none yet"));
}

// A body is shown as text, as a promotion card, or as JSON.
function renderBody(body) {
  if (typeof body === "string") return el("div", "text", body);
  if (body && typeof body === "object" && "title" in body && "content" in body) {
    const card = el("div", "card");
    card.appendChild(el("div", "kind", "Promotion" + ("messageType" in body ? " · type " + body.messageType : "")));
    card.appendChild(el("div", "title", String(body.title)));
    card.appendChild(el("div", "content", String(body.content)));
    return card;
  }
  return el("pre", "", JSON.stringify(body, null, 2));
}

// Moves a stream's position to `pos` ({epoch, seq}) unless it is already
// past it in the same epoch (a join's ack may arrive after a message that
// came later). A new epoch always wins: the stream's numbering restarted.
function advance(stream, pos) {
  if (!stream || !pos || typeof pos.epoch !== "string" || typeof pos.seq !== "number") return;
  const cur = state.positions[stream];
  if (!cur || cur.epoch !== pos.epoch || pos.seq > cur.seq) state.positions[stream] = { epoch: pos.epoch, seq: pos.seq };
}

// Whether message `id` was shown already; remembers it if not.
function seenBefore(id) {
  if (typeof id !== "string") return false;
  if (state.seen.has(id)) return true;
  state.seen.add(id); state.seenOrder.push(id);
  if (state.seenOrder.length > SEEN_MAX) state.seen.delete(state.seenOrder.shift());
  return false;
}

function onMessage(m) {
  advance(m.stream, m);
  if (seenBefore(m.id)) {
    // Not expected: the server delivers a recovered stream exactly once.
    // Skipped, and said where a developer (or the browser test) looks.
    console.warn("wshub chat: skipped a duplicate of message " + m.id + " (" + m.stream + " seq " + m.seq + ")");
    return;
  }
  const mine = m.from === state.me;
  const box = el("div", "msg" + (mine ? " mine" : ""));
  let where = m.group ? "#" + m.group : m.to && m.to !== state.me ? "to " + m.to : m.to ? "to you" : "everyone";
  box.appendChild(el("div", "meta", (m.from || "server") + " · " + where + " · " + time(m.ts)));
  box.appendChild(renderBody(m.body));
  box.dataset.from = m.from || "";
  if (m.stream) { box.dataset.stream = m.stream; box.dataset.seq = String(m.seq); }
  add(box);
}

// The welcome: sends the resume (always the connection's first frame, as
// the connection asked for with resume=1), naming every stream this
// connection reads that the page has a position for.
function onWelcome(f) {
  state.me = f.user; state.backoff = 500;
  state.groups = new Set(f.groups); renderGroups();
  $("who").textContent = "Signed in as " + f.user + " (connection " + f.conn + ")";
  setState("connected", "connected");
  note("Connected as " + f.user);
  if (state.positionsOf !== f.user) { state.positions = {}; state.positionsOf = f.user; }
  const streams = f.streams && typeof f.streams === "object" ? f.streams : {};
  state.welcomed = streams;
  const named = {};
  for (const [s, pos] of Object.entries(state.positions)) {
    if (s in streams) named[s] = pos;
    // A stream this connection no longer reads (a group left, or forgotten
    // by a restarted server): naming it would only answer false.
    else delete state.positions[s];
  }
  // Streams new to the page are read live from the welcome's position.
  for (const [s, pos] of Object.entries(streams)) if (!(s in named)) advance(s, pos);
  const id = "r" + state.nextId++;
  state.pending.set(id, { kind: "resume" });
  state.ws.send(JSON.stringify({ type: "resume", id, positions: named }));
  state.ready = true;
}

// The resume's answer: a stream that was not recovered starts again from
// the welcome's position, and the user is told something was missed.
function onRecovered(recovered) {
  const lost = [];
  for (const [s, ok] of Object.entries(recovered || {})) {
    if (ok) continue;
    lost.push(s);
    if (state.welcomed[s]) advance(s, state.welcomed[s]);
  }
  if (lost.length) {
    const n = el("div", "note lost", "some messages in " + lost.join(", ") + " could not be recovered");
    n.dataset.streams = lost.join(" ");
    add(n);
  }
}

function onFrame(f) {
  switch (f.type) {
    case "welcome": onWelcome(f); break;
    case "message": onMessage(f); break;
    case "ack": {
      const p = state.pending.get(f.id); state.pending.delete(f.id);
      // send/publish: the sender's own message's place; join: the group's.
      if (f.stream) advance(f.stream, f);
      if (p && p.kind === "resume") { onRecovered(f.recovered); }
      else if (p && p.kind === "join") { state.groups.add(p.group); renderGroups(); note("Joined #" + p.group); }
      else if (p && p.kind === "leave") {
        state.groups.delete(p.group); renderGroups(); note("Left #" + p.group);
        delete state.positions["group:" + p.group];
      }
      else if (p && p.show) { p.show(f.delivered); }
      break;
    }
    case "error": state.pending.delete(f.id); showError(f.code, f.message); break;
    case "pong": break;
  }
}

function url() {
  const base = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws?resume=1&";
  const token = $("token").value.trim(), user = $("user").value.trim();
  if (token) return base + "token=" + encodeURIComponent(token);
  return base + "userId=" + encodeURIComponent(user);
}

function connect() {
  clearTimeout(state.timer);
  if (!$("token").value.trim() && !$("user").value.trim()) { showError("unauthorized", "enter a token or a user id"); return; }
  state.wanted = true; state.ready = false;
  $("connect").disabled = true; $("disconnect").disabled = false;
  setState(state.ws ? "reconnecting…" : "connecting…", state.ws ? "reconnecting" : "connecting");
  let opened = false;
  const ws = new WebSocket(url());
  state.ws = ws;
  ws.onopen = () => { opened = true; };
  ws.onmessage = (e) => {
    if (state.ws !== ws) return;
    let f;
    try { f = JSON.parse(e.data); } catch (err) { showError("bad_request", "unreadable frame from the server"); return; }
    onFrame(f);
  };
  ws.onclose = (e) => {
    if (state.ws !== ws) return;
    state.ready = false;
    // Frames sent on this socket get no answer now. What did reach the
    // server comes back through the resume (the sender's copy of a direct
    // message is in the inbox).
    state.pending.clear();
    if (!opened) {
      // The upgrade was refused or the server is down; the browser does not
      // say which, so say both.
      note("Could not connect (server down, or the token was refused)");
    } else {
      note("Disconnected: " + (CLOSES[e.code] || "connection lost") + (e.reason ? " [" + e.reason + "]" : ""));
    }
    // 1008 is the server's policy (a kick through the API, an expired
    // token, a client that ignored the rate limit): coming straight back
    // would undo it, so the page waits for the user to press Connect.
    if (opened && e.code === 1008 && state.wanted) {
      state.wanted = false;
      note("Not reconnecting after that; press Connect to try again");
      $("connect").disabled = false; $("disconnect").disabled = true;
    }
    if (!state.wanted) { state.ws = null; setState("signed out"); return; }
    const wait = state.backoff; state.backoff = Math.min(state.backoff * 2, 10000);
    setState("reconnecting in " + (wait / 1000).toFixed(1) + " s", "reconnecting");
    state.timer = setTimeout(connect, wait);
  };
}

function disconnect() {
  state.wanted = false; clearTimeout(state.timer);
  if (state.ws) state.ws.close(1000);
  state.ws = null;
  $("connect").disabled = false; $("disconnect").disabled = true;
  setState("signed out");
}

function sendFrame(frame, pending) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN || !state.ready) { showError("unavailable", "not connected"); return false; }
  frame.id = "w" + state.nextId++;
  if (pending) state.pending.set(frame.id, pending);
  state.ws.send(JSON.stringify(frame));
  return true;
}

$("connect").onclick = connect;
$("disconnect").onclick = disconnect;
$("join").onclick = () => { const g = $("group").value.trim(); if (g) sendFrame({ type: "join", group: g }, { kind: "join", group: g }); };
$("leave").onclick = () => { const g = $("group").value.trim(); if (g) sendFrame({ type: "leave", group: g }, { kind: "leave", group: g }); };
$("compose").onsubmit = (e) => {
  e.preventDefault();
  const to = $("to").value.trim(), text = $("text").value;
  if (!to || !text) return;
  const group = to.startsWith("#") ? to.slice(1) : null;
  const frame = group ? { type: "publish", group, body: text } : { type: "send", to: to.replace(/^@/, ""), body: text };
  const ok = sendFrame(frame, { kind: "send", show: (n) => {
    const box = el("div", "msg mine");
    box.appendChild(el("div", "meta", "you · " + (group ? "#" + group : "to " + frame.to) + " · " + time() + " · delivered to " + n));
    box.appendChild(renderBody(text));
    add(box);
  } });
  if (ok) $("text").value = "";
};
renderGroups();
