import net from "node:net";
import tls from "node:tls";
import { decodeBinary, encodeFramed, FrameParser, parseServerFrame } from "@parley/protocol";
import type { ClientFrame } from "@parley/protocol";
import type { TransportOptions } from "./transport.ts";
import { BaseTransport, CLOSE_ABNORMAL, CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR } from "./transport.ts";

// TCP transport (Node only): length-prefixed binary frames (4-byte big-endian length + msgpack),
// optionally over TLS. The host comes from the server URL, the port from `tcpPort`.

export interface TcpTransportOptions extends TransportOptions {
  /** TLS on the TCP port: true, or node:tls options (ca, servername...). Default: true when
   * the server URL is https. */
  tls?: boolean | tls.ConnectionOptions;
}

export class TcpTransport extends BaseTransport {
  private socket: net.Socket | undefined;
  private localCode: number | undefined;
  private opened = false;

  constructor(private readonly options: TcpTransportOptions) {
    super();
  }

  get bufferedAmount(): number {
    return this.socket?.writableLength ?? 0;
  }

  connect(): Promise<void> {
    const { tcpPort } = this.options;
    if (tcpPort === undefined) return Promise.reject(new Error("the tcp transport needs tcpPort"));
    const url = new URL(this.options.url);
    const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
    const useTls = this.options.tls ?? url.protocol === "https:";
    return new Promise<void>((resolve, reject) => {
      const parser = new FrameParser({ maxFrameBytes: this.options.maxFrameBytes });
      const socket =
        useTls === false
          ? net.connect({ host, port: tcpPort })
          : tls.connect({ host, port: tcpPort, servername: host, ...(useTls === true ? {} : useTls) });
      this.socket = socket;
      socket.setNoDelay(true);
      socket.once(useTls === false ? "connect" : "secureConnect", () => {
        this.opened = true;
        resolve();
      });
      socket.on("data", (chunk: Buffer) => {
        try {
          for (const bytes of parser.push(chunk)) {
            this.deliver(parseServerFrame(decodeBinary(bytes)));
            if (this.isClosed) return;
          }
        } catch (err) {
          this.fail(new Error("undecodable frame from server", { cause: err }));
          this.localCode ??= CLOSE_PROTOCOL_ERROR;
          socket.destroy();
        }
      });
      socket.on("error", (err: Error) => {
        if (this.opened) this.fail(err);
        else reject(err);
      });
      socket.on("close", () => {
        if (!this.opened) {
          reject(new Error("TCP connection closed before it was established"));
          return;
        }
        this.closed(this.localCode ?? CLOSE_ABNORMAL, "connection closed");
      });
    });
  }

  send(frame: ClientFrame): void {
    if (!this.socket || this.isClosed || this.socket.destroyed) return;
    this.socket.write(encodeFramed(frame));
  }

  close(): void {
    this.localCode ??= CLOSE_NORMAL;
    // end() flushes what is queued (a last ack) before the FIN; destroy if the peer stalls.
    const socket = this.socket;
    if (!socket || socket.destroyed) return;
    if (!this.opened) {
      socket.destroy();
      return;
    }
    socket.end();
    setTimeout(() => socket.destroy(), 1000).unref();
  }
}
