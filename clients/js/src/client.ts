// The client: one WebSocket at a time to an ochat node (through whatever
// load balancer is in front), reconnecting until closed. On every
// connection it resends what waits in the outbox, then syncs from the
// cursor to the end; between connections nothing is lost, because the
// server keeps the feed and the client keeps its place in it.

import { backoffDelay, type Backoff } from "./backoff.js";
import { OchatError, RETRYABLE } from "./errors.js";
import { Feed, type Change, type ChatMessage, type OwnChange } from "./feed.js";
import type {
  Attachment,
  ClientFrame,
  ConversationCreated,
  ConversationUpdated,
  MemberAdded,
  MemberRemoved,
  ReadReceipt,
  ServerFrame,
  SyncMessage,
  SyncPage,
  TypingOut,
  UserOffline,
  UserOnline,
} from "./generated/protocol.js";
import type { Operations } from "./generated/rest.js";
import { fromRest, fromWire } from "./messages.js";
import { RestMethods } from "./methods.js";
import { Outbox, type Acked } from "./outbox.js";
import { Rest } from "./rest.js";
import { memoryStorage, type ClientStorage, type OutboxEntry, type SavedState } from "./storage.js";
import { claims, refreshAt, Tokens, type TokenSource } from "./token.js";

/** The parts of the WebSocket API the client uses (the platform's, or `ws`'s in Node 20). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open" | "error", listener: () => void): void;
  addEventListener(type: "message", listener: (event: { data: unknown }) => void): void;
  addEventListener(type: "close", listener: (event: { code: number; reason: string }) => void): void;
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
export type Destination = { to: string } | { conversationId: string };

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
  state: { state: ConnectionState; attempt: number; code?: number; reason?: string };
  /** Each message of this user's feed, exactly once: received, sent from here or from another device. */
  message: ChatMessage;
  /** A change to a message: `message` is the view's copy after it, or null when the view does not hold it. */
  change: { change: Change | OwnChange; message: ChatMessage | null };
  typing: TypingOut;
  read: ReadReceipt;
  presence: UserOnline | UserOffline;
  group: GroupEvent;
  /** A sync reached the end of the feed. */
  synced: { cursor: number };
  /** A refusal no promise carries (a typing frame, a sync), or a storage failure. */
  error: OchatError;
  /** Every frame the server sends, as it came. */
  frame: ServerFrame;
}

type Ended = { opened: boolean; code: number; reason: string; planned: boolean };

/**
 * Refusals of one send for a server error (`internal`, `request_timeout`)
 * before it is given up with that code. Refusals for a busy or unsure
 * server (`PATIENT`) are retried for as long as it takes.
 */
const MAX_RETRIES = 10;
const PATIENT: ReadonlySet<string> = new Set(["rate_limited", "unavailable", "outcome_unknown"]);

/** Connects (and keeps connecting) to ochat. */
export function connect(options: ClientOptions): OchatClient {
  return new OchatClient(options);
}

export class OchatClient extends RestMethods<ClientEvents> {
  /** Resolves once the saved state is loaded and the user known; rejects if that fails. */
  readonly ready: Promise<void>;
  /** The REST API, typed from the OpenAPI document. */
  readonly rest: Rest;

