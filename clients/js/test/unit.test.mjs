// The client's own rules, without a server: backoff, token timing, the
// feed's exactly-once bookkeeping, the outbox's bound, saved state.
import assert from "node:assert/strict";
import { test } from "node:test";

import { backoffDelay, Feed, parseState, refreshAt } from "../dist/index.js";
import { Outbox } from "../dist/outbox.js";

const me = "00000000-0000-7000-8000-000000000001";
const other = "00000000-0000-7000-8000-000000000002";

function message(id, seq) {
  return {
    id, from: other, to: me, conversation_id: null, content: `m${id}`, timestamp: "2026-12-07T00:00:00Z", seq,
    reply_to: null, edited_at: null, deleted_at: null, attachments: [], reactions: [], is_read: false,
  };
}

test("backoff: full jitter below a doubling ceiling, capped", () => {
  assert.equal(backoffDelay(0, { initial: 100, max: 1000 }, () => 0.999), 99);
  assert.equal(backoffDelay(3, { initial: 100, max: 1000 }, () => 0.999), 799);
  assert.equal(backoffDelay(4, { initial: 100, max: 1000 }, () => 0.999), 999);
  assert.equal(backoffDelay(60, { initial: 100, max: 1000 }, () => 0.5), 500);
  assert.equal(backoffDelay(5, {}, () => 0), 0);
});

test("token refresh: a minute ahead, but never past three quarters of its life", () => {
  const token = (claims) => `h.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.s`;
  const now = 1_000_000_000_000;
  const s = now / 1000;
  assert.equal(refreshAt(token({ iat: s, exp: s + 3600 }), 60_000, now), now + 3_540_000);
  assert.equal(refreshAt(token({ iat: s, exp: s + 8 }), 60_000, now), now + 6_000);
  assert.equal(refreshAt(token({ iat: s - 100, exp: s - 1 }), 60_000, now), now);
  assert.equal(refreshAt(token({ sub: "x" }), 60_000, now), null);
  assert.equal(refreshAt("not a jwt", 60_000, now), null);
});

test("feed: a message live then in a sync page (and the reverse) reaches the app once", () => {
  const feed = new Feed(me);
  const a = message("a", 1);
  assert.equal(feed.takeMessage(a), a);
  assert.equal(feed.takeMessage(message("a", 1)), null, "a repeated live frame");
  assert.equal(feed.takeMessage(message("a", 1)), null, "the page holding it");
  assert.ok(feed.takeMessage(message("b", 2)));
  feed.advance(2);
  assert.equal(feed.takeMessage(message("b", 2)), null, "a late live frame below the cursor");
  assert.ok(feed.takeMessage(message("c", 3)));
  assert.deepEqual(feed.seenEntries(), [["c", 3]], "only what is past the cursor is remembered");
});

test("feed: a page asked for twice hands nothing over the second time", () => {
  const feed = new Feed(me);
  const page = [message("p", 4), message("q", 5)];
  assert.equal(page.filter((m) => feed.takeMessage({ ...m })).length, 2);
  feed.advance(5);
  assert.equal(page.filter((m) => feed.takeMessage({ ...m })).length, 0);
  const react = { type: "reaction_added", conversation_id: "c", seq: 5, message_id: "p", user_id: other, emoji: "👍" };
  assert.equal(feed.takeChange(react), null, "a change the cursor passed");
});

test("feed: a message already held (from history) is handed over as the held object", () => {
  const feed = new Feed(me);
  const held = feed.keep({ ...message("h", undefined), reactions: [{ emoji: "👍", count: 2, me: false }] }, true);
  const handed = feed.takeMessage(message("h", 9));
  assert.equal(handed, held);
  assert.deepEqual(handed.reactions, [{ emoji: "👍", count: 2, me: false }]);
  assert.equal(handed.seq, 9);
});

test("feed: an acked message (no seq yet) is not handed over again when sync brings it", () => {
  const feed = new Feed(me);
  const own = { ...message("own", undefined), from: me, to: other };
  delete own.seq;
  assert.ok(feed.takeMessage(own));
  assert.equal(feed.takeMessage({ ...own, seq: 7 }), null);
  feed.advance(7);
  assert.deepEqual(feed.seenEntries(), []);
});

