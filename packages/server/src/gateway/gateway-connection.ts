import { DISCONNECT, ParleyError } from "@parley/protocol";
import type { ClientFrame, DisconnectCode, ServerFrame } from "@parley/protocol";
import type { Connection, Session } from "../core/connection.ts";
import type { Clock } from "../core/ports/clock.ts";
import type { Logger } from "../core/ports/logger.ts";
import { TokenBucket } from "../core/rate-limiter.ts";
import type { ConnectionsPerIp } from "./connections-per-ip.ts";

// What every socket gateway (tcp/, ws/) shares: the session lifecycle of one connection, output
// backpressure (slow consumers are dropped, never buffered without bound), the inbound bytes/s
// budget (reading pauses while it is overdrawn), protocol errors (error frame, then 4100), and
// the bye-then-close sequence with a grace period. A gateway subclass only moves bytes: it
// decodes frames into deliver() and encodes them in write().

/** Whoever turns an accepted connection into a Session (the Core). */
export interface SessionOpener {
  open(conn: Connection): Session;
}

export interface ConnectionLimits {
  /** Bytes queued for one client beyond which it is dropped as a slow consumer. */
  maxOutboundBytes: number;
  /** After close() has queued `bye`, how long the peer gets to read it before the socket is
   * destroyed. */
  closeGraceMs: number;
  /** Inbound bytes per second, counted on the raw bytes read (framing, garbage and partial
   * frames included); 0 = unlimited. Beyond it the socket is not read until the budget refills. */
  bytesPerSecond: number;
  /** Bytes that may be read at once before bytesPerSecond applies. */
  bytesBurst: number;
}

/** 1 MiB/s is 16 full frames (64 KiB) a second, far above any person and enough for a bot; the
 * 4 MiB burst lets a client that reconnects flush a full outbox (64 full frames) unthrottled. */
export const DEFAULT_LIMITS: ConnectionLimits = {
  maxOutboundBytes: 8 * 1024 * 1024,
  closeGraceMs: 2000,
  bytesPerSecond: 1024 * 1024,
  bytesBurst: 4 * 1024 * 1024,
};

/** A new connection must finish its TLS handshake (TCP) or send a whole HTTP request head (the
 * WebSocket upgrade, or a REST request) within this; `hello` has its own time-out in the core. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

/** Connections the kernel may hold completed but not yet accepted, per listener (the kernel
 * caps it at net.core.somaxconn, 4096 on current Linux). Node's default, 511, overflowed when
 * 10,000 clients connected at once (login-storm): the overflow is dropped SYNs that the client
 * retries only after a second. */
export const LISTEN_BACKLOG = 4096;

/** Real time and Node timers (unref'd: a pending resume never keeps the process alive), for
 * gateways given no clock. */
export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return { cancel: () => clearTimeout(timer) };
  },
};

/** Gateway options that tcp/ and ws/ share; each defaults to DEFAULT_LIMITS. */
export interface GatewayLimitOptions {
  /** Bytes queued for one client beyond which it is dropped as a slow consumer (4001). */
  maxOutboundBytes?: number;
  /** After close() has sent `bye`, how long the peer gets to read it before the socket is
   * destroyed. */
  closeGraceMs?: number;
  /** Inbound bytes per second per connection (0 = unlimited) and the burst allowed above it. */
  bytesPerSecond?: number;
  bytesBurst?: number;
  /** Connections per remote address, shared with the other gateways; none = unlimited. */
  perIp?: ConnectionsPerIp | undefined;
  /** Time for the bytes/s budget; default the real clock. */
  clock?: Clock;
}

/** The limits of one connection from the gateway's options. */
export function connectionLimits(options: GatewayLimitOptions): ConnectionLimits {
  return {
    maxOutboundBytes: options.maxOutboundBytes ?? DEFAULT_LIMITS.maxOutboundBytes,
    closeGraceMs: options.closeGraceMs ?? DEFAULT_LIMITS.closeGraceMs,
    bytesPerSecond: options.bytesPerSecond ?? DEFAULT_LIMITS.bytesPerSecond,
    bytesBurst: options.bytesBurst ?? DEFAULT_LIMITS.bytesBurst,
  };
}

export abstract class GatewayConnection implements Connection {
  abstract readonly id: string;
  abstract readonly remoteAddress: string;
  protected closing = false;
  private session: Session | undefined;
  private sessionClosed = false;
  private graceTimer: NodeJS.Timeout | undefined;
  private readonly inbound: TokenBucket | undefined;
  private resumeTimer: { cancel(): void } | undefined;

  constructor(
    protected readonly logger: Logger,
    private readonly limits: ConnectionLimits,
    private readonly clock: Clock = realClock,
  ) {
    if (limits.bytesPerSecond > 0)
      this.inbound = new TokenBucket(limits.bytesPerSecond, limits.bytesBurst, clock.now());
  }

  /** Bytes accepted by write() and not yet sent to the peer. */
  protected abstract queuedBytes(): number;
  /** Encodes and queues one frame. False when the socket can take no more output; a frame that
   * cannot be encoded (a server bug) drops the socket, so the client reconnects and resyncs. */
  protected abstract write(frame: ServerFrame): boolean;
  /** Starts the transport's own orderly close, after `bye` has been queued. */
  protected abstract end(code: DisconnectCode, reason: string): void;
  /** Drops the socket at once. */
  protected abstract destroy(): void;
  /** Stops reading the socket (the peer's writes then back up in the kernel buffers). */
  protected abstract pauseReading(): void;
  protected abstract resumeReading(): void;

