import type { ErrorCode } from "./generated/protocol.js";
/**
 * What the server refused, with its code (`ErrorCode` for WebSocket frames,
 * the REST error body's `code` otherwise), or what the client itself gave up
 * on: `closed` (the client was closed first) and `outbox_full`.
 */
export declare class OchatError extends Error {
    readonly code: ErrorCode | "closed" | "outbox_full" | (string & {});
    /** The HTTP status, for a REST call. */
    readonly status: number | undefined;
    constructor(code: OchatError["code"], message: string, status?: number);
}
/**
 * Codes after which the same frame, sent again with the same `client_id`,
 * may still succeed: the server was busy or could not tell whether it
 * committed. Every other code is final.
 */
export declare const RETRYABLE: ReadonlySet<string>;
/** Whether a send refused with `code` for the `refusals`-th time goes again. */
export declare function retried(code: string, refusals: number): boolean;
