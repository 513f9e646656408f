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
/**
 * Saves the client's state one save at a time, in order. Calls made while
 * a save waits to start share it, and answer once a save holding their
 * change is done. A failed save is reported, not thrown: it must not hold
 * messaging back.
 */
export class Saver {
    storage;
    snapshot;
    failed;
    saving = Promise.resolve();
    queued = null;
    constructor(storage, snapshot, failed) {
        this.storage = storage;
        this.snapshot = snapshot;
        this.failed = failed;
    }
    save() {
        if (this.queued)
            return this.queued;
        const queued = this.saving.then(async () => {
            this.queued = null;
            try {
                await this.storage.save(this.snapshot());
            }
            catch (error) {
                this.failed(error);
            }
        });
        this.queued = queued;
        this.saving = queued;
        return queued;
    }
    /** Resolves once every save asked for so far is done. */
    get done() {
        return this.saving;
    }
}
