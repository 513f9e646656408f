// What the server refuses reaches the app as an OchatError with the
// server's exact code and message; what it refuses only for now (over
// budget) is sent again with the same client_id until stored, once.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { connect } from "../dist/index.js";
import { closeAfter, embeddedNodeFor, eventually, mint } from "./cluster.mjs";

const embedded = embeddedNodeFor({ before, after }, { RATE_LIMIT_PER_SEC: "20", RATE_LIMIT_BURST: "5" });

const track = closeAfter(after);
const open = (id, options = {}) => track(connect({ url: embedded.url, WebSocket, token: () => mint(id), ...options }));
// Online: the node has met the user (a send to someone it never met is refused).
const online = (...clients) => eventually("online", () => clients.every((c) => c.state === "online"));

test("sends over the budget are retried until each is stored once", async () => {
  const alice = open(crypto.randomUUID());
  const bob = open(crypto.randomUUID());
  await online(alice, bob);
  const refused = [];
  alice.on("frame", (f) => f.type === "error" && refused.push(f.code));
  const got = new Map();
  bob.on("message", (m) => got.set(m.content, (got.get(m.content) ?? 0) + 1));
  const stored = await Promise.all(Array.from({ length: 30 }, (_, k) => alice.send({ to: bob.userId, content: `n${k}` })));
  assert.ok(refused.includes("rate_limited"), `the budget refused some: ${refused}`);
  assert.equal(new Set(stored.map((m) => m.id)).size, 30);
  await eventually("Bob has all 30", () => got.size === 30);
  assert.ok([...got.values()].every((n) => n === 1));
  const history = await bob.history({ withUser: alice.userId, limit: 100 });
  assert.equal(history.messages.length, 30, "stored once each");
  await Promise.all([alice.close(), bob.close()]);
});

test("a send refused for good rejects with the server's code and message, and leaves the outbox", async () => {
  const alice = open(crypto.randomUUID());
  const bob = open(crypto.randomUUID());
  await online(alice, bob);
  await assert.rejects(alice.send({ to: bob.userId, content: "   " }), { name: "OchatError", code: "content_empty", message: "content is empty" });
  await assert.rejects(alice.send({ to: alice.userId, content: "me" }), { code: "invalid_field", message: "cannot send a message to yourself" });
  await assert.rejects(alice.send({ content: "nowhere" }), {
    code: "invalid_field",
    message: "give exactly one of `to` (a user) and `conversationId` (a group)",
  });
  const missing = crypto.randomUUID();
  await assert.rejects(alice.edit(missing, "new"), { code: "not_found", message: `no message with id ${missing}` });
  assert.equal(alice.pending, 0);
  await Promise.all([alice.close(), bob.close()]);
});

test("a REST call answered 401 fetches a fresh token and is made again", async () => {
  const id = crypto.randomUUID();
  let calls = 0;
  const client = track(connect({
    url: embedded.url,
    WebSocket,
    // The first token is signed with another secret: the node refuses it.
    token: () => (++calls === 1 ? mint(id).replace(/\.[^.]+$/, ".bad-signature") : mint(id)),
  }));
  const profile = await client.profile();
  assert.equal(profile.id, id);
  // The socket, refused too, may have fetched one more.
  assert.ok(calls >= 2);
  await assert.rejects(client.user("not-a-uuid"), {
    code: "invalid_field",
    status: 400,
    message: "Invalid URL: Cannot parse `id` with value `not-a-uuid`: UUID parsing failed: invalid character: found `n` at 0",
  });
  await client.close();
});
