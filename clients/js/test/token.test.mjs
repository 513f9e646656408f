// Tokens that expire: a token function is called again before expiry (the
// client reconnects with the fresh token), or, with proactive refresh off,
// after the server closes the connection for the expired one. A fixed
// token that expires ends the client. Nothing sent meanwhile is lost.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { connect } from "../dist/index.js";
import { closeAfter, embeddedNodeFor, eventually, mint, sleep } from "./cluster.mjs";

const embedded = embeddedNodeFor({ before, after });

const track = closeAfter(after);

/** A client whose token function mints `seconds`-long tokens, counting calls and closes. */
function client(id, seconds, options = {}) {
  const log = { tokens: 0, closes: [] };
  const c = track(connect({
    url: embedded.url,
    WebSocket,
    token: () => {
      log.tokens += 1;
      return mint(id, seconds);
    },
    backoff: { initial: 50, max: 500 },
    ...options,
  }));
  c.on("state", (s) => {
    if (s.code) log.closes.push(s.code);
  });
  return { c, log };
}

/** Alice sends to Bob every 200 ms for `ms`; answers what Bob's app got and what was stored. */
async function talk(alice, bob, ms) {
  const got = new Map();
  bob.c.on("message", (m) => got.set(m.content, (got.get(m.content) ?? 0) + 1));
  const sends = [];
  for (let k = 0; k < ms / 200; k++) {
    sends.push(alice.c.send({ to: bob.c.userId, content: `tick ${k}` }));
    await sleep(200);
  }
  const stored = await Promise.all(sends);
  await eventually("Bob has every tick", () => got.size === stored.length);
  return { got, stored };
}

test("a token function is called again before each token expires, with no close for an expired token", async () => {
  const alice = client(crypto.randomUUID(), 4);
  const bob = client(crypto.randomUUID(), 3600);
  await eventually("both online", () => alice.c.state === "online" && bob.c.state === "online");
  const { got, stored } = await talk(alice, bob, 9000);
  assert.ok(alice.log.tokens >= 3, `4 s tokens over 9 s: fetched ${alice.log.tokens} times`);
  assert.ok(!alice.log.closes.includes(1008), `never closed for an expired token: ${alice.log.closes}`);
  assert.equal(new Set(stored.map((m) => m.id)).size, stored.length);
  assert.ok([...got.values()].every((n) => n === 1));
  await Promise.all([alice.c.close(), bob.c.close()]);
});

test("with proactive refresh off, the server's close for an expired token fetches a new one and nothing is lost", async () => {
  const alice = client(crypto.randomUUID(), 3, { refreshBefore: 0 });
  const bob = client(crypto.randomUUID(), 3600);
  await eventually("both online", () => alice.c.state === "online" && bob.c.state === "online");
  const { got } = await talk(alice, bob, 5000);
  assert.ok(alice.log.closes.includes(1008), `closed for the expired token: ${alice.log.closes}`);
  assert.ok(alice.log.tokens >= 2);
  assert.ok([...got.values()].every((n) => n === 1));
  assert.equal(alice.c.state, "online");
  await Promise.all([alice.c.close(), bob.c.close()]);
});

test("a fixed token that expires closes the client, and a send waiting for its ack is rejected", async () => {
  const id = crypto.randomUUID();
  const c = track(connect({ url: embedded.url, WebSocket, token: mint(id, 2) }));
  await eventually("online", () => c.state === "online");
  await eventually("closed at expiry", () => c.state === "closed", 10_000);
  await assert.rejects(c.send({ to: crypto.randomUUID(), content: "too late" }), { code: "closed" });
  await c.close();
});
