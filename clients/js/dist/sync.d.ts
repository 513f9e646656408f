export declare class SyncRequests {
    private readonly ask;
    private readonly timeout;
    private out;
    private again;
    private timer;
    /** `ask` sends a sync frame from the current cursor; false when it could not. */
    constructor(ask: () => boolean, timeout: number);
    /** Whether an answer is on its way. */
    get busy(): boolean;
    /** Asks now, or once the answer under way is in. */
    request(): void;
    /** An answer came; true when it was the last one on its way (it decides what next). */
    answered(): boolean;
    /** The end of the feed was reached: asks again if asked meanwhile. */
    finished(): void;
    /** The connection is gone. */
    stop(): void;
    private send;
    private clearTimer;
}
