import { OchatError } from "./errors.js";
/**
 * Sends and changes until their ack, in the order made. Every entry is
 * (re)sent on each connection with its first `client_id`, so the server
 * stores it once however often it arrives. The promises live only in this
 * process; entries restored from storage after a restart are resent, and
 * their messages reach the app as `message` events.
 */
export class Outbox {
    limit;
    entries = new Map();
    waiters = new Map();
    constructor(limit) {
        this.limit = limit;
    }
    get size() {
        return this.entries.size;
    }
    /** Adds an entry; answers the promise of its ack. */
    add(entry) {
        if (this.entries.size >= this.limit) {
            return Promise.reject(new OchatError("outbox_full", `${this.limit} sends are waiting for their ack already`));
        }
        this.entries.set(entry.client_id, entry);
        return new Promise((resolve, reject) => this.waiters.set(entry.client_id, { resolve, reject }));
    }
    restore(entries) {
        for (const entry of entries)
            this.entries.set(entry.client_id, entry);
    }
    get(clientId) {
        return this.entries.get(clientId);
    }
    list() {
        return [...this.entries.values()];
    }
    /** The ack came: answers the entry it settled, if it was waiting. */
    acked(clientId, ack) {
        const entry = this.entries.get(clientId);
        this.entries.delete(clientId);
        this.waiters.get(clientId)?.resolve(ack);
        this.waiters.delete(clientId);
        return entry;
    }
    /** Refused for good: the entry goes, its promise rejects. */
    refused(clientId, error) {
        const entry = this.entries.get(clientId);
        this.entries.delete(clientId);
        this.waiters.get(clientId)?.reject(error);
        this.waiters.delete(clientId);
        return entry;
    }
    /** The client closed: every waiting promise rejects (entries stay saved). */
    abandon(error) {
        for (const waiter of this.waiters.values())
            waiter.reject(error);
        this.waiters.clear();
    }
}
