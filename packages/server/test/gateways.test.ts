import http from "node:http";
import net from "node:net";
import tls from "node:tls";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import {
  FrameParser,
  decodeServerBinary,
  decodeServerJson,
  encodeBinary,
  encodeFramed,
  encodeJson,
  lengthPrefixed,
} from "@parley/protocol";
import type { ClientFrame, ServerFrame } from "@parley/protocol";
import type { Connection, Session } from "../src/core/connection.ts";
import type { Core } from "../src/core/core.ts";
import { silentLogger } from "../src/core/ports/logger.ts";
import { TcpGateway } from "../src/gateway/tcp/tcp-gateway.ts";
import { WsGateway } from "../src/gateway/ws/ws-gateway.ts";
import { makeCert } from "./test-cert.ts";
import { newTestCore } from "./test-core.ts";

// Both socket gateways against a real Core over real sockets on port 0: the same scenarios on
// TCP and on each WebSocket subprotocol, then what is specific to each.

const MAX_FRAME = 4096;
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

interface Closed {
  code: number;
}

/** A test client over any transport: records decoded frames and how the socket closed. */
interface Client {
  readonly frames: ServerFrame[];
  send(frame: ClientFrame): void;
  /** Raw bytes (TCP: written as is; WS: one binary message). */
  sendRaw(bytes: Uint8Array): void;
  /** One text message (WS only). */
  sendText?(text: string): void;
  /** Resolves when the socket is closed: the bye/close code (TCP without bye: 0). */
  readonly closed: Promise<Closed>;
  waitFor<T extends ServerFrame["t"]>(t: T, timeoutMs?: number): Promise<Extract<ServerFrame, { t: T }>>;
  end(): void;
}

