// Sync requests on one connection. One is asked at a time; a request
// made meanwhile is asked once the answer is in. One unanswered within the
// timeout is asked again (a refused sync answers an error no request id
// ties to it), and then two answers are on their way: only the last one
// decides what comes next.

export class SyncRequests {
  private out = 0;
  private again = false;
  private timer: ReturnType<typeof setTimeout> | null = null;

  /** `ask` sends a sync frame from the current cursor; false when it could not. */
  constructor(
    private readonly ask: () => boolean,
    private readonly timeout: number,
  ) {}

  /** Whether an answer is on its way. */
  get busy(): boolean {
    return this.out > 0;
  }

  /** Asks now, or once the answer under way is in. */
  request(): void {
    if (this.out > 0) this.again = true;
    else this.send();
  }

  /** An answer came; true when it was the last one on its way (it decides what next). */
  answered(): boolean {
    this.out = Math.max(0, this.out - 1);
    if (this.out > 0) return false;
    this.clearTimer();
    return true;
  }

  /** The end of the feed was reached: asks again if asked meanwhile. */
  finished(): void {
    if (!this.again) return;
    this.again = false;
    this.request();
  }

  /** The connection is gone. */
  stop(): void {
    this.clearTimer();
    this.out = 0;
    this.again = false;
  }

  private send(): void {
    if (!this.ask()) return;
    this.out += 1;
    this.clearTimer();
    this.timer = setTimeout(() => {
      this.timer = null;
      this.send();
    }, this.timeout);
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
