// A tiny typed event emitter that runs on every runtime (no node:events). Listeners run
// synchronously, in registration order. A listener that throws does not stop the others: the
// error goes to `onListenerError` (the client turns it into an "error" event).

export type EventMap = Record<string, unknown[]>;
export type Listener<A extends unknown[]> = (...args: A) => void;
type AnyListener = (...args: unknown[]) => void;

export class Emitter<E extends EventMap> {
  private readonly listeners = new Map<keyof E, AnyListener[]>();

  constructor(private readonly onListenerError: (err: unknown, event: keyof E) => void = rethrowLater) {}

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof E>(event: K, fn: Listener<E[K]>): () => void {
    const list = this.listeners.get(event) ?? [];
    list.push(fn as unknown as AnyListener);
    this.listeners.set(event, list);
    return () => this.off(event, fn);
  }

  /** Adds a listener that runs at most once. */
  once<K extends keyof E>(event: K, fn: Listener<E[K]>): () => void {
    const off = this.on(event, (...args: E[K]) => {
      off();
      fn(...args);
    });
    return off;
  }

  off<K extends keyof E>(event: K, fn: Listener<E[K]>): void {
    const list = this.listeners.get(event);
    if (!list) return;
    const i = list.indexOf(fn as unknown as AnyListener);
    if (i >= 0) list.splice(i, 1);
  }

  listenerCount(event: keyof E): number {
    return this.listeners.get(event)?.length ?? 0;
  }

  /** Calls every listener of `event`; returns whether there was any. */
  emit<K extends keyof E>(event: K, ...args: E[K]): boolean {
    const list = this.listeners.get(event);
    if (!list || list.length === 0) return false;
    // Copy: a listener may remove itself (once) or others while we iterate.
    for (const fn of [...list]) {
      try {
        (fn as unknown as Listener<E[K]>)(...args);
      } catch (err) {
        this.onListenerError(err, event);
      }
    }
    return true;
  }
}

function rethrowLater(err: unknown): void {
  queueMicrotask(() => {
    throw err;
  });
}
