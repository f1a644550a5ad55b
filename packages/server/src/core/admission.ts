import { ParleyError } from "@parley/protocol";

// Admission control for sends (DESIGN.md: "under overload the server sheds load rather than
// growing memory without bound"). A send is refused with E_OVERLOADED before it is queued for
// commit when
//   - the process's resident memory is near its configured limit (maxRssBytes), or
//   - maxPendingSends sends already wait for commit (a hard cap), or
//   - the commit queue would make it wait longer than maxCommitQueueMs, estimated from the
//     queue's length and the measured commit throughput, or
//   - maxFanOutBacklog pushes of large groups already wait to go out (core/sliced-queue.ts: they
//     are sent a slice per turn, so a sender to a large group could outrun them without bound).
// Refusing at the door keeps the latency of admitted sends near the target and the queue's
// memory bounded; the client resends after retryAfterMs with the same cid (idempotent).
//
// When more is offered than the server can commit, refused sends come back and are refused again:
// the refusals alone grow without bound and eat the CPU that commits need (a retry collapse). So
// retryAfterMs also spreads the refused sends out: while refusals run at R per second and commits
// at C, it is at least R / C seconds, which makes the retries come back at about the rate the
// server commits instead of piling up. Refusals are also cheap (no stack trace).

/** What admission needs from the core's options. */
export interface AdmissionOptions {
  /** Target for the time a send waits for its commit; 0 turns the estimate off. */
  maxCommitQueueMs: number;
  /** Sends waiting for commit beyond which every new send is refused. */
  maxPendingSends: number;
  /** The committer's largest batch: a full batch is what measures throughput. */
  commitBatchMax: number;
  /** Resident set size limit in bytes; sends are refused above RSS_SHED_FRACTION of it. 0: off. */
  maxRssBytes: number;
  /** Pushes waiting in the fan-out queue beyond which every new send is refused. */
  maxFanOutBacklog: number;
}

export interface AdmissionDeps {
  /** Milliseconds, from the core's Clock. */
  now: () => number;
  /** Uniform in [0, 1): the jitter of retryAfterMs. */
  random?: () => number;
  /** The process's resident set size in bytes (supplied by the composition root: the core does
   * not read process state). Without it the memory bound is off. */
  rssBytes?: () => number;
  /** Pushes waiting in the core's fan-out queue. Without it that bound is off. */
  fanOutBacklog?: () => number;
  /** Told when refusing starts (the first refusal after a window without any) and when it stops
   * (a whole REFUSAL_WINDOW_MS without a refusal, noticed at the next send), for the log. */
  onShedding?: (event: SheddingEvent) => void;
}

export type SheddingEvent =
  | { shedding: true; reason: string; queued: number; commitsPerSecond: number | undefined }
  | { shedding: false; refused: number; forMs: number };

/** Sends are refused while RSS is above this fraction of maxRssBytes: the rest is headroom for
 * the work already admitted. */
export const RSS_SHED_FRACTION = 0.9;
/** RSS is read at most this often (on the send path, not on a timer). */
export const RSS_SAMPLE_MS = 250;
/** Bounds of the retryAfterMs base, before jitter (which adds up to 100%). */
export const RETRY_AFTER_MIN_MS = 100;
export const RETRY_AFTER_MAX_MS = 10_000;
/** Refusals are counted over windows of this length for the refusal rate. */
export const REFUSAL_WINDOW_MS = 1000;
/** retryAfterMs base when the drain time is unknown (no throughput measured yet). */
const RETRY_AFTER_UNKNOWN_MS = 500;
/** retryAfterMs base while the fan-out queue is over its bound: it drains at tens of thousands of
 * pushes a second, so this is about what a full queue takes. */
const RETRY_AFTER_FAN_OUT_MS = 1000;
/** retryAfterMs base while memory is over the bound: RSS falls only as the GC returns memory. */
const RETRY_AFTER_MEMORY_MS = 1000;

