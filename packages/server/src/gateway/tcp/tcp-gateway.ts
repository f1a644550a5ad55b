import net from "node:net";
import tls from "node:tls";
import { DISCONNECT, FrameParser, decodeBinary, encodeFramed, parseClientFrame } from "@parley/protocol";
import type { ClientFrame, ServerFrame } from "@parley/protocol";
import type { Logger } from "../../core/ports/logger.ts";
import { sharedEncoder } from "../shared-encoding.ts";
import { silentLogger } from "../../core/ports/logger.ts";
import {
  ConnectionSet,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  LISTEN_BACKLOG,
  GatewayConnection,
  connectionLimits,
  type ConnectionLimits,
  type GatewayLimitOptions,
  type SessionOpener,
} from "../gateway-connection.ts";

// The TCP gateway: length-prefixed msgpack frames over node:net, or node:tls when a certificate
// is configured. It only turns bytes into frames and back; the core's Session does the rest.

/** Pushes of a large group's log are encoded once for all its members' sockets. */
const encodeFramedShared = sharedEncoder(encodeFramed);

export type { SessionOpener };

export interface TcpGatewayOptions extends GatewayLimitOptions {
  /** Largest frame payload accepted, in bytes (the 4-byte length prefix excluded). */
  maxFrameBytes: number;
  /** PEM certificate chain and private key: TLS when both are set. */
  tls?: { cert: string | Buffer; key: string | Buffer } | undefined;
  /** With TLS: a connection that has not finished its handshake by then is destroyed. Default
   * 10 s. */
  handshakeTimeoutMs?: number;
  logger?: Logger;
}

/** What a connection refused by the per-address limit reads before the server closes it. */
const TOO_MANY_FROM_ADDRESS: Uint8Array = new Uint8Array([
  ...encodeFramed({
    t: "error",
    code: "E_RATE_LIMITED",
    message: "too many connections from this address",
    retry: true,
  }),
  ...encodeFramed({
    t: "bye",
    code: DISCONNECT.RATE_LIMITED,
    reason: "too many connections from this address",
  }),
]);

let nextConnection = 0;

/** Accepts TCP (or TLS) connections and opens a core Session for each. */
export class TcpGateway {
  private readonly server: net.Server;
  private readonly connections = new ConnectionSet<TcpConnection>();
  private readonly logger: Logger;
  private readonly limits: ConnectionLimits;

  constructor(
    private readonly opener: SessionOpener,
    private readonly options: TcpGatewayOptions,
  ) {
    this.logger = options.logger ?? silentLogger;
    this.limits = connectionLimits(options);
    if (options.tls) {
      const server = tls.createServer(
        {
          cert: options.tls.cert,
          key: options.tls.key,
          handshakeTimeout: options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
        },
        (socket) => this.accept(socket),
      );
      // Node reports a handshake that failed or timed out here, but leaves the socket open: a
      // client that stalls mid-handshake would hold it forever.
      server.on("tlsClientError", (err, socket) => {
        this.logger.debug({ err }, "tls handshake failed");
        socket.destroy();
      });
      // Before the TLS layer takes the socket: a refused connection costs no handshake. It cannot
      // be told why (no TLS yet); it is closed at once.
      server.prependListener("connection", (raw: net.Socket) => {
        if (!this.admit(raw)) raw.destroy();
      });
      this.server = server;
    } else {
      this.server = net.createServer((socket) => {
        if (this.admit(socket)) this.accept(socket);
        else this.refuse(socket);
      });
    }
  }

  /** Starts listening; resolves with the bound port (useful with port 0), rejects on e.g.
   * EADDRINUSE. */
  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once("error", onError);
      this.server.listen({ port, host, backlog: LISTEN_BACKLOG }, () => {
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
    return this.connections.empty();
  }

  /** Number of open connections. */
  get size(): number {
    return this.connections.size;
  }

  /** Counts the raw socket against its address's limit until it closes; false (nothing counted)
   * when the address is at its limit. */
  private admit(raw: net.Socket): boolean {
    const { perIp } = this.options;
    if (!perIp) return true;
    const release = perIp.acquire(raw.remoteAddress ?? "");
    if (!release) {
      this.logger.debug({ remote: raw.remoteAddress }, "too many connections from this address");
      return false;
    }
    raw.once("close", release);
    return true;
  }

  /** Tells a plain-TCP client why (error E_RATE_LIMITED, bye 4004) and closes. Whatever it sends
   * meanwhile is read and discarded, so that closing does not reset the connection before the
   * client has read the bye; the grace period bounds how long that lasts. */
  private refuse(socket: net.Socket): void {
    socket.on("error", () => {});
    socket.on("data", () => {});
    socket.end(TOO_MANY_FROM_ADDRESS);
    const timer = setTimeout(() => socket.destroy(), this.limits.closeGraceMs);
    timer.unref();
    socket.once("close", () => clearTimeout(timer));
  }

  private accept(socket: net.Socket): void {
    socket.setNoDelay(true);
    const conn = new TcpConnection(socket, this.options, this.limits, this.logger);
    this.connections.add(conn);
    conn.start(this.opener, this.connections);
  }
}

/** One client socket: a Connection for the core, fed from a FrameParser. */
class TcpConnection extends GatewayConnection {
  readonly id = `tcp-${++nextConnection}`;
  readonly remoteAddress: string;
  private readonly parser: FrameParser;

  constructor(
    private readonly socket: net.Socket,
    options: TcpGatewayOptions,
    limits: ConnectionLimits,
    logger: Logger,
  ) {
    super(logger, limits, options.clock);
    this.remoteAddress = socket.remoteAddress ?? "";
    this.parser = new FrameParser({ maxFrameBytes: options.maxFrameBytes });
  }

  /** Leaves `connections` when the socket closes, once the session has been told. */
  start(opener: SessionOpener, connections: ConnectionSet<TcpConnection>): void {
    const { socket } = this;
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    // 'close' always follows 'error'; the error itself is the peer's business.
    socket.on("error", (err) => this.logger.debug({ err, conn: this.id }, "socket error"));
    // 'close' is emitted once: `on` spares the wrapper `once` would allocate per connection.
    socket.on("close", () => {
      this.socketClosed();
      connections.delete(this);
    });
    this.openSession(opener);
  }

  protected queuedBytes(): number {
    return this.socket.writableLength;
  }

  protected write(frame: ServerFrame): boolean {
    if (!this.socket.writable) return false;
    let bytes: Uint8Array;
    try {
      bytes = encodeFramedShared(frame);
    } catch (err) {
      this.logger.error({ err, conn: this.id, frame: frame.t }, "could not encode frame");
      this.closing = true;
      this.socket.destroy();
      return false;
    }
    this.corkForThisTurn(this.socket);
    this.socket.write(bytes);
    return true;
  }

  protected end(): void {
    this.socket.end();
  }

  protected destroy(): void {
    this.socket.destroy();
  }

  protected pauseReading(): void {
    this.socket.pause();
  }

  protected resumeReading(): void {
    this.socket.resume();
  }

  private onData(chunk: Buffer): void {
    if (!this.reading) return;
    this.received(chunk.byteLength);
    let payloads: Uint8Array[];
    try {
      payloads = this.parser.push(chunk);
    } catch (err) {
      return this.protocolError(err);
    }
    for (const payload of payloads) {
      if (!this.reading) return;
      let frame: ClientFrame;
      try {
        frame = parseClientFrame(decodeBinary(payload));
      } catch (err) {
        return this.protocolError(err);
      }
      this.deliver(frame);
    }
  }
}
