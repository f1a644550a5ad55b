import type { AckFrame, ConversationId } from "@parley/protocol";
import type { LocalStore } from "./local-store.ts";
import type { SyncEngine } from "./sync-engine.ts";
import type { Timers } from "./timers.ts";

// Delayed, batched acknowledgements (DESIGN.md, "Delivery" and "Receipts"): one `ack` covers
// every update applied within a short window, and read receipts are coalesced per conversation.

export interface AckBatcherOptions {
  /** At most this long after the first unacknowledged update. */
  delayMs: number;
  /** ...or at once when this many updates wait. */
  every: number;
}

/** Most delivery receipts (`convs`) in one `ack` frame (protocol LIMITS.ackConvs). */
const MAX_ACK_CONVS = 1000;

export interface AckBatcherHooks {
  /** An opaque handle of the current authenticated connection, undefined when there is none. */
  connection(): unknown;
  /** Sends on that connection; false if it is no longer the current one. */
  send(connection: unknown, frame: AckFrame): boolean;
  error(err: Error): void;
}

/** Sends `ack {cursor, convs}` for what the sync engine applied. The cursor acknowledged is
 * always durable in the local store: it is captured, then the store is flushed, then it is sent. */
export class AckBatcher {
  private timer: unknown;

  constructor(
    private readonly engine: SyncEngine,
    private readonly store: LocalStore,
    private readonly timers: Timers,
    private readonly options: AckBatcherOptions,
    private readonly hooks: AckBatcherHooks,
  ) {}

  /** Call after the engine applied something. */
  schedule(): void {
    const pending = this.engine.pendingAck();
    if (pending === 0) return;
    if (pending >= this.options.every) {
      void this.flush();
      return;
    }
    this.timer ??= this.timers.setTimeout(() => void this.flush(), this.options.delayMs);
  }

  /** Sends what is pending now. Resolves once sent (or found nothing to send). */
  async flush(): Promise<void> {
    this.cancel();
    const conn = this.hooks.connection();
    if (conn === undefined) return;
    const ack = this.engine.takeAck();
    if (!ack) return;
    try {
      await this.store.flush();
    } catch (err) {
      this.engine.restoreAck(ack);
      this.hooks.error(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    // The protocol allows at most MAX_ACK_CONVS receipts per ack: send the rest in more acks.
    for (let i = 0; i === 0 || i < ack.convs.length; i += MAX_ACK_CONVS) {
      const convs = ack.convs.slice(i, i + MAX_ACK_CONVS);
      const frame: AckFrame = {
        t: "ack",
        ...(i === 0 ? { cursor: ack.cursor } : {}),
        ...(convs.length > 0 ? { convs } : {}),
      };
      if (!this.hooks.send(conn, frame)) return this.engine.restoreAck(ack);
    }
  }

  cancel(): void {
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** Coalesces read marks per conversation (highest seq wins) and hands them to `send` within
 * `delayMs`. */
export class ReadBatcher {
  private readonly pending = new Map<ConversationId, number>();
  private timer: unknown;

  constructor(
    private readonly timers: Timers,
    private readonly delayMs: number,
    private readonly send: (conv: ConversationId, seq: number) => void,
  ) {}

  mark(conv: ConversationId, seq: number): void {
    if (seq <= (this.pending.get(conv) ?? 0)) return;
    this.pending.set(conv, seq);
    this.timer ??= this.timers.setTimeout(() => this.flush(), this.delayMs);
  }

  flush(): void {
    this.cancel();
    const marks = [...this.pending];
    this.pending.clear();
    for (const [conv, seq] of marks) this.send(conv, seq);
  }

  cancel(): void {
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.timer = undefined;
  }
}
