import type { Clock } from "../core/ports/clock.ts";

// ManualClock: a Clock for tests. Time stands still until advance(); then due timers fire in
// order of due time (ties: order of creation), each seeing now() equal to its due time. A timer
// that a firing timer schedules fires in the same advance() if it falls due within it.

interface Timer {
  at: number;
  id: number;
  fn: () => void;
}

export class ManualClock implements Clock {
  private time: number;
  private nextId = 0;
  private timers: Timer[] = [];

  constructor(start = 0) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  /** Timers scheduled and not yet fired or cancelled. */
  pendingTimers(): number {
    return this.timers.length;
  }

  /** Negative or NaN delays count as 0 (fires at the next advance, even advance(0)). */
  setTimeout(fn: () => void, ms: number): { cancel(): void } {
    const timer: Timer = { at: this.time + (ms > 0 ? ms : 0), id: this.nextId++, fn };
    this.timers.push(timer);
    return {
      cancel: () => {
        this.timers = this.timers.filter((t) => t !== timer);
      },
    };
  }

  /** Moves time forward by `ms`, firing due timers in order. If a timer throws, the error
   * propagates and time stays at that timer's due time; later timers stay pending. */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`advance() needs a non-negative number of ms, got ${ms}`);
    const until = this.time + ms;
    for (let t = this.nextDue(until); t; t = this.nextDue(until)) {
      this.timers = this.timers.filter((x) => x !== t);
      this.time = t.at;
      t.fn();
    }
    this.time = until;
  }

  /** Timers scheduled and neither fired nor cancelled. */
  pending(): number {
    return this.timers.length;
  }

  private nextDue(until: number): Timer | undefined {
    let best: Timer | undefined;
    for (const t of this.timers) {
      if (t.at <= until && (!best || t.at < best.at || (t.at === best.at && t.id < best.id))) best = t;
    }
    return best;
  }
}
