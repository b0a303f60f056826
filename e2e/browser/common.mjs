// What the browser scenarios (chat.test.mjs, cluster.test.mjs) share:
// starting and stopping wshub-server, launching Chromium, watching pages
// for problems (with an allowance for the reconnect attempts a scenario
// expects to fail), the steps that report them, the server API, and the
// chat page's controls and waiting helpers. Each scenario keeps its own
// logic in its file.
//
// Environment (set by `cargo xtask browser`): WSHUB_SERVER (binary),
// WSHUB_SECRET, API_KEY, SHOTS (directory), CHROMIUM (executable).

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

// How long a page waits for anything.
export const timeout = 15000;

// The screenshot directory (SHOTS), created if need be.
export function shotsDir() {
  const shots = process.env.SHOTS;
  mkdirSync(shots, { recursive: true });
  return shots;
}

// Starts wshub-server on `listen`; resolves with the process and its address
// once it logs "listening on ADDR". With `redis` (a URL) it is a cluster
// process (PROTOCOL.md §11) and resolves only once it also logged
// "broker up" (it has reached Redis). If it exits first, the promise fails
// with what it logged.
export function startServer(listen, { redis } = {}) {
  const args = [
    "--listen", listen, "--secret", process.env.WSHUB_SECRET,
    "--api-key", process.env.API_KEY, "--public-group", "lobby",
  ];
  if (redis) args.push("--redis", redis);
  const child = spawn(process.env.WSHUB_SERVER, args,
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: "info" } });
  const log = [];
  return new Promise((resolve, reject) => {
    let addr = null, up = !redis;
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

// Sends `signal` (SIGTERM: a shutdown; SIGKILL: a crash); resolves once the
// process is gone.
export function stopServer(child, signal = "SIGTERM") {
  return new Promise((resolve) => { child.on("exit", resolve); child.kill(signal); });
}

export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

// The address (HOST:PORT) a console error is about if it is a page's failed
// WebSocket (re)connect attempt, as Chromium logs it; otherwise null.
const RECONNECT_REFUSED = /^WebSocket connection to 'ws:\/\/([^'\/]+)\/ws\?[^']*' failed/;
export function refusedReconnect(text) {
  return text.match(RECONNECT_REFUSED)?.[1] ?? null;
}

// What goes wrong on the pages, as "who: what", and the means to catch it.
// `expectedRefusal(addr)` says whether a failed reconnect to `addr` is
// expected at that moment (the scenario took that server down on purpose);
// every other console error is a problem.
export function problemWatch(expectedRefusal) {
  // step() fails the run if a step leaves anything here, so a problem is
  // reported next to its step.
  const problems = [];

  // Any console error, uncaught page error, crash, failed request or HTTP
  // status >= 400 on `page` goes into `sink`.
  function watch(page, who, sink = problems) {
    const report = (what) => sink.push(who + ": " + what);
    page.on("console", (m) => {
      // The page warns when it skips a message it already showed: the server
      // promises exactly once, so that is a bug here, not a fix.
      if (m.type() === "warning" && /duplicate/.test(m.text())) report("console warning: " + m.text());
      if (m.type() !== "error") return;
      const refused = refusedReconnect(m.text());
      if (refused !== null && expectedRefusal(refused)) return;
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

  function step(name) {
    if (problems.length) {
      throw new Error("problems on the pages during \"" + name + "\":\n  " + problems.join("\n  "));
    }
    console.log("  ok  " + name);
  }

  return { problems, watch, step };
}

// A new page in its own context of `browser`, watched as `who`, loaded from
// `url`; resolves with the page and the response to its load.
export async function openPage(browser, watch, who, url, viewport) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  watch(page, who);
  const res = await page.goto(url);
  return { page, res };
}

// Signs the loaded page in with `token` and waits until it is connected.
export async function connect(page, token) {
  await page.fill("#token", token);
  await page.click("#connect");
  await page.waitForSelector("#state.connected");
}

export async function send(page, to, text) {
  await page.fill("#to", to);
  await page.fill("#text", text);
  await page.click("#send");
}

// How many messages in `page`'s log show `text`.
export function shown(page, text) {
  return page.locator("#log .msg", { hasText: text }).count();
}

// Polls `cond` until it holds or `ms` pass; for events that arrive after
// the action that caused them.
export async function eventually(cond, ms = 5000) {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) {
    if (await cond()) return true;
  }
  return cond();
}

// The server API through `server` ({ addr }), as a backend calls it.
export async function api(server, method, path, body) {
  const res = await fetch("http://" + server.addr + "/api/v1" + path, {
    method,
    headers: { "authorization": "Bearer " + process.env.API_KEY, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.equal(res.status, 200, method + " " + path + " through " + server.addr);
  return res.json();
}
