// What an app gives the client (its options) and what it hears back (its
// events), apart from the client's workings.

import type { Backoff } from "./backoff.js";
import type { OchatError } from "./errors.js";
import type { Change, ChatMessage, OwnChange } from "./feed.js";
import type {
  Attachment,
  ConversationCreated,
  ConversationUpdated,
  MemberAdded,
  MemberRemoved,
  ReadReceipt,
  ServerFrame,
  TypingOut,
  UserOffline,
  UserOnline,
} from "./generated/protocol.js";
import type { ClientStorage } from "./storage.js";
import type { TokenSource } from "./token.js";

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
