// ochat's browser client: the real protocol, nothing else. All text from the
// server is set with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const api = "/api/v1";

const state = {
  token: null,
  me: null,
  ws: null,
  retry: 0,
  // The sync cursor: where the last `sync` page ended, in my own sequence.
  // Live frames can arrive out of commit order (they travel through
  // different nodes), so they never move it; after a reconnect, sync from
  // here: messages dedupe by id, and changes (edits, deletes, reactions)
  // apply again to the same result.
  cursor: 0,
  replyTo: null,         // the message the composer answers, if any
  editing: null,         // the message the composer edits, if any
  // Conversations are keyed by the other person's user id (direct) or by
  // the group's conversation id (kind "group").
  peer: null,            // the open conversation's key
  conversations: new Map(), // key -> {user_id, username, last_message, unread_count, online} or {kind: "group", title, members, …}
  messages: new Map(),   // key -> Map(message id -> message)
  oldest: new Map(),     // key -> oldest loaded message id, or null when nothing older
  names: new Map(),      // user id -> display name
  readers: new Map(),    // id of a group message I sent -> Set of user ids who read it
  pending: new Map(),    // client_id -> {to, group, content}, until the ack
  changes: new Map(),    // client_id -> an edit, delete or reaction of mine, until the ack
  typingTimer: null,
  lastTypingSent: 0,
};

function showError(text) {
  const banner = $("banner");
  banner.className = "banner";
  banner.textContent = text;
  banner.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { banner.hidden = true; }, 6000);
}

function setStatus(text, online) {
  $("status").textContent = text;
  $("status").className = online ? "status online" : "status";
}

async function request(path, options = {}) {
  const response = await fetch(api + path, {
    ...options,
    headers: { "Authorization": `Bearer ${state.token}`, "Content-Type": "application/json", ...(options.headers || {}) },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.error ? `${body.error.message} (${body.error.code})` : `HTTP ${response.status}`);
  }
  return body;
}

// ---- sign in -------------------------------------------------------------

async function start() {
  const config = await fetch(api + "/dev/config").then((r) => (r.ok ? r.json() : { dev_signin: false })).catch(() => ({ dev_signin: false }));
  $("dev-form").hidden = !config.dev_signin;
  const saved = sessionStorage.getItem("ochat-token");
  if (saved) {
    await signIn(saved).catch(() => sessionStorage.removeItem("ochat-token"));
  }
}

$("dev-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const response = await fetch(api + "/dev/token", {
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
  state.token = token;
  state.me = await request("/users/me");
  sessionStorage.setItem("ochat-token", token);
  $("signin").hidden = true;
  $("chat").hidden = false;
  $("my-name").textContent = state.me.username || state.me.email;
  $("my-id").textContent = state.me.id;
  await loadConversations();
  connect();
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

// The conversation a message belongs to: its group, or the other person.
function keyOf(m) {
  if (!m.receiver_id) return m.conversation_id;
  return m.sender_id === state.me.id ? m.receiver_id : m.sender_id;
}

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
    rememberGroup(await request(`/conversations/${id}`));
  } catch (e) {
    showError(e.message);
  }
}

async function loadConversations() {
  const { conversations } = await request("/messages/conversations?limit=100");
  for (const c of conversations) {
    if (c.kind === "group") {
      const known = state.conversations.get(c.conversation_id) || {};
      state.conversations.set(c.conversation_id, { ...known, ...c });
      continue;
    }
    state.names.set(c.user_id, c.username || c.user_id.slice(0, 8));
    const known = state.conversations.get(c.user_id);
    state.conversations.set(c.user_id, { ...c, online: known ? known.online : false });
  }
  await Promise.all(conversations.map((c) => (c.kind === "group" ? refreshGroup(c.conversation_id) : refreshPeer(c.user_id))));
  renderConversations();
}

async function refreshPeer(id) {
  try {
    const profile = await request(`/users/${id}`);
    state.names.set(id, profile.username || id.slice(0, 8));
    const c = state.conversations.get(id) || { user_id: id, unread_count: 0, last_message: null };
    c.online = profile.is_online;
    c.username = profile.username;
    state.conversations.set(id, c);
  } catch (e) {
    showError(e.message);
  }
}

