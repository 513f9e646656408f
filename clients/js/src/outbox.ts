import { OchatError } from "./errors.js";
import type { OutboxEntry } from "./storage.js";

type Waiter = { resolve: (ack: Acked) => void; reject: (error: OchatError) => void };

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
export class Outbox {
  private readonly entries = new Map<string, OutboxEntry>();
  private readonly waiters = new Map<string, Waiter>();

  constructor(private readonly limit: number) {}

  get size(): number {
    return this.entries.size;
  }

  /** Adds an entry; answers the promise of its ack. */
  add(entry: OutboxEntry): Promise<Acked> {
    if (this.entries.size >= this.limit) {
      return Promise.reject(new OchatError("outbox_full", `${this.limit} sends are waiting for their ack already`));
    }
    this.entries.set(entry.client_id, entry);
    return new Promise((resolve, reject) => this.waiters.set(entry.client_id, { resolve, reject }));
  }

  restore(entries: OutboxEntry[]): void {
    for (const entry of entries) this.entries.set(entry.client_id, entry);
  }

  get(clientId: string): OutboxEntry | undefined {
    return this.entries.get(clientId);
  }

  list(): OutboxEntry[] {
    return [...this.entries.values()];
  }

  /** The ack came: answers the entry it settled, if it was waiting. */
  acked(clientId: string, ack: Acked): OutboxEntry | undefined {
    const entry = this.entries.get(clientId);
    this.entries.delete(clientId);
    this.waiters.get(clientId)?.resolve(ack);
    this.waiters.delete(clientId);
    return entry;
  }

  /** Refused for good: the entry goes, its promise rejects. */
  refused(clientId: string, error: OchatError): OutboxEntry | undefined {
    const entry = this.entries.get(clientId);
    this.entries.delete(clientId);
    this.waiters.get(clientId)?.reject(error);
    this.waiters.delete(clientId);
    return entry;
  }

  /** The client closed: every waiting promise rejects (entries stay saved). */
  abandon(error: OchatError): void {
    for (const waiter of this.waiters.values()) waiter.reject(error);
    this.waiters.clear();
  }
}