  private readonly options: ClientOptions;
  private readonly tokens: Tokens;
  private readonly storage: ClientStorage;
  private readonly socketUrl: string;
  private readonly outbox: Outbox;
  private feed: Feed | null = null;
  private me: string | null = null;
  private ws: WebSocketLike | null = null;
  /** Which connection each outbox entry last went out on. */
  private readonly sentOn = new Map<string, WebSocketLike>();
  private stateNow: ConnectionState = "connecting";
  private attempt = 0;
  private closed = false;
  private wake: (() => void) | null = null;
  /** Sync requests sent on this connection and not answered yet. */
  private syncsOut = 0;
  private syncAgain = false;
  private syncTimer: ReturnType<typeof setTimeout> | null = null;
  /** The connection's timers (periodic sync, heartbeat, token refresh, resends): cleared with it. */
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  /** When the connection last heard from the server. */
  private lastHeard = 0;
  /** Ends the connection now, without waiting for its close (the network may be gone). */
  private abandon: ((code: number, reason: string) => void) | null = null;
  /** Sends and changes added whose save has not finished: they go out after it. */
  private readonly unsaved = new Set<string>();
  private plannedClose: WebSocketLike | null = null;
  private readonly unreadSent = new Set<string>();
  /** How often the server answered a busy refusal to each outbox entry. */
  private readonly refusals = new Map<string, number>();
  /** The attachments a send in the outbox carries, to show once it is stored. */
  private readonly files = new Map<string, Attachment[]>();
  private readonly typingSent = new Map<string, { at: number; typing: boolean }>();
  private saving: Promise<void> = Promise.resolve();
  private saveQueued: Promise<void> | null = null;
  private readonly running: Promise<void>;

  constructor(options: ClientOptions) {
    super();
    this.options = options;
    const origin = options.url ?? (globalThis as { location?: { origin: string } }).location?.origin;
    if (!origin) throw new TypeError("connect: `url` is required outside a browser");
    const base = origin.replace(/\/+$/, "");
    if (!options.WebSocket && !platformSocket()) {
      throw new TypeError("connect: this platform has no WebSocket; pass one as `WebSocket`");
    }
    const fetcher = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.socketUrl = `${base.replace(/^http/, "ws")}/api/v1/ws`;
    this.tokens = new Tokens(options.token);
    this.storage = options.storage ?? memoryStorage();
    this.rest = new Rest(base, this.tokens, fetcher);
    this.outbox = new Outbox(options.outboxLimit ?? 1_000);
    this.ready = this.load();
    // Unobserved, a failed load must not crash the process: `ready` tells.
    this.ready.catch(() => undefined);
    this.running = this.ready.then(() => this.run()).catch(() => undefined);
  }

  /** The connection's state now. */
  get state(): ConnectionState {
    return this.stateNow;
  }

  /** The signed-in user's id (once `ready`). */
  get userId(): string {
    if (!this.me) throw new OchatError("not_ready", "the client is not ready yet: await client.ready");
    return this.me;
  }

  /** Sends and changes still waiting for their ack. */
  get pending(): number {
    return this.outbox.size;
  }

  /** A message of the local view. */
  message(id: string): ChatMessage | undefined {
    return this.feed?.message(id);
  }

  // ---- messages -------------------------------------------------------------

  /**
   * Sends a message; resolves with it once stored. Until then it waits in
   * the outbox and goes again, with the same `client_id`, on every
   * connection: the server stores it once. Rejects only when refused for
   * good (`OchatError` with the server's code) or when the client closes.
   */
  async send(input: SendInput): Promise<ChatMessage> {
    await this.ready;
    this.ensureOpen();
    const destination = destinationOf(input);
    const clientId = randomId();
    const ids = (input.attachments ?? []).map((a) => (typeof a === "string" ? a : a.id));
    const frame = {
      type: "message" as const,
      ...destination,
      content: input.content,
      client_id: clientId,
      ...(input.replyTo ? { reply_to: input.replyTo } : {}),
      ...(ids.length ? { attachments: ids } : {}),
    };
    const files = (input.attachments ?? []).filter((a): a is Attachment => typeof a !== "string");
    const acked = this.outbox.add({ client_id: clientId, frame });
    if (files.length) this.files.set(clientId, files);
    const ack = await this.saveThenTransmit(clientId, acked).finally(() => this.files.delete(clientId));
    return this.feed!.message(ack.id) ?? this.sentMessage(frame, ack, files);
  }

  /** Edits one's own message; resolves once stored. */
  edit(messageId: string, content: string): Promise<void> {
    return this.change({ type: "edit", message_id: messageId, content });
  }

