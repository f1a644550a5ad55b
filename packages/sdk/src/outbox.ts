import type { ConversationId, ErrorFrame, SendFrame, SentFrame } from "@parley/protocol";
import { ClientError, serverError } from "./client-error.ts";
import type { LocalStore, PendingSend } from "./local-store.ts";
import type { Timers } from "./timers.ts";
import { backoffDelay } from "./timers.ts";

// Sends that have not been confirmed yet, keyed by their client id (cid) and kept in the local
// store, so they survive a reconnect and, with a durable store, a restart.
//
// - add() persists the send (flush) before it first goes on the wire.
// - Every pending send is (re)transmitted, with its original cid, each time the connection
//   becomes ready, in the order the sends were added; the server answers a resend of a committed
//   cid with the original seq, so nothing is duplicated.
// - `sent` resolves the promise and removes the entry. A retryable error (E_RATE_LIMITED,
//   E_OVERLOADED, E_INTERNAL...) retransmits after retryAfterMs (else a backoff); a send retried
//   that way may commit after sends added later. Any other error rejects and removes it.
// - Sends loaded from a durable store at startup have no promise; they are sent all the same.

export interface SendResult {
  conv: ConversationId;
  cid: string;
  seq: number;
  ts: number;
}

export interface OutboxHooks {
  /** Puts the frame on the current connection; false when there is none. */
  transmit(frame: SendFrame): boolean;
  /** A request id, unique for the client's lifetime. */
  nextId(): number;
}

export interface NewSend {
  conv: ConversationId;
  type: string;
  body: Uint8Array;
  replyTo?: number;
}

const RETRY_BACKOFF = { baseMs: 500, capMs: 30_000 };

interface Waiter {
  resolve(result: SendResult): void;
  reject(err: Error): void;
}

export class Outbox {
  /** By cid; more than one when send() was called again with the same cid. */
  private readonly waiters = new Map<string, Waiter[]>();
  /** Request id -> the send, for the sends on the current connection that await a reply. */
  private readonly inflight = new Map<number, PendingSend>();
  private readonly inflightCids = new Set<string>();
  /** Added but not yet durable: not transmitted until flushed. */
  private readonly unflushed = new Set<string>();
  /** Waiting out a retryable error: cid -> timer. */
  private readonly retryTimers = new Map<string, unknown>();
  private readonly attempts = new Map<string, number>();
  private ready = false;
  private stopped: Error | undefined;

  constructor(
    private readonly store: LocalStore,
    private readonly hooks: OutboxHooks,
    private readonly timers: Timers,
  ) {}

  /** Number of sends not yet confirmed. */
  get size(): number {
    return this.store.outbox().length;
  }

  /** Queues a send under `cid` and resolves once the server has committed it. */
  async add(send: NewSend, cid: string): Promise<SendResult> {
    if (this.stopped) throw this.stopped;
    const item: PendingSend = {
      cid,
      conv: send.conv,
      type: send.type,
      body: send.body,
      ...(send.replyTo !== undefined ? { replyTo: send.replyTo } : {}),
      createdAt: this.timers.now(),
    };
    const result = new Promise<SendResult>((resolve, reject) => {
      const waiters = this.waiters.get(cid) ?? [];
      waiters.push({ resolve, reject });
      this.waiters.set(cid, waiters);
    });
    // stop() may reject it while we await the flush below, before the caller holds it.
    result.catch(() => {});
    this.store.putOutbox(item);
    this.unflushed.add(cid);
    try {
      await this.store.flush();
      this.unflushed.delete(cid);
      this.transmit(item);
    } catch (err) {
      this.unflushed.delete(cid);
      this.store.removeOutbox(cid);
      this.settle(cid, new Error("could not persist the send", { cause: err }));
    }
    return result;
  }

  /** The connection is ready (authenticated and synced): send everything pending, in order. */
  online(): void {
    this.ready = true;
    for (const item of this.store.outbox()) this.transmit(item);
  }

  /** The connection is gone: replies to what is in flight will never come. */
  offline(): void {
    this.ready = false;
    this.inflight.clear();
    this.inflightCids.clear();
  }

  /** The send that request `id` of the current connection carries, while it awaits its reply. */
  inFlight(id: number): PendingSend | undefined {
    return this.inflight.get(id);
  }

  onSent(frame: SentFrame): void {
    this.inflight.delete(frame.id);
    this.inflightCids.delete(frame.cid);
    this.clearRetry(frame.cid);
    this.attempts.delete(frame.cid);
    this.store.removeOutbox(frame.cid);
    this.settle(frame.cid, { conv: frame.conv, cid: frame.cid, seq: frame.seq, ts: frame.ts });
  }

  /** Handles an error reply to one of our sends; false if the id is not ours. */
  onError(frame: ErrorFrame): boolean {
    const cid = frame.id === undefined ? undefined : this.inflight.get(frame.id)?.cid;
    if (cid === undefined || frame.id === undefined) return false;
    this.inflight.delete(frame.id);
    this.inflightCids.delete(cid);
    if (frame.retry) {
      const attempt = this.attempts.get(cid) ?? 0;
      this.attempts.set(cid, attempt + 1);
      const delay = frame.retryAfterMs ?? backoffDelay(attempt, RETRY_BACKOFF);
      this.clearRetry(cid);
      this.retryTimers.set(
        cid,
        this.timers.setTimeout(() => {
          this.retryTimers.delete(cid);
          const item = this.store.outbox().find((p) => p.cid === cid);
          if (item) this.transmit(item);
        }, delay),
      );
      return true;
    }
    this.attempts.delete(cid);
    this.store.removeOutbox(cid);
    this.settle(cid, serverError(frame));
    return true;
  }

  /** Rejects every waiting promise (the client is closing or stopped for good) and cancels the
   * retry timers. The sends stay in the store for the next session. */
  stop(err: Error = new ClientError("E_CLIENT_CLOSED")): void {
    this.stopped = err;
    this.offline();
    for (const timer of this.retryTimers.values()) this.timers.clearTimeout(timer);
    this.retryTimers.clear();
    for (const cid of [...this.waiters.keys()]) this.settle(cid, err);
  }

  private transmit(item: PendingSend): void {
    const { cid } = item;
    if (!this.ready || this.stopped || this.inflightCids.has(cid)) return;
    if (this.unflushed.has(cid) || this.retryTimers.has(cid)) return;
    const id = this.hooks.nextId();
    const frame: SendFrame = {
      t: "send",
      id,
      conv: item.conv,
      cid,
      type: item.type,
      body: item.body,
      ...(item.replyTo !== undefined ? { replyTo: item.replyTo } : {}),
    };
    if (!this.hooks.transmit(frame)) return;
    this.inflight.set(id, item);
    this.inflightCids.add(cid);
  }

  private clearRetry(cid: string): void {
    const timer = this.retryTimers.get(cid);
    if (timer === undefined) return;
    this.timers.clearTimeout(timer);
    this.retryTimers.delete(cid);
  }

  private settle(cid: string, outcome: SendResult | Error): void {
    const waiters = this.waiters.get(cid);
    if (!waiters) return;
    this.waiters.delete(cid);
    for (const waiter of waiters) {
      if (outcome instanceof Error) waiter.reject(outcome);
      else waiter.resolve(outcome);
    }
  }
}