class FrameLog {
  readonly frames: ServerFrame[] = [];
  private waiters: Array<() => void> = [];
  add(f: ServerFrame): void {
    this.frames.push(f);
    for (const w of this.waiters.splice(0)) w();
  }
  async waitFor<T extends ServerFrame["t"]>(t: T, timeoutMs = 3000): Promise<Extract<ServerFrame, { t: T }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.frames.find((f) => f.t === t);
      if (hit) return hit as Extract<ServerFrame, { t: T }>;
      if (Date.now() > deadline)
        throw new Error(`no ${t} frame; got ${JSON.stringify(this.frames.map((f) => f.t))}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }
}

function tcpClient(socket: net.Socket): Client {
  const log = new FrameLog();
  const parser = new FrameParser({ maxFrameBytes: 1 << 20 });
  let bye = 0;
  socket.setNoDelay(true);
  socket.on("data", (chunk: Buffer) => {
    for (const body of parser.push(chunk)) {
      const f = decodeServerBinary(body);
      if (f.t === "bye") bye = f.code;
      log.add(f);
    }
  });
  socket.on("error", () => {});
  const closed = new Promise<Closed>((resolve) => socket.once("close", () => resolve({ code: bye })));
  return {
    frames: log.frames,
    send: (f) => socket.write(encodeFramed(f)),
    sendRaw: (b) => socket.write(b),
    closed,
    waitFor: (t, ms) => log.waitFor(t, ms),
    end: () => socket.end(),
  };
}

async function connectTcp(port: number): Promise<Client> {
  const socket = net.connect(port, "127.0.0.1");
  await new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  return tcpClient(socket);
}

async function connectWs(port: number, protocol: string | undefined, path = "/v1/ws"): Promise<Client> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, protocol === undefined ? [] : [protocol]);
  const log = new FrameLog();
  ws.on("message", (data: Buffer, isBinary) => {
    log.add(isBinary ? decodeServerBinary(new Uint8Array(data)) : decodeServerJson(data.toString("utf8")));
  });
  ws.on("error", () => {});
  const closed = new Promise<Closed>((resolve) => ws.once("close", (code) => resolve({ code })));
  await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
  const binary = ws.protocol === "parley.v1.binary";
  return {
    frames: log.frames,
    send: (f) => (binary ? ws.send(encodeBinary(f)) : ws.send(encodeJson(f))),
    sendRaw: (b) => ws.send(b, { binary: true }),
    sendText: (s) => ws.send(s, { binary: false }),
    closed,
    waitFor: (t, ms) => log.waitFor(t, ms),
    end: () => ws.close(1000),
  };
}

describe("socket gateways", () => {
  let core: Core;
  let tcp: TcpGateway;
  let ws: WsGateway;
  let server: http.Server;
  let tcpPort: number;
  let httpPort: number;
  let token: string;
  let aliceToken: string;
  let bobId: string;
  let opened = 0;
  const closedCalls = new Map<string, number>();

  beforeAll(async () => {
    core = newTestCore({ options: { maxFrameBytes: MAX_FRAME } });
    // Counts Session.closed() per connection, to check the gateways call it exactly once.
    const opener = {
      open(conn: Connection): Session {
        opened++;
        const s = core.open(conn);
        return {
          receive: (f) => s.receive(f),
          closed: () => {
            closedCalls.set(conn.id, (closedCalls.get(conn.id) ?? 0) + 1);
            s.closed();
          },
        };
      },
    };
    tcp = new TcpGateway(opener, { maxFrameBytes: MAX_FRAME, closeGraceMs: 500 });
    tcpPort = await tcp.listen(0, "127.0.0.1");
    ws = new WsGateway(opener, { maxFrameBytes: MAX_FRAME, closeGraceMs: 500 });
    server = http.createServer((_req, res) => res.writeHead(404).end());
    ws.attach(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    httpPort = (server.address() as net.AddressInfo).port;

    await core.register("alice", "password-alice");
    const bob = await core.register("bob", "password-bob");
    bobId = bob.id;
    aliceToken = (await core.login("alice", "password-alice", "test")).token;
    token = aliceToken;
  });

  afterAll(async () => {
    await tcp.close();
    await ws.close();
    await core.shutdown();
    await Promise.all([tcp.connectionsClosed(), ws.connectionsClosed()]);
    await new Promise((resolve) => server.close(resolve));
  });

  afterEach(async () => {
    // Every socket a test opened is closed by now or shortly: Session.closed() ran once each.
    await Promise.all([tcp.connectionsClosed(), ws.connectionsClosed()]);
    for (const [id, n] of closedCalls) expect(n, id).toBe(1);
  });

  const transports: Array<[string, () => Promise<Client>]> = [
    ["tcp", () => connectTcp(tcpPort)],
    ["ws binary", () => connectWs(httpPort, "parley.v1.binary")],
    ["ws json", () => connectWs(httpPort, "parley.v1.json")],
  ];

  describe.each(transports)("%s", (_name, connect) => {
    async function ready(): Promise<Client> {
      const c = await connect();
      c.send({ t: "hello", versions: [1], token });
      await c.waitFor("welcome");
      return c;
    }

    it("says welcome to a hello, answers requests and pushes messages", async () => {
      const c = await ready();
      expect((await c.waitFor("welcome")).maxFrameBytes).toBe(MAX_FRAME);
      c.send({ t: "ping", n: 7 });
      expect((await c.waitFor("pong")).n).toBe(7);
      const p = await core.authenticate(token);
      const conv = await core.createDirect(p, bobId);
      c.send({
        t: "send",
        id: 1,
        conv: conv.id,
        cid: `c-${Math.random()}`,
        type: "text/plain",
        body: text("hi"),
      });
      const sent = await c.waitFor("sent");
      expect(sent.id).toBe(1);
      const push = await c.waitFor("push");
      expect(push.u.k === "msg" || push.u.k === "conv").toBe(true);
      c.end();
      await c.closed;
    });

    /** A client connected before some other connection misbehaved is still served. */
    async function stillServed(other: Client): Promise<void> {
      const n = Math.floor(Math.random() * 1e6);
      other.send({ t: "ping", n });
      expect((await other.waitFor("pong")).n).toBe(n);
      other.end();
      await other.closed;
    }

    it("refuses a frame before hello with E_NOT_AUTHENTICATED and 4100", async () => {
      const other = await ready();
      const c = await connect();
      c.send({ t: "ping", n: 1 });
      expect((await c.waitFor("error")).code).toBe("E_NOT_AUTHENTICATED");
      expect((await c.closed).code).toBe(4100);
      // Every transport: the error, then bye with the disconnect code, then the close.
      expect(c.frames.map((f) => f.t)).toEqual(["error", "bye"]);
      expect(c.frames[1]).toMatchObject({ t: "bye", code: 4100 });
      await stillServed(other);
    });

    it("closes an oversized frame with E_FRAME_TOO_LARGE and 4100; others keep working", async () => {
      const other = await ready();
      const c = await ready();
      c.send({
        t: "send",
        id: 2,
        conv: "x",
        cid: "big",
        type: "text/plain",
        body: new Uint8Array(MAX_FRAME),
      });
      const err = await c.waitFor("error");
      expect(err.code).toBe("E_FRAME_TOO_LARGE");
      expect(err.id).toBeUndefined();
      expect((await c.closed).code).toBe(4100);
      other.send({ t: "ping", n: 9 });
      expect((await other.waitFor("pong")).n).toBe(9);
      other.end();
      await other.closed;
    });

    it("closes malformed bytes with E_BAD_FRAME and 4100", async () => {
      const other = await ready();
      const c = await connect();
      // 0xc1 is never valid MessagePack; as JSON text it is not JSON either.
      const junk = new Uint8Array([0xc1, 0xff, 0x00]);
      if (c.sendText && _name === "ws json") c.sendText("{not json");
      else c.sendRaw(_name === "tcp" ? lengthPrefixed(junk) : junk);
      expect((await c.waitFor("error")).code).toBe("E_BAD_FRAME");
      expect((await c.closed).code).toBe(4100);
      await stillServed(other);
    });

    it("closes an unknown frame type with E_UNKNOWN_FRAME and 4100", async () => {
      const other = await ready();
      const c = await ready();
      c.send({ t: "teleport" } as unknown as ClientFrame);
      expect((await c.waitFor("error")).code).toBe("E_UNKNOWN_FRAME");
      expect((await c.closed).code).toBe(4100);
      await stillServed(other);
    });

    it("says bye 4101 when the device is revoked", async () => {
      const login = await core.login("alice", "password-alice", "revoked");
      const c = await connect();
      c.send({ t: "hello", versions: [1], token: login.token });
      await c.waitFor("welcome");
      const p = await core.authenticate(login.token);
      await core.revokeDevice(p, p.device);
      expect((await c.closed).code).toBe(4101);
    });
  });

  describe("tcp", () => {
    it("reads frames delivered one byte at a time", async () => {
      const socket = net.connect(tcpPort, "127.0.0.1");
      await new Promise((resolve) => socket.once("connect", resolve));
      const c = tcpClient(socket);
      const bytes = new Uint8Array([
        ...encodeFramed({ t: "hello", versions: [1], token }),
        ...encodeFramed({ t: "ping", n: 3 }),
      ]);
      for (const b of bytes) {
        await new Promise<void>((resolve) => socket.write(new Uint8Array([b]), () => resolve()));
      }
      await c.waitFor("welcome");
      expect((await c.waitFor("pong")).n).toBe(3);
      c.end();
      await c.closed;
    });

    it("reads several frames from one chunk", async () => {
      const c = await connectTcp(tcpPort);
      c.sendRaw(
        new Uint8Array([
          ...encodeFramed({ t: "hello", versions: [1], token }),
          ...encodeFramed({ t: "ping", n: 1 }),
          ...encodeFramed({ t: "ping", n: 2 }),
        ]),
      );
      await c.waitFor("welcome");
      await new Promise((r) => setTimeout(r, 50));
      expect(c.frames.filter((f) => f.t === "pong").map((f) => (f as { n: number }).n)).toEqual([1, 2]);
      c.end();
      await c.closed;
    });

    it("refuses a length prefix above the limit before reading the body", async () => {
      const c = await connectTcp(tcpPort);
      const header = new Uint8Array(4);
      new DataView(header.buffer).setUint32(0, 0x7fffffff);
      c.sendRaw(header);
      expect((await c.waitFor("error")).code).toBe("E_FRAME_TOO_LARGE");
      expect((await c.closed).code).toBe(4100);
    });

    it("calls Session.closed once when the client vanishes", async () => {
      const before = opened;
      const c = await connectTcp(tcpPort);
      c.send({ t: "hello", versions: [1], token });
      await c.waitFor("welcome");
      expect(opened).toBe(before + 1);
      (c as unknown as { end(): void }).end();
      await c.closed;
    });
  });

  describe("websocket", () => {
    it("speaks JSON when the client offers no subprotocol", async () => {
      const c = await connectWs(httpPort, undefined);
      c.sendText!(encodeJson({ t: "hello", versions: [1], token }));
      await c.waitFor("welcome");
      c.end();
      await c.closed;
    });

    it("refuses a text message on the binary subprotocol", async () => {
      const c = await connectWs(httpPort, "parley.v1.binary");
      c.sendText!(encodeJson({ t: "hello", versions: [1], token }));
      const err = await c.waitFor("error");
      expect(err.code).toBe("E_BAD_FRAME");
      expect((await c.closed).code).toBe(4100);
    });

    it("refuses a binary message on the JSON subprotocol", async () => {
      const c = await connectWs(httpPort, "parley.v1.json");
      c.sendRaw(encodeBinary({ t: "hello", versions: [1], token }));
      expect((await c.waitFor("error")).code).toBe("E_BAD_FRAME");
      expect((await c.closed).code).toBe(4100);
    });

    it("answers 404 to an upgrade on another path", async () => {
      const failed = new Promise<number>((resolve) => {
        const s = new WebSocket(`ws://127.0.0.1:${httpPort}/elsewhere`);
        s.on("unexpected-response", (_req, res) => {
          resolve(res.statusCode ?? 0);
          s.terminate();
        });
        s.on("error", () => {});
      });
      expect(await failed).toBe(404);
    });
  });
});

