import { createHash, randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";

// A WebSocket client (RFC 6455) for the load processes, in place of the `ws` library's.
//
// Why our own: at direct-max over WebSocket the load client spent 46-58 us of CPU per message
// with `ws` against 28 over TCP. Every read went through a Readable stream, `ws`'s Receiver
// (itself a Writable stream) and an EventEmitter per message, each read got a fresh 64 KiB
// buffer, and each send made two writes. The figures over WebSocket then
// measured the load client as much as the server. This client reads the way the TCP load client
// does: into one buffer its caller may share between connections (net.connect's `onread`),
// frames parsed in place, each message handed on as a view that is valid only during the
// callback; each send is one write. With it: 34-36 us per message (docs/benchmarks.md,
// nineteenth session).
//
// It is a client for one server, ours, on loopback, and does only what that needs: the opening
// handshake with one subprotocol and no extensions, binary messages either way (fragmented ones
// are put together), ping answered with pong, the closing handshake answered. Anything else a
// server may not send (masked frames, reserved bits or opcodes, control frames over 125 bytes
// or fragmented, a text message on this binary subprotocol, a message over maxMessageBytes) is
// an error that closes the connection. The server keeps using `ws`, which implements the whole
// protocol for every client a server must accept.

const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

export const OP_CONTINUATION = 0x0;
export const OP_TEXT = 0x1;
export const OP_BINARY = 0x2;
export const OP_CLOSE = 0x8;
export const OP_PING = 0x9;
export const OP_PONG = 0xa;

/** The server broke the protocol; the connection is closed. */
export class WsProtocolError extends Error {
  override name = "WsProtocolError";
}

/** The server answered the opening handshake with a status other than 101 (a refusal: 429,
 * 503, 404...). */
export class WsUpgradeRefused extends WsProtocolError {
  override name = "WsUpgradeRefused";
  constructor(
    readonly status: number,
    statusLine: string,
  ) {
    super(`unexpected server response: ${statusLine}`);
  }
}

/** Receives a whole message (opcode OP_TEXT or OP_BINARY, fragments put together) or a control
 * frame (OP_CLOSE, OP_PING, OP_PONG). The payload may be a view into the chunk being read: it is
 * valid only until the call returns. */
export type WsFrameSink = (opcode: number, payload: Uint8Array) => void;

interface Header {
  fin: boolean;
  opcode: number;
  /** Payload bytes. */
  length: number;
  /** Header bytes (2, 4 or 10: a server's frames carry no masking key). */
  size: number;
}

/** Reads the header of a frame from a server at `bytes[at..end)`, or undefined if it is not all
 * there yet. Throws WsProtocolError for what a server may not send, as soon as the first two
 * bytes show it. */
function readHeader(bytes: Uint8Array, at: number, end: number, maxMessageBytes: number): Header | undefined {
  if (end - at < 2) return undefined;
  const b0 = bytes[at]!;
  const b1 = bytes[at + 1]!;
  if ((b0 & 0x70) !== 0) throw new WsProtocolError("reserved bits set (no extension was agreed)");
  if ((b1 & 0x80) !== 0) throw new WsProtocolError("a masked frame from the server");
  const fin = (b0 & 0x80) !== 0;
  const opcode = b0 & 0x0f;
  if ((opcode > OP_BINARY && opcode < OP_CLOSE) || opcode > OP_PONG) {
    throw new WsProtocolError(`reserved opcode ${opcode}`);
  }
  const len7 = b1 & 0x7f;
  if (opcode >= OP_CLOSE) {
    if (!fin) throw new WsProtocolError("a fragmented control frame");
    if (len7 > 125) throw new WsProtocolError("a control frame over 125 bytes");
  }
  let length = len7;
  let size = 2;
  if (len7 === 126) {
    size = 4;
    if (end - at < size) return undefined;
    length = (bytes[at + 2]! << 8) | bytes[at + 3]!;
  } else if (len7 === 127) {
    size = 10;
    if (end - at < size) return undefined;
    const high =
      ((bytes[at + 2]! << 24) | (bytes[at + 3]! << 16) | (bytes[at + 4]! << 8) | bytes[at + 5]!) >>> 0;
    const low =
      ((bytes[at + 6]! << 24) | (bytes[at + 7]! << 16) | (bytes[at + 8]! << 8) | bytes[at + 9]!) >>> 0;
    if (high >= 0x200000) throw new WsProtocolError("a payload length over 2^53");
    length = high * 2 ** 32 + low;
  }
  if (length > maxMessageBytes) {
    throw new WsProtocolError(`a frame of ${length} bytes, over the limit of ${maxMessageBytes}`);
  }
  return { fin, opcode, length, size };
}

/** Splits what a server sends into messages and control frames, across reads of any size. After
 * it has thrown, it must not be used again. */
export class WsFrameReader {
  /** The first bytes of a header that a read left incomplete. */
  private readonly head = new Uint8Array(10);
  private headLength = 0;
  /** The payload of a frame that a read left incomplete, filled as reads come. */
  private body: Uint8Array | undefined;
  private bodyFilled = 0;
  private bodyHeader: Header | undefined;
  /** The opcode of the fragmented message being put together (0: none), and its pieces so far
   * (copies: a view would not outlive its read). */
  private fragmentOpcode = 0;
  private fragments: Uint8Array[] = [];
  private fragmentBytes = 0;

  constructor(private readonly maxMessageBytes: number) {}

  push(chunk: Uint8Array, sink: WsFrameSink): void {
    const end = chunk.length;
    let at = 0;
    while (at < end) {
      if (this.body !== undefined) {
        const take = Math.min(this.body.length - this.bodyFilled, end - at);
        this.body.set(chunk.subarray(at, at + take), this.bodyFilled);
        this.bodyFilled += take;
        at += take;
        if (this.bodyFilled < this.body.length) return;
        const body = this.body;
        this.body = undefined;
        this.frame(this.bodyHeader!, body, true, sink);
        continue;
      }
      let header: Header | undefined;
      if (this.headLength === 0) {
        header = readHeader(chunk, at, end, this.maxMessageBytes);
        if (header === undefined) {
          this.head.set(chunk.subarray(at, end));
          this.headLength = end - at;
          return;
        }
        at += header.size;
      } else {
        while (header === undefined && at < end) {
          this.head[this.headLength++] = chunk[at++]!;
          header = readHeader(this.head, 0, this.headLength, this.maxMessageBytes);
        }
        if (header === undefined) return;
        this.headLength = 0;
      }
      if (end - at >= header.length) {
        this.frame(header, chunk.subarray(at, at + header.length), false, sink);
        at += header.length;
      } else {
        this.body = new Uint8Array(header.length);
        this.bodyFilled = 0;
        this.bodyHeader = header;
      }
    }
  }

  /** A whole frame: `owned` says whether its payload is a copy of its own or a view of the read. */
  private frame(header: Header, payload: Uint8Array, owned: boolean, sink: WsFrameSink): void {
    const { opcode, fin } = header;
    if (opcode >= OP_CLOSE) {
      sink(opcode, payload);
      return;
    }
    if (opcode === OP_CONTINUATION) {
      if (this.fragmentOpcode === 0)
        throw new WsProtocolError("a continuation frame with no message to continue");
      this.fragmentBytes += payload.length;
      if (this.fragmentBytes > this.maxMessageBytes) {
        throw new WsProtocolError(`a message of over ${this.maxMessageBytes} bytes`);
      }
      this.fragments.push(owned ? payload : payload.slice());
      if (!fin) return;
      const whole = Buffer.concat(this.fragments, this.fragmentBytes);
      const messageOpcode = this.fragmentOpcode;
      this.fragmentOpcode = 0;
      this.fragments = [];
      this.fragmentBytes = 0;
      sink(messageOpcode, whole);
      return;
    }
    if (this.fragmentOpcode !== 0) throw new WsProtocolError("a new message inside a fragmented one");
    if (fin) {
      sink(opcode, payload);
      return;
    }
    this.fragmentOpcode = opcode;
    this.fragments = [owned ? payload : payload.slice()];
    this.fragmentBytes = payload.length;
  }
}

/** One frame from a client: FIN set, masked with an all-zero key. The key is legal on the wire
 * (RFC 6455 asks for an unpredictable one to protect proxies from scripts in browsers, which this
 * process is not), and with it the payload goes as it is, copied once behind the header. */
export function clientFrame(opcode: number, payload: Uint8Array): Buffer {
  const length = payload.length;
  const headSize = length < 126 ? 2 : length < 65_536 ? 4 : 10;
  const out = Buffer.allocUnsafe(headSize + 4 + length);
  out[0] = 0x80 | opcode;
  if (length < 126) {
    out[1] = 0x80 | length;
  } else if (length < 65_536) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(length, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    out.writeUInt32BE(length >>> 0, 6);
  }
  out.writeUInt32BE(0, headSize);
  out.set(payload, headSize + 4);
  return out;
}

export interface WsClientOptions {
  /** ws://host:port/path (no TLS: loopback only). */
  url: string;
  /** The one subprotocol asked for; the server must choose it. */
  protocol: string;
  localAddress?: string;
  /** Reads go into this buffer (net.connect's `onread`), which connections may share: each read
   * is parsed, and every message handed on, before the read's callback returns. Without it each
   * read gets a buffer of its own. */
  readBuffer?: Uint8Array;
  /** Default 16 MiB. */
  maxMessageBytes?: number;
}

export interface WsClientEvents {
  /** The handshake is done: send() may be called. */
  open(): void;
  /** A binary message: a view valid only during the call. */
  message(data: Uint8Array): void;
  /** Called once, last. With an error when the handshake failed, the server broke the protocol
   * or the connection ended without the closing handshake; without one after the server's close
   * frame or terminate(). `code` is the status code of the server's close frame, if one came
   * (1005 when it carried none). */
  close(err?: Error, code?: number): void;
}

const MAX_RESPONSE_HEAD = 16 * 1024;

export class WsClient {
  /** For corking: what send() writes in one turn can leave in one writev. */
  readonly socket: Socket;
  private state: "connecting" | "open" | "closing" | "closed" = "connecting";
  private readonly key = randomBytes(16).toString("base64");
  /** The response head so far, one character per byte. */
  private responseHead = "";
  private readonly reader: WsFrameReader;
  private closeError: Error | undefined;
  private closeCode: number | undefined;
  private responseBytes = 0;
  /** Hands the reader's frames to frame(): one function for every read. */
  private readonly sink: WsFrameSink = (opcode, payload) => this.frame(opcode, payload);

  constructor(
    private readonly options: WsClientOptions,
    private readonly events: WsClientEvents,
  ) {
    const url = new URL(options.url);
    if (url.protocol !== "ws:") throw new Error(`${options.url}: only ws:// URLs are supported`);
    this.reader = new WsFrameReader(options.maxMessageBytes ?? 16 * 1024 * 1024);
    const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
    const port = Number(url.port || 80);
    const read = (chunk: Uint8Array): void => {
      try {
        this.read(chunk);
      } catch (err) {
        this.fail(err as Error);
      }
    };
    this.socket = connect({
      host,
      port,
      ...(options.localAddress !== undefined ? { localAddress: options.localAddress } : {}),
      ...(options.readBuffer !== undefined
        ? {
            onread: {
              buffer: options.readBuffer,
              callback: (n: number, buf: Uint8Array): boolean => {
                read(buf.subarray(0, n));
                return true;
              },
            },
          }
        : {}),
    });
    if (options.readBuffer === undefined) this.socket.on("data", read);
    this.socket.setNoDelay(true);
    this.socket.on("connect", () => {
      this.socket.write(
        `GET ${url.pathname}${url.search} HTTP/1.1\r\n` +
          `Host: ${url.host}\r\n` +
          "Upgrade: websocket\r\n" +
          "Connection: Upgrade\r\n" +
          `Sec-WebSocket-Key: ${this.key}\r\n` +
          "Sec-WebSocket-Version: 13\r\n" +
          `Sec-WebSocket-Protocol: ${options.protocol}\r\n\r\n`,
      );
    });
    this.socket.on("error", (err) => this.fail(err));
    this.socket.on("close", () => {
      if (this.state === "open") this.closeError ??= new Error("connection closed without a close frame");
      if (this.state === "connecting")
        this.closeError ??= new Error("connection closed during the handshake");
      this.finish();
    });
  }

  /** Bytes of the server's handshake response (socket.bytesRead less these: WebSocket bytes). */
  get handshakeBytes(): number {
    return this.responseBytes;
  }

  /** Whether send() sends: the handshake is done and the connection has not begun closing. */
  get isOpen(): boolean {
    return this.state === "open";
  }

  /** Sends one binary message. Throws before open(); after the connection began closing, the
   * message is dropped (close() reports how it ended). */
  send(data: Uint8Array): void {
    if (this.state === "connecting") throw new Error("WebSocket not open yet");
    if (this.state !== "open") return;
    this.socket.write(clientFrame(OP_BINARY, data));
  }

  /** Closes at once, without the closing handshake. */
  terminate(): void {
    if (this.state === "closed") return;
    this.socket.destroy();
    this.finish();
  }

  private read(chunk: Uint8Array): void {
    if (this.state === "connecting") {
      const before = this.responseHead.length;
      this.responseHead += Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length).toString("latin1");
      const end = this.responseHead.indexOf("\r\n\r\n");
      if (end < 0) {
        if (this.responseHead.length > MAX_RESPONSE_HEAD) {
          throw new WsProtocolError(`a handshake response over ${MAX_RESPONSE_HEAD} bytes`);
        }
        return;
      }
      this.checkResponse(this.responseHead.slice(0, end));
      this.responseBytes = end + 4;
      this.responseHead = "";
      this.state = "open";
      this.events.open();
      chunk = chunk.subarray(end + 4 - before);
    }
    if (this.state === "closed") return;
    this.reader.push(chunk, this.sink);
  }

  private checkResponse(head: string): void {
    const [statusLine = "", ...lines] = head.split("\r\n");
    const status = /^HTTP\/1\.1 (\d{3})/.exec(statusLine);
    if (status === null) throw new WsProtocolError(`unexpected server response: ${statusLine}`);
    if (status[1] !== "101") throw new WsUpgradeRefused(Number(status[1]), statusLine);
    const headers = new Map<string, string>();
    for (const line of lines) {
      const colon = line.indexOf(":");
      if (colon <= 0) throw new WsProtocolError(`a malformed response header: ${line}`);
      headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    if (headers.get("upgrade")?.toLowerCase() !== "websocket") {
      throw new WsProtocolError("the response does not upgrade to websocket");
    }
    const connection = (headers.get("connection") ?? "").toLowerCase().split(",");
    if (!connection.some((token) => token.trim() === "upgrade")) {
      throw new WsProtocolError("the response's Connection header does not say upgrade");
    }
    const accept = createHash("sha1")
      .update(this.key + ACCEPT_GUID)
      .digest("base64");
    if (headers.get("sec-websocket-accept") !== accept) {
      throw new WsProtocolError("the response's Sec-WebSocket-Accept does not match the key");
    }
    const protocol = headers.get("sec-websocket-protocol");
    if (protocol !== this.options.protocol) {
      throw new WsProtocolError(
        `the server chose subprotocol ${protocol ?? "none"}, not ${this.options.protocol}`,
      );
    }
    if (headers.has("sec-websocket-extensions")) {
      throw new WsProtocolError("the server chose an extension, and none was offered");
    }
  }

  private frame(opcode: number, payload: Uint8Array): void {
    if (this.state !== "open") return;
    switch (opcode) {
      case OP_BINARY:
        this.events.message(payload);
        return;
      case OP_TEXT:
        throw new WsProtocolError(`a text message on subprotocol ${this.options.protocol}`);
      case OP_PING:
        this.socket.write(clientFrame(OP_PONG, payload));
        return;
      case OP_PONG:
        return;
      default: {
        // OP_CLOSE: answer with the server's status code, then end our side; the close event
        // follows when the server closes the TCP connection.
        if (payload.length === 1) throw new WsProtocolError("a close frame with a 1-byte payload");
        this.closeCode = payload.length === 0 ? 1005 : (payload[0]! << 8) | payload[1]!;
        this.state = "closing";
        this.socket.end(clientFrame(OP_CLOSE, payload.subarray(0, 2)));
      }
    }
  }

  private fail(err: Error): void {
    if (this.state === "closed") return;
    this.closeError ??= err;
    this.socket.destroy();
    this.finish();
  }

  private finish(): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.events.close(this.closeError, this.closeCode);
  }
}
