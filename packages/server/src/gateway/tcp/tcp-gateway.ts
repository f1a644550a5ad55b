import net from "node:net";
import tls from "node:tls";
import { FrameParser, decodeBinary, encodeFramed, parseClientFrame } from "@parley/protocol";
import type { ClientFrame, ServerFrame } from "@parley/protocol";
import type { Logger } from "../../core/ports/logger.ts";
import { silentLogger } from "../../core/ports/logger.ts";
import {
  ConnectionSet,
  DEFAULT_LIMITS,
  GatewayConnection,
  type SessionOpener,
} from "../gateway-connection.ts";

// The TCP gateway: length-prefixed msgpack frames over node:net, or node:tls when a certificate
// is configured. It only turns bytes into frames and back; the core's Session does the rest.

export type { SessionOpener };

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

let nextConnection = 0;

/** Accepts TCP (or TLS) connections and opens a core Session for each. */
export class TcpGateway {
  private readonly server: net.Server;
  private readonly connections = new ConnectionSet<TcpConnection>();
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
    return this.connections.empty();
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
    });
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
    logger: Logger,
  ) {
    super(logger, {
      maxOutboundBytes: options.maxOutboundBytes ?? DEFAULT_LIMITS.maxOutboundBytes,
      closeGraceMs: options.closeGraceMs ?? DEFAULT_LIMITS.closeGraceMs,
    });
    this.remoteAddress = socket.remoteAddress ?? "";
    this.parser = new FrameParser({ maxFrameBytes: options.maxFrameBytes });
  }

  start(opener: SessionOpener): void {
    const { socket } = this;
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    // 'close' always follows 'error'; the error itself is the peer's business.
    socket.on("error", (err) => this.logger.debug({ err, conn: this.id }, "socket error"));
    socket.once("close", () => this.socketClosed());
    this.openSession(opener);
  }

  protected queuedBytes(): number {
    return this.socket.writableLength;
  }

  protected write(frame: ServerFrame): boolean {
    if (!this.socket.writable) return false;
    let bytes: Uint8Array;
    try {
      bytes = encodeFramed(frame);
    } catch (err) {
      this.logger.error({ err, conn: this.id, frame: frame.t }, "could not encode frame");
      this.closing = true;
      this.socket.destroy();
      return false;
    }
    this.socket.write(bytes);
    return true;
  }

  protected end(): void {
    this.socket.end();
  }

  protected destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (!this.reading) return;
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
