/** Keeps the state in memory: it lasts as long as the process (the default). */
export function memoryStorage() {
    let kept = null;
    return {
        load: () => (kept ? structuredClone(kept) : null),
        save: (state) => {
            kept = structuredClone(state);
        },
    };
}
/**
 * Keeps the state in the browser's `localStorage` (or any Web Storage,
 * such as `sessionStorage`) under `key`. A value that is not a saved state
 * (another program's, or damaged) is ignored.
 */
export function webStorage(key = "ochat-client", storage) {
    const store = () => storage ?? globalThis.localStorage;
    return {
        load: () => parseState(store()?.getItem(key) ?? null),
        save: (state) => store()?.setItem(key, JSON.stringify(state)),
    };
}
/** A saved state from its JSON text, or null when it is not one. */
export function parseState(text) {
    if (!text)
        return null;
    try {
        const value = JSON.parse(text);
        if (value.version === 1 &&
            typeof value.user === "string" &&
            typeof value.cursor === "number" &&
            Array.isArray(value.seen) &&
            Array.isArray(value.own) &&
            Array.isArray(value.outbox)) {
            return value;
        }
    }
    catch {
        // not JSON: start afresh
    }
    return null;
}
