// A message in the one shape the app sees, from the wire or from REST.

import type { ChatMessage } from "./feed.js";
import type { MessageOut, SyncMessage } from "./generated/protocol.js";
import type { Message as RestMessage } from "./generated/rest.js";

/** A message frame (live or in a sync page) as the app sees it. */
export function fromWire(frame: MessageOut | SyncMessage): ChatMessage {
  return {
    id: frame.id,
    from: frame.from,
    to: frame.to ?? null,
    conversation_id: frame.to ? null : (frame.conversation_id ?? null),
    content: frame.content,
    timestamp: frame.timestamp,
    seq: frame.seq,
    reply_to: frame.reply_to ?? null,
    edited_at: frame.edited_at ?? null,
    deleted_at: frame.deleted_at ?? null,
    attachments: frame.attachments ?? [],
    reactions: [],
    is_read: false,
  };
}

/** A message from the REST API as the app sees it. */
export function fromRest(m: RestMessage): ChatMessage {
  return {
    id: m.id,
    from: m.sender_id,
    to: m.receiver_id ?? null,
    conversation_id: m.receiver_id ? null : m.conversation_id,
    content: m.content,
    timestamp: m.created_at,
    reply_to: m.reply_to ? { ...m.reply_to, preview: m.reply_to.preview ?? null } : null,
    edited_at: m.edited_at ?? null,
    deleted_at: m.deleted_at ?? null,
    attachments: (m.attachments ?? []).map(({ width, height, ...a }) => ({
      ...a,
      ...(width ? { width } : {}),
      ...(height ? { height } : {}),
    })),
    reactions: (m.reactions ?? []).map((r) => ({ ...r })),
    is_read: m.is_read,
  };
}

/** The conversation a message belongs to, from `me`'s side: its group, or the other person. */
export function conversationOf(message: ChatMessage, me: string): string {
  if (!message.to) return message.conversation_id ?? "";
  return message.from === me ? message.to : message.from;
}