  /** Deletes a message for everyone (one's own, or any as a group's owner or admin). */
  delete(messageId: string): Promise<void> {
    return this.change({ type: "delete", message_id: messageId });
  }

  react(messageId: string, emoji: string): Promise<void> {
    return this.change({ type: "react", message_id: messageId, emoji });
  }

  unreact(messageId: string, emoji: string): Promise<void> {
    return this.change({ type: "unreact", message_id: messageId, emoji });
  }

  /** Tells the sender a message was read; sent once connected when offline. */
  markRead(messageId: string): void {
    const message = this.feed?.message(messageId);
    if (message) message.is_read = true;
    if (!this.sendFrame({ type: "mark_read", message_id: messageId })) {
      if (this.unreadSent.size < 1_000) this.unreadSent.add(messageId);
    }
  }

  /**
   * Tells the other side one is typing (or stopped). Throttled: at most
   * one "typing" per conversation per `typingEvery`; a stop goes only after
   * a start. Dropped while offline (it would be stale).
   */
  typing(destination: Destination, isTyping = true): void {
    const target = destinationOf(destination);
    const key = "to" in target ? target.to : target.conversation_id;
    const now = Date.now();
    const last = this.typingSent.get(key);
    if (isTyping && last?.typing && now - last.at < (this.options.typingEvery ?? 2_000)) return;
    if (!isTyping && !last?.typing) return;
    if (!this.sendFrame({ type: "typing", ...target, is_typing: isTyping })) return;
    this.typingSent.delete(key);
    this.typingSent.set(key, { at: now, typing: isTyping });
    if (this.typingSent.size > 1_000) this.typingSent.delete(this.typingSent.keys().next().value as string);
  }

  /** Catches up now (the client also does on every connection and every `syncEvery`). */
  sync(): void {
    this.requestSync();
  }

  // ---- history and search (held, so changes apply to them) -------------------

  /** A page of a conversation's history, oldest first; page back with `before`. Changes apply to these messages too. */
  async history(
    query: { withUser: string; before?: string; limit?: number } | { conversationId: string; before?: string; limit?: number },
  ): Promise<{ messages: ChatMessage[]; has_more: boolean }> {
    await this.caughtUp();
    const which = "withUser" in query ? { with_user: query.withUser } : { conversation_id: query.conversationId };
    const page = await this.rest.call("GET /messages/conversation", {
      query: { ...which, before: query.before, limit: query.limit },
    });
    return { messages: page.messages.map((m) => this.feed!.keep(fromRest(m), true)), has_more: page.has_more };
  }

  /** Full-text search of one's messages. */
  async searchMessages(query: Operations["GET /messages/search"]["query"]): Promise<ChatMessage[]> {
    await this.caughtUp();
    const page = await this.rest.call("GET /messages/search", { query });
    return page.messages.map((m) => this.feed!.keep(fromRest(m), true));
  }

