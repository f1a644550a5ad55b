import { DISCONNECT, ParleyError } from "@parley/protocol";
import type { ClientFrame, DisconnectCode, ServerFrame } from "@parley/protocol";
import type { Connection, Session } from "../core/connection.ts";
import type { Logger } from "../core/ports/logger.ts";

// What every socket gateway (tcp/, ws/) shares: the session lifecycle of one connection, output
// backpressure (slow consumers are dropped, never buffered without bound), protocol errors
// (error frame, then 4100), and the bye-then-close sequence with a grace period. A gateway
// subclass only moves bytes: it decodes frames into deliver() and encodes them in write().

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
}

export const DEFAULT_LIMITS: ConnectionLimits = { maxOutboundBytes: 8 * 1024 * 1024, closeGraceMs: 2000 };

export abstract class GatewayConnection implements Connection {
  abstract readonly id: string;
  abstract readonly remoteAddress: string;
  protected closing = false;
  private session: Session | undefined;
  private sessionClosed = false;
  private graceTimer: NodeJS.Timeout | undefined;

  constructor(
    protected readonly logger: Logger,
    private readonly limits: ConnectionLimits,
  ) {}

  /** Bytes accepted by write() and not yet sent to the peer. */
  protected abstract queuedBytes(): number;
  /** Encodes and queues one frame. False when the socket can take no more output; a frame that
   * cannot be encoded (a server bug) drops the socket, so the client reconnects and resyncs. */
  protected abstract write(frame: ServerFrame): boolean;
  /** Starts the transport's own orderly close, after `bye` has been queued. */
  protected abstract end(code: DisconnectCode, reason: string): void;
  /** Drops the socket at once. */
  protected abstract destroy(): void;

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
    if (this.closing || !this.write(frame)) return;
    const queued = this.queuedBytes();
    if (queued > this.limits.maxOutboundBytes) {
      this.logger.warn({ conn: this.id, queued }, "slow consumer dropped");
      this.close(DISCONNECT.SLOW_CONSUMER, "slow consumer");
    }
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
