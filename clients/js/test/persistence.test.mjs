// A client restarted on the same file storage picks up where it stopped: a
// send made while the node was down and never acked is resent (stored
// once), and nothing the app had is handed over again.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { connect, fileStorage } from "../dist/node.js";
import { closeAfter, embeddedNodeFor, eventually, mint } from "./cluster.mjs";

const embedded = embeddedNodeFor({ before, after });

const track = closeAfter(after);

test("a restarted client resends its saved outbox once and hands over nothing twice", async () => {
  const alice = crypto.randomUUID();
  const bob = crypto.randomUUID();
  const file = join(embedded.dir, "alice.json");
  const open = () => {
    const client = track(connect({ url: embedded.url, WebSocket, token: () => mint(alice), storage: fileStorage(file), backoff: { initial: 50, max: 200 } }));
    const got = [];
    client.on("message", (m) => got.push(m.content));
    return { client, got };
  };
  const bobClient = track(connect({ url: embedded.url, WebSocket, token: () => mint(bob) }));
  await eventually("Bob online", () => bobClient.state === "online");
  const bobGot = [];
  bobClient.on("message", (m) => bobGot.push(m.content));

  const first = open();
  await first.client.send({ to: bob, content: "before" });
  await bobClient.send({ to: alice, content: "reply" });
  await eventually("Alice has both", () => first.got.length === 2);

  // The node goes down; Alice writes anyway, then her app quits.
  embedded.node.kill();
  await eventually("Alice offline", () => first.client.state === "offline");
  const unsent = first.client.send({ to: bob, content: "while down" });
  await eventually("the send saved", () => JSON.parse(readFileSync(file, "utf8")).outbox.length === 1);
  await first.client.close();
  await assert.rejects(unsent, { code: "closed" });

  await embedded.node.start();
  const second = open();
  await eventually("the saved send stored and handed over", () => second.got.includes("while down"));
  await eventually("Bob has it", () => bobGot.includes("while down"));
  await second.client.sync();
  await new Promise((resolve) => second.client.on("synced", resolve));
  assert.deepEqual(second.got, ["while down"], "what the first run handed over is not handed over again");
  assert.deepEqual(bobGot.filter((c) => c === "while down"), ["while down"]);
  assert.equal(JSON.parse(readFileSync(file, "utf8")).outbox.length, 0);
  await Promise.all([second.client.close(), bobClient.close()]);
});
