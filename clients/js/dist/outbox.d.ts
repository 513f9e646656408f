import { OchatError } from "./errors.js";
import type { OutboxEntry } from "./storage.js";
/** An ack: the stored message's id and time. */
export interface Acked {
    id: string;
    timestamp: string;
}
/**
 * Sends and changes until their ack, in the order made. Every entry is
 * (re)sent on each connection with its first `client_id`, so the server
 * stores it once however often it arrives. The promises live only in this
 * process; entries restored from storage after a restart are resent, and
 * their messages reach the app as `message` events.
 */
export declare class Outbox {
    private readonly limit;
    private readonly entries;
    private readonly waiters;
    constructor(limit: number);
    get size(): number;
    /** Adds an entry; answers the promise of its ack. */
    add(entry: OutboxEntry): Promise<Acked>;
    restore(entries: OutboxEntry[]): void;
    get(clientId: string): OutboxEntry | undefined;
    list(): OutboxEntry[];
    /** The ack came: answers the entry it settled, if it was waiting. */
    acked(clientId: string, ack: Acked): OutboxEntry | undefined;
    /** Refused for good: the entry goes, its promise rejects. */
    refused(clientId: string, error: OchatError): OutboxEntry | undefined;
    /** The client closed: every waiting promise rejects (entries stay saved). */
    abandon(error: OchatError): void;
}
