/** A minimal typed event emitter: `on` answers a function that unsubscribes. */
export class Emitter<Events extends { [K in keyof Events]: unknown }> {
  private readonly handlers = new Map<keyof Events, Set<(value: never) => void>>();

  on<K extends keyof Events>(event: K, handler: (value: Events[K]) => void): () => void {
    let set = this.handlers.get(event);
    if (!set) {
      set = new Set();
      this.handlers.set(event, set);
    }
    set.add(handler as (value: never) => void);
    return () => this.off(event, handler);
  }

  off<K extends keyof Events>(event: K, handler: (value: Events[K]) => void): void {
    this.handlers.get(event)?.delete(handler as (value: never) => void);
  }

  /** Calls every handler; one that throws does not stop the others. */
  protected emit<K extends keyof Events>(event: K, value: Events[K]): void {
    for (const handler of [...(this.handlers.get(event) ?? [])]) {
      try {
        (handler as (value: Events[K]) => void)(value);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