/** Commit throughput in messages per ms: an exponentially weighted moving average of samples
 * taken from full batches. A batch that is not full does not measure capacity (the committer ran
 * out of work, and a small batch pays the whole per-commit cost alone), but it is a lower bound of
 * it: it only ever raises an estimate that it proves too low (after a slow disk has recovered, say,
 * while admission keeps the batches small). It never creates an estimate: at light load that would
 * make a burst look like overload. Batches are pooled until a sample spans MIN_SAMPLE_MS, so that
 * a coarse clock (1 ms) cannot turn fast commits into a rate of infinity or of zero. */
export class CommitThroughput {
  static readonly ALPHA = 0.25;
  static readonly MIN_SAMPLE_MS = 10;
  private rate: number | undefined;
  private readonly full = { messages: 0, ms: 0 };
  private readonly partial = { messages: 0, ms: 0 };

  /** Messages per ms, or undefined before the first sample. */
  get perMs(): number | undefined {
    return this.rate;
  }

  /** One committed batch of `messages`, which took `ms`; `full` if it was as large as allowed. */
  record(messages: number, ms: number, full: boolean): void {
    if (!(ms >= 0) || !(messages > 0)) return;
    const pool = full ? this.full : this.partial;
    pool.messages += messages;
    pool.ms += ms;
    if (pool.ms < CommitThroughput.MIN_SAMPLE_MS) return;
    const sample = pool.messages / pool.ms;
    pool.messages = 0;
    pool.ms = 0;
    if (full) this.update(sample);
    else if (this.rate !== undefined && sample > this.rate) this.update(sample);
  }

  private update(sample: number): void {
    this.rate = this.rate === undefined ? sample : this.rate + CommitThroughput.ALPHA * (sample - this.rate);
  }
}

/** The admission decision for sends, fed by the group committer (batchStarted/batchFinished)
 * and asked before each send is queued (refusal). Single-threaded: no locking. */
export class Admission {
  readonly throughput = new CommitThroughput();
  private running = 0;
  private runningFull = false;
  private runningSince = 0;
  private rss = 0;
  private rssAt = Number.NEGATIVE_INFINITY;
  /** Refusals per ms over the last complete window, and the window being counted. */
  private refusalRate = 0;
  private refusedInWindow = 0;
  private windowStart: number | undefined;
  /** The current shedding episode: when it began and how many sends it refused. */
  private episode: { since: number; refused: number } | undefined;
  private readonly random: () => number;

  constructor(
    private readonly options: AdmissionOptions,
    private readonly deps: AdmissionDeps,
  ) {
    this.random = deps.random ?? Math.random;
  }

  /** The committer took `messages` from its queue and started writing them. */
  batchStarted(messages: number, full = messages >= this.options.commitBatchMax): void {
    this.running = messages;
    this.runningFull = full;
    this.runningSince = this.deps.now();
  }

  /** The batch started last is written (`ok`) or failed (not a throughput sample). */
  batchFinished(ok: boolean): void {
    if (ok) this.throughput.record(this.running, this.deps.now() - this.runningSince, this.runningFull);
    this.running = 0;
  }

  /** Estimated ms a send queued now behind `queued` others would wait for its commit, or
   * undefined while no throughput has been measured: what the running batch still needs, then
   * (queued + 1) messages at the measured rate. A running batch that has taken longer than a full
   * batch should (a stalled disk) is assumed to need as long again, and the rate to be what it
   * achieved. Batches commit whole, so the true wait can exceed this by up to one batch; counting
   * whole batches instead would refuse everything, for good, once a full batch takes longer than
   * maxCommitQueueMs. */
  estimateWaitMs(queued: number): number | undefined {
    let rate = this.throughput.perMs;
    if (rate === undefined) return undefined;
    let remaining = 0;
    if (this.running > 0) {
      const elapsed = Math.max(0, this.deps.now() - this.runningSince);
      const fullBatchMs = this.options.commitBatchMax / rate;
      if (elapsed > fullBatchMs) {
        remaining = elapsed;
        rate = this.options.commitBatchMax / elapsed;
      } else {
        remaining = Math.max(0, this.running / rate - elapsed);
      }
    }
    return remaining + (queued + 1) / rate;
  }

