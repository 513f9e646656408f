// The user's feed as the app sees it: every message handed over once, and
// every change to a message applied to the local view.
//
// Messages reach the client three ways: live frames (at least once, in any
// order: they travel through different nodes), `sync` pages (in the user's
// sequence, from a cursor), and acks of its own sends. The cursor only
// moves with sync pages, so everything at or below it was handed over when
// its page came; above it, the ids already handed over are remembered
// until a page passes them.

import type {
  Attachment,
  MessageDeleted,
  MessageUpdated,
  ReactionAdded,
  ReactionRemoved,
  ReplyTo,
} from "./generated/protocol.js";

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
  reactions: Array<{ emoji: string; count: number; me: boolean }>;
  /** Whether its receiver read it (direct messages). */
  is_read: boolean;
}

/** A change to a message, from a live frame, a sync page or an ack. */
export type Change = MessageUpdated | MessageDeleted | ReactionAdded | ReactionRemoved;

/** A change without its place in the sequence: what an ack stands for. */
export type OwnChange = DistributiveOmit<Change, "seq" | "conversation_id">;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** Own messages remembered past the cursor: twice the default outbox. */
const OWN_KEPT = 2_000;

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

export class Feed {
  /** Where the last sync page ended. */
  cursor = 0;
  /** Handed over past the cursor: message ids and `change:<seq>`, with their seq (0: unknown). */
  private readonly seen = new Map<string, number>();
  /** The most recently touched messages, oldest first. */
  private readonly view = new Map<string, ChatMessage>();
  /**
   * The user's own messages handed over most recently: an ack can come
   * after a sync page already handed its message over and moved the
   * cursor past it (the ack was lost with a node, the resend answered
   * after the new connection's sync). An ack carries no seq, so the cursor
   * cannot tell; this can.
   */
  private readonly own = new Map<string, true>();
  /** Per message, who reacted with what: a repeated frame changes nothing. */
  private readonly reactors = new Map<string, Map<string, boolean>>();
  private readonly viewSize: number;
  private readonly seenSize: number;

  constructor(
    private readonly me: string,
    limits: FeedLimits = {},
  ) {
    this.viewSize = limits.viewSize ?? 5_000;
    this.seenSize = limits.seenSize ?? 10_000;
  }

  /**
   * A message from any source: answers the held message to hand to the
   * app, or null when the app had it already. Anything at or below the
   * cursor was handed over with its sync page (a live frame late, or a
   * page asked for twice).
   */
  takeMessage(message: ChatMessage): ChatMessage | null {
    const seq = message.seq ?? 0;
    if (seq > 0 && seq <= this.cursor) return null;
    const known = this.seen.get(message.id);
    if (known !== undefined) {
      if (seq > 0 && known === 0) this.seen.set(message.id, seq);
      return null;
    }
    if (this.own.has(message.id)) return null;
    this.remember(message.id, seq);
    if (message.from === this.me) {
      this.own.set(message.id, true);
      if (this.own.size > OWN_KEPT) this.own.delete(this.own.keys().next().value as string);
    }
    return this.keep(message);
  }

  /**
   * A change from a live frame or a sync page; answers what applying it
   * did, or null when the app already had this change.
   */
  takeChange(change: Change): Applied | null {
    if (change.seq <= this.cursor) return null;
    const key = `change:${change.seq}`;
    if (this.seen.has(key)) return null;
    this.remember(key, change.seq);
    return this.apply(change);
  }

  /**
   * Applies a change to the view: a change applied twice ends the same
   * way, and the second time `changed` is false.
   */
  apply(change: Change | OwnChange): Applied {
    const id = change.type === "message_updated" || change.type === "message_deleted" ? change.id : change.message_id;
    const message = this.view.get(id) ?? null;
    if (!message) return { message, changed: false };
    return { message, changed: this.applyTo(message, change) };
  }

  private applyTo(message: ChatMessage, change: Change | OwnChange): boolean {
    const id = message.id;
    switch (change.type) {
      case "message_updated":
        if (message.deleted_at || (message.content === change.content && message.edited_at === change.edited_at)) return false;
        message.content = change.content;
        message.edited_at = change.edited_at;
        break;
      case "message_deleted":
        if (message.deleted_at) return false;
        message.content = "";
        message.deleted_at = change.deleted_at;
        message.reactions = [];
        message.attachments = [];
        // Replies quoting it now say it was deleted.
        for (const other of this.view.values()) {
          if (other.reply_to?.id === id) other.reply_to = { ...other.reply_to, preview: null, deleted: true };
        }
        break;
      default: {
        const added = change.type === "reaction_added";
        let who = this.reactors.get(id);
        if (!who) {
          who = new Map();
          this.reactors.set(id, who);
        }
        const key = `${change.user_id} ${change.emoji}`;
        if (who.get(key) === added) return false;
        who.set(key, added);
        const mine = change.user_id === this.me;
        let reaction = message.reactions.find((r) => r.emoji === change.emoji);
        if (!reaction) {
          // A removal of a reaction the view never counted changes nothing.
          if (!added) return false;
          reaction = { emoji: change.emoji, count: 0, me: false };
          message.reactions.push(reaction);
        } else if (mine && added === reaction.me) {
          // Already counted (a history page said so).
          return false;
        }
        reaction.count += added ? 1 : -1;
        if (mine) reaction.me = added;
        message.reactions = message.reactions.filter((r) => r.count > 0);
      }
    }
    return true;
  }

  /** A sync page was handed over: forget what it passed. */
  advance(cursor: number): void {
    if (cursor <= this.cursor) return;
    this.cursor = cursor;
    for (const [key, seq] of this.seen) {
      if (seq > 0 && seq <= cursor) this.seen.delete(key);
    }
  }

  /**
   * Puts a message in the view (or moves it to the newest end); answers
   * the view's copy. `fresh`: it was just read from the server (history,
   * search), so its state replaces what the view held.
   */
  keep(message: ChatMessage, fresh = false): ChatMessage {
    const known = this.view.get(message.id);
    if (known) {
      this.view.delete(message.id);
      this.view.set(message.id, known);
      if (fresh) {
        Object.assign(known, { ...message, seq: known.seq ?? message.seq });
        this.reactors.delete(message.id);
      } else {
        // What the view holds stays: later changes were applied to it.
        known.seq ??= message.seq;
      }
      return known;
    }
    this.view.set(message.id, message);
    while (this.view.size > this.viewSize) {
      const oldest = this.view.keys().next().value as string;
      this.view.delete(oldest);
      this.reactors.delete(oldest);
    }
    return message;
  }

  message(id: string): ChatMessage | undefined {
    return this.view.get(id);
  }

  /** Everything handed over past the cursor, for saving. */
  seenEntries(): Array<[string, number]> {
    return [...this.seen];
  }

  /** The user's own messages handed over most recently, for saving. */
  ownEntries(): string[] {
    return [...this.own.keys()];
  }

  restore(cursor: number, seen: Array<[string, number]>, own: string[] = []): void {
    this.cursor = cursor;
    this.seen.clear();
    for (const [key, seq] of seen) this.remember(key, seq);
    this.own.clear();
    for (const id of own.slice(-OWN_KEPT)) this.own.set(id, true);
  }

  private remember(key: string, seq: number): void {
    this.seen.set(key, seq);
    // Bounded: past the cap the oldest goes (the periodic sync keeps the
    // set small; only a feed far behind its cursor reaches the cap).
    while (this.seen.size > this.seenSize) this.seen.delete(this.seen.keys().next().value as string);
  }
}
