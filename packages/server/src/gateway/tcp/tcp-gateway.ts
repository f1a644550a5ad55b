import net from "node:net";
import tls from "node:tls";
import {
  DISCONNECT,
  FrameParser,
  ParleyError,
  decodeBinary,
  encodeFramed,
  parseClientFrame,
} from "@parley/protocol";
import type { ClientFrame, DisconnectCode, ServerFrame } from "@parley/protocol";
import type { Connection, Session } from "../../core/connection.ts";
import type { Logger } from "../../core/ports/logger.ts";
import { silentLogger } from "../../core/ports/logger.ts";

// The TCP gateway: length-prefixed msgpack frames over node:net, or node:tls when a certificate
// is configured. It only turns bytes into frames and back; the core's Session does the rest.

/** Whoever turns an accepted connection into a Session (the Core). */
export interface SessionOpener {
  open(conn: Connection): Session;
}

export interface TcpGatewayOptions {
  /** Largest frame payload accepted, in bytes (the 4-byte length prefix excluded). */
  maxFrameBytes: number;
  /** Bytes queued for one client beyond which it is dropped as a slow consumer. Default 8 MiB. */
  maxOutboundBytes?: number;
  /** After close() has sent `bye` and ended the socket, how long the peer gets to read it
   * before the socket is destroyed. Default 2000 ms. */
  closeGraceMs?: number;
  /** PEM certificate chain and private key: TLS when both are set. */
  tls?: { cert: string | Buffer; key: string | Buffer } | undefined;
  logger?: Logger;
}

const DEFAULT_MAX_OUTBOUND_BYTES = 8 * 1024 * 1024;
const DEFAULT_CLOSE_GRACE_MS = 2000;

let nextConnection = 0;

/** Accepts TCP (or TLS) connections and opens a core Session for each. */
export class TcpGateway {
  private readonly server: net.Server;
  private readonly connections = new Set<TcpConnection>();
  private readonly idleWaiters: Array<() => void> = [];
  private readonly logger: Logger;

  constructor(
    private readonly opener: SessionOpener,
    private readonly options: TcpGatewayOptions,
  ) {
    this.logger = options.logger ?? silentLogger;
    const onSocket = (socket: net.Socket): void => this.accept(socket);
    if (options.tls) {
      const server = tls.createServer({ cert: options.tls.cert, key: options.tls.key }, onSocket);
      server.on("tlsClientError", (err) => this.logger.debug({ err }, "tls handshake failed"));
      this.server = server;
    } else {
      this.server = net.createServer(onSocket);
    }
  }