function renderConversations() {
  const list = $("conversations");
  list.replaceChildren();
  const when = (c) => (c.last_message ? c.last_message.created_at : c.created_at || "");
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
    const { users } = await request(`/users/search?q=${encodeURIComponent(text)}&limit=10`);
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
    showError(e.message);
  }
});

// Groups are created with a title and the other members' ids.
$("new-group").addEventListener("submit", async (event) => {
  event.preventDefault();
  const ids = $("new-group-members").value.split(/[\s,]+/).filter(Boolean).map((id) => id.toLowerCase());
  try {
    const group = await request("/conversations", {
      method: "POST",
      body: JSON.stringify({ title: $("new-group-title").value, member_ids: ids }),
    });
    $("new-group-title").value = "";
    $("new-group-members").value = "";
    rememberGroup(group);
    renderConversations();
    openConversation(group.id);
  } catch (e) {
    showError(`Could not create the group: ${e.message}`);
  }
});

$("add-people").addEventListener("submit", async (event) => {
  event.preventDefault();
  const ids = $("add-people-ids").value.split(/[\s,]+/).filter(Boolean).map((id) => id.toLowerCase());
  try {
    rememberGroup(await request(`/conversations/${state.peer}/members`, {
      method: "POST",
      body: JSON.stringify({ user_ids: ids }),
    }));
    $("add-people-ids").value = "";
    renderConversations();
  } catch (e) {
    showError(`Could not add: ${e.message}`);
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
  const which = isGroup(peer) ? `conversation_id=${peer}` : `with_user=${peer}`;
  const query = `/messages/conversation?${which}&limit=50` + (before ? `&before=${before}` : "");
  try {
    const page = await request(query);
    const map = state.messages.get(peer);
    for (const m of page.messages) map.set(m.id, m);
    if (page.messages.length > 0) state.oldest.set(peer, page.messages[0].id);
    $("older").hidden = !page.has_more;
  } catch (e) {
    showError(e.message);
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
    const mine = m.sender_id === state.me.id;
    if (mine) li.classList.add("mine");
    if (!mine && !m.receiver_id) {
      const from = document.createElement("span");
      from.className = "from";
      from.textContent = nameOf(m.sender_id);
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
    const time = new Date(m.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const edited = m.edited_at && !m.deleted_at ? " (edited)" : "";
    meta.textContent = (mine ? `${time} ${receipt(m)}` : time) + edited;
    li.append(text);
    for (const a of m.deleted_at ? [] : m.attachments || []) li.append(attachmentOf(a));
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
    downloadUrl(a.id).then((url) => { img.src = url; }).catch((e) => showError(e.message));
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
      showError(e.message);
    }
  });
  return link;
}

const downloads = new Map(); // attachment id -> {url, expires}

async function downloadUrl(id) {
  const known = downloads.get(id);
  if (known && known.expires > Date.now() + 5000) return known.url;
  const link = await request(`/attachments/${id}`, { headers: { Accept: "application/json" } });
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
  const up = await request("/attachments", { method: "POST", body: JSON.stringify(announced) });
  const put = await fetch(up.upload_url, { method: "PUT", body: file });
  if (!put.ok) throw new Error(`the upload failed (HTTP ${put.status})`);
  const clientId = crypto.randomUUID();
  const group = isGroup(state.peer) ? state.peer : null;
  const content = $("composer-input").value;
  const files = [{ ...announced, id: up.id, url: `${api}/attachments/${up.id}` }];
  state.pending.set(clientId, { to: group ? null : state.peer, group, content: content.trim(), reply: null, attachments: files });
  state.ws.send(JSON.stringify({ type: "message", ...destination(), content, attachments: [up.id], client_id: clientId }));
  $("composer-input").value = "";
}

$("attach").addEventListener("click", () => $("attach-input").click());
$("attach-input").addEventListener("change", async () => {
  const file = $("attach-input").files[0];
  $("attach-input").value = "";
  if (!file || !state.peer) return;
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
    showError("Not connected; try again once reconnected.");
    return;
  }
  try {
    await attach(file);
  } catch (e) {
    showError(e.message);
  }
});

// Each emoji with its count; mine are highlighted, and a click toggles mine.
function reactionsOf(m) {
  const box = document.createElement("span");
  box.className = "reactions";
  for (const r of m.reactions || []) {
    const chip = document.createElement("button");
    chip.className = r.me ? "reaction me" : "reaction";
    chip.textContent = `${r.emoji} ${r.count}`;
    chip.addEventListener("click", () => change(r.me ? "unreact" : "react", m.id, { emoji: r.emoji }));
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
  for (const emoji of ["👍", "❤️", "😂"]) item(emoji, `react-${emoji}`, () => change("react", m.id, { emoji }));
  item("↩", "reply", () => startReply(m));
  if (mine) item("✎", "edit", () => startEdit(m));
  const c = state.conversations.get(state.peer);
  const role = c && c.members && (c.members.find((x) => x.user_id === state.me.id) || {}).role;
  if (mine || role === "owner" || role === "admin") item("🗑", "delete", () => change("delete", m.id, {}));
  return menu;
}

// A change to a message. The session that makes it hears only its ack
// (other sessions hear the event), so the ack applies it here.
function change(type, id, fields) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
    showError("Not connected; try again once reconnected.");
    return;
  }
  const clientId = crypto.randomUUID();
  state.changes.set(clientId, { type, id, ...fields });
  state.ws.send(JSON.stringify({ type, message_id: id, ...fields, client_id: clientId }));
}

