/** A minimal typed event emitter: `on` answers a function that unsubscribes. */
export class Emitter {
    handlers = new Map();
    on(event, handler) {
        let set = this.handlers.get(event);
        if (!set) {
            set = new Set();
            this.handlers.set(event, set);
        }
        set.add(handler);
        return () => this.off(event, handler);
    }
    off(event, handler) {
        this.handlers.get(event)?.delete(handler);
    }
    /** Calls every handler; one that throws does not stop the others. */
    emit(event, value) {
        for (const handler of [...(this.handlers.get(event) ?? [])]) {
            try {
                handler(value);
            }
            catch (error) {
                queueMicrotask(() => {
                    throw error;
                });
            }
        }
    }
}
