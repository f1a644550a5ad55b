import { ParleyError } from "@parley/protocol";
import type { Admission } from "./admission.ts";
import { NO_METRICS, type Metrics } from "./ports/metrics.ts";
import type { AppendResult, NewMessage, Store } from "./ports/store.ts";

// Group commit: sends that arrive while a commit is running (or in the same event-loop turn) are
// written together in one Store.appendMessages call, i.e. one transaction and one fsync. A send
// resolves only after its batch is committed, so nothing is acknowledged before it is durable.
// Admission decides, before a send is queued, whether it may wait at all (admission.ts); the
// committer tells it when each batch starts and ends, which is how it measures throughput.

/** Told once how a queued message ended: its result, or why it was refused or not stored. It
 * must not throw (the committer reports a throw as an uncaught exception, after the batch). */
export type SubmitDone = (err: Error | undefined, result: AppendResult | undefined) => void;

interface Pending {
  item: NewMessage;
  done: SubmitDone;
}

interface Batch {
  pending: Pending[];
  started: number;
  committed: Promise<AppendResult[]>;
}

export class GroupCommitter {
  private queue: Pending[] = [];
  private running = false;
  private scheduled = false;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly store: Store,
    private readonly onCommitted: (results: AppendResult[]) => void,
    private readonly maxBatch: number,
    private readonly admission: Admission,
    private readonly maxBatchBytes = Number.POSITIVE_INFINITY,
    private readonly metrics: Metrics = NO_METRICS,
  ) {}

  get pending(): number {
    return this.queue.length;
  }

  /** Queues one message for the next commit. Rejects with admission's refusal (E_OVERLOADED,
   * nothing queued) when the server is overloaded. */
  submit(item: NewMessage): Promise<AppendResult> {
    return new Promise((resolve, reject) =>
      this.enqueue(item, (err, result) =>
        result !== undefined ? resolve(result) : reject(err ?? new Error("no result")),
      ),
    );
  }

  /** submit() with a callback: the send path's, since a promise and an async function around it
   * cost each send about a kilobyte of garbage and two microtask turns (docs/benchmarks.md,
   * eighteenth session). A refusal is told before this returns; everything else once the batch
   * ends. */
  enqueue(item: NewMessage, done: SubmitDone): void {
    const refusal = this.admission.refusal(this.queue.length);
    if (refusal) {
      this.metrics.sendRefused();
      done(refusal, undefined);
      return;
    }
    this.queue.push({ item, done });
    this.schedule();
  }

  /** Resolves once everything submitted so far is committed (or failed). */
  drain(): Promise<void> {
    if (!this.running && !this.scheduled && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private schedule(): void {
    if (this.running || this.scheduled) return;
    this.scheduled = true;
    // setImmediate, not a microtask: lets the current I/O turn deliver every frame already read
    // from sockets, so they join this batch.
    setImmediate(() => {
      this.scheduled = false;
      void this.run();
    });
  }

  /** How many of the queued messages the next batch takes: at most maxBatch, and no more once
   * their bodies reach maxBatchBytes (at least one). */
  private batchLength(): number {
    const limit = Math.min(this.maxBatch, this.queue.length);
    let bytes = 0;
    for (let n = 0; n < limit; n++) {
      bytes += this.queue[n]!.item.body.byteLength;
      if (bytes >= this.maxBatchBytes) return n + 1;
    }
    return limit;
  }

  private async run(): Promise<void> {
    this.running = true;
    let current: Batch | undefined = this.start();
    while (current) {
      let results: AppendResult[] | undefined;
      let failure: unknown;
      try {
        results = await current.committed;
      } catch (cause) {
        failure = cause;
      }
      const seconds = (performance.now() - current.started) / 1000;
      this.admission.batchFinished(results !== undefined);
      this.metrics.commit(current.pending.length, seconds, results !== undefined);
      // The next batch goes to the store before this one's results are published: publishing a
      // thousand pushes takes the event loop tens of milliseconds, and the writer would sit idle
      // through them.
      const done = current;
      current = this.queue.length > 0 ? this.start() : undefined;
      let err: ParleyError | undefined;
      try {
        if (results === undefined) throw failure;
        // onCommitted (publishing pushes) must not throw; if it does, the sends are refused
        // below although committed, and a retry finds them stored (same cid).
        this.onCommitted(results);
      } catch (cause) {
        // The transaction rolled back: nothing of this batch is stored, so a retry is safe.
        err = new ParleyError("E_INTERNAL", "commit failed", { cause });
      }
      const { pending } = done;
      for (let i = 0; i < pending.length; i++) {
        try {
          if (err === undefined) pending[i]!.done(undefined, results![i]);
          else pending[i]!.done(err, undefined);
        } catch (bug) {
          // Not this batch's fault, and the others must still be told.
          queueMicrotask(() => {
            throw bug;
          });
        }
      }
    }
    this.running = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** Takes the next batch off the queue and hands it to the store. */
  private start(): Batch {
    const pending = this.queue.splice(0, this.batchLength());
    this.admission.batchStarted(pending.length, pending.length === this.maxBatch || this.queue.length > 0);
    const started = performance.now();
    let committed: Promise<AppendResult[]>;
    try {
      committed = this.store.appendMessages(pending.map((p) => p.item));
    } catch (err) {
      committed = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    return { pending, started, committed };
  }
}
