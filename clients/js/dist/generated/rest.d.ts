export type Alive = {
    /** Always `ok`. */
    status: string;
};
export type AnnounceBody = {
    /** One of `ATTACHMENT_TYPES`. */
    content_type: string;
    height?: number | null;
    /** The file's name, as readers will see it (1 to 255 characters). */
    name: string;
    /**
     * Its size in bytes: what will be uploaded, at most
     * `MAX_ATTACHMENT_BYTES`.
     */
    size: number;
    /** Images only: pixels, for a placeholder while it loads. */
    width?: number | null;
};
/**
 * A file a message carries, as readers see it. `url` is the node's
 * `GET /api/v1/attachments/{id}`, which checks the reader may see it and
 * redirects to a download URL that expires.
 */
export type Attachment = {
    content_type: string;
    height?: number | null;
    id: string;
    name: string;
    size: number;
    url: string;
    /** Images only, when the uploader gave them. */
    width?: number | null;
};
/** Someone a user has blocked. */
export type Block = {
    blocked_at: string;
    user_id: string;
};
/** Whether the caller now blocks the user. */
export type Blocking = {
    blocked: boolean;
    user_id: string;
};
export type BlockList = {
    blocks: Array<Block>;
};
export type Checks = {
    bus: string;
    database: string;
    presence: string;
};
/**
 * One entry of `GET /messages/conversations`: a direct conversation (the
 * seed's fields) or a group. Written by `ConversationSummary`'s
 * `Serialize`; Schemathesis checks every answer against this.
 */
export type ConversationEntry = DirectEntry | GroupEntry;
export type ConversationKind = "direct" | "group";
export type ConversationList = {
    conversations: Array<ConversationEntry>;
};
export type CreateBody = {
    /** An http(s) URL without spaces or control characters. */
    avatar_url?: string | null;
    /** The other members (the caller becomes the owner), each once. */
    member_ids: Array<string>;
    /**
     * 1 to 100 characters (not all spaces), no control or invisible
     * formatting characters.
     */
    title: string;
};
export type DevConfig = {
    /** Whether `POST /dev/token` exists on this node. */
    dev_signin: boolean;
};
export type DirectEntry = {
    avatar_url?: string | null;
    conversation_id: string;
    kind: "direct" | "group";
    last_message?: null | Message;
    unread_count: number;
    /** The other person. */
    user_id: string;
    username?: string | null;
};
export type DownloadLink = {
    expires_at: string;
    url: string;
};
export type EditBody = {
    /**
     * An idempotency key (1 to 64 characters): repeating it answers the
     * edit already made.
     */
    client_id?: string | null;
    /** The new text: 1 to `MAX_MESSAGE_CHARS` characters once trimmed. */
    content: string;
};
/** Every REST error: `{"error":{"code","message"}}`. */
export type ErrorBody = {
    error: ErrorDetail;
};
/** Machine-readable error codes, exactly as they appear on the wire. */
export type ErrorCode = "invalid_json" | "unknown_type" | "invalid_field" | "content_empty" | "content_too_long" | "recipient_not_found" | "not_found" | "forbidden" | "rate_limited" | "unavailable" | "internal" | "unauthorized" | "payload_too_large" | "too_many_members" | "request_timeout" | "outcome_unknown" | "message_deleted" | "too_many_reactions";
export type ErrorDetail = {
    code: ErrorCode;
    /** A sentence for people; match on `code`. */
    message: string;
};
/** A group with its current members (oldest first). */
export type Group = {
    avatar_url?: string | null;
    created_at: string;
    created_by?: string | null;
    id: string;
    kind: ConversationKind;
    member_count: number;
    members: Array<Member>;
    title: string;
    updated_at: string;
};
export type GroupEntry = {
    avatar_url?: string | null;
    conversation_id: string;
    kind: "direct" | "group";
    last_message?: null | Message;
    member_count: number;
    title: string;
    unread_count: number;
};
export type MarkRead = {
    /** Messages sent to the caller; at most 1000. */
    message_ids: Array<string>;
};
export type Member = {
    avatar_url?: string | null;
    joined_at: string;
    role: Role;
    user_id: string;
    username?: string | null;
};
export type MembersBody = {
    /** Each once. */
    user_ids: Array<string>;
};
/** A stored message, serialised with the columns of the seed's table. */
export type Message = {
    /** Files it carries (absent when none). */
    attachments?: Array<Attachment>;
    content: string;
    conversation_id: string;
    created_at: string;
    /**
     * When it was deleted for everyone: its content is gone (empty) and
     * only id, sender and times remain.
     */
    deleted_at?: string | null;
    /** When the sender last edited it; absent if never. */
    edited_at?: string | null;
    id: string;
    is_read: boolean;
    message_type: MessageType;
    /** Per-emoji counts, in history and search (absent when none). */
    reactions?: Array<Reaction>;
    read_at?: string | null;
    /** The recipient of a direct message; `None` in a group. */
    receiver_id?: string | null;
    reply_to?: null | ReplyTo;
    sender_id: string;
    updated_at: string;
};
/** A page of history, newest first. */
export type MessagePage = {
    has_more: boolean;
    messages: Array<Message>;
};
export type MessageType = "text" | "image" | "file" | "system";
/** Absent keeps a field, `null` clears it. */
export type PatchBody = {
    /** An http(s) URL without spaces or control characters, or null. */
    avatar_url?: string | null;
    /**
     * 1 to 50 characters (not all spaces), no control or invisible
     * formatting characters, or null.
     */
    username?: string | null;
};
export type People = {
    /** More match: ask again with `after` set to the last user's `id`. */
    has_more: boolean;
    users: Array<Person>;
};
/** Someone found by name: what anyone signed in may see of them. */
export type Person = {
    avatar_url?: string | null;
    id: string;
    username?: string | null;
};
/** Another user's profile as the asker may see it. */
export type Profile = {
    avatar_url?: string | null;
    id: string;
    /** `false` unless this user has talked to the asker. */
    is_online: boolean;
    /** `null` unless this user has talked to the asker. */
    last_seen?: string | null;
    username?: string | null;
};
/**
 * One emoji's reactions on a message: how many, and whether the reader is
 * among them.
 */
