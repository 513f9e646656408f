// ochat's browser client: screens over @ochat/client (served at /client/),
// which holds every rule of the protocol: reconnecting, resending until
// stored once, catching up after every reconnect, handing each message
// over once and applying edits, deletes and reactions. These files only
// show what the client hands them: this one signs in, lists conversations
// and listens; conversation.js shows the open conversation; ui.js holds
// what both read. All text from the server is set with textContent, never
// parsed as HTML.
import { connect, fromRest, webStorage } from "/client/index.js";

import { markVisibleRead, renderMessages, renderPeerHeader, stopComposing } from "/conversation.js";
import { $, destination, failed, isGroup, keyOf, myId, nameOf, setStatus, showError, state, titleOf } from "/ui.js";

// ---- sign in -------------------------------------------------------------

async function start() {
  const config = await fetch("/api/v1/dev/config").then((r) => (r.ok ? r.json() : { dev_signin: false })).catch(() => ({ dev_signin: false }));
  $("dev-form").hidden = !config.dev_signin;
  const saved = sessionStorage.getItem("ochat-token");
  if (saved) {
    await signIn(saved).catch(() => sessionStorage.removeItem("ochat-token"));
  }
}

$("dev-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const response = await fetch("/api/v1/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: $("dev-name").value }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    await signIn(body.token);
  } catch (e) {
    showError(`Sign-in failed: ${e.message}`);
  }
});

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await signIn($("token-input").value.trim());
  } catch (e) {
    showError(`Sign-in failed: ${e.message}`);
  }
});

async function signIn(token) {
  // The tab keeps the client's place (how far it caught up, what is not
  // sent yet) across reloads; another tab is another session with its own.
  const client = connect({ token, storage: webStorage("ochat-client", sessionStorage) });
  // Listening before anything else: what the client hands over from now
  // on (its state, the first sync) must not be missed.
  state.client = client;
  listen(client);
  try {
    state.me = await client.profile();
  } catch (e) {
    state.client = null;
    await client.close();
    throw e;
  }
  sessionStorage.setItem("ochat-token", token);
  $("signin").hidden = true;
  $("chat").hidden = false;
  $("my-name").textContent = state.me.username || state.me.email;
  $("my-id").textContent = myId();
  await loadConversations();
}

// ---- conversations ---------------------------------------------------------

// A group object from the server (REST or an event) into the list.
function rememberGroup(g) {
  for (const m of g.members) if (m.username) state.names.set(m.user_id, m.username);
  const known = state.conversations.get(g.id) || {};
  state.conversations.set(g.id, {
    kind: "group", conversation_id: g.id, title: g.title, members: g.members, member_count: g.member_count,
    created_at: g.created_at, last_message: known.last_message || null, unread_count: known.unread_count || 0,
  });
}

async function refreshGroup(id) {
  try {
    rememberGroup(await state.client.group(id));
  } catch (e) {
    failed()(e);
  }
}

async function loadConversations() {
  const { conversations } = await state.client.conversations({ limit: 100 });
  for (const c of conversations) {
    const last = c.last_message ? fromRest(c.last_message) : null;
    if (c.kind === "group") {
      const known = state.conversations.get(c.conversation_id) || {};
      state.conversations.set(c.conversation_id, { ...known, ...c, last_message: last });
      continue;
    }
    state.names.set(c.user_id, c.username || c.user_id.slice(0, 8));
    const known = state.conversations.get(c.user_id);
    state.conversations.set(c.user_id, { ...c, last_message: last, online: known ? known.online : false });
  }
  await Promise.all(conversations.map((c) => (c.kind === "group" ? refreshGroup(c.conversation_id) : refreshPeer(c.user_id))));
  renderConversations();
}

async function refreshPeer(id) {
  try {
    const profile = await state.client.user(id);
    state.names.set(id, profile.username || id.slice(0, 8));
    const c = state.conversations.get(id) || { user_id: id, unread_count: 0, last_message: null };
    c.online = profile.is_online;
    c.username = profile.username;
    state.conversations.set(id, c);
  } catch (e) {
    failed()(e);
  }
}