  /**
   * Waits (up to `syncTimeout`) for a sync under way: messages read over
   * REST then already count the changes the sync brings, which are then
   * not applied to them twice.
   */
  private async caughtUp(): Promise<void> {
    await this.ready;
    if (!this.catchingUp) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, this.options.syncTimeout ?? 15_000);
      const off = this.on("synced", done);
      const offState = this.on("state", done);
      function done() {
        clearTimeout(timer);
        off();
        offState();
        resolve();
      }
    });
  }

  // ---- lifecycle --------------------------------------------------------------

  /**
   * Closes the connection for good. Unacked sends stay in the storage
   * (a client started on it later resends them); their promises reject
   * with `closed`.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.wake?.();
    // Ends the connection without waiting for the server's close, which a
    // dead network never sends.
    this.abandon?.(1000, "client closed");
    this.stopTimers();
    this.outbox.abandon(new OchatError("closed", "the client was closed before the ack"));
    this.setState("closed");
    await this.running;
    await this.saving;
  }

  /**
   * Loads the saved state and learns the user; tried again (with backoff)
   * until it works or the client closes: a token service or storage that
   * is down at start-up is not the end.
   */
  private async load(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        const token = await this.tokens.get();
        this.me = claims(token).sub ?? (await this.rest.call("GET /users/me")).id;
        this.feed = new Feed(this.me, { viewSize: this.options.viewSize });
        const saved = await this.storage.load();
        if (saved && saved.user === this.me) {
          this.feed.restore(saved.cursor, saved.seen, saved.own);
          this.outbox.restore(saved.outbox);
        }
        return;
      } catch (error) {
        if (this.closed) throw new OchatError("closed", "the client was closed before it was ready");
        this.tokens.forget();
        this.emit("error", asError(error));
        await this.pause(backoffDelay(attempt, this.options.backoff));
        if (this.closed) throw new OchatError("closed", "the client was closed before it was ready");
      }
    }
  }

  private async run(): Promise<void> {
    while (!this.closed) {
      this.setState("connecting");
      const fixed = this.tokens.refreshable ? null : await this.tokens.get();
      const exp = fixed === null ? undefined : claims(fixed).exp;
      if (exp !== undefined && exp * 1000 <= Date.now()) {
        // A fixed token past its expiry would only be refused (a 401 the
        // WebSocket API cannot tell from a network failure).
        this.end(new OchatError("token_expired", "the token expired"), { code: 1008, reason: "token expired" });
        break;
      }
      let ended: Ended;
      try {
        ended = await this.session(await this.tokens.get());
      } catch (error) {
        this.emit("error", asError(error));
        ended = { opened: false, code: 0, reason: String(error), planned: false };
      }
      if (this.closed) break;
      if (ended.planned) continue;
      if (ended.code === 1008 && /token expired/.test(ended.reason)) {
        this.tokens.forget();
        if (!this.tokens.refreshable) {
          this.end(new OchatError("token_expired", ended.reason), ended);
          break;
        }
      } else if (!ended.opened) {
        // A connection refused before it opened may be a refused token.
        this.tokens.forget();
      }
      this.setState("offline", ended);
      await this.pause(backoffDelay(this.attempt++, this.options.backoff));
    }
  }

  /** The client stops for good: waiting sends reject with `error`. */
  private end(error: OchatError, ended: { code: number; reason: string }): void {
    this.closed = true;
    this.outbox.abandon(error);
    this.setState("closed", ended);
  }

  /** One connection, from its opening to its close (or its silence). */
  private session(token: string): Promise<Ended> {
    return new Promise((resolve) => {
      // The platform's class is looked up on each connection: one
      // installed later (a polyfill, a test's network mock) is used.
      const socketClass = this.options.WebSocket ?? platformSocket()!;
      const ws = new socketClass(`${this.socketUrl}?token=${encodeURIComponent(token)}`);
      this.ws = ws;
      let opened = false;
      let done = false;
      const finish = (code: number, reason: string) => {
        if (done) return;
        done = true;
        if (this.ws === ws) {
          this.ws = null;
          this.stopTimers();
        }
        resolve({ opened, code, reason, planned: this.plannedClose === ws });
      };
      this.abandon = (code, reason) => {
        finish(code, reason);
        ws.close(code, reason);
      };
      this.lastHeard = Date.now();
      const heartbeat = this.options.heartbeat ?? 20_000;
      if (heartbeat > 0) {
        this.timers.add(
          setInterval(() => {
            // Heard nothing, not even a pong (or never opened): the network
            // is gone without a close (a sleeping laptop, a changed Wi-Fi).
            // Do not wait for TCP to notice.
            if (Date.now() - this.lastHeard > 2 * heartbeat) this.abandon?.(4000, "no answer from the server");
            else this.sendFrame({ type: "ping" });
          }, heartbeat),
        );
      }
      ws.addEventListener("open", () => {
        opened = true;
        this.opened(ws, token);
      });
      ws.addEventListener("message", (event) => {
        if (this.ws === ws) this.receive(String(event.data));
      });
      ws.addEventListener("error", () => undefined); // a close follows
      ws.addEventListener("close", (event) => finish(event.code, event.reason));
    });
  }

  private opened(ws: WebSocketLike, token: string): void {
    if (this.closed) {
      ws.close(1000, "client closed");
      return;
    }
    this.setState("online");
    this.lastHeard = Date.now();
    for (const entry of this.outbox.list()) this.transmit(entry.client_id);
    for (const id of this.unreadSent) this.sendFrame({ type: "mark_read", message_id: id });
    this.unreadSent.clear();
    this.requestSync();
    const every = this.options.syncEvery ?? 30_000;
    if (every > 0) this.timers.add(setInterval(() => this.requestSync(), every));
    const before = this.options.refreshBefore ?? 60_000;
    const at = before > 0 && this.tokens.refreshable ? refreshAt(token, before) : null;
    // A token already at its refresh time (a token function answering a
    // cached one) waits for the server's close instead of reconnecting
    // again and again.
    if (at !== null && at - Date.now() >= 1_000) {
      this.timers.add(
        setTimeout(
          () => {
            // A fresh token means a fresh connection: the outbox and the
            // cursor carry everything across.
            this.tokens.forget();
            this.plannedClose = ws;
            ws.close(1000, "refreshing the token");
          },
          Math.min(2 ** 31 - 1, at - Date.now()),
        ),
      );
    }
  }

  private receive(text: string): void {
    let frame: ServerFrame;
    try {
      frame = JSON.parse(text) as ServerFrame;
    } catch {
      return;
    }
    this.lastHeard = Date.now();
    this.emit("frame", frame);
    const feed = this.feed!;
    switch (frame.type) {
      case "message": {
        const message = feed.takeMessage(fromWire(frame));
        if (message) {
          this.emit("message", message);
          this.save();
        }
        break;
      }
      case "ack":
        if (frame.client_id) this.acked(frame.client_id, frame);
        break;
      case "error": {
        const error = new OchatError(frame.code, frame.message);
        const entry = frame.client_id ? this.outbox.get(frame.client_id) : undefined;
        if (!entry) {
          this.emit("error", error);
        } else {
          this.sentOn.delete(entry.client_id);
          const refusals = (this.refusals.get(entry.client_id) ?? 0) + 1;
          if (RETRYABLE.has(frame.code) && (PATIENT.has(frame.code) || refusals < MAX_RETRIES)) {
            // Again later (longer each time), on this connection or the next.
            this.refusals.set(entry.client_id, refusals);
            const ws = this.ws;
            const timer = setTimeout(() => {
              this.timers.delete(timer);
              if (this.ws === ws) this.transmit(entry.client_id);
            }, 100 + backoffDelay(refusals, this.options.backoff));
            this.timers.add(timer);
          } else {
            this.refusals.delete(entry.client_id);
            this.outbox.refused(entry.client_id, error);
            this.save();
          }
        }
        break;
      }
      case "sync":
        this.page(frame);
        break;
      case "message_updated":
      case "message_deleted":
      case "reaction_added":
      case "reaction_removed": {
        const taken = feed.takeChange(frame);
        if (taken && (taken.changed || !taken.message)) this.emit("change", { change: frame, message: taken.message });
        if (taken) this.save();
        break;
      }
      case "typing":
        this.emit("typing", frame);
        break;
      case "read_receipt": {
        const message = feed.message(frame.message_id);
        if (message && message.to) message.is_read = true;
        this.emit("read", frame);
        break;
      }
      case "user_online":
      case "user_offline":
        this.emit("presence", frame);
        break;
      case "conversation_created":
      case "member_added":
      case "member_removed":
      case "conversation_updated":
        this.emit("group", frame);
        break;
      default:
        break;
    }
  }

  /**
   * A sync page: messages and changes interleave by seq, and go to the app
   * in that order. A page asked for twice (the first answer was late)
   * hands over nothing twice: the feed drops what its cursor passed.
   */
  private page(page: SyncPage): void {
    const feed = this.feed!;
    const entries: Array<{ seq: number; message?: SyncMessage; change?: Change }> = [
      ...page.messages.map((message) => ({ seq: message.seq, message })),
      ...page.changes.map((change) => ({ seq: change.seq, change })),
    ].sort((a, b) => a.seq - b.seq);
    for (const entry of entries) {
      if (entry.message) {
        const message = feed.takeMessage(fromWire(entry.message));
        if (message) this.emit("message", message);
      } else if (entry.change) {
        const taken = feed.takeChange(entry.change);
        if (taken && (taken.changed || !taken.message)) this.emit("change", { change: entry.change, message: taken.message });
      }
    }
    feed.advance(page.cursor);
    this.save();
    this.syncsOut = Math.max(0, this.syncsOut - 1);
    // Another answer is on its way (this one was late): it decides.
    if (this.syncsOut > 0) return;
    this.clearSyncTimer();
    if (page.has_more) {
      this.requestSync();
      return;
    }
    // A connection that got this far is a good one: the next failure
    // starts the backoff from the bottom again.
    this.attempt = 0;
    this.emit("synced", { cursor: feed.cursor });
    if (this.syncAgain) {
      this.syncAgain = false;
      this.requestSync();
    }
  }

  private requestSync(): void {
    if (!this.feed || !this.ws || this.stateNow !== "online") return;
    if (this.syncsOut > 0) {
      this.syncAgain = true;
      return;
    }
    this.askSync();
  }

  private askSync(): void {
    if (!this.sendFrame({ type: "sync", cursor: this.feed!.cursor, limit: this.options.syncLimit ?? 100 })) return;
    this.syncsOut += 1;
    // A refused sync (rate limited, the database away) answers an error
    // no request id ties to it: ask again after a while.
    this.clearSyncTimer();
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null;
      this.askSync();
    }, this.options.syncTimeout ?? 15_000);
  }

  private clearSyncTimer(): void {
    if (this.syncTimer) clearTimeout(this.syncTimer);
    this.syncTimer = null;
  }

  /** Whether a sync is under way on an open connection. */
  private get catchingUp(): boolean {
    return this.stateNow === "online" && this.syncsOut > 0;
  }

  private acked(clientId: string, ack: Acked): void {
    this.sentOn.delete(clientId);
    this.refusals.delete(clientId);
    const entry = this.outbox.acked(clientId, ack);
    if (!entry) return;
    const feed = this.feed!;
    const frame = entry.frame;
    if (frame.type === "message") {
      const message = feed.takeMessage(this.sentMessage(frame, ack, this.files.get(clientId) ?? []));
      if (message) this.emit("message", message);
    } else {
      const change = ownChange(frame, ack, this.me!);
      if (change) this.emit("change", { change, message: feed.apply(change).message });
    }
    this.save();
  }

  private change(frame: Extract<ClientFrame, { type: "edit" | "delete" | "react" | "unreact" }>): Promise<void> {
    return this.ready.then(async () => {
      this.ensureOpen();
      const clientId = randomId();
      const acked = this.outbox.add({ client_id: clientId, frame: { ...frame, client_id: clientId } });
      await this.saveThenTransmit(clientId, acked);
    });
  }

  /**
   * Saves a new outbox entry, then sends it; answers its ack. The entry
   * waits for its save even on a connection opening meanwhile, so nothing
   * goes out that a crash could forget.
   */
  private async saveThenTransmit(clientId: string, acked: Promise<Acked>): Promise<Acked> {
    // Rejected while the save runs (closed, full), it is still handled.
    acked.catch(() => undefined);
    this.unsaved.add(clientId);
    try {
      await this.save();
    } finally {
      this.unsaved.delete(clientId);
    }
    this.transmit(clientId);
    return acked;
  }

  private ensureOpen(): void {
    if (this.closed) throw new OchatError("closed", "the client is closed");
  }

  /** Sends an outbox entry on the current connection, unless it went out on it already. */
  private transmit(clientId: string): void {
    const entry = this.outbox.get(clientId);
    if (!entry || !this.ws || this.stateNow !== "online" || this.unsaved.has(clientId) || this.sentOn.get(clientId) === this.ws) return;
    if (this.sendFrame(entry.frame)) this.sentOn.set(clientId, this.ws);
  }

  private sendFrame(frame: ClientFrame): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1 || this.stateNow !== "online") return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /** The message an ack confirms, as the server stored it. */
  private sentMessage(frame: OutboxEntry["frame"] & { type: "message" }, ack: Acked, files: Attachment[]): ChatMessage {
    const replied = frame.reply_to ? this.feed!.message(frame.reply_to) : undefined;
    return {
      id: ack.id,
      from: this.me!,
      to: frame.to ?? null,
      conversation_id: frame.conversation_id ?? null,
      content: frame.content.trim(),
      timestamp: ack.timestamp,
      reply_to: replied
        ? { id: replied.id, sender_id: replied.from, preview: [...replied.content].slice(0, 100).join(""), deleted: false }
        : null,
      edited_at: null,
      deleted_at: null,
      attachments: files,
      reactions: [],
      is_read: false,
    };
  }

  /**
   * Saves the state; calls made while a save waits to start share it, and
   * answer once a save holding their change is done.
   */
  private save(): Promise<void> {
    if (this.saveQueued) return this.saveQueued;
    const queued = this.saving.then(async () => {
      this.saveQueued = null;
      try {
        await this.storage.save(this.snapshot());
      } catch (error) {
        this.emit("error", asError(error));
      }
    });
    this.saveQueued = queued;
    this.saving = queued;
    return queued;
  }

  private snapshot(): SavedState {
    return {
      version: 1,
      user: this.me!,
      cursor: this.feed!.cursor,
      seen: this.feed!.seenEntries(),
      own: this.feed!.ownEntries(),
      outbox: this.outbox.list(),
    };
  }

  private setState(state: ConnectionState, ended?: { code: number; reason: string }): void {
    if (this.stateNow === state) return;
    this.stateNow = state;
    this.emit("state", { state, attempt: this.attempt, ...(ended ? { code: ended.code, reason: ended.reason } : {}) });
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  private stopTimers(): void {
    this.clearSyncTimer();
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.abandon = null;
    this.syncsOut = 0;
    this.syncAgain = false;
  }
}