describe("websocket binary messages of every length", () => {
  // Frames with 7-bit, 16-bit and 64-bit lengths (pong, pushes of about 4 KiB and 64 KiB, one of
  // 300 KB) come through whole and in order, among frames the connection corks per turn.
  let core: Core;
  let ws: WsGateway;
  let server: http.Server;

  beforeAll(async () => {
    core = newTestCore({ options: { maxFrameBytes: 1 << 20 } });
    ws = new WsGateway(core, { maxFrameBytes: 1 << 20, closeGraceMs: 500 });
    server = http.createServer((_req, res) => res.writeHead(404).end());
    ws.attach(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  });

  afterAll(async () => {
    await ws.close();
    await core.shutdown();
    await ws.connectionsClosed();
    await new Promise((resolve) => server.close(resolve));
  });

  it("delivers pushes whose frames cross each length encoding", async () => {
    await core.register("carol", "password-carol");
    const dave = await core.register("dave", "password-dave");
    const { token } = await core.login("carol", "password-carol", "test");
    const conv = await core.createDirect(await core.authenticate(token), dave.id);
    const c = await connectWs((server.address() as net.AddressInfo).port, "parley.v1.binary");
    c.send({ t: "hello", versions: [1], token });
    await c.waitFor("welcome");
    c.send({ t: "ping", n: 1 });
    expect((await c.waitFor("pong")).n).toBe(1);
    const range = (from: number, to: number, step: number) =>
      Array.from({ length: Math.floor((to - from) / step) + 1 }, (_, i) => from + i * step);
    const sizes = [0, 1, 100, ...range(3_900, 4_100, 20), ...range(65_250, 65_550, 6), 300_000];
    const body = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + n) & 0xff);
    sizes.forEach((n, i) =>
      c.send({ t: "send", id: i + 1, conv: conv.id, cid: `len-${n}`, type: "bench", body: body(n) }),
    );
    const deadline = Date.now() + 10_000;
    const pushed = () => c.frames.filter((f) => f.t === "push" && f.u.k === "msg");
    while (pushed().length < sizes.length && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const bodies = pushed().map((f) => (f.t === "push" && f.u.k === "msg" ? f.u.msg.body : undefined));
    expect(bodies.map((b) => b?.length)).toEqual(sizes);
    sizes.forEach((n, i) => expect(Buffer.compare(bodies[i]!, body(n)), `body of ${n} bytes`).toBe(0));
    c.end();
    expect((await c.closed).code).toBe(1000);
  });
});

