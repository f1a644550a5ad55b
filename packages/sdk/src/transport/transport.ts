import { encodeBinary, encodeJson } from "@parley/protocol";
import type { ClientFrame, ServerFrame } from "@parley/protocol";
import { Emitter } from "../emitter.ts";

// The seam between the client and a byte stream, after nats.js's core/transport split: the core
// (client, sync engine) never imports a socket; each runtime supplies transports through
// `registerTransport` (src/node.ts registers TCP and the `ws` WebSocket for Node).

export type TransportEvents = {
  /** A decoded, validated frame from the server, in arrival order. */
  frame: [frame: ServerFrame];
  /** The connection is gone. Emitted exactly once per transport that connected successfully.
   * `code` is the server's disconnect code (from `bye` or the WebSocket close code) when it gave
   * one, else one of the CLOSE_* codes below. */
  close: [code: number, reason: string];
  /** Something went wrong (undecodable frame, socket error). Always followed by `close`. */
  error: [err: Error];
};

/** We closed the connection ourselves (close()). */
export const CLOSE_NORMAL = 1000;
/** The server sent something we could not decode. */
export const CLOSE_PROTOCOL_ERROR = 1002;
/** The connection dropped without a disconnect code (reset, timeout, network gone). */
export const CLOSE_ABNORMAL = 1006;

export interface Transport {
  readonly events: Emitter<TransportEvents>;
  /** Opens the connection. Resolves once frames can be sent; rejects if it cannot be opened, in
   * which case no `close` event follows. Called at most once per transport. */
  connect(): Promise<void>;
  /** Encodes and queues one frame. Frames go out in call order. Ignored after close. */
  send(frame: ClientFrame): void;
  /** Bytes queued but not yet written (backpressure hint). */
  readonly bufferedAmount: number;
  /** Closes the connection (idempotent). `close` follows once the socket is gone. */
  close(): void;
}

export type Encoding = "binary" | "json";

/** What the client knows when it opens a connection; each transport takes what it needs. */
export interface TransportOptions {
  /** The server's HTTP base URL, e.g. "http://127.0.0.1:8080". */
  url: string;
  encoding: Encoding;
  /** TCP port for the "tcp" transport. */
  tcpPort?: number;
  /** Largest frame accepted from the server, in bytes. */
  maxFrameBytes: number;
}

export type TransportFactory = (options: TransportOptions) => Transport;

const factories = new Map<string, TransportFactory>();

/** Makes a transport available by name ("ws", "tcp", or your own). Replaces an earlier one. */
export function registerTransport(name: string, factory: TransportFactory): void {
  factories.set(name, factory);
}

/** The factory registered under `name`, or undefined. */
export function getTransport(name: string): TransportFactory | undefined {
  return factories.get(name);
}

/** Base class that makes `close` fire exactly once. */
export abstract class BaseTransport implements Transport {
  readonly events = new Emitter<TransportEvents>();
  private closedOnce = false;
  /** Disconnect code from a `bye` frame, which wins over the socket's own code. */
  protected byeCode: number | undefined;
  protected byeReason = "";

  abstract connect(): Promise<void>;
  abstract send(frame: ClientFrame): void;
  abstract get bufferedAmount(): number;
  abstract close(): void;

  protected get isClosed(): boolean {
    return this.closedOnce;
  }

  protected deliver(frame: ServerFrame): void {
    if (this.closedOnce) return;
    if (frame.t === "bye") {
      this.byeCode = frame.code;
      this.byeReason = frame.reason;
    }
    this.events.emit("frame", frame);
  }

  protected fail(err: Error): void {
    if (this.closedOnce) return;
    this.events.emit("error", err);
  }

  protected closed(code: number, reason: string): void {
    if (this.closedOnce) return;
    this.closedOnce = true;
    this.events.emit("close", this.byeCode ?? code, this.byeCode !== undefined ? this.byeReason : reason);
  }
}

/** ws(s)://host:port/v1/ws for an http(s) base URL. */
export function webSocketUrl(baseUrl: string): string {
  const u = new URL(baseUrl);
  u.protocol = u.protocol === "https:" || u.protocol === "wss:" ? "wss:" : "ws:";
  u.pathname = `${u.pathname.replace(/\/+$/, "")}/v1/ws`;
  u.search = "";
  u.hash = "";
  return u.toString();
}

const textEncoder = new TextEncoder();

/** Size of `frame` once encoded, in bytes: the unit of the server's maxFrameBytes. */
export function encodedSize(frame: ClientFrame, encoding: Encoding): number {
  return encoding === "binary"
    ? encodeBinary(frame).byteLength
    : textEncoder.encode(encodeJson(frame)).byteLength;
}