function renderConversations() {
  const list = $("conversations");
  list.replaceChildren();
  const when = (c) => (c.last_message ? c.last_message.timestamp : c.created_at || "");
  const sorted = [...state.conversations.entries()].sort(([, a], [, b]) => when(b).localeCompare(when(a)));
  for (const [key, c] of sorted) {
    const li = document.createElement("li");
    if (c.kind === "group") li.dataset.group = key;
    else li.dataset.user = key;
    if (key === state.peer) li.classList.add("active");
    const dot = document.createElement("span");
    dot.className = c.kind === "group" ? "dot group" : c.online ? "dot online" : "dot";
    const name = document.createElement("strong");
    name.textContent = titleOf(key);
    const preview = document.createElement("span");
    preview.className = "preview";
    preview.textContent = c.last_message ? c.last_message.content : "";
    li.append(dot, name, preview);
    if (c.unread_count > 0) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = String(c.unread_count);
      li.append(badge);
    }
    li.addEventListener("click", () => openConversation(key));
    list.append(li);
  }
  if (state.peer) renderPeerHeader();
}

// A chat starts from someone's id, or from the start of their name: the
// people whose names start with it are listed to pick from.
async function startChat(id) {
  $("new-chat-id").value = "";
  $("people-results").hidden = true;
  await refreshPeer(id);
  renderConversations();
  openConversation(id.toLowerCase());
}

$("new-chat").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("new-chat-id").value.trim();
  if (!text) return;
  if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(text)) {
    await startChat(text);
    return;
  }
  const results = $("people-results");
  try {
    const { users } = await state.client.searchUsers(text, { limit: 10 });
    results.replaceChildren();
    for (const u of users) {
      const li = document.createElement("li");
      li.dataset.user = u.id;
      li.textContent = u.username || u.id.slice(0, 8);
      li.addEventListener("click", () => startChat(u.id));
      results.append(li);
    }
    if (users.length === 0) {
      const li = document.createElement("li");
      li.textContent = `No one whose name starts with "${text}".`;
      results.append(li);
    }
    results.hidden = false;
  } catch (e) {
    failed()(e);
  }
});

const idsIn = (text) => text.split(/[\s,]+/).filter(Boolean).map((id) => id.toLowerCase());

// Groups are created with a title and the other members' ids.
$("new-group").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const group = await state.client.createGroup($("new-group-title").value, idsIn($("new-group-members").value));
    $("new-group-title").value = "";
    $("new-group-members").value = "";
    rememberGroup(group);
    renderConversations();
    openConversation(group.id);
  } catch (e) {
    failed("Could not create the group: ")(e);
  }
});

$("add-people").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    rememberGroup(await state.client.addMembers(state.peer, idsIn($("add-people-ids").value)));
    $("add-people-ids").value = "";
    renderConversations();
  } catch (e) {
    failed("Could not add: ")(e);
  }
});

async function openConversation(peer) {
  state.peer = peer;
  $("conversation").hidden = false;
  $("typing").hidden = true;
  if (!state.messages.has(peer)) {
    state.messages.set(peer, new Map());
    await loadOlder(peer);
  }
  renderMessages();
  markVisibleRead();
  renderConversations();
  $("composer-input").focus();
}

async function loadOlder(peer) {
  const before = state.oldest.get(peer);
  const which = isGroup(peer) ? { conversationId: peer } : { withUser: peer };
  try {
    const page = await state.client.history({ ...which, limit: 50, ...(before ? { before } : {}) });
    const map = state.messages.get(peer);
    for (const m of page.messages) map.set(m.id, m);
    if (page.messages.length > 0) state.oldest.set(peer, page.messages[0].id);
    $("older").hidden = !page.has_more;
  } catch (e) {
    failed()(e);
  }
}

$("older").addEventListener("click", async () => {
  await loadOlder(state.peer);
  renderMessages();
});

// ---- sending ---------------------------------------------------------------

// A message waits in the client's outbox until stored, across reconnects;
// it shows once stored (the client hands it over as a message event).
$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const content = $("composer-input").value;
  if (!content.trim() || !state.peer) return;
  $("composer-input").value = "";
  if (state.editing) {
    state.client.edit(state.editing.id, content.trim()).catch(failed());
    stopComposing();
    return;
  }
  const reply = state.replyTo ? { replyTo: state.replyTo.id } : {};
  state.client.send({ ...destination(), content, ...reply }).catch(failed("Not sent: "));
  stopComposing();
  state.client.typing(destination(), false);
});

$("composer-input").addEventListener("input", () => {
  if (!state.peer) return;
  const c = state.conversations.get(state.peer);
  // Typing goes only to people one already talks with (or a group).
  if (!c || (!isGroup(state.peer) && !c.last_message)) return;
  state.client.typing(destination());
});

