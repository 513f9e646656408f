// @ochat/client: ochat's client for browsers and Node.
export { connect, OchatClient, conversationOf, fromRest, fromWire } from "./client.js";
export { backoffDelay } from "./backoff.js";
export { OchatError, RETRYABLE } from "./errors.js";
export { Feed } from "./feed.js";
export { memoryStorage, webStorage, parseState } from "./storage.js";
export { claims, refreshAt } from "./token.js";
