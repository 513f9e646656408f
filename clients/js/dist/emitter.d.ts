/** A minimal typed event emitter: `on` answers a function that unsubscribes. */
export declare class Emitter<Events extends {
    [K in keyof Events]: unknown;
}> {
    private readonly handlers;
    on<K extends keyof Events>(event: K, handler: (value: Events[K]) => void): () => void;
    off<K extends keyof Events>(event: K, handler: (value: Events[K]) => void): void;
    /** Calls every handler; one that throws does not stop the others. */
    protected emit<K extends keyof Events>(event: K, value: Events[K]): void;
}
