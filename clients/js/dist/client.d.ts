import { type ChatMessage } from "./feed.js";
import type { Operations } from "./generated/rest.js";
import { RestMethods } from "./methods.js";
import type { ClientEvents, ClientOptions, ConnectionState, Destination, SendInput } from "./options.js";
import { Rest } from "./rest.js";
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
    private conn;
    /** Which connection each outbox entry last went out on. */
    private readonly sentOn;
    private stateNow;
    private attempt;
    private closed;
    private wake;
    /** This connection's sync requests. */
    private syncs;
    /** Sends and changes added whose save has not finished: they go out after it. */
    private readonly unsaved;
    private readonly unreadSent;
    /** How often the server answered a busy refusal to each outbox entry. */
    private readonly refusals;
    /** The attachments a send in the outbox carries, to show once it is stored. */
    private readonly files;
    private readonly typingSent;
    private readonly saver;
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
    /** One connection, from its opening to its end. */
    private connection;
    private opened;
    private receive;
    /**
     * A sync page: messages and changes interleave by seq, and go to the app
     * in that order. A page asked for twice (the first answer was late)
     * hands over nothing twice: the feed drops what its cursor passed.
     */
    private page;
    private requestSync;
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
    private save;
    private setState;
    private pause;
}
