import { type Backoff } from "./backoff.js";
import { OchatError } from "./errors.js";
import { type Change, type ChatMessage, type OwnChange } from "./feed.js";
import type { Attachment, ConversationCreated, ConversationUpdated, MemberAdded, MemberRemoved, ReadReceipt, ServerFrame, TypingOut, UserOffline, UserOnline } from "./generated/protocol.js";
import type { Operations } from "./generated/rest.js";
import { RestMethods } from "./methods.js";
import { Rest } from "./rest.js";
import { type ClientStorage } from "./storage.js";
import { type TokenSource } from "./token.js";
/** The parts of the WebSocket API the client uses (the platform's, or `ws`'s in Node 20). */
export interface WebSocketLike {
    readonly readyState: number;
    send(data: string): void;
    close(code?: number, reason?: string): void;
    addEventListener(type: "open" | "error", listener: () => void): void;
    addEventListener(type: "message", listener: (event: {
        data: unknown;
    }) => void): void;
    addEventListener(type: "close", listener: (event: {
        code: number;
        reason: string;
    }) => void): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;
export interface ClientOptions {
    /** The ochat server's (or its load balancer's) http(s) origin; in a browser, the page's by default. */
    url?: string;
    /** A token, or a function answering a fresh one (called again before expiry and after a refusal). */
    token: TokenSource;
    /** The WebSocket class; the platform's by default (Node 20 has none: pass `ws`'s). */
    WebSocket?: WebSocketConstructor;
    fetch?: typeof fetch;
    /** Where the cursor, the ids past it and the outbox are kept; memory by default. */
    storage?: ClientStorage;
    /** Reconnect waits: exponential with full jitter (250 ms doubling to 30 s by default). */
    backoff?: Backoff;
    /**
     * How long before a token's expiry to fetch the next one and reconnect
     * with it, in ms (default 60,000; at most a quarter of its life). 0: only
     * once the server closes the connection for the expired token.
     */
    refreshBefore?: number;
    /** Messages and changes per sync page (default 100). */
    syncLimit?: number;
    /** Sync this often while online, in ms, so that a gap in live delivery never lasts (default 30,000; 0: never). */
    syncEvery?: number;
    /** A sync page not answered within this many ms is asked again (default 15,000). */
    syncTimeout?: number;
    /**
     * Sends a ping this often while online, in ms (default 20,000; 0:
     * never); a connection silent for twice as long is given up on.
     */
    heartbeat?: number;
    /** At most one "typing" per conversation this often, in ms (default 2,000). */
    typingEvery?: number;
    /** Sends and changes waiting for their ack, at most (default 1,000). */
    outboxLimit?: number;
    /** Messages kept in the local view (default 5,000). */
    viewSize?: number;
}
export type ConnectionState = "connecting" | "online" | "offline" | "closed";
/** Who a message or a typing signal is for: one user, or a group. */
export type Destination = {
    to: string;
} | {
    conversationId: string;
};
export interface SendInput {
    to?: string;
    conversationId?: string;
    content: string;
    /** The message this one answers. */
    replyTo?: string;
    /** Files announced with `announceAttachment` and uploaded: their ids, or the whole attachments to show at once. */
    attachments?: Array<string | Attachment>;
}
export type GroupEvent = ConversationCreated | MemberAdded | MemberRemoved | ConversationUpdated;
export interface ClientEvents {
    /** The connection's state changed. */
    state: {
        state: ConnectionState;
        attempt: number;
        code?: number;
        reason?: string;
    };
    /** Each message of this user's feed, exactly once: received, sent from here or from another device. */
    message: ChatMessage;
    /** A change to a message: `message` is the view's copy after it, or null when the view does not hold it. */
    change: {
        change: Change | OwnChange;
        message: ChatMessage | null;
    };
    typing: TypingOut;
    read: ReadReceipt;
    presence: UserOnline | UserOffline;
    group: GroupEvent;
    /** A sync reached the end of the feed. */
    synced: {
        cursor: number;
    };
    /** A refusal no promise carries (a typing frame, a sync), or a storage failure. */
    error: OchatError;
    /** Every frame the server sends, as it came. */
    frame: ServerFrame;
}
/** Connects (and keeps connecting) to ochat. */
export declare function connect(options: ClientOptions): OchatClient;
export declare class OchatClient extends RestMethods<ClientEvents> {
    /** Resolves once the saved state is loaded and the user known; rejects if that fails. */
    readonly ready: Promise<void>;
    /** The REST API, typed from the OpenAPI document. */
    readonly rest: Rest;
    private readonly options;
    private readonly tokens;
    private readonly storage;
    private readonly socketUrl;
    private readonly outbox;
    private feed;
    private me;
    private ws;
    /** Which connection each outbox entry last went out on. */
    private readonly sentOn;
    private stateNow;
    private attempt;
    private closed;
    private wake;
    /** Sync requests sent on this connection and not answered yet. */
    private syncsOut;
    private syncAgain;
    private syncTimer;
    /** The connection's timers (periodic sync, heartbeat, token refresh, resends): cleared with it. */
    private readonly timers;
    /** When the connection last heard from the server. */
    private lastHeard;
    /** Ends the connection now, without waiting for its close (the network may be gone). */
    private abandon;
    /** Sends and changes added whose save has not finished: they go out after it. */
    private readonly unsaved;
    private plannedClose;
    private readonly unreadSent;
    /** How often the server answered a busy refusal to each outbox entry. */
    private readonly refusals;
    /** The attachments a send in the outbox carries, to show once it is stored. */
    private readonly files;
    private readonly typingSent;
    private saving;
    private saveQueued;
    private readonly running;
    constructor(options: ClientOptions);
    /** The connection's state now. */
    get state(): ConnectionState;
    /** The signed-in user's id (once `ready`). */
    get userId(): string;
    /** Sends and changes still waiting for their ack. */
    get pending(): number;
    /** A message of the local view. */
    message(id: string): ChatMessage | undefined;
    /**
     * Sends a message; resolves with it once stored. Until then it waits in
     * the outbox and goes again, with the same `client_id`, on every
     * connection: the server stores it once. Rejects only when refused for
     * good (`OchatError` with the server's code) or when the client closes.
     */
    send(input: SendInput): Promise<ChatMessage>;
    /** Edits one's own message; resolves once stored. */
    edit(messageId: string, content: string): Promise<void>;
    /** Deletes a message for everyone (one's own, or any as a group's owner or admin). */
    delete(messageId: string): Promise<void>;
    react(messageId: string, emoji: string): Promise<void>;
    unreact(messageId: string, emoji: string): Promise<void>;
    /** Tells the sender a message was read; sent once connected when offline. */
    markRead(messageId: string): void;
    /**
     * Tells the other side one is typing (or stopped). Throttled: at most
     * one "typing" per conversation per `typingEvery`; a stop goes only after
     * a start. Dropped while offline (it would be stale).
     */
    typing(destination: Destination, isTyping?: boolean): void;
    /** Catches up now (the client also does on every connection and every `syncEvery`). */
    sync(): void;
    /** A page of a conversation's history, oldest first; page back with `before`. Changes apply to these messages too. */
    history(query: {
        withUser: string;
        before?: string;
        limit?: number;
    } | {
        conversationId: string;
        before?: string;
        limit?: number;
    }): Promise<{
        messages: ChatMessage[];
        has_more: boolean;
    }>;
    /** Full-text search of one's messages. */
    searchMessages(query: Operations["GET /messages/search"]["query"]): Promise<ChatMessage[]>;
    /**
     * Waits (up to `syncTimeout`) for a sync under way: messages read over
     * REST then already count the changes the sync brings, which are then
     * not applied to them twice.
     */
    private caughtUp;
    /**
     * Closes the connection for good. Unacked sends stay in the storage
     * (a client started on it later resends them); their promises reject
     * with `closed`.
     */
    close(): Promise<void>;
    /**
     * Loads the saved state and learns the user; tried again (with backoff)
     * until it works or the client closes: a token service or storage that
     * is down at start-up is not the end.
     */
    private load;
    private run;
    /** The client stops for good: waiting sends reject with `error`. */
    private end;
    /** One connection, from its opening to its close (or its silence). */
    private session;
    private opened;
    private receive;
    /**
     * A sync page: messages and changes interleave by seq, and go to the app
     * in that order. A page asked for twice (the first answer was late)
     * hands over nothing twice: the feed drops what its cursor passed.
     */
    private page;
    private requestSync;
    private askSync;
    private clearSyncTimer;
    /** Whether a sync is under way on an open connection. */
    private get catchingUp();
    private acked;
    private change;
    /**
     * Saves a new outbox entry, then sends it; answers its ack. The entry
     * waits for its save even on a connection opening meanwhile, so nothing
     * goes out that a crash could forget.
     */
    private saveThenTransmit;
    private ensureOpen;
    /** Sends an outbox entry on the current connection, unless it went out on it already. */
    private transmit;
    private sendFrame;
    /** The message an ack confirms, as the server stored it. */
    private sentMessage;
    /**
     * Saves the state; calls made while a save waits to start share it, and
     * answer once a save holding their change is done.
     */
    private save;
    private snapshot;
    private setState;
    private pause;
    private stopTimers;
}
