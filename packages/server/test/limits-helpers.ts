import { readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import WebSocket from "ws";
import {
  FrameParser,
  decodeServerBinary,
  decodeServerJson,
  encodeBinary,
  encodeFramed,
  encodeJson,
} from "@parley/protocol";
import type { ClientFrame, ServerFrame } from "@parley/protocol";
import type { Core } from "../src/core/core.ts";
import type { CoreOptions } from "../src/core/options.ts";
import { HttpGateway } from "../src/gateway/http/http-gateway.ts";
import { TcpGateway, type TcpGatewayOptions } from "../src/gateway/tcp/tcp-gateway.ts";
import { WsGateway, type WsGatewayOptions } from "../src/gateway/ws/ws-gateway.ts";
import { newTestCore } from "./test-core.ts";

// Support for limits.test.ts: the three gateways around a test Core, clients that can stop
// reading or speak a chosen local address, a hand-made WebSocket client for partial frames, a
// proxy that stalls, and the server's peak memory from /proc.

export type Wire = "tcp" | "ws-binary" | "ws-json";
export const WIRES: Wire[] = ["tcp", "ws-binary", "ws-json"];

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves once `check()` holds; polls every 20 ms, throws after `timeoutMs`. */
export async function until(check: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A client over one wire: records decoded frames and how the socket closed. */
export interface Peer {
  readonly frames: ServerFrame[];
  send(frame: ClientFrame): void;
  /** Bytes written to the socket as they are (TCP only). */
  sendRaw(bytes: Uint8Array): void;
  /** Stops / resumes reading the socket. */
  pause(): void;
  resume(): void;
  /** The bye (TCP) or close (WS) code once closed; TCP without bye: 0. */
  readonly closed: Promise<number>;
  readonly isClosed: boolean;
  waitFor(pred: (f: ServerFrame) => boolean, what: string, timeoutMs?: number): Promise<ServerFrame>;
  count(pred: (f: ServerFrame) => boolean): number;
  destroy(): void;
}

export interface Ports {
  tcpPort: number;
  httpPort: number;
}

class FrameLog {
  readonly frames: ServerFrame[] = [];
  closedFlag = false;
  add(f: ServerFrame): void {
    this.frames.push(f);
  }
  async waitFor(pred: (f: ServerFrame) => boolean, what: string, timeoutMs = 10_000): Promise<ServerFrame> {
    let hit: ServerFrame | undefined;
    await until(
      () => (hit = this.frames.find(pred)) !== undefined,
      `${what}; got ${this.summary()}`,
      timeoutMs,
    );
    return hit!;
  }
  summary(): string {
    const kinds = this.frames.map((f) => f.t);
    return JSON.stringify(kinds.length > 20 ? [...kinds.slice(0, 10), "...", ...kinds.slice(-10)] : kinds);
  }
}

/** Opens a connection over `wire` from `localAddress` (default 127.0.0.1). WebSocket: rejects
 * when the upgrade is refused. */
export async function connect(wire: Wire, ports: Ports, localAddress = "127.0.0.1"): Promise<Peer> {
  const log = new FrameLog();
  const count = (pred: (f: ServerFrame) => boolean): number => log.frames.filter(pred).length;
  if (wire === "tcp") {
    const socket = net.connect({ port: ports.tcpPort, host: "127.0.0.1", localAddress });
    await new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject));
    socket.setNoDelay(true);
    const parser = new FrameParser({ maxFrameBytes: 64 << 20 });
    let bye = 0;
    socket.on("data", (chunk: Buffer) => {
      for (const body of parser.push(chunk)) {
        const f = decodeServerBinary(body);
        if (f.t === "bye") bye = f.code;
        log.add(f);
      }
    });
    socket.on("error", () => {});
    const closed = new Promise<number>((resolve) =>
      socket.once("close", () => {
        log.closedFlag = true;
        resolve(bye);
      }),
    );
    return {
      frames: log.frames,
      send: (f) => socket.write(encodeFramed(f)),
      sendRaw: (b) => socket.write(b),
      pause: () => socket.pause(),
      resume: () => socket.resume(),
      closed,
      get isClosed() {
        return log.closedFlag;
      },
      waitFor: (pred, what, ms) => log.waitFor(pred, what, ms),
      count,
      destroy: () => socket.destroy(),
    };
  }
  const binary = wire === "ws-binary";
  const ws = new WebSocket(
    `ws://127.0.0.1:${ports.httpPort}/v1/ws`,
    [binary ? "parley.v1.binary" : "parley.v1.json"],
    {
      localAddress,
      maxPayload: 64 << 20,
    },
  );
  ws.on("message", (data: Buffer, isBinary) => {
    log.add(isBinary ? decodeServerBinary(new Uint8Array(data)) : decodeServerJson(data.toString("utf8")));
  });
  ws.on("error", () => {});
  const closed = new Promise<number>((resolve) =>
    ws.once("close", (code) => {
      log.closedFlag = true;
      resolve(code);
    }),
  );
  await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
  return {
    frames: log.frames,
    send: (f) => ws.send(binary ? encodeBinary(f) : encodeJson(f), { binary }),
    sendRaw: () => {
      throw new Error("sendRaw is TCP only");
    },
    pause: () => ws.pause(),
    resume: () => ws.resume(),
    closed,
    get isClosed() {
      return log.closedFlag;
    },
    waitFor: (pred, what, ms) => log.waitFor(pred, what, ms),
    count,
    destroy: () => ws.terminate(),
  };
}

