// @ochat/client: ochat's client for browsers and Node.
export { connect, OchatClient } from "./client.js";
export { conversationOf, fromRest, fromWire } from "./messages.js";
export type {
  ClientEvents,
  ClientOptions,
  ConnectionState,
  Destination,
  GroupEvent,
  SendInput,
  WebSocketConstructor,
  WebSocketLike,
} from "./options.js";
export { backoffDelay, type Backoff } from "./backoff.js";
export { OchatError, RETRYABLE } from "./errors.js";
export { Feed, type Applied, type Change, type ChatMessage, type OwnChange } from "./feed.js";
export { memoryStorage, webStorage, parseState, type ClientStorage, type OutboxEntry, type SavedState, type WebStorage } from "./storage.js";
export { claims, refreshAt, type TokenSource } from "./token.js";
export type { CallArgs, Operation } from "./rest.js";
export type * as protocol from "./generated/protocol.js";
export type * as api from "./generated/rest.js";