// The event an acked change of mine stands for.
function changeEvent(c, at) {
  switch (c.type) {
    case "edit": return { type: "message_updated", id: c.id, content: c.content, edited_at: at };
    case "delete": return { type: "message_deleted", id: c.id, deleted_at: at };
    case "react": return { type: "reaction_added", message_id: c.id, user_id: state.me.id, emoji: c.emoji };
    default: return { type: "reaction_removed", message_id: c.id, user_id: state.me.id, emoji: c.emoji };
  }
}

function startReply(m) {
  state.editing = null;
  state.replyTo = m;
  $("composing").textContent = `Replying to ${nameOf(m.sender_id)}: ${m.content.slice(0, 60)}`;
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

// The message with `id`, wherever it is loaded.
function findMessage(id) {
  for (const map of state.messages.values()) {
    const m = map.get(id);
    if (m) return m;
  }
  for (const c of state.conversations.values()) {
    if (c.last_message && c.last_message.id === id) return c.last_message;
  }
  return null;
}

// A change to a message, from a live frame or a sync page: applying the same
// change twice ends the same way.
function applyChange(frame) {
  switch (frame.type) {
    case "message_updated": {
      const m = findMessage(frame.id);
      if (m) { m.content = frame.content; m.edited_at = frame.edited_at; }
      break;
    }
    case "message_deleted": {
      const m = findMessage(frame.id);
      if (m) { m.content = ""; m.deleted_at = frame.deleted_at; m.reactions = []; m.attachments = []; }
      // Replies quoting it now say it was deleted.
      for (const map of state.messages.values()) {
        for (const r of map.values()) {
          if (r.reply_to && r.reply_to.id === frame.id) r.reply_to = { ...r.reply_to, preview: null, deleted: true };
        }
      }
      break;
    }
    case "reaction_added":
    case "reaction_removed": {
      const m = findMessage(frame.message_id);
      if (!m) break;
      // Who reacted with what, so a repeated frame changes nothing.
      m.reactors = m.reactors || new Map();
      const key = `${frame.user_id} ${frame.emoji}`;
      if (frame.type === "reaction_added") {
        if (m.reactors.get(key) === true) break;
        m.reactors.set(key, true);
      } else {
        if (m.reactors.get(key) === false) break;
        m.reactors.set(key, false);
      }
      const delta = frame.type === "reaction_added" ? 1 : -1;
      const mine = frame.user_id === state.me.id;
      const reactions = m.reactions || [];
      let r = reactions.find((x) => x.emoji === frame.emoji);
      if (!r) { r = { emoji: frame.emoji, count: 0, me: false }; reactions.push(r); }
      r.count += delta;
      if (mine) r.me = delta > 0;
      m.reactions = reactions.filter((x) => x.count > 0);
      break;
    }
  }
}

// Under my own message: sent or read, and in a group who read it.
function receipt(m) {
  if (m.receiver_id) return m.is_read ? "✓✓ read" : "✓ sent";
  const readers = [...(state.readers.get(m.id) || [])];
  return readers.length ? `✓✓ read by ${readers.map(nameOf).join(", ")}` : "✓ sent";
}

function markVisibleRead() {
  if (!state.peer || !state.ws || state.ws.readyState !== WebSocket.OPEN || document.hidden) return;
  const map = state.messages.get(state.peer);
  for (const m of map.values()) {
    if (m.sender_id !== state.me.id && !m.is_read) {
      m.is_read = true;
      state.ws.send(JSON.stringify({ type: "mark_read", message_id: m.id }));
    }
  }
  const c = state.conversations.get(state.peer);
  if (c) c.unread_count = 0;
}

document.addEventListener("visibilitychange", () => { markVisibleRead(); renderConversations(); });

// ---- sending ---------------------------------------------------------------

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const content = $("composer-input").value;
  if (!content.trim() || !state.peer) return;
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
    showError("Not connected; your message was not sent. It will work once reconnected.");
    return;
  }
  const clientId = crypto.randomUUID();
  if (state.editing) {
    change("edit", state.editing.id, { content: content.trim() });
    $("composer-input").value = "";
    stopComposing();
    return;
  }
  const group = isGroup(state.peer) ? state.peer : null;
  const reply = state.replyTo
    ? { id: state.replyTo.id, sender_id: state.replyTo.sender_id, preview: state.replyTo.content.slice(0, 100), deleted: false }
    : null;
  state.pending.set(clientId, { to: group ? null : state.peer, group, content: content.trim(), reply });
  const extra = reply ? { reply_to: reply.id } : {};
  state.ws.send(JSON.stringify({ type: "message", ...destination(), content, client_id: clientId, ...extra }));
  $("composer-input").value = "";
  stopComposing();
  state.ws.send(JSON.stringify({ type: "typing", ...destination(), is_typing: false }));
});

