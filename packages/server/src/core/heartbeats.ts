import type { Clock } from "./ports/clock.ts";

// One timer for the heartbeats of every ready connection, instead of one timer per connection:
// an idle server holds tens of thousands of connections, and a Node timer (its Timeout, closure
// and handle) cost about half a KiB each of them (docs/benchmarks.md, idle). Every periodMs the
// sweep calls beat(now) on each member, which pings or closes it as its own silence requires.

export interface Beating {
  beat(now: number): void;
}

export class Heartbeats {
  private readonly members = new Set<Beating>();
  private timer: { cancel(): void } | undefined;
  private stopped = false;

  constructor(
    private readonly clock: Clock,
    private readonly periodMs: number,
  ) {}

  get size(): number {
    return this.members.size;
  }

  add(member: Beating): void {
    this.members.add(member);
    if (!this.timer && !this.stopped) this.arm();
  }

  delete(member: Beating): void {
    this.members.delete(member);
  }

  /** No sweep after this (shutdown). */
  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = undefined;
  }

  private arm(): void {
    this.timer = this.clock.setTimeout(() => this.sweep(), this.periodMs);
  }

  private sweep(): void {
    this.timer = undefined;
    const now = this.clock.now();
    // A member may leave (close) during its beat: a Set's iteration skips deleted entries.
    for (const m of this.members) m.beat(now);
    if (this.members.size > 0 && !this.stopped) this.arm();
  }
}
