// The client: one WebSocket at a time to an ochat node (through whatever
// load balancer is in front), reconnecting until closed. On every
// connection it resends what waits in the outbox, then syncs from the
// cursor to the end; between connections nothing is lost, because the
// server keeps the feed and the client keeps its place in it.

import { backoffDelay } from "./backoff.js";
import { Connection, type Ended } from "./connection.js";
import { OchatError, retried } from "./errors.js";
import { Feed, type Change, type ChatMessage } from "./feed.js";
import type { Attachment, ClientFrame, ServerFrame, SyncMessage, SyncPage } from "./generated/protocol.js";
import type { Operations } from "./generated/rest.js";
import { destinationOf, fromRest, fromWire, ownChange, sentMessage } from "./messages.js";
import { RestMethods } from "./methods.js";
import type {
  ClientEvents,
  ClientOptions,
  ConnectionState,
  Destination,
  SendInput,
  WebSocketConstructor,
} from "./options.js";
import { Outbox, type Acked } from "./outbox.js";
import { Rest } from "./rest.js";
import { memoryStorage, Saver, type ClientStorage } from "./storage.js";
import { SyncRequests } from "./sync.js";
import { claims, refreshAt, Tokens } from "./token.js";

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
  private conn: Connection | null = null;
  /** Which connection each outbox entry last went out on. */
  private readonly sentOn = new Map<string, Connection>();
  private stateNow: ConnectionState = "connecting";
  private attempt = 0;
  private closed = false;
  private wake: (() => void) | null = null;
  /** This connection's sync requests. */
  private syncs: SyncRequests | null = null;
  /** Sends and changes added whose save has not finished: they go out after it. */
  private readonly unsaved = new Set<string>();
  private readonly unreadSent = new Set<string>();
  /** How often the server answered a busy refusal to each outbox entry. */
  private readonly refusals = new Map<string, number>();
  /** The attachments a send in the outbox carries, to show once it is stored. */
  private readonly files = new Map<string, Attachment[]>();
  private readonly typingSent = new Map<string, { at: number; typing: boolean }>();
  private readonly saver: Saver;
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
    this.saver = new Saver(
      this.storage,
      () => ({
        version: 1,
        user: this.me!,
        cursor: this.feed!.cursor,
        seen: this.feed!.seenEntries(),
        own: this.feed!.ownEntries(),
        outbox: this.outbox.list(),
      }),
      (error) => this.emit("error", asError(error)),
    );
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
    const replied = frame.reply_to ? this.feed!.message(frame.reply_to) : undefined;
    return this.feed!.message(ack.id) ?? sentMessage(frame, ack, this.me!, replied, files);
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
    this.conn?.abandon(1000, "client closed");
    this.outbox.abandon(new OchatError("closed", "the client was closed before the ack"));
    this.setState("closed");
    await this.running;
    await this.saver.done;
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
        ended = await this.connection(await this.tokens.get());
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

  /** One connection, from its opening to its end. */
  private async connection(token: string): Promise<Ended> {
    // The platform's class is looked up on each connection: one installed
    // later (a polyfill, a test's network mock) is used.
    const socketClass = this.options.WebSocket ?? platformSocket()!;
    const url = `${this.socketUrl}?token=${encodeURIComponent(token)}`;
    const conn: Connection = new Connection(url, socketClass, this.options.heartbeat ?? 20_000, {
      open: () => this.opened(conn, token),
      frame: (text) => this.receive(text),
    });
    this.conn = conn;
    const ended = await conn.ended;
    this.conn = null;
    this.syncs?.stop();
    this.syncs = null;
    return ended;
  }

  private opened(conn: Connection, token: string): void {
    if (this.closed) {
      conn.abandon(1000, "client closed");
      return;
    }
    this.setState("online");
    for (const entry of this.outbox.list()) this.transmit(entry.client_id);
    for (const id of this.unreadSent) this.sendFrame({ type: "mark_read", message_id: id });
    this.unreadSent.clear();
    this.syncs = new SyncRequests(
      () => this.sendFrame({ type: "sync", cursor: this.feed!.cursor, limit: this.options.syncLimit ?? 100 }),
      this.options.syncTimeout ?? 15_000,
    );
    this.requestSync();
    const every = this.options.syncEvery ?? 30_000;
    if (every > 0) conn.every(every, () => this.requestSync());
    const before = this.options.refreshBefore ?? 60_000;
    const at = before > 0 && this.tokens.refreshable ? refreshAt(token, before) : null;
    // A token already at its refresh time (a token function answering a
    // cached one) waits for the server's close instead of reconnecting
    // again and again.
    if (at !== null && at - Date.now() >= 1_000) {
      conn.after(at - Date.now(), () => {
        // A fresh token means a fresh connection: the outbox and the
        // cursor carry everything across.
        this.tokens.forget();
        conn.replace("refreshing the token");
      });
    }
  }

  private receive(text: string): void {
    let frame: ServerFrame;
    try {
      frame = JSON.parse(text) as ServerFrame;
    } catch {
      return;
    }
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
          if (retried(frame.code, refusals)) {
            // Again later (longer each time), on this connection or the next.
            this.refusals.set(entry.client_id, refusals);
            this.conn?.after(100 + backoffDelay(refusals, this.options.backoff), () => this.transmit(entry.client_id));
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
    const syncs = this.syncs;
    // Another answer is on its way (this one was late): it decides.
    if (!syncs?.answered()) return;
    if (page.has_more) {
      syncs.request();
      return;
    }
    // A connection that got this far is a good one: the next failure
    // starts the backoff from the bottom again.
    this.attempt = 0;
    this.emit("synced", { cursor: feed.cursor });
    syncs.finished();
  }

  private requestSync(): void {
    if (this.stateNow === "online") this.syncs?.request();
  }

  /** Whether a sync is under way on an open connection. */
  private get catchingUp(): boolean {
    return this.stateNow === "online" && !!this.syncs?.busy;
  }

  private acked(clientId: string, ack: Acked): void {
    this.sentOn.delete(clientId);
    this.refusals.delete(clientId);
    const entry = this.outbox.acked(clientId, ack);
    if (!entry) return;
    const feed = this.feed!;
    const frame = entry.frame;
    if (frame.type === "message") {
      const replied = frame.reply_to ? feed.message(frame.reply_to) : undefined;
      const message = feed.takeMessage(sentMessage(frame, ack, this.me!, replied, this.files.get(clientId) ?? []));
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
    const conn = this.conn;
    if (!entry || !conn || this.unsaved.has(clientId) || this.sentOn.get(clientId) === conn) return;
    if (this.sendFrame(entry.frame)) this.sentOn.set(clientId, conn);
  }

  private sendFrame(frame: ClientFrame): boolean {
    return this.stateNow === "online" && !!this.conn?.send(frame);
  }

  private save(): Promise<void> {
    return this.saver.save();
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
}

function platformSocket(): WebSocketConstructor | undefined {
  return (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
}

function randomId(): string {
  return globalThis.crypto.randomUUID();
}

function asError(error: unknown): OchatError {
  return error instanceof OchatError ? error : new OchatError("internal", error instanceof Error ? error.message : String(error));
}
