// People chat through ochat's browser client (two windows one to one, three
// in a group), in headless Chromium,
// against a real node on the embedded default (started here).
//
// Needs: the debug binary (`cargo build`), /usr/bin/chromium, and
// `npm ci` in this folder. ./scripts/test takes care of all three.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

import { freePort } from "../../clients/js/test/cluster.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const binary = process.env.OCHAT_BIN || join(root, "target", "debug", "ochat");
// The README's picture is refreshed with UPDATE_SCREENSHOT=1; ordinary runs
// leave the working tree alone.
const screenshot = process.env.UPDATE_SCREENSHOT === "1"
  ? join(root, "docs", "screenshot.png")
  : join(root, "target", "browser", "screenshot.png");

let server;
let browser;
let workdir;
let base;
let port;

async function waitReady(url) {
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(url);
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} never became ready`);
}

async function startServer() {
  // The embedded default, exactly as `cargo run` starts it: no database URL,
  // no auth configured (development sign-in), loopback only.
  server = spawn(binary, ["serve"], {
    cwd: workdir,
    env: { PATH: process.env.PATH, SERVER_PORT: String(port), METRICS_PORT: "off", RUST_LOG: "warn" },
    stdio: ["ignore", "inherit", "inherit"],
  });
  await waitReady(`${base}/api/v1/readyz`);
}

async function stopServer() {
  const exited = new Promise((resolve) => server.once("exit", resolve));
  server.kill("SIGTERM");
  await exited;
}

before(async () => {
  workdir = mkdtempSync(join(tmpdir(), "ochat-browser-"));
  port = await freePort();
  base = `http://127.0.0.1:${port}`;
  await startServer();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) server.kill("SIGTERM");
  if (workdir) rmSync(workdir, { recursive: true, force: true });
});

// Opening a conversation ends by focusing the composer: its history is
// loaded and shown by then, so what the test sends next lands on it.
async function opened(page) {
  await page.waitForFunction(() => document.activeElement && document.activeElement.id === "composer-input");
}

async function signIn(name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  const page = await context.newPage();
  const external = [];
  page.on("request", (request) => {
    if (!request.url().startsWith(base) && !request.url().startsWith(base.replace("http", "ws"))) {
      external.push(request.url());
    }
  });
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(message.text());
  });
  await page.goto(base + "/");
  await page.fill("#dev-name", name);
  await page.click("#dev-submit");
  await page.waitForSelector("#status.online");
  const id = (await page.textContent("#my-id")).trim();
  return { context, page, id, external, problems };
}

test("two windows chat: messages both ways, typing, read receipts, presence", async () => {
  const alice = await signIn("alice");
  const bob = await signIn("bob");

  // Alice finds Bob by the start of his name (any case) and writes.
  await alice.page.fill("#new-chat-id", "BO");
  await alice.page.click("#new-chat button");
  await alice.page.click(`#people-results li[data-user="${bob.id}"]`);
  await opened(alice.page);
  await alice.page.fill("#composer-input", "Hi Bob, lunch at noon?");
  await alice.page.click("#send");
  await alice.page.waitForSelector("#messages li.mine >> text=Hi Bob, lunch at noon?");

  // Bob sees the conversation with one unread message, opens it.
  await bob.page.waitForSelector(`#conversations li[data-user="${alice.id}"] .unread >> text=1`);
  await bob.page.click(`#conversations li[data-user="${alice.id}"]`);
  await bob.page.waitForSelector("#messages li >> text=Hi Bob, lunch at noon?");

  // Opening it marks it read: Alice sees the receipt.
  await alice.page.waitForSelector("#messages li.mine .meta >> text=read");

  // Bob types; Alice sees it.
  await bob.page.type("#composer-input", "Sounds good");
  await alice.page.waitForSelector("#typing:not([hidden])");
  await bob.page.click("#send");
  await alice.page.waitForSelector("#messages li:not(.mine) >> text=Sounds good");
  await alice.page.waitForSelector("#typing", { state: "hidden" });

  // Presence: both online; Bob's dot is green for Alice.
  await alice.page.waitForSelector(`#conversations li[data-user="${bob.id}"] .dot.online`);

  // Search finds Alice's own message.
  await alice.page.fill("#search-input", "lunch");
  await alice.page.click("#search-form button");
  await alice.page.waitForSelector("#search-results li >> text=lunch at noon");
  await alice.page.click("#search-results li");

  mkdirSync(dirname(screenshot), { recursive: true });
  await alice.page.screenshot({ path: screenshot });

  // Bob leaves: Alice sees him go offline.
  await bob.context.close();
  await alice.page.waitForSelector(`#conversations li[data-user="${bob.id}"] .dot:not(.online)`);

  assert.deepEqual(alice.external, [], "no third-party requests");
  assert.deepEqual(bob.external, [], "no third-party requests");
  assert.deepEqual(alice.problems, [], "no script errors or CSP violations");
  await alice.context.close();
});