function platformSocket(): WebSocketConstructor | undefined {
  return (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
}

function destinationOf(input: { to?: string; conversationId?: string }): { to: string } | { conversation_id: string } {
  if (input.to && !input.conversationId) return { to: input.to };
  if (input.conversationId && !input.to) return { conversation_id: input.conversationId };
  throw new OchatError("invalid_field", "give exactly one of `to` (a user) and `conversationId` (a group)");
}

/** The change an acked edit, delete or reaction of one's own stands for. */
function ownChange(frame: ClientFrame, ack: Acked, me: string): OwnChange | null {
  switch (frame.type) {
    case "edit":
      return { type: "message_updated", id: frame.message_id, content: frame.content.trim(), edited_at: ack.timestamp };
    case "delete":
      return { type: "message_deleted", id: frame.message_id, deleted_at: ack.timestamp };
    case "react":
      return { type: "reaction_added", message_id: frame.message_id, user_id: me, emoji: frame.emoji };
    case "unreact":
      return { type: "reaction_removed", message_id: frame.message_id, user_id: me, emoji: frame.emoji };
    default:
      return null;
  }
}

function randomId(): string {
  return globalThis.crypto.randomUUID();
}

function asError(error: unknown): OchatError {
  return error instanceof OchatError ? error : new OchatError("internal", error instanceof Error ? error.message : String(error));
}
