import { OchatError } from "./errors.js";
/**
 * REST calls with the client's token. A 401 fetches a fresh token (when
 * the token is a function) and tries once more; any other failure is an
 * `OchatError` carrying the body's `code` and `message`.
 */
export class Rest {
    base;
    tokens;
    fetcher;
    constructor(base, tokens, fetcher) {
        this.base = base;
        this.tokens = tokens;
        this.fetcher = fetcher;
    }
    async call(operation, args = {}) {
        const [method, template] = operation.split(" ");
        const values = (args.path ?? {});
        const path = template.replace(/\{(\w+)\}/g, (_, name) => encodeURIComponent(String(values[name])));
        const query = new URLSearchParams();
        for (const [key, value] of Object.entries((args.query ?? {}))) {
            if (value !== undefined && value !== null)
                query.append(key, String(value));
        }
        const url = `${this.base}/api/v1${path}${query.size ? `?${query}` : ""}`;
        for (let attempt = 0;; attempt++) {
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
            const body = text ? safeJson(text) : undefined;
            if (!response.ok) {
                const error = body?.error;
                throw new OchatError(error?.code ?? `http_${response.status}`, error?.message ?? `HTTP ${response.status}`, response.status);
            }
            return body;
        }
    }
}
function safeJson(text) {
    try {
        return JSON.parse(text);
    }
    catch {
        return text;
    }
}
