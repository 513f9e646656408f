// The open conversation: its messages with their quotes, files,
// reactions and receipts, the message menu, and the composer's reply and
// edit modes. See app.js.
import { $, destination, failed, isGroup, myId, nameOf, state, titleOf } from "/ui.js";

export function renderPeerHeader() {
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

export function renderMessages() {
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

// attachment id -> {url, expires}: the most recent few hundred.
const downloads = new Map();
const DOWNLOADS_KEPT = 500;

async function downloadUrl(id) {
  const known = downloads.get(id);
  if (known && known.expires > Date.now() + 5000) return known.url;
  const link = await state.client.attachmentUrl(id);
  downloads.delete(id);
  downloads.set(id, { url: link.url, expires: Date.parse(link.expires_at) });
  if (downloads.size > DOWNLOADS_KEPT) downloads.delete(downloads.keys().next().value);
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

export function stopComposing() {
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

export function markVisibleRead() {
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