  /** Starts listening; resolves with the bound port (useful with port 0), rejects on e.g.
   * EADDRINUSE. */
  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once("error", onError);
      this.server.listen(port, host, () => {
        this.server.off("error", onError);
        this.server.on("error", (err) => this.logger.error({ err }, "tcp listener error"));
        resolve((this.server.address() as net.AddressInfo).port);
      });
    });
  }

  /** Stops accepting connections; resolves once the listening socket is closed. Open
   * connections are left to the core (Core.shutdown says bye to each). */
  close(): Promise<void> {
    if (!this.server.listening) return Promise.resolve();
    // net.Server's close callback waits for every connection; stopping the listener itself is
    // immediate, and that is all this method promises.
    this.server.close();
    return Promise.resolve();
  }

  /** Resolves once no connection is open (closed ones are destroyed after the grace period). */
  connectionsClosed(): Promise<void> {
    if (this.connections.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Number of open connections. */
  get size(): number {
    return this.connections.size;
  }

  private accept(socket: net.Socket): void {
    socket.setNoDelay(true);
    const conn = new TcpConnection(socket, this.options, this.logger);
    this.connections.add(conn);
    // start() first: its close listener (Session.closed) runs before this one reports idle.
    conn.start(this.opener);
    socket.once("close", () => {
      this.connections.delete(conn);
      if (this.connections.size === 0) for (const w of this.idleWaiters.splice(0)) w();
    });
  }
}

/** One client socket: a Connection for the core, fed from a FrameParser. */
class TcpConnection implements Connection {
  readonly id = `tcp-${++nextConnection}`;
  readonly remoteAddress: string;
  private readonly parser: FrameParser;
  private readonly maxOutboundBytes: number;
  private readonly closeGraceMs: number;
  private session: Session | undefined;
  private closing = false;
  private sessionClosed = false;
  private graceTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly socket: net.Socket,
    options: TcpGatewayOptions,
    private readonly logger: Logger,
  ) {
    this.remoteAddress = socket.remoteAddress ?? "";
    this.parser = new FrameParser({ maxFrameBytes: options.maxFrameBytes });
    this.maxOutboundBytes = options.maxOutboundBytes ?? DEFAULT_MAX_OUTBOUND_BYTES;
    this.closeGraceMs = options.closeGraceMs ?? DEFAULT_CLOSE_GRACE_MS;
  }

  start(opener: SessionOpener): void {
    const { socket } = this;
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    // 'close' always follows 'error'; the error itself is the peer's business.
    socket.on("error", (err) => this.logger.debug({ err, conn: this.id }, "socket error"));
    socket.once("close", () => this.onClose());
    try {
      this.session = opener.open(this);
    } catch (err) {
      this.logger.error({ err, conn: this.id }, "could not open a session");
      this.closing = true;
      this.socket.destroy();
    }
  }

  send(frame: ServerFrame): void {
    if (this.closing) return;
    if (!this.write(frame)) return;
    if (this.socket.writableLength > this.maxOutboundBytes) {
      this.logger.warn({ conn: this.id, queued: this.socket.writableLength }, "slow consumer dropped");
      this.close(DISCONNECT.SLOW_CONSUMER, "slow consumer");
    }
  }

  close(code: DisconnectCode, reason: string): void {
    if (this.closing) return;
    this.closing = true;
    if (this.socket.destroyed) return;
    // The bye queues behind whatever is already buffered: a slow reader gets the grace period
    // to drain it, and then loses the socket either way, so memory stays bounded.
    this.write({ t: "bye", code, reason });
    this.socket.end();
    this.graceTimer = setTimeout(() => this.socket.destroy(), this.closeGraceMs);
    this.graceTimer.unref();
  }

  private write(frame: ServerFrame): boolean {
    let bytes: Uint8Array;
    try {
      bytes = encodeFramed(frame);
    } catch (err) {
      // An unencodable frame is a server bug; dropping the connection lets the client resync.
      this.logger.error({ err, conn: this.id, frame: frame.t }, "could not encode frame");
      this.socket.destroy();
      return false;
    }
    if (this.socket.writable) this.socket.write(bytes);
    return true;
  }

  private onData(chunk: Buffer): void {
    if (this.closing || !this.session) return;
    let payloads: Uint8Array[];
    try {
      payloads = this.parser.push(chunk);
    } catch (err) {
      return this.protocolError(err);
    }
    for (const payload of payloads) {
      if (this.closing) return;
      let frame: ClientFrame;
      try {
        frame = parseClientFrame(decodeBinary(payload));
      } catch (err) {
        return this.protocolError(err);
      }
      try {
        this.session.receive(frame);
      } catch (err) {
        // Session.receive never throws by contract; if it does, this connection is broken, not
        // the process.
        this.logger.error({ err, conn: this.id }, "session.receive threw");
        this.send({ t: "error", code: "E_INTERNAL", message: "unexpected server error", retry: true });
        return this.close(DISCONNECT.INTERNAL, "internal error");
      }
    }
  }

  /** A frame that could not be read: its error code, then 4100 (the stream cannot be trusted
   * to be in sync any more). */
  private protocolError(err: unknown): void {
    const e = err instanceof ParleyError ? err : new ParleyError("E_BAD_FRAME", undefined, { cause: err });
    this.logger.debug({ conn: this.id, code: e.code, msg: e.message }, "protocol error");
    this.send({ t: "error", code: e.code, message: e.message, retry: e.retry });
    this.close(DISCONNECT.PROTOCOL_ERROR, e.code);
  }

  private onClose(): void {
    this.closing = true;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    if (this.sessionClosed || !this.session) return;
    this.sessionClosed = true;
    this.session.closed();
  }
}
