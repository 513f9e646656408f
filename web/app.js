// ochat's browser client: screens over @ochat/client (served at /client/),
// which holds every rule of the protocol: reconnecting, resending until
// stored once, catching up after every reconnect, handing each message
// over once and applying edits, deletes and reactions. This file only
// shows what the client hands it. All text from the server is set with textContent, never
// parsed as HTML.
import { connect, conversationOf, fromRest, webStorage } from "/client/index.js";

const $ = (id) => document.getElementById(id);

const state = {
  client: null,
  me: null,
  replyTo: null,         // the message the composer answers, if any
  editing: null,         // the message the composer edits, if any
  // Conversations are keyed by the other person's user id (direct) or by
  // the group's conversation id (kind "group").
  peer: null,            // the open conversation's key
  conversations: new Map(), // key -> {user_id, username, last_message, unread_count, online} or {kind: "group", title, members, …}
  messages: new Map(),   // key -> Map(message id -> message of the client's view)
  oldest: new Map(),     // key -> oldest loaded message id
  names: new Map(),      // user id -> display name
  readers: new Map(),    // id of a group message I sent -> Set of user ids who read it
  typingTimer: null,
  // A tab without saved state first catches up on the whole feed: those
  // messages are counted by the conversation list, not as new ones.
  caughtUp: false,
};

function showError(text) {
  const banner = $("banner");
  banner.className = "banner";
  banner.textContent = text;
  banner.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { banner.hidden = true; }, 6000);
}

const failed = (prefix = "") => (e) => showError(`${prefix}${e.code ? `${e.message} (${e.code})` : e.message}`);

function setStatus(text, online) {
  $("status").textContent = text;
  $("status").className = online ? "status online" : "status";
}

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

function nameOf(id) {
  return state.names.get(id) || id.slice(0, 8);
}

function isGroup(key) {
  const c = state.conversations.get(key);
  return !!(c && c.kind === "group");
}

function titleOf(key) {
  const c = state.conversations.get(key);
  return c && c.kind === "group" ? c.title : nameOf(key);
}

const myId = () => state.client.userId;
const keyOf = (m) => conversationOf(m, myId());

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

function renderPeerHeader() {
  const c = state.conversations.get(state.peer);
  const group = isGroup(state.peer);
  $("peer-name").textContent = titleOf(state.peer);
  $("peer-dot").className = group ? "dot group" : c && c.online ? "dot online" : "dot";
  $("members").hidden = !group;
  $("add-people").hidden = !group;
  if (group) {
    $("members").textContent = `${c.member_count} members: ${(c.members || []).map((m) => nameOf(m.user_id)).join(", ")}`;
  }
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

function renderMessages() {
  renderPeerHeader();
  const list = $("messages");
  list.replaceChildren();
  const items = [...state.messages.get(state.peer).values()].sort((a, b) => a.id.localeCompare(b.id));
  for (const m of items) {
    const li = document.createElement("li");
    li.dataset.id = m.id;
    const mine = m.from === myId();
    if (mine) li.classList.add("mine");
    if (!mine && !m.to) {
      const from = document.createElement("span");
      from.className = "from";
      from.textContent = nameOf(m.from);
      li.append(from);
    }
    if (m.reply_to) {
      const quote = document.createElement("span");
      quote.className = "quote";
      quote.textContent = `${nameOf(m.reply_to.sender_id)}: ${m.reply_to.deleted ? "message deleted" : m.reply_to.preview}`;
      li.append(quote);
    }
    const text = document.createElement("span");
    text.className = "text";
    if (m.deleted_at) {
      li.classList.add("deleted");
      text.textContent = "message deleted";
    } else {
      text.textContent = m.content;
    }
    const meta = document.createElement("span");
    meta.className = "meta";
    const time = new Date(m.timestamp).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const edited = m.edited_at && !m.deleted_at ? " (edited)" : "";
    meta.textContent = (mine ? `${time} ${receipt(m)}` : time) + edited;
    li.append(text);
    for (const a of m.deleted_at ? [] : m.attachments) li.append(attachmentOf(a));
    li.append(meta);
    if (!m.deleted_at) {
      li.append(reactionsOf(m), menuOf(m, mine));
    }
    list.append(li);
  }
  list.scrollTop = list.scrollHeight;
}

// A picture shown inline, or a file to download. Their URLs expire, so each
// is asked for (with the token) when shown, and again once expired.
function attachmentOf(a) {
  if (a.content_type.startsWith("image/")) {
    const img = document.createElement("img");
    img.className = "attachment";
    img.alt = a.name;
    if (a.width && a.height) { img.width = Math.min(a.width, 240); img.height = Math.round(img.width * a.height / a.width); }
    downloadUrl(a.id).then((url) => { img.src = url; }).catch(failed());
    return img;
  }
  const link = document.createElement("a");
  link.className = "file";
  link.href = "#";
  link.textContent = `📄 ${a.name} (${Math.ceil(a.size / 1024)} KB)`;
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    try {
      const save = document.createElement("a");
      save.href = await downloadUrl(a.id);
      save.download = a.name;
      save.click();
    } catch (e) {
      failed()(e);
    }
  });
  return link;
}