// ---- search ----------------------------------------------------------------

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = $("search-input").value.trim();
  const results = $("search-results");
  if (!query) { results.hidden = true; return; }
  try {
    const messages = await state.client.searchMessages({ query, limit: 20 });
    results.replaceChildren();
    for (const m of messages) {
      const peer = keyOf(m);
      const li = document.createElement("li");
      li.textContent = `${titleOf(peer)}: ${m.content}`;
      li.addEventListener("click", () => { results.hidden = true; openConversation(peer); });
      results.append(li);
    }
    if (messages.length === 0) {
      const li = document.createElement("li");
      li.textContent = "No messages found.";
      results.append(li);
    }
    results.hidden = false;
  } catch (e) {
    failed()(e);
  }
});

// ---- what the client hands over ----------------------------------------------

function addMessage(m) {
  const peer = keyOf(m);
  // Not loaded yet: it shows with its history when opened.
  if (state.messages.has(peer)) state.messages.get(peer).set(m.id, m);
  const group = !m.to;
  const c = state.conversations.get(peer) ||
    (group ? { kind: "group", conversation_id: peer, title: "…", members: [], unread_count: 0 }
      : { user_id: peer, unread_count: 0, online: false });
  c.last_message = m;
  if (state.caughtUp && m.from !== myId() && (peer !== state.peer || document.hidden)) c.unread_count += 1;
  const known = state.conversations.has(peer);
  state.conversations.set(peer, c);
  if (group && !known) refreshGroup(peer).then(renderConversations);
  if (!group && !state.names.has(peer)) refreshPeer(peer).then(renderConversations);
}

document.addEventListener("visibilitychange", () => { markVisibleRead(); renderConversations(); });

function render() {
  if (state.peer) {
    renderMessages();
    markVisibleRead();
  }
  renderConversations();
}

function listen(client) {
  client.on("state", ({ state: now, code, reason }) => {
    if (state.client !== client) return;
    if (now === "online") {
      setStatus("online", true);
      $("banner").hidden = true;
    } else if (now === "closed") {
      if (code === 1008) {
        showError("Your session expired; sign in again.");
        sessionStorage.removeItem("ochat-token");
      }
      setStatus("signed out", false);
    } else if (now === "offline") {
      setStatus("reconnecting…", false);
      const banner = $("banner");
      banner.className = "banner info";
      banner.textContent = reason && code !== 1006 ? `Connection lost (${reason}) — reconnecting…` : "Connection lost — reconnecting…";
      banner.hidden = false;
    } else {
      setStatus($("status").textContent === "reconnecting…" ? "reconnecting…" : "connecting…", false);
    }
  });
  client.on("synced", () => {
    if (state.caughtUp) return;
    // Counts from the server now that the feed is caught up; from here on
    // every message handed over is a new one.
    state.caughtUp = true;
    if (state.me) loadConversations().catch(failed());
  });
  client.on("message", (m) => {
    addMessage(m);
    if (m.from === state.peer || (!m.to && m.conversation_id === state.peer)) $("typing").hidden = true;
    render();
  });
  // The client applied it to the messages it holds (these are the same
  // objects): what is left is to show them again.
  client.on("change", ({ message }) => {
    if (message) {
      for (const c of state.conversations.values()) if (c.last_message && c.last_message.id === message.id) c.last_message = message;
    }
    render();
  });
  client.on("typing", (frame) => {
    const here = frame.conversation_id ? frame.conversation_id === state.peer : frame.from === state.peer && !isGroup(state.peer);
    if (!here) return;
    $("typing").textContent = frame.conversation_id ? `${nameOf(frame.from)} is typing…` : "typing…";
    $("typing").hidden = !frame.is_typing;
    clearTimeout(state.typingTimer);
    if (frame.is_typing) state.typingTimer = setTimeout(() => { $("typing").hidden = true; }, 6000);
  });
  client.on("read", (frame) => {
    for (const map of state.messages.values()) {
      const m = map.get(frame.message_id);
      if (m) m.is_read = true;
    }
    if (frame.conversation_id) {
      if (!state.readers.has(frame.message_id)) state.readers.set(frame.message_id, new Set());
      state.readers.get(frame.message_id).add(frame.read_by);
    }
    render();
  });
  client.on("group", (frame) => {
    if (frame.type !== "member_removed") {
      rememberGroup(frame.conversation);
    } else if (frame.user_id === myId()) {
      state.conversations.delete(frame.conversation_id);
      if (state.peer === frame.conversation_id) {
        state.peer = null;
        $("conversation").hidden = true;
      }
    } else {
      const c = state.conversations.get(frame.conversation_id);
      if (c && c.members) {
        c.members = c.members.filter((m) => m.user_id !== frame.user_id);
        c.member_count = c.members.length;
      }
    }
    render();
  });
  client.on("presence", (frame) => {
    const c = state.conversations.get(frame.user_id);
    if (c) c.online = frame.type === "user_online";
    render();
  });
  client.on("error", failed());
}

start();
