// The chat page on a cluster (PROTOCOL.md §11) in a real (headless)
// Chromium: two wshub-server processes on one private, persistent (AOF)
// redis-server, both started by this script. alice's page is on process A,
// bob's on process B. A is killed (SIGKILL, a crash) and, while it is down,
// messages for alice go through B: an API push to her inbox, one to her
// group, and a message from bob's page. A is started again on the same
// address; alice's page reconnects by itself, resumes from the history in
// Redis, and shows every message sent meanwhile exactly once, in order, with
// nothing reported lost, then goes on live.
//
// As in chat.test.mjs, any console error, uncaught page error, failed
// request or HTTP status >= 400 on a page fails the run, except the
// reconnect attempts to A while A is down.
//
// Environment (set by `cargo xtask browser`): WSHUB_SERVER (binary),
// WSHUB_REDIS (redis://HOST:PORT/DB), WSHUB_SECRET, ALICE_TOKEN (groups:
// promo), BOB_TOKEN, API_KEY, SHOTS (directory), CHROMIUM (executable).

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

// Starts a cluster process on `listen`; resolves once it logged both
// "listening on ADDR" and "broker up" (it has reached Redis), with the
// process and its address.
function startServer(listen) {
  const child = spawn(process.env.WSHUB_SERVER, [
    "--listen", listen, "--secret", process.env.WSHUB_SECRET,
    "--api-key", process.env.API_KEY, "--public-group", "lobby",
    "--redis", process.env.WSHUB_REDIS,
  ], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: "info" } });
  const log = [];
  return new Promise((resolve, reject) => {
    let addr = null, up = false;
    const lines = createInterface({ input: child.stderr });
    lines.on("line", (line) => {
      log.push(line);
      const m = line.match(/listening on (\S+)/);
      if (m) addr = m[1];
      if (/broker up/.test(line)) up = true;
      if (addr && up) resolve({ child, addr });
    });
    child.on("exit", (code, signal) =>
      reject(new Error("server exited early (" + (code ?? signal) + "):\n" + log.join("\n"))));
  });
}

// SIGKILL; resolves once the process is gone.
function killServer(child) {
  return new Promise((resolve) => { child.on("exit", resolve); child.kill("SIGKILL"); });
}

let a = await startServer("127.0.0.1:0");
const b = await startServer("127.0.0.1:0");
const shots = process.env.SHOTS;
mkdirSync(shots, { recursive: true });
const timeout = 15000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

const problems = [];
// While A is down, alice's page tries to reconnect to it and Chromium logs
// each failed attempt as a console error; only those are expected, and only
// for sockets to A's address: a failure to reach B is still a problem.
let aDown = false;
const RECONNECT_REFUSED = /^WebSocket connection to 'ws:\/\/([^'\/]+)\/ws\?[^']*' failed/;
function expectedRefusal(text) {
  const m = text.match(RECONNECT_REFUSED);
  return !!m && aDown && m[1] === a.addr;
}

function watch(page, who) {
  const report = (what) => problems.push(who + ": " + what);
  page.on("console", (m) => {
    // The page warns when it skips a message it already showed: the server
    // promises exactly once, so that is a bug here, not a fix.
    if (m.type() === "warning" && /duplicate/.test(m.text())) report("console warning: " + m.text());
    if (m.type() !== "error") return;
    if (expectedRefusal(m.text())) return;
    const at = m.location().url ? " (at " + m.location().url + ")" : "";
    report("console error: " + m.text() + at);
  });
  page.on("pageerror", (e) => report("uncaught error: " + e.message));
  page.on("crash", () => report("page crashed"));
  page.on("requestfailed", (r) =>
    report("request failed: " + r.method() + " " + r.url() + " " + (r.failure()?.errorText ?? "")));
  page.on("response", (r) => {
    if (r.status() >= 400) report("HTTP " + r.status() + " for " + r.request().method() + " " + r.url());
  });
}

async function signIn(token, who, server) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  watch(page, who);
  const res = await page.goto("http://" + server.addr + "/");
  assert.equal(res.status(), 200);
  await page.fill("#token", token);
  await page.click("#connect");
  await page.waitForSelector("#state.connected");
  return page;
}

async function send(page, to, text) {
  await page.fill("#to", to);
  await page.fill("#text", text);
  await page.click("#send");
}