describe("tcp gateway over TLS", () => {
  const made = makeCert();

  it("speaks the same protocol inside TLS", async (ctx) => {
    if (!made) {
      if (process.env.CI === "true") throw new Error("openssl is required under CI");
      ctx.skip("openssl is not installed: cannot make a test certificate");
    }
    const { cert, key } = made!;
    const core = newTestCore();
    await core.register("carol", "password-carol");
    const login = await core.login("carol", "password-carol", "tls");
    const gateway = new TcpGateway(core, { maxFrameBytes: MAX_FRAME, tls: { cert, key } });
    const port = await gateway.listen(0, "127.0.0.1");
    const socket = tls.connect({ port, host: "127.0.0.1", ca: cert, servername: "localhost" });
    await new Promise((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
    const c = tcpClient(socket);
    c.send({ t: "hello", versions: [1], token: login.token });
    await c.waitFor("welcome");
    await gateway.close();
    await core.shutdown();
    expect((await c.closed).code).toBe(4000);
    await gateway.connectionsClosed();
  });
});

describe("slow consumers", () => {
  // A hand-written Session that answers a ping by sending ~1 MiB per event-loop turn until the
  // gateway reports a slow consumer (through its logger) or 64 MiB have gone: the kernel's
  // socket buffers absorb a few MiB first, how many depends on the machine.
  const FILL = new Uint8Array(60 * 1024);
  const CAP = 64 << 20;
  let closedCount = 0;
  let dropped = false;
  let sentBytes = 0;
  const logger = { ...silentLogger, warn: () => void (dropped = true) };
  const opener = {
    open(conn: Connection): Session {
      let seq = 0;
      const burst = (): void => {
        for (let i = 0; i < 16; i++) {
          seq++;
          sentBytes += FILL.length;
          const msg = { conv: "c", seq, from: "u", dev: "d", cid: `${seq}`, type: "x", body: FILL, ts: 1 };
          conn.send({ t: "push", useq: seq, u: { k: "msg", msg } });
        }
        if (!dropped && sentBytes < CAP) setImmediate(burst);
      };
      return {
        receive: (f) => {
          if (f.t === "ping") burst();
        },
        closed: () => closedCount++,
      };
    },
  };

  beforeEach(() => {
    closedCount = 0;
    dropped = false;
    sentBytes = 0;
  });

  it("drops a TCP client that does not read, with bye 4001 after what was queued", async () => {
    const gateway = new TcpGateway(opener, { maxFrameBytes: MAX_FRAME, maxOutboundBytes: 1 << 20, logger });
    const port = await gateway.listen(0, "127.0.0.1");
    const socket = net.connect(port, "127.0.0.1");
    await new Promise((resolve) => socket.once("connect", resolve));
    socket.pause();
    socket.write(encodeFramed({ t: "ping", n: 1 }));
    while (!dropped && sentBytes < CAP) await new Promise((r) => setTimeout(r, 20));
    expect(dropped).toBe(true);
    const c = tcpClient(socket);
    socket.resume();
    expect((await c.closed).code).toBe(4001);
    const pushes = c.frames.filter((f) => f.t === "push").length;
    expect(pushes * FILL.length).toBeLessThan(sentBytes);
    await gateway.close();
    await gateway.connectionsClosed();
    expect(closedCount).toBe(1);
  });

  it("drops a WebSocket client that does not read, closing with 4001", async () => {
    const gateway = new WsGateway(opener, { maxFrameBytes: MAX_FRAME, maxOutboundBytes: 1 << 20, logger });
    const server = http.createServer();
    gateway.attach(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as net.AddressInfo).port;
    const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/ws`, ["parley.v1.binary"], { maxPayload: 1 << 20 });
    await new Promise((resolve) => ws.once("open", resolve));
    let pushes = 0;
    ws.on("message", () => pushes++);
    const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)));
    ws.pause();
    ws.send(encodeBinary({ t: "ping", n: 1 }));
    while (!dropped && sentBytes < CAP) await new Promise((r) => setTimeout(r, 20));
    expect(dropped).toBe(true);
    ws.resume();
    expect(await closed).toBe(4001);
    expect(pushes * FILL.length).toBeLessThan(sentBytes);
    await gateway.close();
    await gateway.connectionsClosed();
    expect(closedCount).toBe(1);
    await new Promise((resolve) => server.close(resolve));
  });
});