/** Opens a connection and completes hello. */
export async function ready(wire: Wire, ports: Ports, token: string, localAddress?: string): Promise<Peer> {
  const peer = await connect(wire, ports, localAddress);
  peer.send({ t: "hello", versions: [1], token });
  await peer.waitFor((f) => f.t === "welcome", "welcome");
  return peer;
}

/** The status and body of a refused WebSocket upgrade; throws if the upgrade succeeds. */
export function refusedUpgrade(
  httpPort: number,
  localAddress = "127.0.0.1",
): Promise<{ status: number; body: string; retryAfter?: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${httpPort}/v1/ws`, ["parley.v1.binary"], { localAddress });
    ws.on("error", () => {});
    ws.once("open", () => {
      ws.terminate();
      reject(new Error("the upgrade was accepted"));
    });
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => {
        resolve({ status: res.statusCode ?? 0, body });
        ws.terminate();
      });
    });
  });
}

/** A raw TCP socket that records everything it receives and when it closed. */
export interface RawSocket {
  readonly socket: net.Socket;
  /** Everything received so far. */
  received(): Buffer;
  readonly closed: Promise<void>;
  readonly isClosed: boolean;
}

export async function rawSocket(port: number): Promise<RawSocket> {
  const socket = net.connect(port, "127.0.0.1");
  await new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  const chunks: Buffer[] = [];
  let isClosed = false;
  socket.on("data", (d: Buffer) => chunks.push(d));
  socket.on("error", () => {});
  const closed = new Promise<void>((resolve) =>
    socket.once("close", () => {
      isClosed = true;
      resolve();
    }),
  );
  return {
    socket,
    received: () => Buffer.concat(chunks),
    closed,
    get isClosed() {
      return isClosed;
    },
  };
}

/** A WebSocket client written by hand on a raw socket, to send partial frames: the upgrade, then
 * binary messages masked with a zero key (RFC 6455 5.3: any key is valid; zero leaves the
 * payload as is). Server frames are parsed enough to read binary messages and the close code. */
export interface HandWrittenWs {
  readonly frames: ServerFrame[];
  /** One whole binary message. */
  send(frame: ClientFrame): void;
  /** Bytes as they are, after the upgrade. */
  sendRaw(bytes: Uint8Array): void;
  /** The close frame's code (0 if the socket closed without one). */
  readonly closed: Promise<number>;
  waitFor(pred: (f: ServerFrame) => boolean, what: string): Promise<ServerFrame>;
}

export async function handWrittenWs(httpPort: number): Promise<HandWrittenWs> {
  const raw = await rawSocket(httpPort);
  raw.socket.write(
    "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
      "Sec-WebSocket-Protocol: parley.v1.binary\r\n\r\n",
  );
  await until(() => raw.received().includes("\r\n\r\n") || raw.isClosed, "the upgrade response");
  const head = raw.received();
  const end = head.indexOf("\r\n\r\n");
  if (!head.subarray(0, end).toString("latin1").startsWith("HTTP/1.1 101"))
    throw new Error(`upgrade refused: ${head.toString("latin1")}`);
  const log = new FrameLog();
  let buffered = head.subarray(end + 4);
  let closeCode = 0;
  const parse = (): void => {
    for (;;) {
      if (buffered.length < 2) return;
      const opcode = buffered[0]! & 0x0f;
      let len = buffered[1]! & 0x7f;
      let offset = 2;
      if (len === 126) {
        if (buffered.length < 4) return;
        len = buffered.readUInt16BE(2);
        offset = 4;
      } else if (len === 127) {
        if (buffered.length < 10) return;
        len = Number(buffered.readBigUInt64BE(2));
        offset = 10;
      }
      if (buffered.length < offset + len) return;
      const payload = buffered.subarray(offset, offset + len);
      buffered = buffered.subarray(offset + len);
      if (opcode === 0x2) log.add(decodeServerBinary(new Uint8Array(payload)));
      if (opcode === 0x8 && payload.length >= 2) closeCode = payload.readUInt16BE(0);
    }
  };
  parse();
  raw.socket.removeAllListeners("data");
  raw.socket.on("data", (d: Buffer) => {
    buffered = Buffer.concat([buffered, d]);
    parse();
  });
  return {
    frames: log.frames,
    send: (f) => raw.socket.write(maskedFrame(encodeBinary(f))),
    sendRaw: (b) => raw.socket.write(b),
    closed: raw.closed.then(() => closeCode),
    waitFor: (pred, what) => log.waitFor(pred, what),
  };
}

/** A final binary frame from a client, masked with key 0. */
export function maskedFrame(payload: Uint8Array): Buffer {
  const n = payload.length;
  const header =
    n < 126
      ? Buffer.from([0x82, 0x80 | n])
      : n < 65536
        ? Buffer.from([0x82, 0x80 | 126, n >> 8, n & 0xff])
        : (() => {
            const h = Buffer.alloc(10);
            h[0] = 0x82;
            h[1] = 0x80 | 127;
            h.writeBigUInt64BE(BigInt(n), 2);
            return h;
          })();
  return Buffer.concat([header, Buffer.alloc(4), payload]);
}

export interface StackOptions {
  core?: Partial<CoreOptions>;
  tcp?: Partial<TcpGatewayOptions>;
  ws?: Partial<WsGatewayOptions>;
  headersTimeoutMs?: number;
}

/** A test Core behind the three gateways on 127.0.0.1, as main.ts assembles them. */
export interface Stack extends Ports {
  core: Core;
  tcp: TcpGateway;
  ws: WsGateway;
  http: HttpGateway;
  /** Stops as RunningServer.stop does: listeners, core (bye 4000), sockets, HTTP. */
  stop(): Promise<void>;
}

export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const core = newTestCore({ options: options.core ?? {} });
  const maxFrameBytes = core.options.maxFrameBytes;
  const http = new HttpGateway(core, {
    ...(options.headersTimeoutMs !== undefined ? { headersTimeoutMs: options.headersTimeoutMs } : {}),
  });
  const ws = new WsGateway(core, { maxFrameBytes, closeGraceMs: 500, ...options.ws });
  ws.attach(http.server);
  const tcp = new TcpGateway(core, { maxFrameBytes, closeGraceMs: 500, ...options.tcp });
  const httpPort = await http.listen(0, "127.0.0.1");
  const tcpPort = await tcp.listen(0, "127.0.0.1");
  let stopping: Promise<void> | undefined;
  const stop = async (): Promise<void> => {
    await Promise.all([tcp.close(), ws.close()]);
    const httpClosed = http.close();
    await core.shutdown();
    await Promise.all([tcp.connectionsClosed(), ws.connectionsClosed()]);
    await httpClosed;
  };
  return { core, tcp, ws, http, httpPort, tcpPort, stop: () => (stopping ??= stop()) };
}

/** Registers `name` on `core` and logs it in (a new device each call). */
export async function login(core: Core, name: string): Promise<{ token: string; user: string }> {
  await core.register(name, `password-${name}`).catch((e: unknown) => {
    if ((e as { code?: string }).code !== "E_CONFLICT") throw e;
  });
  const l = await core.login(name, `password-${name}`, "test");
  return { token: l.token, user: l.user };
}

/** A TCP proxy whose connections can stop reading from the server (`stall()`): the server then
 * sees a client that does not read, exactly like a stalled app. New connections are not
 * stalled. */
export class StallProxy {
  private readonly server: net.Server;
  private readonly pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  connections = 0;

  private constructor(private readonly target: number) {
    this.server = net.createServer((client) => this.accept(client));
  }

  static async start(target: number): Promise<StallProxy> {
    const proxy = new StallProxy(target);
    await new Promise<void>((resolve) => proxy.server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  /** Stops reading from the server on every current connection. */
  stall(): void {
    for (const p of this.pairs) p.upstream.pause();
  }

  /** Reads from the server again (what piled up flows to the client, then the close). */
  unstall(): void {
    for (const p of this.pairs) p.upstream.resume();
  }

  async close(): Promise<void> {
    for (const p of this.pairs) {
      p.client.destroy();
      p.upstream.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    this.connections++;
    const upstream = net.connect(this.target, "127.0.0.1");
    const pair = { client, upstream };
    this.pairs.add(pair);
    // No pipe() towards the client: its drain handler would resume a stalled upstream. The
    // client (the SDK) reads promptly, so what the proxy buffers for it stays small.
    client.on("data", (d: Buffer) => upstream.write(d));
    upstream.on("data", (d: Buffer) => client.write(d));
    // The server's close reaches the client after everything the server sent before it.
    upstream.on("close", () => {
      this.pairs.delete(pair);
      client.end();
    });
    client.on("close", () => {
      this.pairs.delete(pair);
      upstream.destroy();
    });
    client.on("error", () => {});
    upstream.on("error", () => {});
  }
}

/** The peak resident set size of process `pid` since start or the last resetPeakRss, in bytes
 * (Linux /proc; undefined elsewhere). */
export function peakRss(pid: number): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Resets the peak RSS of `pid` to its current RSS (Linux 4.0+); false when not possible. */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** A sender over TCP that pipelines `send`s and keeps nothing it receives but the count of
 * `sent` replies (it also receives its own pushes: megabytes a test does not need to hold). */
export class Sender {
  private acked = 0;
  private failure: string | undefined;
  private nextId = 1;
  /** Encoded send frames not acknowledged yet, by request id (resent when rate limited). */
  private readonly unacked = new Map<number, Uint8Array>();
  /** cids are unique per sender user, across its connections. */
  private readonly cidPrefix = Math.random().toString(36).slice(2);

  private constructor(private readonly socket: net.Socket) {}

  static async open(tcpPort: number, token: string): Promise<Sender> {
    const socket = net.connect(tcpPort, "127.0.0.1");
    await new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject));
    socket.setNoDelay(true);
    const sender = new Sender(socket);
    const parser = new FrameParser({ maxFrameBytes: 64 << 20 });
    let welcomed = false;
    socket.on("data", (chunk: Buffer) => {
      for (const body of parser.push(chunk)) {
        const f = decodeServerBinary(body);
        if (f.t === "welcome") welcomed = true;
        else if (f.t === "sent") {
          sender.acked++;
          sender.unacked.delete(f.id);
        } else if (f.t === "error" && f.code === "E_RATE_LIMITED" && f.id !== undefined) {
          // Past the server's 500 frames/s (a fast machine sends these faster): resend when told,
          // as a client should.
          const frame = sender.unacked.get(f.id);
          if (frame) setTimeout(() => socket.write(frame), f.retryAfterMs ?? 100);
          else sender.failure ??= JSON.stringify(f);
        } else if (f.t === "error" || f.t === "bye") sender.failure ??= JSON.stringify(f);
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => (sender.failure ??= "the sender's connection closed"));
    socket.write(encodeFramed({ t: "hello", versions: [1], token }));
    await until(() => welcomed || sender.failure !== undefined, "the sender's welcome");
    if (!welcomed) throw new Error(sender.failure);
    return sender;
  }

  /** Sends `count` messages to `conv` with bodies from `body(i)`, at most `window` unacknowledged;
   * resolves once every one is acknowledged; rejects on any error. Returns the bytes of body
   * sent. */
  async sendMany(conv: string, count: number, body: (i: number) => Uint8Array, window = 16): Promise<number> {
    const target = this.acked + count;
    let bytes = 0;
    for (let i = 0; i < count; i++) {
      await until(() => this.nextId - 1 - this.acked < window || this.failure !== undefined, "a send window");
      if (this.failure !== undefined) throw new Error(`send failed: ${this.failure}`);
      const b = body(i);
      bytes += b.byteLength;
      const id = this.nextId++;
      const frame = encodeFramed({
        t: "send",
        id,
        conv,
        cid: `${this.cidPrefix}-${id}`,
        type: "text/plain",
        body: b,
      });
      this.unacked.set(id, frame);
      this.socket.write(frame);
    }
    await until(() => this.acked >= target || this.failure !== undefined, "the last sent", 60_000);
    if (this.failure !== undefined) throw new Error(`send failed: ${this.failure}`);
    return bytes;
  }

  close(): void {
    this.socket.destroy();
  }
}
