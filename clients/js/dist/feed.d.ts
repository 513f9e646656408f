import type { Attachment, MessageDeleted, MessageUpdated, ReactionAdded, ReactionRemoved, ReplyTo } from "./generated/protocol.js";
/** A message as the app sees it, from whichever source it came. */
export interface ChatMessage {
    id: string;
    /** The sender. */
    from: string;
    /** The receiver of a direct message; null in a group. */
    to: string | null;
    /** The group; null for a direct message. */
    conversation_id: string | null;
    /** Empty once deleted. */
    content: string;
    /** When it was stored. */
    timestamp: string;
    /** Its number in this user's sequence, when known. */
    seq?: number;
    reply_to: ReplyTo | null;
    edited_at: string | null;
    deleted_at: string | null;
    attachments: Attachment[];
    /** Per emoji: how many reacted, and whether this user did. */
    reactions: Array<{
        emoji: string;
        count: number;
        me: boolean;
    }>;
    /** Whether its receiver read it (direct messages). */
    is_read: boolean;
}
/** A change to a message, from a live frame, a sync page or an ack. */
export type Change = MessageUpdated | MessageDeleted | ReactionAdded | ReactionRemoved;
/** A change without its place in the sequence: what an ack stands for. */
export type OwnChange = DistributiveOmit<Change, "seq" | "conversation_id">;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
/** What a change did: the view's message, and whether it changed. */
export interface Applied {
    message: ChatMessage | null;
    changed: boolean;
}
export interface FeedLimits {
    /** Messages kept in the view for changes to apply to (default 5,000). */
    viewSize?: number;
    /** Ids remembered past the cursor (default 10,000). */
    seenSize?: number;
}
export declare class Feed {
    private readonly me;
    /** Where the last sync page ended. */
    cursor: number;
    /** Handed over past the cursor: message ids and `change:<seq>`, with their seq (0: unknown). */
    private readonly seen;
    /** The most recently touched messages, oldest first. */
    private readonly view;
    /**
     * The user's own messages handed over most recently: an ack can come
     * after a sync page already handed its message over and moved the
     * cursor past it (the ack was lost with a node, the resend answered
     * after the new connection's sync). An ack carries no seq, so the cursor
     * cannot tell; this can.
     */
    private readonly own;
    /** Per message, who reacted with what: a repeated frame changes nothing. */
    private readonly reactors;
    private readonly viewSize;
    private readonly seenSize;
    constructor(me: string, limits?: FeedLimits);
    /**
     * A message from any source: answers the held message to hand to the
     * app, or null when the app had it already. Anything at or below the
     * cursor was handed over with its sync page (a live frame late, or a
     * page asked for twice).
     */
    takeMessage(message: ChatMessage): ChatMessage | null;
    /**
     * A change from a live frame or a sync page; answers what applying it
     * did, or null when the app already had this change.
     */
    takeChange(change: Change): Applied | null;
    /**
     * Applies a change to the view: a change applied twice ends the same
     * way, and the second time `changed` is false.
     */
    apply(change: Change | OwnChange): Applied;
    private applyTo;
    /** A sync page was handed over: forget what it passed. */
    advance(cursor: number): void;
    /**
     * Puts a message in the view (or moves it to the newest end); answers
     * the view's copy. `fresh`: it was just read from the server (history,
     * search), so its state replaces what the view held.
     */
    keep(message: ChatMessage, fresh?: boolean): ChatMessage;
    message(id: string): ChatMessage | undefined;
    /** Everything handed over past the cursor, for saving. */
    seenEntries(): Array<[string, number]>;
    /** The user's own messages handed over most recently, for saving. */
    ownEntries(): string[];
    restore(cursor: number, seen: Array<[string, number]>, own?: string[]): void;
    private remember;
}
export {};
