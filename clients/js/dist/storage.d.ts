import type { ClientFrame } from "./generated/protocol.js";
/** A send or change not yet acked, kept across reconnects (and restarts). */
export interface OutboxEntry {
    client_id: string;
    /** The frame, exactly as first sent: a resend repeats it byte for byte. */
    frame: ClientFrame & {
        client_id: string;
    };
}
/** What the client keeps so that a restart resumes where it stopped. */
export interface SavedState {
    version: 1;
    /** Whose state this is: another user's is never resumed. */
    user: string;
    /** Where the last `sync` page ended. */
    cursor: number;
    /** Ids (and `change:<seq>` keys) handed to the app past the cursor, with their seq (0: not known yet). */
    seen: Array<[string, number]>;
    /** The user's own messages handed over most recently (an ack may still come for one). */
    own: string[];
    outbox: OutboxEntry[];
}
/**
 * Where the client persists its state. Both calls may be synchronous or
 * return promises; `save` calls are made one at a time, in order.
 */
export interface ClientStorage {
    load(): SavedState | null | Promise<SavedState | null>;
    save(state: SavedState): void | Promise<void>;
}
/** Keeps the state in memory: it lasts as long as the process (the default). */
export declare function memoryStorage(): ClientStorage;
/** The parts of the Web Storage API the adapter uses. */
export interface WebStorage {
    getItem(key: string): string | null;
    setItem(key: string, value: string): void;
}
/**
 * Keeps the state in the browser's `localStorage` (or any Web Storage,
 * such as `sessionStorage`) under `key`. A value that is not a saved state
 * (another program's, or damaged) is ignored.
 */
export declare function webStorage(key?: string, storage?: WebStorage): ClientStorage;
/** A saved state from its JSON text, or null when it is not one. */
export declare function parseState(text: string | null): SavedState | null;
/**
 * Saves the client's state one save at a time, in order. Calls made while
 * a save waits to start share it, and answer once a save holding their
 * change is done. A failed save is reported, not thrown: it must not hold
 * messaging back.
 */
export declare class Saver {
    private readonly storage;
    private readonly snapshot;
    private readonly failed;
    private saving;
    private queued;
    constructor(storage: ClientStorage, snapshot: () => SavedState, failed: (error: unknown) => void);
    save(): Promise<void>;
    /** Resolves once every save asked for so far is done. */
    get done(): Promise<void>;
}