test("a dropped connection shows reconnecting, catches up with sync and sends what was written meanwhile", async () => {
  const carol = await signIn("carol");
  const dave = await signIn("dave");
  await carol.page.fill("#new-chat-id", dave.id);
  await carol.page.click("#new-chat button");
  await opened(carol.page);
  await carol.page.fill("#composer-input", "first");
  await carol.page.click("#send");
  await dave.page.waitForSelector(`#conversations li[data-user="${carol.id}"]`);

  // Dave's network will refuse WebSockets until we let it through again.
  let blocked = true;
  await dave.page.routeWebSocket(/\/api\/v1\/ws/, (ws) => {
    if (blocked) ws.close({ code: 1011, reason: "network down" });
    else ws.connectToServer();
  });

  // The node restarts (as in a deploy): every session is closed with 1001.
  await stopServer();
  await startServer();
  await carol.page.waitForSelector("#status.online", { timeout: 30000 });
  await dave.page.waitForSelector("#status >> text=reconnecting…");
  await dave.page.waitForSelector("#banner >> text=reconnecting");

  await carol.page.fill("#composer-input", "sent while you were away");
  await carol.page.click("#send");
  await carol.page.waitForSelector("#messages li.mine >> text=sent while you were away");

  // Dave writes while offline: the client library keeps it in its outbox
  // and sends it once the connection is back; it shows once stored.
  await dave.page.click(`#conversations li[data-user="${carol.id}"]`);
  await opened(dave.page);
  await dave.page.fill("#composer-input", "written while offline");
  await dave.page.click("#send");

  blocked = false;
  await dave.page.waitForSelector("#status.online", { timeout: 30000 });
  await dave.page.click(`#conversations li[data-user="${carol.id}"]`);
  await dave.page.waitForSelector("#messages li >> text=sent while you were away");
  await dave.page.waitForSelector("#messages li.mine >> text=written while offline");
  await carol.page.waitForSelector("#messages li:not(.mine) >> text=written while offline");
  assert.equal(await carol.page.locator("#messages li >> text=written while offline").count(), 1);
  await carol.context.close();
  await dave.context.close();
});

test("three windows in a group: created live, messages, typing, who read what, unread counts", async () => {
  const erin = await signIn("erin");
  const frank = await signIn("frank");
  const grace = await signIn("grace");

  // Erin creates a group with Frank and Grace by their ids.
  await erin.page.fill("#new-group-title", "Trip");
  await erin.page.fill("#new-group-members", `${frank.id}, ${grace.id}`);
  await erin.page.click("#new-group-submit");
  await erin.page.waitForSelector("#peer-name >> text=Trip");
  await erin.page.waitForSelector("#members >> text=3 members");

  // The others see it appear without reloading.
  const group = "#conversations li[data-group]";
  await frank.page.waitForSelector(`${group} >> text=Trip`);
  await grace.page.waitForSelector(`${group} >> text=Trip`);

  // Erin writes. Grace, whose group is not open, gets an unread count.
  await erin.page.fill("#composer-input", "Train or car?");
  await erin.page.click("#send");
  await erin.page.waitForSelector("#messages li.mine >> text=Train or car?");
  await grace.page.waitForSelector(`${group} .unread >> text=1`);

  // Frank opens the group: the message names its sender, and Erin sees
  // that Frank read it.
  await frank.page.click(group);
  await frank.page.waitForSelector("#messages li >> text=Train or car?");
  await frank.page.waitForSelector("#messages li .from >> text=erin");
  await erin.page.waitForSelector("#messages li.mine .meta >> text=read by frank");

  // Frank types; Erin sees who is typing. Then he answers.
  await frank.page.type("#composer-input", "Train!");
  await erin.page.waitForSelector("#typing >> text=frank is typing");
  await frank.page.click("#send");
  await erin.page.waitForSelector("#messages li:not(.mine) >> text=Train!");

  // Grace catches up by opening it: both messages; Frank sees she read his.
  await grace.page.click(group);
  await grace.page.waitForSelector("#messages li >> text=Train or car?");
  await grace.page.waitForSelector("#messages li >> text=Train!");
  await frank.page.waitForSelector("#messages li.mine .meta >> text=grace");
  await erin.page.waitForSelector("#messages li.mine .meta >> text=grace");

  for (const window of [erin, frank, grace]) {
    assert.deepEqual(window.external, [], "no third-party requests");
    assert.deepEqual(window.problems, [], "no script errors or CSP violations");
    await window.context.close();
  }
});

