// The REST methods against a real node: profiles and finding people by
// name, blocking, groups and roles, counts, read marks, presence.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { connect } from "../dist/index.js";
import { closeAfter, embeddedNodeFor, eventually, mint } from "./cluster.mjs";

const embedded = embeddedNodeFor({ before, after });

const track = closeAfter(after);

async function people(...names) {
  const clients = names.map(() => track(connect({ url: embedded.url, WebSocket, token: () => mint(crypto.randomUUID()) })));
  await eventually("online", () => clients.every((c) => c.state === "online"));
  const tag = crypto.randomUUID().slice(0, 6);
  for (const [i, c] of clients.entries()) await c.updateProfile({ username: `${names[i]}-${tag}` });
  return { clients, tag };
}

test("profiles, finding people by name, blocking and unblocking", async () => {
  const { clients: [alice, bob], tag } = await people("alice", "bob");
  assert.equal((await alice.profile()).username, `alice-${tag}`);
  const found = await bob.searchUsers(`ALICE-${tag}`);
  assert.deepEqual(found.users.map((u) => u.id), [alice.userId]);
  // Someone's presence shows once they have talked to you.
  assert.equal(await bob.isOnline(alice.userId), false);

  assert.deepEqual(await alice.block(bob.userId), { blocked: true, user_id: bob.userId });
  assert.deepEqual((await alice.blocks()).blocks.map((b) => b.user_id), [bob.userId]);
  assert.deepEqual((await bob.searchUsers(`alice-${tag}`)).users, [], "never listed to someone they blocked");
  // Told nothing more than about someone who does not exist.
  await assert.rejects(bob.send({ to: alice.userId, content: "hi?" }), {
    code: "recipient_not_found",
    message: `no user with id ${alice.userId}`,
  });
  assert.deepEqual(await alice.unblock(bob.userId), { blocked: false, user_id: bob.userId });
  const sent = await bob.send({ to: alice.userId, content: "hi again" });
  assert.equal(sent.content, "hi again");
  await alice.send({ to: bob.userId, content: "hello" });
  assert.equal(await bob.isOnline(alice.userId), true);
});

test("groups: created, renamed, roles, members removed, each heard live", async () => {
  const { clients: [erin, frank, grace] } = await people("erin", "frank", "grace");
  const heard = [];
  frank.on("group", (event) => heard.push(event.type));
  const group = await erin.createGroup("Trip", [frank.userId, grace.userId]);
  assert.equal(group.member_count, 3);
  const promoted = await erin.setRole(group.id, frank.userId, "admin");
  assert.equal(promoted.members.find((m) => m.user_id === frank.userId).role, "admin");
  assert.equal((await erin.renameGroup(group.id, "Trip 2")).title, "Trip 2");
  await frank.removeMember(group.id, grace.userId);
  assert.equal((await erin.group(group.id)).member_count, 2);
  await eventually("frank heard each", () => heard.includes("conversation_created") && heard.includes("conversation_updated") && heard.includes("member_removed"));
  const message = await erin.send({ conversationId: group.id, content: "train or car?" });
  await eventually("frank has it", () => frank.message(message.id));
  const page = await frank.history({ conversationId: group.id });
  assert.deepEqual(page.messages.map((m) => m.content), ["train or car?"]);
});

test("counts and read marks", async () => {
  const { clients: [hana, ivan] } = await people("hana", "ivan");
  const one = await hana.send({ to: ivan.userId, content: "one" });
  const two = await hana.send({ to: ivan.userId, content: "two" });
  assert.deepEqual(await ivan.stats(), { conversations: 1, total_received: 2, total_sent: 0, unread: 2 });
  const read = [];
  hana.on("read", (r) => read.push(r.message_id));
  assert.deepEqual(await ivan.markManyRead([one.id, two.id]), { updated: 2 });
  assert.equal((await ivan.stats()).unread, 0);
  await eventually("hana heard both", () => read.length === 2);
  assert.equal(hana.message(one.id).is_read, true);
});
