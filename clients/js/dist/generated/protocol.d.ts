/** The message, or the change to it, is committed; to the sending connection. For a change, `id` is the changed message's. */
export type Ack = {
    type: "ack";
    client_id: string | null;
    id: string;
    timestamp: string;
};
/** A file a message carries. */
export type Attachment = {
    id: string;
    name: string;
    size: number;
    content_type: string;
    /** `GET` it with your token: a redirect to a download URL that expires (`ATTACHMENT_URL_TTL`). */
    url: string;
    width?: number;
    height?: number;
};
/** Every frame a client may send. */
export type ClientFrame = SendMessage | Ping | MarkRead | TypingIn | Sync | Edit | Delete | React | Unreact;
export type ConversationCreated = {
    type: "conversation_created";
    conversation: Group;
};
export type ConversationUpdated = {
    type: "conversation_updated";
    conversation: Group;
};
/** Delete a message for everyone (your own, or any in a group you own or administer); answered by `ack` or `error`. */
export type Delete = {
    type: "delete";
    message_id: string;
    /** The client's idempotency key: a retry with the same key is applied once and acked the same way. */
    client_id?: string;
};
/** Edit one of your messages; answered by `ack` (the message's id) after commit, or `error`. */
export type Edit = {
    type: "edit";
    message_id: string;
    /** The client's idempotency key: a retry with the same key is applied once and acked the same way. */
    client_id?: string;
    /** The new text: 1 to MAX_MESSAGE_CHARS characters after trimming. */
    content: string;
};
/** A frame that could not be used; the connection stays open. */
export type Error = {
    type: "error";
    message: string;
    code: ErrorCode;
    client_id?: string;
};
export type ErrorCode = "invalid_json" | "unknown_type" | "invalid_field" | "content_empty" | "content_too_long" | "recipient_not_found" | "not_found" | "forbidden" | "rate_limited" | "unavailable" | "internal" | "unauthorized" | "payload_too_large" | "too_many_members" | "request_timeout" | "outcome_unknown" | "message_deleted" | "too_many_reactions";
/** What `GET /api/v1/conversations/{id}` returns. */
export type Group = {
    id: string;
    kind: "direct" | "group";
    title: string;
    avatar_url: string | null;
    created_by: string | null;
    created_at: string;
    updated_at: string;
    member_count: number;
    members: Array<Member>;
};
/** Mark a message sent to you as read; its sender gets a `read_receipt`. */
export type MarkRead = {
    type: "mark_read";
    message_id: string;
};
export type Member = {
    user_id: string;
    username: string | null;
    avatar_url: string | null;
    role: "member" | "admin" | "owner";
    joined_at: string;
};
export type MemberAdded = {
    type: "member_added";
    conversation_id: string;
    user_ids: Array<string>;
    by: string;
    conversation: Group;
};
export type MemberRemoved = {
    type: "member_removed";
    conversation_id: string;
    user_id: string;
    by: string;
};
/** A message was deleted for everyone: show a tombstone. */
export type MessageDeleted = {
    type: "message_deleted";
    conversation_id: string;
    /** This change's number in the receiving user's sequence (shared with messages). */
    seq: number;
    id: string;
    deleted_at: string;
};
/** A message, to the recipient's sessions (every member's, in a group) and the sender's other sessions. */
export type MessageOut = {
    type: "message";
    id: string;
    from: string;
    /** Direct messages only. */
    to: string;
    /** Group messages only. */
    conversation_id?: never;
    content: string;
    timestamp: string;
    /** This message's number in the receiving user's sequence. */
    seq: number;
    reply_to?: ReplyTo;
    /** In a `sync` page: when the sender last edited it. */
    edited_at?: string;
    /** In a `sync` page: when it was deleted for everyone (its content is empty). */
    deleted_at?: string;
    attachments?: Array<Attachment>;
} | {
    type: "message";
    id: string;
    from: string;
    /** Direct messages only. */
    to?: never;
    /** Group messages only. */
    conversation_id: string;
    content: string;
    timestamp: string;
    /** This message's number in the receiving user's sequence. */
    seq: number;
    reply_to?: ReplyTo;
    /** In a `sync` page: when the sender last edited it. */
    edited_at?: string;
    /** In a `sync` page: when it was deleted for everyone (its content is empty). */
    deleted_at?: string;
    attachments?: Array<Attachment>;
};
/** A message was edited; to everyone who can read it (the editor's other sessions too). */
export type MessageUpdated = {
    type: "message_updated";
    conversation_id: string;
    /** This change's number in the receiving user's sequence (shared with messages). */
    seq: number;
    id: string;
    content: string;
    edited_at: string;
};
/** Keep-alive; answered by `pong`. */
export type Ping = {
    type: "ping";
};
export type Pong = {
    type: "pong";
};
/** React to a message you can read; answered by `ack` or `error`. */
export type React = {
    type: "react";
    message_id: string;
    /** The client's idempotency key: a retry with the same key is applied once and acked the same way. */
    client_id?: string;
    /** One emoji, or a :shortcode: of at most 32 characters (a-z, 0-9, _, +, -). */
    emoji: string;
};
/** Someone reacted to a message. */
export type ReactionAdded = {
    type: "reaction_added";
    conversation_id: string;
    /** This change's number in the receiving user's sequence (shared with messages). */
    seq: number;
    message_id: string;
    user_id: string;
    emoji: string;
};
/** Someone took their reaction back. */
export type ReactionRemoved = {
    type: "reaction_removed";
    conversation_id: string;
    /** This change's number in the receiving user's sequence (shared with messages). */
    seq: number;
    message_id: string;
    user_id: string;
    emoji: string;
};
export type ReadReceipt = {
    type: "read_receipt";
    message_id: string;
    read_by: string;
    conversation_id?: string;
};
/** The message a reply answers. */
export type ReplyTo = {
    id: string;
    sender_id: string;
    /** The first 100 characters of the replied-to message; null once it was deleted. */
    preview: string | null;
    deleted: boolean;
};
/** Send a message; answered by `ack` after commit, or `error`. */
export type SendMessage = {
    type: "message";
    /** A user: a direct message (the seed's frame). */
    to: string;
    /** A group, or a direct conversation by its id. */
    conversation_id?: never;
    /** 1 to MAX_MESSAGE_CHARS characters after trimming. */
    content: string;
    /** The client's idempotency key: a resend with the same key is stored once and acked with the same id. */
    client_id?: string;
    /** The message this one answers: one of the same conversation the sender can read. */
    reply_to?: string;
    /** Files announced with `POST /attachments` and uploaded; with them, `content` may be empty. */
    attachments?: Array<string>;
} | {
    type: "message";
    /** A user: a direct message (the seed's frame). */
    to?: never;
    /** A group, or a direct conversation by its id. */
    conversation_id: string;
    /** 1 to MAX_MESSAGE_CHARS characters after trimming. */
    content: string;
    /** The client's idempotency key: a resend with the same key is stored once and acked with the same id. */
    client_id?: string;
    /** The message this one answers: one of the same conversation the sender can read. */
    reply_to?: string;
    /** Files announced with `POST /attachments` and uploaded; with them, `content` may be empty. */
    attachments?: Array<string>;
};
/** Every frame the server sends. */
export type ServerFrame = MessageOut | Ack | Pong | Error | UserOnline | UserOffline | TypingOut | ReadReceipt | SyncPage | ConversationCreated | MemberAdded | MemberRemoved | ConversationUpdated | MessageUpdated | MessageDeleted | ReactionAdded | ReactionRemoved;
/** Catch up: the messages, and the changes to messages, after `since` (a message id) or `cursor` (a number of this user's sequence), in this user's sequence order. */
export type Sync = {
    type: "sync";
    /** The last id a sync returned, or null for the start. */
    since?: string | null;
    limit?: number;
    /** Where the last `sync` answer ended (its `cursor`): go on from there. Give `since` or `cursor`, not both. */
    cursor?: number;
};
/** A message in a `sync` page: a message frame without its `type`. */
export type SyncMessage = {
    id: string;
    from: string;
    /** Direct messages only. */
    to: string;
    /** Group messages only. */
    conversation_id?: never;
    content: string;
    timestamp: string;
    /** This message's number in the receiving user's sequence. */
    seq: number;
    reply_to?: ReplyTo;
    /** In a `sync` page: when the sender last edited it. */
    edited_at?: string;
    /** In a `sync` page: when it was deleted for everyone (its content is empty). */
    deleted_at?: string;
    attachments?: Array<Attachment>;
} | {
    id: string;
    from: string;
    /** Direct messages only. */
    to?: never;
    /** Group messages only. */
    conversation_id: string;
    content: string;
    timestamp: string;
    /** This message's number in the receiving user's sequence. */
    seq: number;
    reply_to?: ReplyTo;
    /** In a `sync` page: when the sender last edited it. */
    edited_at?: string;
    /** In a `sync` page: when it was deleted for everyone (its content is empty). */
    deleted_at?: string;
    attachments?: Array<Attachment>;
};
export type SyncPage = {
    type: "sync";
    messages: Array<SyncMessage>;
    has_more: boolean;
    /** Changes to messages, in this user's sequence; they interleave with `messages` by `seq`. */
    changes: Array<MessageUpdated | MessageDeleted | ReactionAdded | ReactionRemoved>;
    /** Where this page ends: the next `sync` gives it as `cursor`. */
    cursor: number;
};
/** Typing on or off, to a user or a group. */
export type TypingIn = {
    type: "typing";
    to: string;
    conversation_id?: never;
    is_typing: boolean;
} | {
    type: "typing";
    to?: never;
    conversation_id: string;
    is_typing: boolean;
};
export type TypingOut = {
    type: "typing";
    from: string;
    is_typing: boolean;
    conversation_id?: string;
};
/** Take your reaction back; answered by `ack` or `error`. */
export type Unreact = {
    type: "unreact";
    message_id: string;
    /** The client's idempotency key: a retry with the same key is applied once and acked the same way. */
    client_id?: string;
    /** One emoji, or a :shortcode: of at most 32 characters (a-z, 0-9, _, +, -). */
    emoji: string;
};
/** A contact went offline. */
export type UserOffline = {
    type: "user_offline";
    user_id: string;
    version: number;
};
/** A contact came online. */
export type UserOnline = {
    type: "user_online";
    user_id: string;
    version: number;
};