// Where the open conversation's frames go: a user, or a group.
function destination() {
  return isGroup(state.peer) ? { conversation_id: state.peer } : { to: state.peer };
}

$("composer-input").addEventListener("input", () => {
  const now = Date.now();
  if (!state.peer || !state.ws || state.ws.readyState !== WebSocket.OPEN || now - state.lastTypingSent < 2000) return;
  const c = state.conversations.get(state.peer);
  // Typing goes only to people one already talks with (or a group).
  if (!c || (!isGroup(state.peer) && !c.last_message)) return;
  state.lastTypingSent = now;
  state.ws.send(JSON.stringify({ type: "typing", ...destination(), is_typing: true }));
});

// ---- search ----------------------------------------------------------------

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = $("search-input").value.trim();
  const results = $("search-results");
  if (!query) { results.hidden = true; return; }
  try {
    const { messages } = await request(`/messages/search?query=${encodeURIComponent(query)}&limit=20`);
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
    showError(e.message);
  }
});

// ---- the socket ------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}${api}/ws?token=${encodeURIComponent(state.token)}`);
  state.ws = ws;
  setStatus(state.retry ? "reconnecting…" : "connecting…", false);
  ws.onopen = () => {
    state.retry = 0;
    clearInterval(state.syncTimer);
    // Catch up now and then even without a reconnect, so a gap in live
    // delivery (a Redis outage) never lasts.
    state.syncTimer = setInterval(() => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "sync", cursor: state.cursor, limit: 100 }));
    }, 30000);
    setStatus("online", true);
    $("banner").hidden = true;
    ws.send(JSON.stringify({ type: "sync", cursor: state.cursor, limit: 100 }));
  };
  ws.onmessage = (event) => handle(JSON.parse(event.data));
  ws.onclose = (event) => {
    if (state.ws !== ws) return;
    if (event.code === 1008 && /token/.test(event.reason)) {
      showError("Your session expired; sign in again.");
      sessionStorage.removeItem("ochat-token");
      setStatus("signed out", false);
      return;
    }
    state.retry += 1;
    const delay = Math.min(10000, 250 * 2 ** state.retry);
    setStatus("reconnecting…", false);
    const banner = $("banner");
    banner.className = "banner info";
    banner.textContent = "Connection lost — reconnecting…";
    banner.hidden = false;
    setTimeout(connect, delay);
  };
}

function remember(frame) {
  // A WebSocket message frame as a REST-shaped message.
  return {
    id: frame.id, sender_id: frame.from, receiver_id: frame.to || null,
    conversation_id: frame.conversation_id || null, content: frame.content,
    created_at: frame.timestamp, is_read: false, reply_to: frame.reply_to || null,
    edited_at: frame.edited_at || null, deleted_at: frame.deleted_at || null,
    attachments: frame.attachments || [],
  };
}

