// Ten clients talk through the shipped nginx to two nodes sharing
// PostgreSQL and Redis. Mid-burst each node is killed in turn (SIGKILL),
// then started again: the clients on it reconnect through nginx to the
// other one, resend what was not acked and sync. Every message must be
// stored once and reach its receiver's app once, and its sender's too.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { connect } from "../dist/index.js";
import { closeAfter, eventually, mint, nginx, nodes, sleep } from "./cluster.mjs";

const CLIENTS = 10;
const EACH = 100;

let cluster;
let balancer;
const track = closeAfter(after);

before(async () => {
  cluster = await nodes(2);
  balancer = await nginx(cluster.list.map((node) => node.port));
});

after(() => {
  balancer?.stop();
  cluster?.stop();
});

test("two node kills mid-burst: 1,000 messages over 10 clients, each stored once and handed to each app once", async () => {
  const users = Array.from({ length: CLIENTS }, () => crypto.randomUUID());
  const clients = users.map((id) =>
    track(connect({ url: balancer.url, token: () => mint(id), WebSocket, backoff: { initial: 100, max: 1000 } })),
  );
  // Every message event, counted by id, per client.
  const seen = clients.map(() => new Map());
  clients.forEach((client, i) => client.on("message", (m) => seen[i].set(m.id, (seen[i].get(m.id) ?? 0) + 1)));
  // How often each client lost its connection.
  const drops = clients.map(() => 0);
  clients.forEach((client, i) => client.on("state", (s) => { if (s.state === "offline") drops[i] += 1; }));
  const synced = clients.map((client) => new Promise((resolve) => client.on("synced", resolve)));
  await Promise.all(synced);

  // Ten rounds: every client sends ten at once, then a pause. Right after
  // the third round's sends go out, the node of half the clients is killed;
  // after the seventh, the other node, which by then holds all ten.
  const sends = [];
  const kills = [];
  let restarting = Promise.resolve();
  const pending = () => clients.reduce((n, c) => n + c.pending, 0);
  for (let round = 0; round < EACH / 10; round++) {
    clients.forEach((client, i) => {
      for (let k = 0; k < 10; k++) {
        const content = `from ${i} number ${round * 10 + k}`;
        sends.push(client.send({ to: users[(i + 1) % CLIENTS], content }).then((m) => ({ i, m })));
      }
    });
    const victim = { 2: cluster.list[0], 6: cluster.list[1] }[round];
    if (victim) {
      await restarting;
      // Once the frames are on their way, before any ack is back.
      await new Promise((resolve) => setImmediate(resolve));
      kills.push({ round, pending: pending() });
      victim.kill();
      restarting = sleep(300).then(() => victim.start());
    }
    await sleep(400);
  }
  await restarting;
  const stored = await Promise.all(sends);

  console.log(`kills: ${JSON.stringify(kills)}`);
  for (const kill of kills) assert.ok(kill.pending > 0, `a kill came with sends unacked: ${JSON.stringify(kills)}`);
  assert.ok(drops.every((n) => n >= 1) && drops.some((n) => n >= 2), `every client lost its node, some twice: ${drops}`);
  const ids = new Set(stored.map(({ m }) => m.id));
  assert.equal(ids.size, CLIENTS * EACH, "every send resolved with its own stored message");

  // Each app gets its own 100 and the 100 sent to it, each once.
  await eventually("every message at its receiver", () => seen.every((s) => s.size === 2 * EACH), 60_000);
  clients.forEach((client) => client.sync());
  await sleep(1500);
  for (const [i, counts] of seen.entries()) {
    const twice = [...counts].filter(([, n]) => n !== 1);
    assert.deepEqual(twice, [], `client ${i} was handed these more than once`);
    const mine = stored.filter((s) => s.i === i).map((s) => s.m.id);
    const theirs = stored.filter((s) => s.i === (i + CLIENTS - 1) % CLIENTS).map((s) => s.m.id);
    assert.deepEqual(new Set(counts.keys()), new Set([...mine, ...theirs]));
  }

  const [rows, distinct] = cluster.db.query("SELECT count(*), count(DISTINCT content) FROM messages").split("|").map(Number);
  assert.deepEqual({ rows, distinct }, { rows: CLIENTS * EACH, distinct: CLIENTS * EACH }, "each send stored exactly once");
  await Promise.all(clients.map((c) => c.close()));
});
