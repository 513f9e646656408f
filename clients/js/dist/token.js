/**
 * Holds the current token. With a function, the token is fetched again
 * once forgotten: before it expires (the client's refresh timer), after
 * the server closed a session for an expired token, after a connection
 * failed before opening (a refused upgrade is how a 401 shows there), and
 * after a REST call answered 401.
 */
export class Tokens {
    source;
    current = null;
    fetching = null;
    constructor(source) {
        this.source = source;
    }
    get refreshable() {
        return typeof this.source === "function";
    }
    async get() {
        if (typeof this.source === "string")
            return this.source;
        if (this.current !== null)
            return this.current;
        if (!this.fetching) {
            const fetch = this.source;
            this.fetching = Promise.resolve()
                .then(() => fetch())
                .then((token) => {
                this.current = token;
                return token;
            })
                .finally(() => {
                this.fetching = null;
            });
        }
        return this.fetching;
    }
    /** The next `get` fetches a new token (a no-op for a fixed string). */
    forget() {
        this.current = null;
    }
}
/** A JWT's claims, read without checking the signature (the server checks it). */
export function claims(token) {
    const part = token.split(".")[1];
    if (!part)
        return {};
    try {
        const base64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
        const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
        const value = JSON.parse(new TextDecoder().decode(bytes));
        return typeof value === "object" && value !== null ? value : {};
    }
    catch {
        return {};
    }
}
/**
 * When to fetch the next token: `before` ms ahead of its expiry, but never
 * past three quarters of its life (a token of a minute is renewed after 45
 * s). Null for a token without `exp`.
 */
export function refreshAt(token, before, now = Date.now()) {
    const { exp, iat } = claims(token);
    if (typeof exp !== "number")
        return null;
    const expires = exp * 1000;
    const issued = typeof iat === "number" ? iat * 1000 : now;
    const life = Math.max(0, expires - issued);
    return Math.max(now, expires - Math.min(before, life / 4));
}