  /** The error to refuse a send with while `queued` sends wait for commit, or undefined to admit
   * it. Every refusal is E_OVERLOADED (retryable) with a jittered retryAfterMs. */
  refusal(queued: number): ParleyError | undefined {
    const refusal = this.decide(queued);
    if (refusal) {
      this.countRefusal();
      if (this.episode) this.episode.refused++;
      else {
        this.episode = { since: this.deps.now(), refused: 1 };
        const rate = this.throughput.perMs;
        this.deps.onShedding?.({
          shedding: true,
          reason: refusal.message,
          queued,
          commitsPerSecond: rate === undefined ? undefined : Math.round(rate * 1000),
        });
      }
    } else {
      this.rollWindow();
    }
    return refusal;
  }

  private decide(queued: number): ParleyError | undefined {
    if (this.overMemory()) {
      return this.overloaded("memory use is near its limit", RETRY_AFTER_MEMORY_MS);
    }
    const wait = this.estimateWaitMs(queued);
    if (queued >= this.options.maxPendingSends) {
      return this.overloaded("too many sends wait for commit", wait ?? RETRY_AFTER_UNKNOWN_MS);
    }
    if ((this.deps.fanOutBacklog?.() ?? 0) >= this.options.maxFanOutBacklog) {
      return this.overloaded("too many pushes wait to go out", RETRY_AFTER_FAN_OUT_MS);
    }
    const target = this.options.maxCommitQueueMs;
    if (target > 0 && wait !== undefined && wait > target) {
      return this.overloaded("sends would wait too long for commit", wait);
    }
    return undefined;
  }

  /** retryAfterMs for a refusal whose backlog drains in about `drainMs`: at least the drain time
   * (bounded to RETRY_AFTER_MIN_MS..RETRY_AFTER_MAX_MS), plus up to as much again at random, so
   * that the clients refused together do not all come back together. */
  retryAfterMs(drainMs: number): number {
    const rate = this.throughput.perMs;
    // Refusals per commit: R / C seconds to spread them over (see the top of this file).
    const spreadMs = rate !== undefined && rate > 0 ? (this.refusalsPerMs / rate) * 1000 : 0;
    const base = Math.min(
      RETRY_AFTER_MAX_MS,
      Math.max(RETRY_AFTER_MIN_MS, Math.ceil(drainMs), Math.ceil(spreadMs)),
    );
    return Math.round(base * (1 + this.random()));
  }

  /** Refusals per ms over the last complete REFUSAL_WINDOW_MS (0 before one has passed). */
  get refusalsPerMs(): number {
    this.rollWindow();
    return this.refusalRate;
  }

  private countRefusal(): void {
    this.rollWindow();
    this.refusedInWindow++;
  }

  private rollWindow(): void {
    const now = this.deps.now();
    if (this.windowStart === undefined || now < this.windowStart) {
      this.windowStart = now;
      this.refusedInWindow = 0;
      return;
    }
    const elapsed = now - this.windowStart;
    if (elapsed < REFUSAL_WINDOW_MS) return;
    if (this.refusedInWindow === 0 && this.episode) {
      const { since, refused } = this.episode;
      this.episode = undefined;
      this.deps.onShedding?.({ shedding: false, refused, forMs: now - since });
    }
    // A window with no refusal counts as zero, however long ago the last one was.
    this.refusalRate = elapsed < 2 * REFUSAL_WINDOW_MS ? this.refusedInWindow / elapsed : 0;
    this.refusedInWindow = 0;
    this.windowStart = now;
  }

  private overloaded(message: string, drainMs: number): ParleyError {
    // Under overload there can be tens of thousands of these per second: no stack trace (it
    // would say only "admission", and costs more than the rest of the refusal).
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      return new ParleyError("E_OVERLOADED", `server is overloaded: ${message}; wait retryAfterMs`, {
        retryAfterMs: this.retryAfterMs(drainMs),
      });
    } finally {
      Error.stackTraceLimit = stackTraceLimit;
    }
  }

  private overMemory(): boolean {
    const limit = this.options.maxRssBytes;
    const read = this.deps.rssBytes;
    if (!(limit > 0) || read === undefined) return false;
    const now = this.deps.now();
    // Also re-read when the clock went backwards.
    if (now - this.rssAt >= RSS_SAMPLE_MS || now < this.rssAt) {
      this.rss = read();
      this.rssAt = now;
    }
    return this.rss >= limit * RSS_SHED_FRACTION;
  }
}
