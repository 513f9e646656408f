// What the browser client's screens share: the page's state and small
// helpers. See app.js.
import { conversationOf } from "/client/index.js";

export const $ = (id) => document.getElementById(id);

export const state = {
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

export function showError(text) {
  const banner = $("banner");
  banner.className = "banner";
  banner.textContent = text;
  banner.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { banner.hidden = true; }, 6000);
}

export const failed = (prefix = "") => (e) => showError(`${prefix}${e.code ? `${e.message} (${e.code})` : e.message}`);

export function setStatus(text, online) {
  $("status").textContent = text;
  $("status").className = online ? "status online" : "status";
}

export function nameOf(id) {
  return state.names.get(id) || id.slice(0, 8);
}

export function isGroup(key) {
  const c = state.conversations.get(key);
  return !!(c && c.kind === "group");
}

export function titleOf(key) {
  const c = state.conversations.get(key);
  return c && c.kind === "group" ? c.title : nameOf(key);
}

export const myId = () => state.client.userId;
export const keyOf = (m) => conversationOf(m, myId());

// Where the open conversation's messages go: a user, or a group.
export function destination() {
  return isGroup(state.peer) ? { conversationId: state.peer } : { to: state.peer };
}
