// One WebSocket connection and what lives as long as it: its timers and
// its heartbeat. It ends once, at its close or when given up on: a network
// that went away silently (a sleeping laptop, a changed Wi-Fi) never sends
// a close, and TCP can take minutes to notice.

import type { ClientFrame } from "./generated/protocol.js";
import type { WebSocketConstructor, WebSocketLike } from "./options.js";

/** How a connection ended. `planned`: closed on purpose, to come straight back. */
export type Ended = { opened: boolean; code: number; reason: string; planned: boolean };

export interface ConnectionEvents {
  open(): void;
  frame(text: string): void;
}

export class Connection {
  /** Resolves once, when the connection ends. */
  readonly ended: Promise<Ended>;
  private readonly ws: WebSocketLike;
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private resolve: (ended: Ended) => void = () => undefined;
  private opened = false;
  private done = false;
  private planned = false;
  private lastHeard = Date.now();

  /**
   * Opens `url`. Every `heartbeat` ms (0: never) it pings, and gives up
   * once nothing was heard for twice that, not even a pong.
   */
  constructor(url: string, socketClass: WebSocketConstructor, heartbeat: number, on: ConnectionEvents) {
    this.ended = new Promise((resolve) => {
      this.resolve = resolve;
    });
    this.ws = new socketClass(url);
    if (heartbeat > 0) {
      this.every(heartbeat, () => {
        if (Date.now() - this.lastHeard > 2 * heartbeat) this.abandon(4000, "no answer from the server");
        else this.send({ type: "ping" });
      });
    }
    this.ws.addEventListener("open", () => {
      this.opened = true;
      this.lastHeard = Date.now();
      on.open();
    });
    this.ws.addEventListener("message", (event) => {
      if (this.done) return;
      this.lastHeard = Date.now();
      on.frame(String(event.data));
    });
    this.ws.addEventListener("error", () => undefined); // a close follows
    this.ws.addEventListener("close", (event) => this.finish(event.code, event.reason));
  }

  /** Sends a frame; false when the connection is not open (or the send failed). */
  send(frame: ClientFrame): boolean {
    if (this.done || this.ws.readyState !== 1) return false;
    try {
      this.ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /** Runs `task` every `ms` while the connection lasts. */
  every(ms: number, task: () => void): void {
    this.timers.add(setInterval(task, ms));
  }

  /** Runs `task` once after `ms`, if the connection still lasts. */
  after(ms: number, task: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      task();
    }, Math.min(2 ** 31 - 1, ms));
    this.timers.add(timer);
  }

  /** Closes on purpose, to come straight back (with a fresh token). */
  replace(reason: string): void {
    this.planned = true;
    this.ws.close(1000, reason);
  }

  /** Ends now, without waiting for the server's close. */
  abandon(code: number, reason: string): void {
    this.finish(code, reason);
    this.ws.close(code, reason);
  }

  private finish(code: number, reason: string): void {
    if (this.done) return;
    this.done = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.resolve({ opened: this.opened, code, reason, planned: this.planned });
  }
}
