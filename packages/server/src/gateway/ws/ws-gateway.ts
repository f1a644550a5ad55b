import type { IncomingMessage, Server } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer } from "ws";
import type { RawData, WebSocket } from "ws";
import {
  ParleyError,
  decodeBinary,
  decodeJson,
  encodeBinary,
  encodeJson,
  parseClientFrame,
} from "@parley/protocol";
import type { ClientFrame, DisconnectCode, ServerFrame } from "@parley/protocol";
import type { Logger } from "../../core/ports/logger.ts";
import { sharedEncoder } from "../shared-encoding.ts";
import { silentLogger } from "../../core/ports/logger.ts";
import {
  ConnectionSet,
  GatewayConnection,
  connectionLimits,
  type ConnectionLimits,
  type GatewayLimitOptions,
  type SessionOpener,
} from "../gateway-connection.ts";

// The WebSocket gateway, on the HTTP server's `upgrade` event at /v1/ws. Two subprotocols carry
// the same frames: `parley.v1.binary` (one msgpack frame per binary message) and
// `parley.v1.json` (one JSON frame per text message, the default when none is offered).
// Closing sends a `bye` frame, then the WebSocket close frame with the same code.

/** Pushes of a large group's log are encoded once for all its members' sockets. */
const encodeBinaryShared = sharedEncoder(encodeBinary);
const encodeJsonShared = sharedEncoder(encodeJson);

export const WS_PATH = "/v1/ws";
export const SUBPROTOCOL_BINARY = "parley.v1.binary";
export const SUBPROTOCOL_JSON = "parley.v1.json";

export type { SessionOpener };

/** maxOutboundBytes is compared with bufferedAmount; closeGraceMs is how long the peer gets to
 * answer a close frame. The time limit on the upgrade request itself is the HTTP server's
 * (HttpGateway's headersTimeoutMs). */
export interface WsGatewayOptions extends GatewayLimitOptions {
  /** Largest frame accepted, in bytes (one message = one frame). */
  maxFrameBytes: number;
  logger?: Logger;
}

/** RFC 6455 section 5.5: a control frame's payload is at most 125 bytes, 2 of them the code. */
const MAX_CLOSE_REASON_BYTES = 123;

let nextConnection = 0;

/** Accepts WebSocket upgrades on /v1/ws of an http.Server and opens a core Session for each. */
export class WsGateway {
  private readonly wss: WebSocketServer;
  private readonly connections = new ConnectionSet<WsConnection>();
  private readonly logger: Logger;
  private readonly limits: ConnectionLimits;
  private accepting = true;
  private readonly onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void =>
    this.upgrade(req, socket, head);
  /** One function for every upgraded socket, not a closure each (idle memory per connection). */
  private readonly onSocketError = (err: Error): void => this.logger.debug({ err }, "upgrade socket error");

  constructor(
    private readonly opener: SessionOpener,
    private readonly options: WsGatewayOptions,
  ) {
    this.logger = options.logger ?? silentLogger;
    this.limits = connectionLimits(options);
    this.wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      perMessageDeflate: false,
      // Messages between maxFrameBytes and this get a proper E_FRAME_TOO_LARGE; beyond it, ws
      // refuses to buffer them at all (close 1009).
      maxPayload: 2 * options.maxFrameBytes,
      handleProtocols: (offered) => pickSubprotocol(offered),
    });
  }

  /** Starts handling upgrade requests of `server`. Upgrades for any other path get 404. */
  attach(server: Server): void {
    server.on("upgrade", this.onUpgrade);
  }

  /** Stops accepting new WebSocket connections (later upgrades get 503). Open connections are
   * left to the core (Core.shutdown closes each with 4000). */
  close(): Promise<void> {
    this.accepting = false;
    return Promise.resolve();
  }

  /** Resolves once no connection is open. */
  connectionsClosed(): Promise<void> {
    return this.connections.empty();
  }

  /** Number of open connections. */
  get size(): number {
    return this.connections.size;
  }

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on("error", this.onSocketError);
    const path = (req.url ?? "").split("?", 1)[0];
    if (path !== WS_PATH) return refuse(socket, 404, "Not Found");
    if (!this.accepting) return refuse(socket, 503, "Service Unavailable");
    const remote = req.socket.remoteAddress ?? "";
    // Counted from here until the socket closes, whether or not the upgrade then succeeds.
    const release = this.options.perIp ? this.options.perIp.acquire(remote) : () => {};
    if (!release) {
      this.logger.debug({ remote }, "too many connections from this address");
      return refuse(socket, 429, "Too Many Requests", TOO_MANY_FROM_ADDRESS);
    }
    // 'close' is emitted once, and release is idempotent: `on` spares `once`'s wrapper.
    socket.on("close", release);
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const conn = new WsConnection(ws, socket, remote, this.options, this.limits, this.logger);
      this.connections.add(conn);
      conn.start(this.opener, this.connections);
    });
  }
}

