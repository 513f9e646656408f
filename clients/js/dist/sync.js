// Sync requests on one connection. One is asked at a time; a request
// made meanwhile is asked once the answer is in. One unanswered within the
// timeout is asked again (a refused sync answers an error no request id
// ties to it), and then two answers are on their way: only the last one
// decides what comes next.
export class SyncRequests {
    ask;
    timeout;
    out = 0;
    again = false;
    timer = null;
    /** `ask` sends a sync frame from the current cursor; false when it could not. */
    constructor(ask, timeout) {
        this.ask = ask;
        this.timeout = timeout;
    }
    /** Whether an answer is on its way. */
    get busy() {
        return this.out > 0;
    }
    /** Asks now, or once the answer under way is in. */
    request() {
        if (this.out > 0)
            this.again = true;
        else
            this.send();
    }
    /** An answer came; true when it was the last one on its way (it decides what next). */
    answered() {
        this.out = Math.max(0, this.out - 1);
        if (this.out > 0)
            return false;
        this.clearTimer();
        return true;
    }
    /** The end of the feed was reached: asks again if asked meanwhile. */
    finished() {
        if (!this.again)
            return;
        this.again = false;
        this.request();
    }
    /** The connection is gone. */
    stop() {
        this.clearTimer();
        this.out = 0;
        this.again = false;
    }
    send() {
        if (!this.ask())
            return;
        this.out += 1;
        this.clearTimer();
        this.timer = setTimeout(() => {
            this.timer = null;
            this.send();
        }, this.timeout);
    }
    clearTimer() {
        if (this.timer)
            clearTimeout(this.timer);
        this.timer = null;
    }
}
