// One WebSocket connection and what lives as long as it: its timers and
// its heartbeat. It ends once, at its close or when given up on: a network
// that went away silently (a sleeping laptop, a changed Wi-Fi) never sends
// a close, and TCP can take minutes to notice.
export class Connection {
    /** Resolves once, when the connection ends. */
    ended;
    ws;
    timers = new Set();
    resolve = () => undefined;
    opened = false;
    done = false;
    planned = false;
    lastHeard = Date.now();
    /**
     * Opens `url`. Every `heartbeat` ms (0: never) it pings, and gives up
     * once nothing was heard for twice that, not even a pong.
     */
    constructor(url, socketClass, heartbeat, on) {
        this.ended = new Promise((resolve) => {
            this.resolve = resolve;
        });
        this.ws = new socketClass(url);
        if (heartbeat > 0) {
            this.every(heartbeat, () => {
                if (Date.now() - this.lastHeard > 2 * heartbeat)
                    this.abandon(4000, "no answer from the server");
                else
                    this.send({ type: "ping" });
            });
        }
        this.ws.addEventListener("open", () => {
            this.opened = true;
            this.lastHeard = Date.now();
            on.open();
        });
        this.ws.addEventListener("message", (event) => {
            if (this.done)
                return;
            this.lastHeard = Date.now();
            on.frame(String(event.data));
        });
        this.ws.addEventListener("error", () => undefined); // a close follows
        this.ws.addEventListener("close", (event) => this.finish(event.code, event.reason));
    }
    /** Sends a frame; false when the connection is not open (or the send failed). */
    send(frame) {
        if (this.done || this.ws.readyState !== 1)
            return false;
        try {
            this.ws.send(JSON.stringify(frame));
            return true;
        }
        catch {
            return false;
        }
    }
    /** Runs `task` every `ms` while the connection lasts. */
    every(ms, task) {
        this.timers.add(setInterval(task, ms));
    }
    /** Runs `task` once after `ms`, if the connection still lasts. */
    after(ms, task) {
        const timer = setTimeout(() => {
            this.timers.delete(timer);
            task();
        }, Math.min(2 ** 31 - 1, ms));
        this.timers.add(timer);
    }
    /** Closes on purpose, to come straight back (with a fresh token). */
    replace(reason) {
        this.planned = true;
        this.ws.close(1000, reason);
    }
    /** Ends now, without waiting for the server's close. */
    abandon(code, reason) {
        this.finish(code, reason);
        this.ws.close(code, reason);
    }
    finish(code, reason) {
        if (this.done)
            return;
        this.done = true;
        for (const timer of this.timers)
            clearTimeout(timer);
        this.timers.clear();
        this.resolve({ opened: this.opened, code, reason, planned: this.planned });
    }
}