function addMessage(m) {
  const peer = keyOf(m);
  if (!state.messages.has(peer) && peer !== state.peer) {
    // Not loaded yet: it will load with its history when opened.
  } else {
    if (!state.messages.has(peer)) state.messages.set(peer, new Map());
    const map = state.messages.get(peer);
    if (map.has(m.id)) return false; // at-least-once: dedupe by id
    map.set(m.id, m);
  }
  const group = !m.receiver_id;
  const c = state.conversations.get(peer) ||
    (group ? { kind: "group", conversation_id: peer, title: "…", members: [], unread_count: 0 }
      : { user_id: peer, unread_count: 0, online: false });
  if (c.last_message && c.last_message.id === m.id) return false;
  c.last_message = m;
  if (m.sender_id !== state.me.id && (peer !== state.peer || document.hidden)) c.unread_count += 1;
  const known = state.conversations.has(peer);
  state.conversations.set(peer, c);
  if (group && !known) refreshGroup(peer).then(renderConversations);
  if (!group && !state.names.has(peer)) refreshPeer(peer).then(renderConversations);
  return true;
}

function handle(frame) {
  switch (frame.type) {
    case "message": {
      addMessage(remember(frame));
      if (frame.from === state.peer || (frame.conversation_id && frame.conversation_id === state.peer)) $("typing").hidden = true;
      break;
    }
    case "ack": {
      const changed = state.changes.get(frame.client_id);
      if (changed) {
        state.changes.delete(frame.client_id);
        applyChange(changeEvent(changed, frame.timestamp));
        break;
      }
      const sent = state.pending.get(frame.client_id);
      state.pending.delete(frame.client_id);
      if (sent) {
        addMessage({
          id: frame.id, sender_id: state.me.id, receiver_id: sent.to, conversation_id: sent.group,
          content: sent.content, created_at: frame.timestamp, is_read: false, reply_to: sent.reply,
          attachments: sent.attachments || [],
        });
      }
      break;
    }
    case "sync": {
      // Messages and changes interleave by seq: applied in that order, the
      // page ends where a device that stayed online is.
      const entries = [...frame.messages.map((m) => ({ ...m, type: "message" })), ...(frame.changes || [])];
      entries.sort((a, b) => a.seq - b.seq);
      for (const e of entries) {
        if (e.type === "message") addMessage(remember(e));
        else applyChange(e);
      }
      state.cursor = frame.cursor;
      if (frame.has_more) state.ws.send(JSON.stringify({ type: "sync", cursor: state.cursor, limit: 100 }));
      break;
    }
    case "message_updated":
    case "message_deleted":
    case "reaction_added":
    case "reaction_removed": {
      applyChange(frame);
      break;
    }
    case "typing": {
      const here = frame.conversation_id ? frame.conversation_id === state.peer : frame.from === state.peer && !isGroup(state.peer);
      if (here) {
        $("typing").textContent = frame.conversation_id ? `${nameOf(frame.from)} is typing…` : "typing…";
        $("typing").hidden = !frame.is_typing;
        clearTimeout(state.typingTimer);
        if (frame.is_typing) state.typingTimer = setTimeout(() => { $("typing").hidden = true; }, 6000);
      }
      return;
    }
    case "read_receipt": {
      for (const map of state.messages.values()) {
        const m = map.get(frame.message_id);
        if (m) m.is_read = true;
      }
      if (frame.conversation_id) {
        if (!state.readers.has(frame.message_id)) state.readers.set(frame.message_id, new Set());
        state.readers.get(frame.message_id).add(frame.read_by);
      }
      break;
    }
    case "conversation_created":
    case "member_added":
    case "conversation_updated": {
      rememberGroup(frame.conversation);
      break;
    }
    case "member_removed": {
      if (frame.user_id === state.me.id) {
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
      break;
    }
    case "user_online":
    case "user_offline": {
      const c = state.conversations.get(frame.user_id);
      if (c) c.online = frame.type === "user_online";
      break;
    }
    case "error": {
      if (frame.client_id) { state.pending.delete(frame.client_id); state.changes.delete(frame.client_id); }
      showError(`${frame.message} (${frame.code})`);
      return;
    }
    default:
      return;
  }
  if (state.peer) {
    renderMessages();
    markVisibleRead();
  }
  renderConversations();
}

start();