const downloads = new Map(); // attachment id -> {url, expires}

async function downloadUrl(id) {
  const known = downloads.get(id);
  if (known && known.expires > Date.now() + 5000) return known.url;
  const link = await state.client.attachmentUrl(id);
  downloads.set(id, { url: link.url, expires: Date.parse(link.expires_at) });
  return link.url;
}

// Announce the file, upload it where the server says, then send it.
async function attach(file) {
  const announced = { name: file.name, size: file.size, content_type: file.type || "application/octet-stream" };
  if (file.type.startsWith("image/")) {
    try {
      const bitmap = await createImageBitmap(file);
      announced.width = bitmap.width;
      announced.height = bitmap.height;
    } catch {
      // not a picture the browser can read: sent without its size
    }
  }
  const up = await state.client.announceAttachment(announced);
  const put = await fetch(up.upload_url, { method: "PUT", body: file });
  if (!put.ok) throw new Error(`the upload failed (HTTP ${put.status})`);
  const content = $("composer-input").value;
  $("composer-input").value = "";
  const files = [{ ...announced, id: up.id, url: `/api/v1/attachments/${up.id}` }];
  await state.client.send({ ...destination(), content, attachments: files });
}

$("attach").addEventListener("click", () => $("attach-input").click());
$("attach-input").addEventListener("change", async () => {
  const file = $("attach-input").files[0];
  $("attach-input").value = "";
  if (!file || !state.peer) return;
  try {
    await attach(file);
  } catch (e) {
    failed()(e);
  }
});

// Each emoji with its count; mine are highlighted, and a click toggles mine.
function reactionsOf(m) {
  const box = document.createElement("span");
  box.className = "reactions";
  for (const r of m.reactions) {
    const chip = document.createElement("button");
    chip.className = r.me ? "reaction me" : "reaction";
    chip.textContent = `${r.emoji} ${r.count}`;
    chip.addEventListener("click", () => (r.me ? state.client.unreact(m.id, r.emoji) : state.client.react(m.id, r.emoji)).catch(failed()));
    box.append(chip);
  }
  return box;
}

// A message's menu: react, reply, and for my own messages (or any, as a
// group's owner or admin) edit and delete.
function menuOf(m, mine) {
  const menu = document.createElement("span");
  menu.className = "menu";
  const item = (label, title, action) => {
    const b = document.createElement("button");
    b.textContent = label;
    b.title = title;
    b.className = `menu-${title}`;
    b.addEventListener("click", action);
    menu.append(b);
  };
  for (const emoji of ["👍", "❤️", "😂"]) item(emoji, `react-${emoji}`, () => state.client.react(m.id, emoji).catch(failed()));
  item("↩", "reply", () => startReply(m));
  if (mine) item("✎", "edit", () => startEdit(m));
  const c = state.conversations.get(state.peer);
  const role = c && c.members && (c.members.find((x) => x.user_id === myId()) || {}).role;
  if (mine || role === "owner" || role === "admin") item("🗑", "delete", () => state.client.delete(m.id).catch(failed()));
  return menu;
}

function startReply(m) {
  state.editing = null;
  state.replyTo = m;
  $("composing").textContent = `Replying to ${nameOf(m.from)}: ${m.content.slice(0, 60)}`;
  $("composing-bar").hidden = false;
  $("composer-input").focus();
}

function startEdit(m) {
  state.replyTo = null;
  state.editing = m;
  $("composing").textContent = "Editing your message";
  $("composing-bar").hidden = false;
  $("composer-input").value = m.content;
  $("composer-input").focus();
}

function stopComposing() {
  state.replyTo = null;
  state.editing = null;
  $("composing-bar").hidden = true;
}

$("composing-cancel").addEventListener("click", () => {
  if (state.editing) $("composer-input").value = "";
  stopComposing();
});

// Under my own message: sent or read, and in a group who read it.
function receipt(m) {
  if (m.to) return m.is_read ? "✓✓ read" : "✓ sent";
  const readers = [...(state.readers.get(m.id) || [])];
  return readers.length ? `✓✓ read by ${readers.map(nameOf).join(", ")}` : "✓ sent";
}

function markVisibleRead() {
  if (!state.peer || document.hidden) return;
  const map = state.messages.get(state.peer);
  for (const m of map.values()) {
    if (m.from !== myId() && !m.is_read) {
      m.is_read = true;
      state.client.markRead(m.id);
    }
  }
  const c = state.conversations.get(state.peer);
  if (c) c.unread_count = 0;
}

document.addEventListener("visibilitychange", () => { markVisibleRead(); renderConversations(); });

// ---- sending ---------------------------------------------------------------

// Where the open conversation's messages go: a user, or a group.
function destination() {
  return isGroup(state.peer) ? { conversationId: state.peer } : { to: state.peer };
}

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
