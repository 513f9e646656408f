/** A token, or a function that fetches a fresh one. */
export type TokenSource = string | (() => string | Promise<string>);
/**
 * Holds the current token. With a function, the token is fetched again
 * once forgotten: before it expires (the client's refresh timer), after
 * the server closed a session for an expired token, after a connection
 * failed before opening (a refused upgrade is how a 401 shows there), and
 * after a REST call answered 401.
 */
export declare class Tokens {
    private readonly source;
    private current;
    private fetching;
    constructor(source: TokenSource);
    get refreshable(): boolean;
    get(): Promise<string>;
    /** The next `get` fetches a new token (a no-op for a fixed string). */
    forget(): void;
}
/** A JWT's claims, read without checking the signature (the server checks it). */
export declare function claims(token: string): {
    sub?: string;
    exp?: number;
    iat?: number;
};
/**
 * When to fetch the next token: `before` ms ahead of its expiry, but never
 * past three quarters of its life (a token of a minute is renewed after 45
 * s). Null for a token without `exp`.
 */
export declare function refreshAt(token: string, before: number, now?: number): number | null;
