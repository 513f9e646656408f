import type { ClientFrame } from "./generated/protocol.js";
import type { WebSocketConstructor } from "./options.js";
/** How a connection ended. `planned`: closed on purpose, to come straight back. */
export type Ended = {
    opened: boolean;
    code: number;
    reason: string;
    planned: boolean;
};
export interface ConnectionEvents {
    open(): void;
    frame(text: string): void;
}
export declare class Connection {
    /** Resolves once, when the connection ends. */
    readonly ended: Promise<Ended>;
    private readonly ws;
    private readonly timers;
    private resolve;
    private opened;
    private done;
    private planned;
    private lastHeard;
    /**
     * Opens `url`. Every `heartbeat` ms (0: never) it pings, and gives up
     * once nothing was heard for twice that, not even a pong.
     */
    constructor(url: string, socketClass: WebSocketConstructor, heartbeat: number, on: ConnectionEvents);
    /** Sends a frame; false when the connection is not open (or the send failed). */
    send(frame: ClientFrame): boolean;
    /** Runs `task` every `ms` while the connection lasts. */
    every(ms: number, task: () => void): void;
    /** Runs `task` once after `ms`, if the connection still lasts. */
    after(ms: number, task: () => void): void;
    /** Closes on purpose, to come straight back (with a fresh token). */
    replace(reason: string): void;
    /** Ends now, without waiting for the server's close. */
    abandon(code: number, reason: string): void;
    private finish;
}
