import { decodeBinary, decodeJson, encodeBinary, encodeJson, parseServerFrame } from "@parley/protocol";
import type { ClientFrame } from "@parley/protocol";
import type { Encoding, TransportOptions } from "./transport.ts";
import {
  BaseTransport,
  CLOSE_ABNORMAL,
  CLOSE_NORMAL,
  CLOSE_PROTOCOL_ERROR,
  registerTransport,
  webSocketUrl,
} from "./transport.ts";

// WebSocket transport on the browser WebSocket API, which `ws` also implements (node-ws.ts). One
// frame per WebSocket message; subprotocol `parley.v1.binary` (msgpack) or `parley.v1.json`.

/** The subset of the WHATWG WebSocket this transport uses. */
export interface WebSocketLike {
  binaryType: string;
  readonly protocol: string;
  readonly bufferedAmount: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export const SUBPROTOCOLS: Record<Encoding, string> = {
  binary: "parley.v1.binary",
  json: "parley.v1.json",
};

let defaultWebSocket: WebSocketConstructor | undefined;

/** Sets the WebSocket used when none is passed and globalThis has none (Node 20). */
export function setDefaultWebSocket(ctor: WebSocketConstructor): void {
  defaultWebSocket = ctor;
}

export interface WsTransportOptions extends TransportOptions {
  /** Defaults to setDefaultWebSocket's, then globalThis.WebSocket. */
  WebSocket?: WebSocketConstructor;
}

export class WsTransport extends BaseTransport {
  private ws: WebSocketLike | undefined;
  private readonly encoding: Encoding;
  /** Why we closed, reported instead of the socket's code (browsers only let us send 1000). */
  private localCode: number | undefined;

  constructor(private readonly options: WsTransportOptions) {
    super();
    this.encoding = options.encoding;
  }

  get bufferedAmount(): number {
    return this.ws?.bufferedAmount ?? 0;
  }

  connect(): Promise<void> {
    const Ctor =
      this.options.WebSocket ??
      defaultWebSocket ??
      (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Ctor) {
      return Promise.reject(
        new Error("no WebSocket implementation: pass one, or import @parley/sdk/node on Node.js"),
      );
    }
    const subprotocol = SUBPROTOCOLS[this.encoding];
    return new Promise<void>((resolve, reject) => {
      let opened = false;
      let ws: WebSocketLike;
      try {
        ws = new Ctor(webSocketUrl(this.options.url), [subprotocol]);
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      this.ws = ws;
      ws.binaryType = "arraybuffer";
      ws.onopen = () => {
        if (ws.protocol !== subprotocol) {
          ws.onclose = null;
          ws.close(CLOSE_NORMAL);
          reject(new Error(`server did not accept subprotocol ${subprotocol}`));
          return;
        }
        opened = true;
        resolve();
      };
      ws.onmessage = (ev) => this.receive(ev.data);
      ws.onerror = () => {
        // The browser API gives no detail; the close event that follows carries the code.
        if (opened) this.fail(new Error("WebSocket error"));
      };
      ws.onclose = (ev) => {
        if (!opened) {
          reject(new Error(`WebSocket connection failed (close code ${ev.code})`));
          return;
        }
        this.closed(this.localCode ?? (ev.code === 1005 ? CLOSE_ABNORMAL : ev.code), ev.reason);
      };
    });
  }

  send(frame: ClientFrame): void {
    if (!this.ws || this.isClosed) return;
    this.ws.send(this.encoding === "binary" ? encodeBinary(frame) : encodeJson(frame));
  }

  close(): void {
    this.localCode ??= CLOSE_NORMAL;
    this.ws?.close(CLOSE_NORMAL);
  }

  private receive(data: unknown): void {
    try {
      if (typeof data === "string") {
        if (this.encoding !== "json") throw new Error("text message on the binary subprotocol");
        if (data.length > this.options.maxFrameBytes) throw new Error("frame too large");
        this.deliver(parseServerFrame(decodeJson(data)));
      } else {
        if (this.encoding !== "binary") throw new Error("binary message on the json subprotocol");
        const bytes = toBytes(data);
        if (bytes.byteLength > this.options.maxFrameBytes) throw new Error("frame too large");
        this.deliver(parseServerFrame(decodeBinary(bytes)));
      }
    } catch (err) {
      this.fail(new Error("undecodable frame from server", { cause: err }));
      this.localCode ??= CLOSE_PROTOCOL_ERROR;
      this.ws?.close(CLOSE_NORMAL);
    }
  }
}

function toBytes(data: unknown): Uint8Array {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new Error("unexpected WebSocket message type");
}

registerTransport("ws", (options) => new WsTransport(options));
