/** A token, or a function that fetches a fresh one. */
export type TokenSource = string | (() => string | Promise<string>);

/**
 * Holds the current token. With a function, the token is fetched again
 * once forgotten: before it expires (the client's refresh timer), after
 * the server closed a session for an expired token, after a connection
 * failed before opening (a refused upgrade is how a 401 shows there), and
 * after a REST call answered 401.
 */
export class Tokens {
  private current: string | null = null;
  private fetching: Promise<string> | null = null;

  constructor(private readonly source: TokenSource) {}

  get refreshable(): boolean {
    return typeof this.source === "function";
  }

  async get(): Promise<string> {
    if (typeof this.source === "string") return this.source;
    if (this.current !== null) return this.current;
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
  forget(): void {
    this.current = null;
  }
}

/** A JWT's claims, read without checking the signature (the server checks it). */
export function claims(token: string): { sub?: string; exp?: number; iat?: number } {
  const part = token.split(".")[1];
  if (!part) return {};
  try {
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const value: unknown = JSON.parse(new TextDecoder().decode(bytes));
    return typeof value === "object" && value !== null ? (value as { sub?: string; exp?: number; iat?: number }) : {};
  } catch {
    return {};
  }
}

/**
 * When to fetch the next token: `before` ms ahead of its expiry, but never
 * past three quarters of its life (a token of a minute is renewed after 45
 * s). Null for a token without `exp`.
 */
export function refreshAt(token: string, before: number, now: number = Date.now()): number | null {
  const { exp, iat } = claims(token);
  if (typeof exp !== "number") return null;
  const expires = exp * 1000;
  const issued = typeof iat === "number" ? iat * 1000 : now;
  const life = Math.max(0, expires - issued);
  return Math.max(now, expires - Math.min(before, life / 4));
}
