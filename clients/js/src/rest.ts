import { OchatError } from "./errors.js";
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
export class Rest {
  constructor(
    private readonly base: string,
    private readonly tokens: Tokens,
    private readonly fetcher: typeof fetch,
  ) {}

  async call<K extends Operation>(operation: K, args: CallArgs<K> = {}): Promise<Operations[K]["response"]> {
    const [method, template] = (operation as string).split(" ") as [string, string];
    const values = (args.path ?? {}) as Record<string, unknown>;
    const path = template.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(String(values[name])));
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries((args.query ?? {}) as Record<string, unknown>)) {
      if (value !== undefined && value !== null) query.append(key, String(value));
    }
    const url = `${this.base}/api/v1${path}${query.size ? `?${query}` : ""}`;
    for (let attempt = 0; ; attempt++) {
      const token = await this.tokens.get();
      const response = await this.fetcher(url, {
        method,
        headers: {
          Authorization: `Bearer ${token}`,
          Accept: "application/json",
          ...(args.body === undefined ? {} : { "Content-Type": "application/json" }),
          ...args.headers,
        },
        body: args.body === undefined ? undefined : JSON.stringify(args.body),
      });
      if (response.status === 401 && attempt === 0 && this.tokens.refreshable) {
        this.tokens.forget();
        continue;
      }
      const text = await response.text();
      const body: unknown = text ? safeJson(text) : undefined;
      if (!response.ok) {
        const error = (body as { error?: { code?: string; message?: string } } | undefined)?.error;
        throw new OchatError(error?.code ?? `http_${response.status}`, error?.message ?? `HTTP ${response.status}`, response.status);
      }
      return body as Operations[K]["response"];
    }
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
