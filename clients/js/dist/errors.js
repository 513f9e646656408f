/**
 * What the server refused, with its code (`ErrorCode` for WebSocket frames,
 * the REST error body's `code` otherwise), or what the client itself gave up
 * on: `closed` (the client was closed first) and `outbox_full`.
 */
export class OchatError extends Error {
    code;
    /** The HTTP status, for a REST call. */
    status;
    constructor(code, message, status) {
        super(message);
        this.name = "OchatError";
        this.code = code;
        this.status = status;
    }
}
/**
 * Codes after which the same frame, sent again with the same `client_id`,
 * may still succeed: the server was busy or could not tell whether it
 * committed. Every other code is final.
 */
export const RETRYABLE = new Set([
    "rate_limited",
    "unavailable",
    "outcome_unknown",
    "request_timeout",
    "internal",
]);
/** "Not now": retried for as long as it takes. */
const PATIENT = new Set(["rate_limited", "unavailable", "outcome_unknown"]);
/** Refusals for a server error (`internal`, `request_timeout`) before a send is given up with that code. */
const MAX_RETRIES = 10;
/** Whether a send refused with `code` for the `refusals`-th time goes again. */
export function retried(code, refusals) {
    return PATIENT.has(code) || (RETRYABLE.has(code) && refusals < MAX_RETRIES);
}