test("a message's menu: reply with a quote, react, edit, delete for everyone", async () => {
  const hana = await signIn("hana");
  const ivan = await signIn("ivan");
  await hana.page.fill("#new-chat-id", ivan.id);
  await hana.page.click("#new-chat button");
  await opened(hana.page);
  await hana.page.fill("#composer-input", "Movie tonight?");
  await hana.page.click("#send");
  await hana.page.waitForSelector("#messages li.mine >> text=Movie tonight?");
  await ivan.page.click(`#conversations li[data-user="${hana.id}"]`);
  const question = "#messages li:has-text('Movie tonight?')";
  await ivan.page.waitForSelector(question);

  // Ivan answers that message: Hana sees his reply quoting it.
  await ivan.page.hover(question);
  await ivan.page.click(`${question} .menu-reply`);
  await ivan.page.waitForSelector("#composing >> text=Replying to hana");
  await ivan.page.fill("#composer-input", "Which one?");
  await ivan.page.click("#send");
  await hana.page.waitForSelector("#messages li:has-text('Which one?') .quote >> text=Movie tonight?");

  // Ivan reacts; Hana sees the count, Ivan sees his own highlighted.
  await ivan.page.hover(question);
  await ivan.page.click(`${question} .menu-react-👍`);
  await hana.page.waitForSelector(`${question} .reaction >> text=👍 1`);
  await ivan.page.waitForSelector(`${question} .reaction.me >> text=👍 1`);

  // Hana edits her message: Ivan sees the new text marked edited.
  await hana.page.hover(question);
  await hana.page.click(`${question} .menu-edit`);
  await hana.page.fill("#composer-input", "Movie tomorrow?");
  await hana.page.click("#send");
  const edited = "#messages li:has-text('Movie tomorrow?')";
  await ivan.page.waitForSelector(`${edited} .meta >> text=(edited)`);
  await ivan.page.waitForSelector(`${edited} .reaction >> text=👍 1`);

  // And deletes it for everyone: a tombstone on both sides, and the quote
  // in Ivan's reply says so.
  await hana.page.hover(edited);
  await hana.page.click(`${edited} .menu-delete`);
  for (const window of [hana, ivan]) {
    await window.page.waitForSelector("#messages li.deleted >> text=message deleted");
    await window.page.waitForSelector(`#messages li >> text=Movie tomorrow?`, { state: "detached" });
  }
  await ivan.page.waitForSelector("#messages li:has-text('Which one?') .quote >> text=message deleted");

  for (const window of [hana, ivan]) {
    assert.deepEqual(window.external, [], "no third-party requests");
    assert.deepEqual(window.problems, [], "no script errors or CSP violations");
    await window.context.close();
  }
});

test("attachments: a picture shows inline, a file is a link, both across two windows", async () => {
  const jade = await signIn("jade");
  const kim = await signIn("kim");
  await jade.page.fill("#new-chat-id", kim.id);
  await jade.page.click("#new-chat button");
  await opened(jade.page);

  // A real 1×1 PNG, and a small PDF.
  const png = Buffer.from(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==",
    "base64",
  );
  await jade.page.setInputFiles("#attach-input", { name: "dot.png", mimeType: "image/png", buffer: png });
  await jade.page.waitForSelector("#messages li.mine img.attachment");
  await jade.page.setInputFiles("#attach-input", {
    name: "report.pdf", mimeType: "application/pdf", buffer: Buffer.from("%PDF-1.4\n% a test\n"),
  });
  await jade.page.waitForSelector("#messages li.mine a.file >> text=report.pdf");

  await kim.page.click(`#conversations li[data-user="${jade.id}"]`);
  await kim.page.waitForSelector("#messages li a.file >> text=report.pdf");
  // The picture loaded from its signed URL: the browser decoded it.
  await kim.page.waitForFunction(() => {
    const img = document.querySelector("#messages li img.attachment");
    return img && img.complete && img.naturalWidth === 1;
  });

  for (const window of [jade, kim]) {
    assert.deepEqual(window.external, [], "no third-party requests");
    assert.deepEqual(window.problems, [], "no script errors or CSP violations");
    await window.context.close();
  }
});
