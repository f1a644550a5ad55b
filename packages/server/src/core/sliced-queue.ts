// A large group's push goes to every online member at once: a thousand sends in one turn of the
// event loop hold up every other connection for as long (group-fanout in docs/benchmarks.md: the
// 1:1 messages that arrive during the burst wait for all of it). Such sends are queued here and
// run a slice per turn (setImmediate), so the sockets read between two slices (1:1 sends, their
// pushes) are served in between. One FIFO queue: what was queued first runs first, so each
// connection still gets a group's entries in log order.

/** Sends run per turn of the event loop; each costs a few microseconds (encode shared, write). */
export const FANOUT_SLICE = 100;

export class SlicedQueue {
  private queue: Array<(() => void) | undefined> = [];
  private next = 0;
  private scheduled = false;

  constructor(
    private readonly slice: number,
    /** Told what a queued function threw; the others still run. */
    private readonly onError: (err: unknown) => void,
  ) {}

  /** Runs `fn` in a later turn, after everything queued before it. */
  add(fn: () => void): void {
    this.queue.push(fn);
    if (!this.scheduled) this.schedule();
  }

  /** Functions queued and not yet run. */
  get size(): number {
    return this.queue.length - this.next;
  }

  private schedule(): void {
    this.scheduled = true;
    setImmediate(() => this.run());
  }

  private run(): void {
    this.scheduled = false;
    const end = Math.min(this.queue.length, this.next + this.slice);
    while (this.next < end) {
      const fn = this.queue[this.next];
      this.queue[this.next++] = undefined;
      try {
        fn?.();
      } catch (err) {
        this.onError(err);
      }
    }
    if (this.next < this.queue.length) return this.schedule();
    this.queue = [];
    this.next = 0;
  }
}