test("feed: changes apply once, whichever way they come, and a repeat changes nothing", () => {
  const feed = new Feed(me);
  feed.takeMessage(message("a", 1));
  const react = { type: "reaction_added", conversation_id: "c", seq: 2, message_id: "a", user_id: other, emoji: "👍" };
  assert.deepEqual(feed.takeChange(react).changed, true);
  assert.equal(feed.takeChange(react), null, "the same frame again");
  assert.equal(feed.takeChange(react, true), null, "the page holding it");
  assert.deepEqual(feed.message("a").reactions, [{ emoji: "👍", count: 1, me: false }]);
  const mine = { type: "reaction_added", message_id: "a", user_id: me, emoji: "👍" };
  assert.equal(feed.apply(mine).changed, true);
  assert.equal(feed.apply(mine).changed, false, "my own ack, then the event for it");
  assert.deepEqual(feed.message("a").reactions, [{ emoji: "👍", count: 2, me: true }]);
  const edit = { type: "message_updated", conversation_id: "c", seq: 3, id: "a", content: "new", edited_at: "2026-12-07T00:01:00Z" };
  assert.equal(feed.takeChange(edit).changed, true);
  assert.equal(feed.apply(edit).changed, false);
  const gone = { type: "message_deleted", conversation_id: "c", seq: 4, id: "a", deleted_at: "2026-12-07T00:02:00Z" };
  assert.equal(feed.takeChange(gone).changed, true);
  assert.equal(feed.message("a").content, "");
  assert.deepEqual(feed.message("a").reactions, []);
  const unknown = { ...edit, seq: 5, id: "zzz" };
  assert.deepEqual(feed.takeChange(unknown), { message: null, changed: false });
});

test("feed: the view and the remembered ids are bounded", () => {
  const feed = new Feed(me, { viewSize: 3, seenSize: 4 });
  for (let i = 1; i <= 6; i++) feed.takeMessage(message(`m${i}`, 100 + i));
  assert.equal(feed.message("m3"), undefined);
  assert.ok(feed.message("m4") && feed.message("m6"));
  assert.deepEqual(feed.seenEntries().map(([id]) => id), ["m3", "m4", "m5", "m6"]);
});

test("outbox: past its limit a send is refused with outbox_full", async () => {
  const outbox = new Outbox(2);
  const frame = (id) => ({ client_id: id, frame: { type: "message", to: other, content: "x", client_id: id } });
  const first = outbox.add(frame("1"));
  outbox.add(frame("2"));
  await assert.rejects(outbox.add(frame("3")), { code: "outbox_full", message: "2 sends are waiting for their ack already" });
  outbox.acked("1", { id: "a", timestamp: "t" });
  assert.deepEqual(await first, { id: "a", timestamp: "t" });
  assert.deepEqual(outbox.list().map((e) => e.client_id), ["2"]);
});

test("saved state: anything but a saved state is ignored", () => {
  assert.equal(parseState(null), null);
  assert.equal(parseState("{"), null);
  assert.equal(parseState(JSON.stringify({ version: 2, user: me, cursor: 1, seen: [], own: [], outbox: [] })), null);
  assert.equal(parseState(JSON.stringify({ version: 1, user: me, cursor: 1, seen: [], outbox: [] })), null);
  const good = { version: 1, user: me, cursor: 4, seen: [["a", 5]], own: ["b"], outbox: [] };
  assert.deepEqual(parseState(JSON.stringify(good)), good);
});

test("feed: an ack that comes after a sync page passed its message hands nothing over again", () => {
  const feed = new Feed(me);
  const own = { ...message("own", 3), from: me, to: other };
  assert.ok(feed.takeMessage(own), "the resend's connection synced first");
  feed.advance(3);
  const acked = { ...own };
  delete acked.seq;
  assert.equal(feed.takeMessage(acked), null);
  // After a restart from saved state too.
  const restarted = new Feed(me);
  restarted.restore(feed.cursor, feed.seenEntries(), feed.ownEntries());
  assert.equal(restarted.takeMessage({ ...acked }), null);
});
