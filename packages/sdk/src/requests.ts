import type { ClientFrame, ErrorFrame } from "@parley/protocol";
import { ClientError, serverError } from "./client-error.ts";
import type { Timers } from "./timers.ts";
import { backoffDelay } from "./timers.ts";

// Requests answered with `ok {id}`: receipt, edit, delete, react. All of them are idempotent on
// the server (they set a state rather than add one), so the tracker simply (re)transmits every
// unanswered request, in order, whenever the connection becomes ready, and after a retryable
// error once retryAfterMs has passed. They are kept in memory only.

/** A client frame that carries a request id and is answered with `ok`. */
export type OkRequestFrame = Extract<ClientFrame, { t: "receipt" | "edit" | "delete" | "react" }>;

export interface RequestHooks {
  transmit(frame: OkRequestFrame): boolean;
  nextId(): number;
}

interface Entry {
  frame: OkRequestFrame;
  resolve(): void;
  reject(err: Error): void;
  attempts: number;
  onWire: boolean;
  timer?: unknown;
}

const RETRY_BACKOFF = { baseMs: 500, capMs: 30_000 };

export class Requests {
  /** By request id; Map keeps insertion order, which is the order to resend in. */
  private readonly pending = new Map<number, Entry>();
  private ready = false;
  private stopped: Error | undefined;

  constructor(
    private readonly hooks: RequestHooks,
    private readonly timers: Timers,
  ) {}

  /** Sends `build(id)` now or once connected; resolves on `ok`, rejects on a final error. */
  request(build: (id: number) => OkRequestFrame): Promise<void> {
    if (this.stopped) return Promise.reject(this.stopped);
    const frame = build(this.hooks.nextId());
    return new Promise<void>((resolve, reject) => {
      const entry: Entry = { frame, resolve, reject, attempts: 0, onWire: false };
      this.pending.set(frame.id, entry);
      this.transmit(entry);
    });
  }

  online(): void {
    this.ready = true;
    for (const entry of this.pending.values()) this.transmit(entry);
  }

  offline(): void {
    this.ready = false;
    for (const entry of this.pending.values()) entry.onWire = false;
  }

  /** True if `id` was ours. */
  onOk(id: number): boolean {
    const entry = this.pending.get(id);
    if (!entry) return false;
    this.pending.delete(id);
    entry.resolve();
    return true;
  }

  /** True if the error answers one of our requests. */
  onError(frame: ErrorFrame): boolean {
    const entry = frame.id === undefined ? undefined : this.pending.get(frame.id);
    if (!entry) return false;
    entry.onWire = false;
    if (frame.retry) {
      const delay = frame.retryAfterMs ?? backoffDelay(entry.attempts++, RETRY_BACKOFF);
      entry.timer = this.timers.setTimeout(() => {
        entry.timer = undefined;
        this.transmit(entry);
      }, delay);
      return true;
    }
    this.pending.delete(entry.frame.id);
    entry.reject(serverError(frame));
    return true;
  }

  /** Rejects everything pending; later requests reject at once. */
  stop(err: Error = new ClientError("E_CLIENT_CLOSED")): void {
    this.stopped = err;
    this.ready = false;
    for (const entry of this.pending.values()) {
      if (entry.timer !== undefined) this.timers.clearTimeout(entry.timer);
      entry.reject(err);
    }
    this.pending.clear();
  }

  private transmit(entry: Entry): void {
    if (!this.ready || entry.onWire || entry.timer !== undefined) return;
    if (this.hooks.transmit(entry.frame)) entry.onWire = true;
  }
}
