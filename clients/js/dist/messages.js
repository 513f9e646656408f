// A message in the one shape the app sees, from the wire or from REST.
import { OchatError } from "./errors.js";
/** A message frame (live or in a sync page) as the app sees it. */
export function fromWire(frame) {
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
export function fromRest(m) {
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
export function conversationOf(message, me) {
    if (!message.to)
        return message.conversation_id ?? "";
    return message.from === me ? message.to : message.from;
}
/** Where a message or typing signal goes, as the wire says it. */
export function destinationOf(input) {
    if (input.to && !input.conversationId)
        return { to: input.to };
    if (input.conversationId && !input.to)
        return { conversation_id: input.conversationId };
    throw new OchatError("invalid_field", "give exactly one of `to` (a user) and `conversationId` (a group)");
}
/**
 * The message an ack confirms, as the server stored it: `me` sent it,
 * `replied` is the message it answers (when held), `files` what it carries.
 */
export function sentMessage(frame, ack, me, replied, files) {
    return {
        id: ack.id,
        from: me,
        to: frame.to ?? null,
        conversation_id: frame.conversation_id ?? null,
        content: frame.content.trim(),
        timestamp: ack.timestamp,
        reply_to: replied
            ? { id: replied.id, sender_id: replied.from, preview: [...replied.content].slice(0, 100).join(""), deleted: false }
            : null,
        edited_at: null,
        deleted_at: null,
        attachments: files,
        reactions: [],
        is_read: false,
    };
}
/** The change an acked edit, delete or reaction of one's own stands for. */
export function ownChange(frame, ack, me) {
    switch (frame.type) {
        case "edit":
            return { type: "message_updated", id: frame.message_id, content: frame.content.trim(), edited_at: ack.timestamp };
        case "delete":
            return { type: "message_deleted", id: frame.message_id, deleted_at: ack.timestamp };
        case "react":
            return { type: "reaction_added", message_id: frame.message_id, user_id: me, emoji: frame.emoji };
        case "unreact":
            return { type: "reaction_removed", message_id: frame.message_id, user_id: me, emoji: frame.emoji };
        default:
            return null;
    }
}