export type Reaction = {
    count: number;
    emoji: string;
    me: boolean;
};
export type Readiness = {
    /** `ok` or `down` for `database`, `bus` and `presence`. */
    checks: Checks;
    /** `ready`, `draining` or `unavailable`. */
    status: string;
};
/** The message a reply answers, as the reply shows it. */
export type ReplyTo = {
    deleted: boolean;
    id: string;
    /**
     * Its first characters (up to [`ReplyTo::PREVIEW_CHARS`]); `null`
     * once it was deleted.
     */
    preview?: string | null;
    sender_id: string;
};
/**
 * A member's role in a group: owners manage everything (roles included),
 * admins manage members, members talk.
 */
export type Role = "member" | "admin" | "owner";
export type RoleBody = {
    role: Role;
};
export type SearchResults = {
    messages: Array<Message>;
};
export type Stats = {
    conversations: number;
    total_received: number;
    total_sent: number;
    unread: number;
};
export type UpdateBody = {
    /**
     * Absent keeps the avatar; `null` clears it; else an http(s) URL
     * without spaces or control characters.
     */
    avatar_url?: string | null;
    /**
     * 1 to 100 characters (not all spaces), no control or invisible
     * formatting characters.
     */
    title?: string | null;
};
export type Updated = {
    /** How many of them turned read now (already read ones do not count). */
    updated: number;
};
export type Upload = {
    expires_at: string;
    id: string;
    /**
     * `PUT` the bytes here, before `expires_at`. Relative URLs are the
     * node's own (the embedded store).
     */
    upload_url: string;
};
export type User = {
    avatar_url?: string | null;
    created_at: string;
    email: string;
    id: string;
    is_online: boolean;
    last_seen: string;
    updated_at: string;
    username?: string | null;
};
export interface Operations {
    /** The WebSocket protocol as data: every frame's JSON Schema. */
    "GET /asyncapi.json": {
        path: {};
        query: {};
        body: never;
        response: Record<string, unknown>;
    };
    /**
     * Announces a file; the answer says where to upload it. Then send a
     * message with `"attachments": [id]`.
     */
    "POST /attachments": {
        path: {};
        query: {};
        body: AnnounceBody;
        response: Upload;
    };
    /**
     * Fetches an attachment of a message the caller can read: a redirect to a
     * download URL that expires, or, with `Accept: application/json`, that
     * URL as JSON (for a page that sets an image's `src` itself).
     */
    "GET /attachments/{id}": {
        path: {
            /** The attachment */
            id: string;
        };
        query: {};
        body: never;
        response: DownloadLink;
    };
    /** Creates a group; every member's sessions get `conversation_created`. */
    "POST /conversations": {
        path: {};
        query: {};
        body: CreateBody;
        response: Group;
    };
    /** A group (or direct conversation) with its members; members only. */
    "GET /conversations/{id}": {
        path: {
            /** The conversation */
            id: string;
        };
        query: {};
        body: never;
        response: Group;
    };
    /** Changes a group's title or avatar (admins and owners). */
    "PATCH /conversations/{id}": {
        path: {
            /** The conversation */
            id: string;
        };
        query: {};
        body: UpdateBody;
        response: Group;
    };
    /** Adds members (admins and owners); every member gets `member_added`. */
    "POST /conversations/{id}/members": {
        path: {
            /** The conversation */
            id: string;
        };
        query: {};
        body: MembersBody;
        response: Group;
    };
    /** Removes a member, or leaves when it is the caller. */
    "DELETE /conversations/{id}/members/{user_id}": {
        path: {
            /** The conversation */
            id: string;
            /** The member */
            user_id: string;
        };
        query: {};
        body: never;
        response: void;
    };
    /** Sets a member's role (owners). */
    "PATCH /conversations/{id}/members/{user_id}": {
        path: {
            /** The conversation */
            id: string;
            /** The member */
            user_id: string;
        };
        query: {};
        body: RoleBody;
        response: Group;
    };
    /** Whether this node offers development sign-in (the browser client asks). */
    "GET /dev/config": {
        path: {};
        query: {};
        body: never;
        response: DevConfig;
    };
    /** The seed's health check: the process answers. */
    "GET /health": {
        path: {};
        query: {};
        body: never;
        response: Alive;
    };
    /**
     * Liveness for an orchestrator: the process answers (never checks
     * dependencies, so a Redis outage does not restart every node).
     */
    "GET /livez": {
        path: {};
        query: {};
        body: never;
        response: Alive;
    };
    /**
     * Deletes a message for everyone (its sender, or a group's owner or
     * admins): its content leaves storage, a tombstone keeps its id, sender
     * and times. Deleting it again changes nothing.
     */
    "DELETE /messages/{id}": {
        path: {
            /** The message */
            id: string;
        };
        query: {};
        body: never;
        response: void;
    };
    /**
     * Edits one of the caller's messages; everyone who can read it gets
     * `message_updated`.
     */
    "PATCH /messages/{id}": {
        path: {
            /** The message */
            id: string;
        };
        query: {};
        body: EditBody;
        response: Message;
    };
    /** Takes the caller's reaction back; if there is none, nothing changes. */
    "DELETE /messages/{id}/reactions/{emoji}": {
        path: {
            /** The message */
            id: string;
            /** One emoji, or a :shortcode: of at most 32 characters */
            emoji: string;
        };
        query: {};
        body: never;
        response: void;
    };
    /**
     * Reacts to a message the caller can read with one emoji (URL-encoded),
     * or a `:shortcode:`; reacting again with the same one changes nothing.
     */
    "PUT /messages/{id}/reactions/{emoji}": {
        path: {
            /** The message */
            id: string;
            /** One emoji, or a :shortcode: of at most 32 characters */
            emoji: string;
        };
        query: {};
        body: never;
        response: void;
    };
    /** A conversation's history, newest first. */
    "GET /messages/conversation": {
        path: {};
        query: {
            /** The other person of a direct conversation. */
            with_user?: string;
            /** A group, or a direct conversation by its id. */
            conversation_id?: string;
            /** Page size, default 50; clamped to 1 to 100. */
            limit?: number;
            /** Messages older than this message id. */
            before?: string;
        };
        body: never;
        response: MessagePage;
    };
    /** The caller's conversations, most recent first. */
    "GET /messages/conversations": {
        path: {};
        query: {
            /** How many, default 50; clamped to 1 to 100. */
            limit?: number;
        };
        body: never;
        response: ConversationList;
    };
    /** Marks messages sent to the caller as read; their senders get receipts. */
    "POST /messages/mark-read": {
        path: {};
        query: {};
        body: MarkRead;
        response: Updated;
    };
    /** Full-text search over the caller's messages, newest first. */
    "GET /messages/search": {
        path: {};
        query: {
            /** Words to find (all of them), in messages the caller sent or received. */
            query: string;
            /** How many, default 50; clamped to 1 to 100. */
            limit?: number;
        };
        body: never;
        response: SearchResults;
    };
    /** The caller's message counts. */
    "GET /messages/stats": {
        path: {};
        query: {};
        body: never;
        response: Stats;
    };
    /** This document. */
    "GET /openapi.json": {
        path: {};
        query: {};
        body: never;
        response: Record<string, unknown>;
    };
    /**
     * Ready only while storage, bus and presence answer and the node is not
     * draining, so a load balancer stops sending new connections in time.
     */
    "GET /readyz": {
        path: {};
        query: {};
        body: never;
        response: Readiness;
    };
    /**
     * Another user's public profile. `is_online` and `last_seen` show only
     * once that user has talked to the caller (sent them a message, or posted
     * in a small group they share); a user who blocked the caller is not
     * found.
     */
    "GET /users/{id}": {
        path: {
            /** The user's id */
            id: string;
        };
        query: {};
        body: never;
        response: Profile;
    };
    /** Unblocks a user (one not blocked: no change). */
    "DELETE /users/{id}/block": {
        path: {
            /** The user to unblock */
            id: string;
        };
        query: {};
        body: never;
        response: Blocking;
    };
    /**
     * Blocks a user: they can no longer message the caller, type to them, add
     * them to a group or see their presence or profile, and get the answers a
     * user that does not exist gets. Blocking twice changes nothing.
     */
    "POST /users/{id}/block": {
        path: {
            /** The user to block */
            id: string;
        };
        query: {};
        body: never;
        response: Blocking;
    };
    /** The caller's profile (created on first sight of a valid token). */
    "GET /users/me": {
        path: {};
        query: {};
        body: never;
        response: User;
    };
    /** Changes the caller's username or avatar. */
    "PATCH /users/me": {
        path: {};
        query: {};
        body: PatchBody;
        response: User;
    };
    /** The users the caller has blocked, most recent first. */
    "GET /users/me/blocks": {
        path: {};
        query: {
            /** How many, default 50; clamped to 1 to 100. */
            limit?: number;
        };
        body: never;
        response: BlockList;
    };
    /**
     * Finds people by the start of their username, any case, ordered by name:
     * whom to start a chat with. The caller and anyone who blocked the caller
     * are never listed. Searches have a budget of their own per user
     * (`USER_SEARCH_PER_SEC`, `USER_SEARCH_BURST`), on top of the request
     * budget, so the directory cannot be listed quickly.
     */
    "GET /users/search": {
        path: {};
        query: {
            /** The start of a username, 1 to 64 characters, any case. */
            q?: string;
            /** The `id` of the last user of the previous page. */
            after?: string;
            /** How many, default 50; clamped to 1 to 100. */
            limit?: number;
        };
        body: never;
        response: People;
    };
}
