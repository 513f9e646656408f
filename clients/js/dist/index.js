// @ochat/client: ochat's client for browsers and Node.
export { connect, OchatClient } from "./client.js";
export { conversationOf, fromRest, fromWire } from "./messages.js";
export { backoffDelay } from "./backoff.js";
export { OchatError, RETRYABLE } from "./errors.js";
export { Feed } from "./feed.js";
export { memoryStorage, webStorage, parseState } from "./storage.js";
export { claims, refreshAt } from "./token.js";
