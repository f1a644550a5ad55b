import type { Clock } from "../core/ports/clock.ts";

// SystemClock: the real wall clock and Node timers. Timers are unref'd: a pending timer (a
// heartbeat, a flush) never keeps the process alive on its own; open sockets do that.

export class SystemClock implements Clock {
  now(): number {
    return Date.now();
  }

  /** Calls `fn` once after `ms` milliseconds (as Node's setTimeout: negative or NaN means 1). */
  setTimeout(fn: () => void, ms: number): { cancel(): void } {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return { cancel: () => clearTimeout(timer) };
  }
}
