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
// The helpers it shares with chat.test.mjs are in common.mjs.

import assert from "node:assert/strict";
import {
  api, connect, launchBrowser, openPage, problemWatch, send, shotsDir, shown, startServer,
  stopServer,
} from "./common.mjs";

// A cluster process on `listen`, on the Redis xtask started; resolves once
// it has reached Redis.
function startNode(listen) {
  return startServer(listen, { redis: process.env.WSHUB_REDIS });
}

let a = await startNode("127.0.0.1:0");
const b = await startNode("127.0.0.1:0");
const shots = shotsDir();
const browser = await launchBrowser();

// While A is down, alice's page tries to reconnect to it and Chromium logs
// each failed attempt as a console error; only those are expected, and only
// for sockets to A's address: a failure to reach B is still a problem.
let aDown = false;
const { watch, step } = problemWatch((addr) => aDown && addr === a.addr);

async function signIn(token, who, server) {
  const viewport = { width: 1000, height: 800 };
  const { page, res } = await openPage(browser, watch, who, "http://" + server.addr + "/", viewport);
  assert.equal(res.status(), 200);
  await connect(page, token);
  return page;
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
  await stopServer(a.child, "SIGKILL");
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
  a = await startNode(a.addr);
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
