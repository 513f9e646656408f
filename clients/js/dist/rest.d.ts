import type { Operations } from "./generated/rest.js";
import type { Tokens } from "./token.js";
/** A REST operation's name: `"GET /messages/conversation"` and the like. */
export type Operation = keyof Operations;
/** A call's parameters, typed from the OpenAPI document. */
export type CallArgs<K extends Operation> = {
    path?: Operations[K]["path"];
    query?: Operations[K]["query"];
    body?: Operations[K]["body"];
    headers?: Record<string, string>;
};
/**
 * REST calls with the client's token. A 401 fetches a fresh token (when
 * the token is a function) and tries once more; any other failure is an
 * `OchatError` carrying the body's `code` and `message`.
 */
export declare class Rest {
    private readonly base;
    private readonly tokens;
    private readonly fetcher;
    constructor(base: string, tokens: Tokens, fetcher: typeof fetch);
    call<K extends Operation>(operation: K, args?: CallArgs<K>): Promise<Operations[K]["response"]>;
}
