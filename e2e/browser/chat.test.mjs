// The chat page at GET / in a real (headless) Chromium, against a real
// wshub-server started by `cargo xtask browser`. Two pages signed in as two
// users chat both ways, a group push made through the server API appears as
// a card, and a forbidden action shows an error in words. When a page's
// connection drops, it reconnects by itself and resumes its streams
// (PROTOCOL.md §10): what was sent meanwhile shows up exactly once; after a
// server restart (new epochs) it says what could not be recovered; after a
// kick (close 1008) it stays signed out. Screenshots go to target/browser/
// for a person to look at.
//
// The page must also be clean: GET / carries a Content-Security-Policy and
// nosniff, and any console error (a CSP violation is one), uncaught page
// error, failed request or HTTP status >= 400 on any page fails the run.
//
// The script starts the server itself (so it can restart it and watch the
// page reconnect). Environment (set by xtask): WSHUB_SERVER (binary),
// WSHUB_SECRET, ALICE_TOKEN, BOB_TOKEN, API_KEY, SHOTS (directory),
// CHROMIUM (executable). What it shares with cluster.test.mjs (server start,
// the problem watch, page and API helpers) is in common.mjs.

import assert from "node:assert/strict";
import net from "node:net";
import {
  api as serverApi, connect, eventually, launchBrowser, openPage, problemWatch, send, shotsDir,
  shown, startServer, stopServer,
} from "./common.mjs";

