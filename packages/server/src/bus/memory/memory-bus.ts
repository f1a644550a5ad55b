import type { Bus, Unsubscribe } from "../../core/ports/bus.ts";

// MemoryBus: the Bus inside one process. publish() delivers synchronously: when the outermost
// publish returns, every subscriber has had every event. An event published from inside a handler
// is queued and delivered after the current event has reached all its subscribers, so each
// subscriber still sees events in publish order. A throwing handler is reported to onError and
// does not stop delivery to the others.

export interface MemoryBusOptions {
  /** Called with what a handler threw. Defaults to console.error. */
  onError?: (err: unknown, topic: string) => void;
}

interface Subscription<T> {
  handler: (event: T) => void;
  active: boolean;
}

export class MemoryBus<T = unknown> implements Bus<T> {
  /** A topic's one subscription, or a Set once it has several: most topics (a user's) have one
   * subscriber per connection, and a Set costs a few hundred bytes per idle connection. */
  private readonly topics = new Map<string, Subscription<T> | Set<Subscription<T>>>();
  private readonly queue: Array<{ topic: string; event: T }> = [];
  private delivering = false;
  private closed = false;
  private readonly onError: (err: unknown, topic: string) => void;

  constructor(options: MemoryBusOptions = {}) {
    this.onError =
      options.onError ?? ((err, topic) => console.error(`MemoryBus: a handler of ${topic} threw`, err));
  }

  /** Delivers to the subscribers of `topic` at the time of delivery. Dropped after close(). */
  publish(topic: string, event: T): void {
    if (this.closed) return;
    this.queue.push({ topic, event });
    if (this.delivering) return;
    this.delivering = true;
    try {
      for (let next = this.queue.shift(); next; next = this.queue.shift())
        this.deliver(next.topic, next.event);
    } finally {
      this.delivering = false;
    }
  }

  /** Throws after close(). */
  subscribe(topic: string, handler: (event: T) => void): Unsubscribe {
    if (this.closed) throw new Error("MemoryBus is closed");
    const sub: Subscription<T> = { handler, active: true };
    const subs = this.topics.get(topic);
    if (!subs) this.topics.set(topic, sub);
    else if (subs instanceof Set) subs.add(sub);
    else this.topics.set(topic, new Set([subs, sub]));
    return () => {
      if (!sub.active) return;
      sub.active = false;
      const current = this.topics.get(topic);
      if (current === sub) this.topics.delete(topic);
      else if (current instanceof Set) {
        current.delete(sub);
        if (current.size === 0) this.topics.delete(topic);
      }
    };
  }

  /** Drops every subscription and any queued event. Idempotent. */
  close(): Promise<void> {
    this.closed = true;
    this.queue.length = 0;
    for (const subs of this.topics.values()) {
      if (subs instanceof Set) for (const sub of subs) sub.active = false;
      else subs.active = false;
    }
    this.topics.clear();
    return Promise.resolve();
  }

  private deliver(topic: string, event: T): void {
    const subs = this.topics.get(topic);
    if (!subs) return;
    if (!(subs instanceof Set)) return this.call(subs, topic, event);
    // A snapshot: a handler may subscribe or unsubscribe while we iterate. One added now starts
    // with the next event; one removed now (not yet reached) does not get this one.
    for (const sub of [...subs]) this.call(sub, topic, event);
  }

  private call(sub: Subscription<T>, topic: string, event: T): void {
    if (!sub.active) return;
    try {
      sub.handler(event);
    } catch (err) {
      this.reportError(err, topic);
    }
  }

  private reportError(err: unknown, topic: string): void {
    try {
      this.onError(err, topic);
    } catch {
      // An error reporter that throws must not break delivery either.
    }
  }
}
