// The connection's life against a scripted socket (no server): what the
// client does when the network goes silent, when a sync answer comes late,
// when a token cannot be refreshed, and that close() leaves nothing
// running.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { connect } from "../dist/index.js";
import { closeAfter, eventually, sleep } from "./cluster.mjs";

const me = "00000000-0000-7000-8000-00000000000a";
const other = "00000000-0000-7000-8000-00000000000b";

/** A token the client can read (the scripted server never checks it). */
function token(seconds, sub = me) {
  const now = Math.floor(Date.now() / 1000);
  const body = Buffer.from(JSON.stringify({ sub, iat: now, exp: now + seconds })).toString("base64url");
  return `h.${body}.s`;
}

/** A WebSocket the test plays the server of. `dead`: close() never answers (the network is gone). */
function scripted({ dead = false } = {}) {
  const sockets = [];
  class Socket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.listeners = {};
      sockets.push(this);
    }
    addEventListener(type, listener) {
      (this.listeners[type] ??= []).push(listener);
    }
    send(data) {
      this.sent.push(JSON.parse(data));
    }
    close(code = 1005, reason = "") {
      if (this.readyState === 3) return;
      this.readyState = 3;
      if (!dead) setTimeout(() => this.fire("close", { code, reason }), 0);
    }
    open() {
      this.readyState = 1;
      this.fire("open", {});
    }
    fire(type, event) {
      for (const listener of this.listeners[type] ?? []) listener(event);
    }
    deliver(frame) {
      this.fire("message", { data: JSON.stringify(frame) });
    }
  }
  return { Socket, sockets };
}

const track = closeAfter(after);
const wire = (id, seq) => ({ type: "message", id, from: other, to: me, content: id, timestamp: "2026-12-07T00:00:00Z", seq });

test("a silent connection is given up after twice the heartbeat, and a new one opened", async () => {
  const { Socket, sockets } = scripted({ dead: true });
  const client = track(connect({ url: "http://ochat.test", token: token(3600), WebSocket: Socket, heartbeat: 100, backoff: { initial: 1, max: 1 } }));
  await eventually("a socket", () => sockets.length === 1);
  sockets[0].open();
  await eventually("a ping", () => sockets[0].sent.some((f) => f.type === "ping"), 1000);
  const states = [];
  client.on("state", (s) => states.push(s));
  await eventually("a second socket", () => sockets.length === 2, 2000);
  assert.deepEqual(states[0], { state: "offline", attempt: 0, code: 4000, reason: "no answer from the server" });
  await client.close();
});

test("a sync answered late and asked again hands each message over once", async () => {
  const { Socket, sockets } = scripted();
  const client = track(connect({ url: "http://ochat.test", token: token(3600), WebSocket: Socket, syncTimeout: 50 }));
  const handed = [];
  client.on("message", (m) => handed.push(m.id));
  await eventually("a socket", () => sockets.length === 1);
  const socket = sockets[0];
  socket.open();
  await eventually("asked twice", () => socket.sent.filter((f) => f.type === "sync").length === 2, 1000);
  const page = { type: "sync", messages: [{ ...wire("x", 1), type: undefined }, { ...wire("y", 2), type: undefined }], changes: [], has_more: false, cursor: 2 };
  socket.deliver(page);
  socket.deliver(page);
  socket.deliver(wire("y", 2));
  assert.deepEqual(handed, ["x", "y"]);
  await client.close();
});

test("a fixed token past its expiry closes the client without connecting", async () => {
  const { Socket, sockets } = scripted();
  const client = track(connect({ url: "http://ochat.test", token: token(-60), WebSocket: Socket }));
  const closed = new Promise((resolve) => client.on("state", (s) => s.state === "closed" && resolve(s)));
  assert.deepEqual(await closed, { state: "closed", attempt: 0, code: 1008, reason: "token expired" });
  assert.equal(sockets.length, 0);
  await assert.rejects(client.send({ to: other, content: "x" }), { code: "closed" });
});

test("a token function answering a token at its refresh time does not reconnect in a loop", async () => {
  const { Socket, sockets } = scripted();
  let calls = 0;
  const client = track(connect({
    url: "http://ochat.test",
    WebSocket: Socket,
    token: () => {
      calls += 1;
      return token(2); // within a minute of expiry from the start
    },
  }));
  await eventually("a socket", () => sockets.length === 1);
  sockets[0].open();
  await sleep(500);
  assert.equal(sockets.length, 1, "no reconnect before the server closes for the expired token");
  sockets[0].fire("close", { code: 1008, reason: "token expired: reconnect with a fresh token" });
  await eventually("a fresh token and socket", () => sockets.length === 2, 2000);
  assert.equal(calls, 2);
  await client.close();
});

test("close() stops every timer: nothing keeps the process alive", async () => {
  const { Socket, sockets } = scripted();
  const client = track(connect({ url: "http://ochat.test", token: () => token(3600), WebSocket: Socket, syncEvery: 1000, heartbeat: 1000 }));
  await eventually("a socket", () => sockets.length === 1);
  sockets[0].open();
  const sent = client.send({ to: other, content: "never acked" });
  sockets[0].deliver({ type: "error", code: "rate_limited", message: "slow down", client_id: (await eventually("sent", () => sockets[0].sent.find((f) => f.type === "message"))).client_id });
  await client.close();
  await assert.rejects(sent, { code: "closed" });
  await sleep(10);
  assert.deepEqual(process.getActiveResourcesInfo().filter((r) => r === "Timeout"), []);
});

test("what connect() and the client refuse, with the exact answer", async () => {
  const { Socket } = scripted();
  assert.throws(() => connect({ token: "t", WebSocket: Socket }), {
    name: "TypeError",
    message: "connect: `url` is required outside a browser",
  });
  // Node 20 has no WebSocket of its own (Node 22 has one).
  if (!globalThis.WebSocket) {
    assert.throws(() => connect({ url: "http://ochat.test", token: "t" }), {
      name: "TypeError",
      message: "connect: this platform has no WebSocket; pass one as `WebSocket`",
    });
  }
  const client = track(connect({ url: "http://ochat.test", token: token(3600), WebSocket: Socket }));
  assert.throws(() => client.userId, { code: "not_ready", message: "the client is not ready yet: await client.ready" });
  await client.ready;
  assert.equal(client.userId, me);
});

test("a REST answer that is not ochat's error body becomes http_<status>", async () => {
  const { Socket } = scripted();
  const fetch = async () => new Response("<html>bad gateway</html>", { status: 502, headers: { "content-type": "text/html" } });
  const client = track(connect({ url: "http://ochat.test", token: token(3600), WebSocket: Socket, fetch }));
  await assert.rejects(client.profile(), { name: "OchatError", code: "http_502", message: "HTTP 502", status: 502 });
});