// A TCP proxy in front of the server, so the test can cut a page's
// connection at will without touching the server: cut() drops every open
// connection and refuses new ones (accepted, then closed at once) until
// restore(). It forwards to the server's current address, which a restart
// keeps.
async function startProxy() {
  const open = new Set();
  let up = true;
  const proxy = net.createServer((client) => {
    if (!up) { client.destroy(); return; }
    const [host, port] = server.addr.split(/:(?=\d+$)/);
    const upstream = net.connect(Number(port), host);
    const pair = [client, upstream];
    for (const s of pair) {
      open.add(s);
      s.on("error", () => pair.forEach((x) => x.destroy()));
      s.on("close", () => { open.delete(s); pair.forEach((x) => x.destroy()); });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  return {
    addr: "127.0.0.1:" + proxy.address().port,
    cut() { up = false; for (const s of open) s.destroy(); },
    restore() { up = true; },
    close() { for (const s of open) s.destroy(); proxy.close(); },
  };
}

let server = await startServer("127.0.0.1:0");
const proxy = await startProxy();
const base = "http://" + server.addr;
const shots = shotsDir();
const browser = await launchBrowser();

// While the server is deliberately down, the pages' reconnect attempts fail
// and Chromium logs each one as a console error; only those are expected.
let serverDown = false;
// Likewise while the proxy is cut, but only for sockets to the proxy: a
// failure to reach the server itself is still a problem then.
let proxyDown = false;
const { watch, step } = problemWatch((addr) => serverDown || (proxyDown && addr === proxy.addr));

// The policy as a map from directive to its sources.
function directives(policy) {
  return Object.fromEntries(policy.split(";").map((d) => d.trim().split(/\s+/))
    .filter((w) => w[0]).map(([name, ...sources]) => [name, sources]));
}

// GET / must say what the page may load (only this server's files and its
// own WebSocket) and forbid type sniffing.
function checkPageHeaders(res) {
  assert.equal(res.status(), 200);
  const headers = res.headers();
  assert.equal(headers["x-content-type-options"], "nosniff");
  const csp = headers["content-security-policy"];
  assert.ok(csp, "GET / has a Content-Security-Policy header");
  const d = directives(csp);
  for (const name of ["default-src", "base-uri", "form-action", "frame-ancestors"]) {
    assert.deepEqual(d[name], ["'none'"], name + " in " + csp);
  }
  for (const name of ["script-src", "style-src"]) {
    assert.deepEqual(d[name], ["'self'"], name + " in " + csp);
  }
  assert.ok(d["connect-src"]?.includes("'self'"), "connect-src allows the page's own host: " + csp);
  for (const sources of Object.values(d)) {
    for (const s of sources) {
      assert.ok(!["*", "'unsafe-inline'", "'unsafe-eval'", "data:", "blob:", "http:", "https:", "ws:", "wss:"].includes(s),
        "the policy allows " + s + ": " + csp);
    }
  }
}

// Opens the page from `origin` (the server, or the proxy in front of it) and
// connects with `token`.
async function signIn(token, viewport, who, origin = base) {
  const { page, res } = await openPage(browser, watch, who, origin + "/", viewport);
  checkPageHeaders(res);
  // The stylesheet applied (body margin is 8px by default) and the script
  // ran (the connect button works below): both are allowed by the policy.
  assert.equal(await page.evaluate(() => getComputedStyle(document.body).marginTop), "0px");
  await connect(page, token);
  return page;
}

// The server API, as a backend calls it, through the current server.
function api(method, path, body) {
  return serverApi(server, method, path, body);
}

async function connections(user) {
  return (await api("GET", "/users/" + user)).connections;
}

try {
  const icon = await fetch(base + "/favicon.ico");
  assert.equal(icon.status, 200);
  assert.equal(icon.headers.get("content-type"), "image/svg+xml");
  assert.equal(icon.headers.get("x-content-type-options"), "nosniff");
  assert.match(await icon.text(), /^<svg/);
  step("GET /favicon.ico answers with the icon");

  // The policy is enforced, not only sent: a script injected into the page
  // is refused, and the refusal reaches the console, where watch() would
  // catch any violation by the page itself.
  {
    const context = await browser.newContext();
    const page = await context.newPage();
    const seen = [];
    watch(page, "probe", seen);
    checkPageHeaders(await page.goto(base + "/"));
    const refused = await page.evaluate(() => new Promise((resolve) => {
      document.addEventListener("securitypolicyviolation", (e) => resolve(e.effectiveDirective), { once: true });
      const s = document.createElement("script");
      s.textContent = "window.injected = true;";
      document.body.appendChild(s);
    }));
    assert.equal(refused, "script-src-elem");
    assert.equal(await page.evaluate(() => window.injected), undefined);
    assert.ok(await eventually(() => seen.some((p) => /Content Security Policy/.test(p))),
      "a CSP violation shows as a console error; saw: " + JSON.stringify(seen));
    assert.equal(seen.length, 1, "only the injected script was refused: " + JSON.stringify(seen));
    await context.close();
  }
  step("GET / has a tight CSP and nosniff, and an injected inline script is refused");

  const alice = await signIn(process.env.ALICE_TOKEN, { width: 1200, height: 800 }, "alice");
  // bob's page goes through the proxy, so the test can cut its connection.
  const bob = await signIn(process.env.BOB_TOKEN, { width: 390, height: 844 }, "bob", "http://" + proxy.addr); // a phone
  assert.match(await alice.textContent("#who"), /Signed in as alice/);
  assert.match(await alice.textContent("#groups"), /#promo/);
  step("both pages signed in; alice's welcome lists her token's group");

  await send(alice, "bob", "hi bob, from the browser");
  await bob.waitForSelector(".msg >> text=hi bob, from the browser");
  assert.match(await bob.textContent(".msg[data-from=alice] .meta"), /alice · to you/);
  await alice.waitForSelector(".msg.mine >> text=delivered to 1");
  step("alice -> bob arrives, and alice sees it delivered");

  await send(bob, "alice", "hello alice");
  await alice.waitForSelector(".msg[data-from=bob] >> text=hello alice");
  step("bob -> alice arrives");

  const res = await fetch(base + "/api/v1/groups/promo/messages", {
    method: "POST",
    headers: { "authorization": "Bearer " + process.env.API_KEY, "content-type": "application/json" },
    body: JSON.stringify({ body: { messageType: 1, title: "Weekend sale", content: "30% off everything" } }),
  });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).delivered, 1);
  const card = await alice.waitForSelector(".card");
  assert.match(await card.textContent(), /Weekend sale/);
  assert.match(await card.textContent(), /30% off everything/);
  step("a group push through the API shows as a promotion card");

  await send(alice, "#secret-club", "let me in");
  const err = await alice.waitForSelector(".error[data-code=forbidden]");
  assert.match(await err.textContent(), /Not allowed: not a member of group secret-club/);
  await bob.fill("#group", "vip");
  await bob.click("#join");
  await bob.waitForSelector(".error[data-code=forbidden]");
  step("forbidden publish and join are shown to the user in words");

  await bob.fill("#group", "lobby");
  await bob.click("#join");
  await bob.waitForSelector("#groups >> text=#lobby");
  step("joining a public group lists it");

  // bob's connection drops under the page (the proxy cuts it; not a
  // sign-out, not a kick). While he is away, messages reach his inbox (an
  // API push and a message from alice) and his group #lobby, whose position
  // the page has only from the join's ack. The page reconnects by itself,
  // resumes, and shows each of them exactly once, in order, before what
  // comes live after.
  await send(alice, "bob", "before the cut");
  await bob.waitForSelector(".msg >> text=before the cut");
  proxyDown = true;
  proxy.cut();
  await bob.waitForSelector("#state.reconnecting");
  assert.ok(await eventually(async () => (await connections("bob")) === 0), "the server saw bob leave");
  assert.equal((await api("POST", "/users/bob/messages", { body: "pushed while you were away" })).delivered, 0);
  await send(alice, "bob", "sent while you were away");
  await alice.waitForSelector(".msg.mine >> text=sent while you were away");
  assert.equal((await api("POST", "/groups/lobby/messages", { body: "lobby news while you were away" })).delivered, 0);
  await bob.screenshot({ path: shots + "/bob-away.png" });
  proxy.restore();
  await bob.waitForSelector("#state.connected");
  proxyDown = false;
  await send(alice, "bob", "live again");
  await bob.waitForSelector(".msg >> text=live again");
  const away = ["before the cut", "pushed while you were away", "sent while you were away", "lobby news while you were away", "live again"];
  for (const text of away) assert.equal(await shown(bob, text), 1, "shown once: " + text);
  // bob's own message went into his inbox too (the sender's copy); its
  // ack moved his position past it, so the replay does not bring it back.
  assert.equal(await shown(bob, "hello alice"), 1, "bob's own message is not replayed");
  const order = await bob.$$eval("#log .msg .text", (els) => els.map((e) => e.textContent));
  const at = away.map((t) => order.indexOf(t));
  assert.ok(at[0] < at[1] && at[1] < at[2] && at[3] < at[4] && at[2] < at[4], "in order: " + JSON.stringify(order));
  assert.equal(await bob.locator(".note.lost").count(), 0, "every stream was recovered");
  await bob.screenshot({ path: shots + "/bob-resumed.png", fullPage: true });
  step("a dropped connection reconnects and resumes: what was sent meanwhile shows exactly once");

  await alice.screenshot({ path: shots + "/alice-desktop.png", fullPage: true });
  await bob.screenshot({ path: shots + "/bob-phone.png", fullPage: true });

  // The server restarts: the page says so, backs off, and reconnects.
  serverDown = true;
  await stopServer(server.child);
  await alice.waitForSelector(".note >> text=the server is going away");
  await alice.waitForSelector("#state.reconnecting");
  await alice.screenshot({ path: shots + "/alice-reconnecting.png" });
  server = await startServer(server.addr);
  await alice.waitForSelector("#state.connected");
  await bob.waitForSelector("#state.connected");
  serverDown = false;
  // A restarted server lost its history (new epochs): the pages say so.
  await alice.waitForSelector(".note.lost >> text=/some messages in .*inbox.* could not be recovered/");
  await bob.waitForSelector(".note.lost >> text=/some messages in .*inbox.* could not be recovered/");
  await send(alice, "bob", "back after the restart");
  await bob.waitForSelector(".msg >> text=back after the restart");
  await send(bob, "alice", "me too");
  await alice.waitForSelector(".msg[data-from=bob] >> text=me too");
  assert.equal(await shown(bob, "back after the restart"), 1);
  await alice.screenshot({ path: shots + "/alice-after-restart.png" });
  step("after a server restart both pages reconnect, say what was lost, and chat again");

  // A kick through the API closes with 1008: the page does not come
  // straight back (that would undo the kick) and waits for Connect.
  assert.equal((await api("DELETE", "/users/alice/connections")).closed, 1);
  await alice.waitForSelector(".note >> text=Not reconnecting");
  assert.equal(await alice.textContent("#state"), "signed out");
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(await connections("alice"), 0, "alice stayed away");
  assert.equal(await alice.textContent("#state"), "signed out");
  await alice.click("#connect");
  await alice.waitForSelector("#state.connected");
  step("a kicked page stays signed out until Connect is pressed");

  // A reload of a signed-in page is a page load like the first.
  checkPageHeaders(await bob.reload());
  assert.equal(await bob.textContent("#state"), "signed out");
  step("a reload loads the page cleanly");
  step("screenshots saved to " + shots);
} finally {
  await browser.close();
  proxy.close();
  server.child.kill("SIGTERM");
}