function step(name) {
  if (problems.length) {
    throw new Error("problems on the pages during \"" + name + "\":\n  " + problems.join("\n  "));
  }
  console.log("  ok  " + name);
}

// The server API through `server`, as a backend calls it.
async function api(server, method, path, body) {
  const res = await fetch("http://" + server.addr + "/api/v1" + path, {
    method,
    headers: { "authorization": "Bearer " + process.env.API_KEY, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.equal(res.status, 200, method + " " + path + " through " + server.addr);
  return res.json();
}

// How many messages in `page`'s log show `text`.
function shown(page, text) {
  return page.locator("#log .msg", { hasText: text }).count();
}

// The messages `page` shows with their place: [{text, stream, seq}].
function placed(page) {
  return page.$$eval("#log .msg[data-stream]", (els) => els.map((e) => ({
    text: e.querySelector(".text")?.textContent ?? "",
    stream: e.dataset.stream,
    seq: Number(e.dataset.seq),
  })));
}

try {
  const alice = await signIn(process.env.ALICE_TOKEN, "alice", a);
  const bob = await signIn(process.env.BOB_TOKEN, "bob", b);
  assert.match(await alice.textContent("#groups"), /#promo/);
  step("alice's page on process A, bob's on process B");

  // Across processes before anything goes wrong.
  await send(bob, "alice", "hello from B");
  await alice.waitForSelector(".msg[data-from=bob] >> text=hello from B");
  await api(b, "POST", "/groups/promo/messages", { body: "promo before" });
  await alice.waitForSelector(".msg >> text=promo before");
  step("bob (on B) -> alice (on A) and a group push through B arrive");

  // A crashes. The hub goes on through B, and what is sent to alice
  // meanwhile is stored in Redis.
  aDown = true;
  await killServer(a.child);
  await alice.waitForSelector("#state.reconnecting");
  const away = [];
  await api(b, "POST", "/users/alice/messages", { body: "pushed while A was down" });
  away.push("pushed while A was down");
  await api(b, "POST", "/groups/promo/messages", { body: "promo while A was down" });
  away.push("promo while A was down");
  await send(bob, "alice", "sent while A was down");
  await bob.waitForSelector(".msg.mine >> text=sent while A was down");
  away.push("sent while A was down");
  await api(b, "POST", "/users/alice/messages", { body: "pushed again while A was down" });
  away.push("pushed again while A was down");
  await alice.screenshot({ path: shots + "/cluster-alice-away.png" });

  // A new process on A's address and the same Redis.
  a = await startServer(a.addr);
  await alice.waitForSelector("#state.connected");
  aDown = false;
  await send(bob, "alice", "live after the restart");
  await alice.waitForSelector(".msg >> text=live after the restart");
  await api(a, "POST", "/groups/promo/messages", { body: "promo through the new A" });
  await alice.waitForSelector(".msg >> text=promo through the new A");

  const all = ["hello from B", "promo before", ...away, "live after the restart", "promo through the new A"];
  for (const text of all) assert.equal(await shown(alice, text), 1, "shown once: " + text);
  assert.equal(await alice.locator(".note.lost").count(), 0, "every stream was recovered");
  // alice sent nothing, so each of her streams is numbered 1, 2, 3, ...
  // on her page with no gap and no repeat, and the order within a stream
  // is the order things were sent.
  const seen = await placed(alice);
  assert.equal(seen.length, all.length, "one message per thing sent: " + JSON.stringify(seen));
  for (const stream of ["inbox", "group:promo"]) {
    const mine = seen.filter((m) => m.stream === stream);
    assert.deepEqual(mine.map((m) => m.seq), mine.map((_, i) => i + 1), stream + ": " + JSON.stringify(seen));
    const sent = all.filter((t) => mine.some((m) => m.text === t));
    assert.deepEqual(mine.map((m) => m.text), sent, stream + " in order: " + JSON.stringify(seen));
  }
  await alice.screenshot({ path: shots + "/cluster-alice-resumed.png", fullPage: true });
  step("process A killed and restarted on its address: alice's page resumes from Redis, " +
    "shows what went through B meanwhile exactly once, nothing lost, and goes on live");
} finally {
  await browser.close();
  for (const s of [a, b]) s.child.kill("SIGTERM");
}