  /** Holds the socket's writes until the current turn of the event loop (its microtasks
   * included) is over, then sends them together: one writev instead of one per frame, since a
   * group commit answers and pushes many frames to a connection in one turn. Every connection
   * corked in a turn is uncorked by one callback (uncorkAll): a nextTick per connection was 2%
   * of the main thread at direct-max (docs/benchmarks.md, eighteenth session). */
  protected corkForThisTurn(socket: { cork(): void; uncork(): void }): void {
    if (this.corked !== undefined) return;
    this.corked = socket;
    socket.cork();
    const list = GatewayConnection.corkedThisTurn;
    if (list.length === 0) process.nextTick(GatewayConnection.uncorkAll);
    list.push(this);
  }
  private corked: { uncork(): void } | undefined;
  /** Connections corked in this turn, in the order corked. */
  private static corkedThisTurn: GatewayConnection[] = [];
  private static uncorkAll(this: void): void {
    const list = GatewayConnection.corkedThisTurn;
    GatewayConnection.corkedThisTurn = [];
    for (const c of list) c.uncork();
  }

  /** Sends what corkForThisTurn held (uncorkAll). */
  private uncork(): void {
    const socket = this.corked;
    this.corked = undefined;
    try {
      socket?.uncork();
    } catch (err) {
      // The others must still be uncorked; this one cannot be written to.
      this.logger.error({ err, conn: this.id }, "could not send on a connection");
      this.destroy();
    }
  }

  /** Opens the core session; the subclass calls it once its socket listeners are set. */
  protected openSession(opener: SessionOpener): void {
    try {
      this.session = opener.open(this);
    } catch (err) {
      this.logger.error({ err, conn: this.id }, "could not open a session");
      this.closing = true;
      this.destroy();
    }
  }

  /** True while frames from the peer should be read. */
  protected get reading(): boolean {
    return !this.closing && this.session !== undefined;
  }

  send(frame: ServerFrame): void {
    if (this.closing) return;
    // Judged on what earlier frames left queued, before this one is added: one frame larger than
    // the limit (a big synced page, a big message under a high --max-frame-bytes) still reaches
    // a client that reads, rather than getting it dropped again after every reconnect. Memory
    // stays bounded by the limit plus one frame.
    const queued = this.queuedBytes();
    if (queued > this.limits.maxOutboundBytes) {
      this.logger.warn({ conn: this.id, queued }, "slow consumer dropped");
      this.close(DISCONNECT.SLOW_CONSUMER, "slow consumer");
      return;
    }
    this.write(frame);
  }

  close(code: DisconnectCode, reason: string): void {
    if (this.closing) return;
    this.closing = true;
    // The bye queues behind whatever is already buffered: a slow reader gets the grace period
    // to drain it, and then loses the socket either way, so memory stays bounded.
    if (this.write({ t: "bye", code, reason })) this.end(code, reason);
    this.graceTimer = setTimeout(() => this.destroy(), this.limits.closeGraceMs);
    this.graceTimer.unref();
  }

  /** Counts `bytes` just read from the socket against the bytes/s budget. Once overdrawn, the
   * socket is not read until the debt is repaid: TCP flow control then slows the sender down
   * (its writes wait in its own buffers, not in ours). What was already read is still handled,
   * so at most one read (64 KiB) is taken beyond the budget. */
  protected received(bytes: number): void {
    if (!this.inbound || this.closing) return;
    const waitMs = this.inbound.spend(bytes, this.clock.now());
    if (waitMs === 0 || this.resumeTimer) return;
    this.pauseReading();
    this.resumeTimer = this.clock.setTimeout(() => this.refilled(), waitMs);
  }

  private refilled(): void {
    this.resumeTimer = undefined;
    if (this.closing) return;
    // Bytes read while the timer ran (none, unless the transport delivered a buffered chunk)
    // may have deepened the debt: wait for the rest before reading again.
    const waitMs = this.inbound!.spend(0, this.clock.now());
    if (waitMs > 0) this.resumeTimer = this.clock.setTimeout(() => this.refilled(), waitMs);
    else this.resumeReading();
  }

  /** One decoded frame from the peer. */
  protected deliver(frame: ClientFrame): void {
    if (!this.reading) return;
    try {
      this.session!.receive(frame);
    } catch (err) {
      // Session.receive never throws by contract; if it does, this connection is broken, not
      // the process.
      this.logger.error({ err, conn: this.id }, "session.receive threw");
      this.send({ t: "error", code: "E_INTERNAL", message: "unexpected server error", retry: true });
      this.close(DISCONNECT.INTERNAL, "internal error");
    }
  }

  /** Input that could not be read: its error code, then 4100 (the stream cannot be trusted to be
   * in sync any more). */
  protected protocolError(err: unknown): void {
    const e = err instanceof ParleyError ? err : new ParleyError("E_BAD_FRAME", undefined, { cause: err });
    this.logger.debug({ conn: this.id, code: e.code, msg: e.message }, "protocol error");
    this.send({ t: "error", code: e.code, message: e.message, retry: e.retry });
    this.close(DISCONNECT.PROTOCOL_ERROR, e.code);
  }

  /** The socket is gone: tells the session, exactly once. */
  protected socketClosed(): void {
    this.closing = true;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.resumeTimer?.cancel();
    this.resumeTimer = undefined;
    if (this.sessionClosed || !this.session) return;
    this.sessionClosed = true;
    this.session.closed();
  }
}

/** The set of a gateway's open connections, and a way to wait until it is empty. */
export class ConnectionSet<T> {
  private readonly items = new Set<T>();
  private idleWaiters: Array<() => void> = [];

  add(item: T): void {
    this.items.add(item);
  }

  delete(item: T): void {
    this.items.delete(item);
    if (this.items.size === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  get size(): number {
    return this.items.size;
  }

  /** Resolves once no connection is open. */
  empty(): Promise<void> {
    if (this.items.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}
