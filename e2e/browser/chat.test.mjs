// The chat page at GET / in a real (headless) Chromium, against a real
// wshub-server started by `cargo xtask browser`. Two pages signed in as two
// users chat both ways, a group push made through the server API appears as
// a card, and a forbidden action shows an error in words. Screenshots go to
// target/browser/ for a person to look at.
//
// The script starts the server itself (so it can restart it and watch the
// page reconnect). Environment (set by xtask): WSHUB_SERVER (binary),
// WSHUB_SECRET, ALICE_TOKEN, BOB_TOKEN, API_KEY, SHOTS (directory),
// CHROMIUM (executable).

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

// Starts wshub-server on `listen`; resolves with the process and its address
// once it logs "listening on ADDR".
function startServer(listen) {
  const child = spawn(process.env.WSHUB_SERVER, [
    "--listen", listen, "--secret", process.env.WSHUB_SECRET,
    "--api-key", process.env.API_KEY, "--public-group", "lobby",
  ], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: "info" } });
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stderr });
    lines.on("line", (line) => {
      const m = line.match(/listening on (\S+)/);
      if (m) resolve({ child, addr: m[1] });
    });
    child.on("exit", (code) => reject(new Error("server exited early: " + code)));
  });
}

function stopServer(child) {
  return new Promise((resolve) => { child.on("exit", resolve); child.kill("SIGTERM"); });
}

let server = await startServer("127.0.0.1:0");
const base = "http://" + server.addr;
const shots = process.env.SHOTS;
mkdirSync(shots, { recursive: true });
const timeout = 15000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

async function signIn(token, viewport) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  await page.goto(base + "/");
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

function step(name) { console.log("  ok  " + name); }

try {
  const alice = await signIn(process.env.ALICE_TOKEN, { width: 1200, height: 800 });
  const bob = await signIn(process.env.BOB_TOKEN, { width: 390, height: 844 }); // a phone
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

  await alice.screenshot({ path: shots + "/alice-desktop.png", fullPage: true });
  await bob.screenshot({ path: shots + "/bob-phone.png", fullPage: true });

  // The server restarts: the page says so, backs off, and reconnects.
  await stopServer(server.child);
  await alice.waitForSelector(".note >> text=the server is going away");
  await alice.waitForSelector("#state.reconnecting");
  await alice.screenshot({ path: shots + "/alice-reconnecting.png" });
  server = await startServer(server.addr);
  await alice.waitForSelector("#state.connected");
  await send(alice, "bob", "back after the restart");
  await bob.waitForSelector(".msg >> text=back after the restart");
  step("after a server restart both pages reconnect and chat again");
  step("screenshots saved to " + shots);
} finally {
  await browser.close();
  server.child.kill("SIGTERM");
}