/** The first subprotocol the client offers that we speak; JSON when it offers neither. */
function pickSubprotocol(offered: Set<string>): string | false {
  for (const p of offered) if (p === SUBPROTOCOL_BINARY || p === SUBPROTOCOL_JSON) return p;
  return false;
}

/** The body of a 429 upgrade response: the REST API's error shape. */
const TOO_MANY_FROM_ADDRESS = JSON.stringify({
  error: { code: "E_RATE_LIMITED", message: "too many connections from this address", retry: true },
});

function refuse(socket: Duplex, status: number, text: string, json?: string): void {
  socket.once("finish", () => socket.destroy());
  const body = json === undefined ? "" : json;
  const type = json === undefined ? "" : "Content-Type: application/json\r\n";
  socket.end(
    `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\n${type}` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/** One WebSocket: a Connection for the core. */
class WsConnection extends GatewayConnection {
  readonly id = `ws-${++nextConnection}`;
  private readonly binary: boolean;
  private readonly maxFrameBytes: number;

  constructor(
    private readonly ws: WebSocket,
    /** The upgraded socket, whose raw bytes (WebSocket framing included) count against the
     * bytes/s budget. */
    private readonly socket: Duplex,
    readonly remoteAddress: string,
    options: WsGatewayOptions,
    limits: ConnectionLimits,
    logger: Logger,
  ) {
    super(logger, limits, options.clock);
    this.binary = ws.protocol === SUBPROTOCOL_BINARY;
    this.maxFrameBytes = options.maxFrameBytes;
  }

  /** Leaves `connections` when the WebSocket closes, once the session has been told. */
  start(opener: SessionOpener, connections: ConnectionSet<WsConnection>): void {
    const { ws } = this;
    ws.on("message", (data, isBinary) => this.onMessage(data, isBinary));
    // ws emits 'error' for protocol violations (bad opcode, maxPayload...) and then closes.
    ws.on("error", (err) => this.logger.debug({ err, conn: this.id }, "websocket error"));
    // ws emits 'close' once: `on` spares the wrapper `once` would allocate per connection.
    ws.on("close", () => {
      this.socketClosed();
      connections.delete(this);
    });
    this.socket.on("data", (chunk: Buffer) => this.received(chunk.byteLength));
    this.openSession(opener);
  }

  protected queuedBytes(): number {
    return this.ws.bufferedAmount;
  }

  protected write(frame: ServerFrame): boolean {
    if (this.ws.readyState !== this.ws.OPEN) return false;
    try {
      this.corkForThisTurn(this.socket);
      if (this.binary) this.ws.send(encodeBinaryShared(frame), { binary: true });
      else this.ws.send(encodeJsonShared(frame), { binary: false });
      return true;
    } catch (err) {
      this.logger.error({ err, conn: this.id, frame: frame.t }, "could not encode frame");
      this.closing = true;
      this.ws.terminate();
      return false;
    }
  }

  /** The close code repeats the bye's, for clients that only see the close frame. */
  protected end(code: DisconnectCode, reason: string): void {
    this.ws.close(code, truncateUtf8(reason, MAX_CLOSE_REASON_BYTES));
  }

  protected destroy(): void {
    this.ws.terminate();
  }

  // Through ws, which keeps its own receiver's backpressure (and its close handshake) right.
  protected pauseReading(): void {
    this.ws.pause();
  }

  protected resumeReading(): void {
    this.ws.resume();
  }

  private onMessage(data: RawData, isBinary: boolean): void {
    if (!this.reading) return;
    let frame: ClientFrame;
    try {
      const bytes = toBuffer(data);
      if (bytes.byteLength > this.maxFrameBytes) {
        throw new ParleyError(
          "E_FRAME_TOO_LARGE",
          `frame of ${bytes.byteLength} bytes exceeds ${this.maxFrameBytes}`,
        );
      }
      if (isBinary !== this.binary) {
        throw new ParleyError(
          "E_BAD_FRAME",
          this.binary ? "text message on the binary subprotocol" : "binary message on the JSON subprotocol",
        );
      }
      frame = parseClientFrame(this.binary ? decodeBinary(bytes) : decodeJson(bytes.toString("utf8")));
    } catch (err) {
      return this.protocolError(err);
    }
    this.deliver(frame);
  }
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

function truncateUtf8(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.byteLength <= maxBytes) return text;
  // Cutting inside a multi-byte character leaves U+FFFD at the end; drop it.
  return bytes
    .subarray(0, maxBytes)
    .toString("utf8")
    .replace(/\uFFFD+$/, "");
}
