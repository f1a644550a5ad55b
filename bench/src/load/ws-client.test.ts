import { once } from "node:events";
import { createServer, type AddressInfo, type Server } from "node:net";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { WebSocketServer, type WebSocket } from "ws";
import {
  OP_BINARY,
  OP_CLOSE,
  OP_CONTINUATION,
  OP_PING,
  OP_PONG,
  OP_TEXT,
  WsClient,
  WsFrameReader,
  WsProtocolError,
  WsUpgradeRefused,
  clientFrame,
} from "./ws-client.ts";

// The load client's WebSocket client: its frame reader against frames written here by the RFC
// (split into reads at every possible place, the read buffer reused between reads as the load
// client does), and the whole client against the `ws` library's server, which the Parley server
// uses: both directions, every length encoding, fragments, ping, the closing handshake, and the
// handshakes it must refuse.

/** A server's frame, unmasked. `lengthForm` forces a longer length encoding than needed (legal
 * to read, if not to write). */
function serverFrame(
  opcode: number,
  payload: Uint8Array,
  fin = true,
  lengthForm: 7 | 16 | 64 = payload.length < 126 ? 7 : payload.length < 65_536 ? 16 : 64,
): Uint8Array {
  const head = lengthForm === 7 ? 2 : lengthForm === 16 ? 4 : 10;
  const out = new Uint8Array(head + payload.length);
  out[0] = (fin ? 0x80 : 0) | opcode;
  const view = new DataView(out.buffer);
  if (lengthForm === 7) out[1] = payload.length;
  else if (lengthForm === 16) {
    out[1] = 126;
    view.setUint16(2, payload.length);
  } else {
    out[1] = 127;
    view.setBigUint64(2, BigInt(payload.length));
  }
  out.set(payload, head);
  return out;
}

const b64 = (bytes: Uint8Array | number[]): string => Buffer.from(bytes).toString("base64");

/** Feeds `bytes` to a reader in reads of the given sizes, each copied into one reused buffer that
 * is scribbled over after the read (as the load client's shared read buffer is), and returns what
 * came out, each payload copied (as base64) in the sink. */
function readAll(reader: WsFrameReader, bytes: Uint8Array, cuts: number[]): Array<[number, string]> {
  const shared = new Uint8Array(bytes.length + 1);
  const out: Array<[number, string]> = [];
  let at = 0;
  const sizes = [...cuts, bytes.length];
  for (const size of sizes) {
    const n = Math.min(size, bytes.length - at);
    shared.set(bytes.subarray(at, at + n));
    reader.push(shared.subarray(0, n), (op, payload) => out.push([op, b64(payload)]));
    shared.fill(0xee);
    at += n;
    if (at === bytes.length) break;
  }
  return out;
}

const payloadArb = fc.oneof(
  fc.uint8Array({ maxLength: 300 }),
  fc
    .constantFrom(0, 125, 126, 127, 65_535, 65_536, 70_000)
    .map((n) => Uint8Array.from({ length: n }, (_, i) => i % 251)),
);

/** A message sent in 1 to 4 frames, a control frame after any of them. */
const messageArb = fc.record({
  opcode: fc.constantFrom(OP_BINARY, OP_TEXT),
  payload: payloadArb,
  cuts: fc.array(fc.nat(), { maxLength: 3 }),
  pings: fc.array(fc.option(fc.uint8Array({ maxLength: 125 }), { freq: 2 }), { maxLength: 4 }),
  longLengths: fc.boolean(),
});

describe("WsFrameReader", () => {
  it("reads every message and control frame, however the bytes are split into reads", () => {
    fc.assert(
      fc.property(
        fc.array(messageArb, { maxLength: 6 }),
        fc.array(fc.integer({ min: 1, max: 40_000 })),
        (messages, reads) => {
          const frames: Uint8Array[] = [];
          const expected: Array<[number, string]> = [];
          for (const m of messages) {
            const cuts = [...new Set(m.cuts.map((c) => c % (m.payload.length + 1)))].sort((a, b) => a - b);
            const bounds = [0, ...cuts, m.payload.length];
            for (let i = 0; i + 1 < bounds.length; i++) {
              const piece = m.payload.subarray(bounds[i], bounds[i + 1]);
              const last = i + 2 === bounds.length;
              const form = m.longLengths ? 64 : undefined;
              frames.push(serverFrame(i === 0 ? m.opcode : OP_CONTINUATION, piece, last, form));
              if (last) expected.push([m.opcode, b64(m.payload)]);
              const ping = m.pings[i];
              if (ping) {
                frames.push(serverFrame(OP_PING, ping));
                expected.push([OP_PING, b64(ping)]);
              }
            }
          }
          const bytes = Buffer.concat(frames);
          expect(readAll(new WsFrameReader(1 << 20), bytes, reads)).toEqual(expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("reads one byte at a time", () => {
    const bytes = Buffer.concat([
      serverFrame(OP_BINARY, Uint8Array.of(1, 2, 3)),
      serverFrame(OP_BINARY, new Uint8Array(300).fill(7), true, 64),
      serverFrame(OP_PONG, Uint8Array.of(9)),
      serverFrame(OP_CLOSE, Uint8Array.of(0x03, 0xe8)),
    ]);
    const out = readAll(new WsFrameReader(1 << 20), bytes, Array<number>(bytes.length).fill(1));
    expect(out).toEqual([
      [OP_BINARY, b64([1, 2, 3])],
      [OP_BINARY, b64(Array<number>(300).fill(7))],
      [OP_PONG, b64([9])],
      [OP_CLOSE, b64([0x03, 0xe8])],
    ]);
  });

  const refused: Array<[string, Uint8Array[], RegExp]> = [
    ["a masked frame", [Uint8Array.of(0x82, 0x81, 0, 0, 0, 0, 5)], /masked/],
    ["reserved bits", [Uint8Array.of(0xc2, 0x00)], /reserved bits/],
    ["reserved opcode 3", [Uint8Array.of(0x83, 0x00)], /reserved opcode 3/],
    ["reserved opcode 11", [Uint8Array.of(0x8b, 0x00)], /reserved opcode 11/],
    ["a fragmented ping", [serverFrame(OP_PING, new Uint8Array(1), false)], /fragmented control/],
    ["a ping of 126 bytes", [serverFrame(OP_PING, new Uint8Array(126))], /over 125/],
    ["a continuation first", [serverFrame(OP_CONTINUATION, new Uint8Array(1))], /no message to continue/],
    [
      "a message inside a fragmented one",
      [serverFrame(OP_BINARY, new Uint8Array(1), false), serverFrame(OP_BINARY, new Uint8Array(1))],
      /inside a fragmented/,
    ],
    ["a frame over the limit", [serverFrame(OP_BINARY, new Uint8Array(1025))], /over the limit of 1024/],
    [
      "fragments over the limit",
      [serverFrame(OP_BINARY, new Uint8Array(1000), false), serverFrame(OP_CONTINUATION, new Uint8Array(25))],
      /over 1024 bytes/,
    ],
    ["a length over 2^53", [Uint8Array.of(0x82, 127, 0x00, 0x20, 0, 0, 0, 0, 0, 0)], /over 2\^53/],
  ];
  for (const [what, frames, message] of refused) {
    it(`refuses ${what}, in one read or byte by byte`, () => {
      const bytes = Buffer.concat(frames);
      for (const reads of [[], Array<number>(bytes.length).fill(1)]) {
        const run = () => readAll(new WsFrameReader(1024), bytes, reads);
        expect(run).toThrow(WsProtocolError);
        expect(run).toThrow(message);
      }
    });
  }

  it("on arbitrary bytes, reads frames or throws WsProtocolError, nothing else", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 400 }),
        fc.array(fc.integer({ min: 1, max: 50 })),
        (bytes, reads) => {
          try {
            for (const [, payload] of readAll(new WsFrameReader(1024), bytes, reads)) {
              expect(Buffer.from(payload, "base64").length).toBeLessThanOrEqual(bytes.length);
            }
          } catch (err) {
            expect(err).toBeInstanceOf(WsProtocolError);
          }
        },
      ),
      { numRuns: 5000 },
    );
  });
});

describe("clientFrame", () => {
  it("writes FIN, the opcode, the mask bit, the shortest length and a zero key before the payload", () => {
    for (const [length, head] of [
      [0, [0x82, 0x80]],
      [125, [0x82, 0x80 | 125]],
      [126, [0x82, 0x80 | 126, 0, 126]],
      [65_535, [0x82, 0x80 | 126, 0xff, 0xff]],
      [65_536, [0x82, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0]],
    ] as const) {
      const payload = Uint8Array.from({ length }, (_, i) => i & 0xff);
      const frame = clientFrame(OP_BINARY, payload);
      expect([...frame.subarray(0, head.length)]).toEqual(head);
      expect([...frame.subarray(head.length, head.length + 4)]).toEqual([0, 0, 0, 0]);
      expect(Buffer.compare(frame.subarray(head.length + 4), payload)).toBe(0);
    }
  });
});

describe("WsClient against the ws library's server", () => {
  let wss: WebSocketServer | undefined;
  let raw: Server | undefined;
  afterEach(async () => {
    if (wss) await new Promise((resolve) => wss!.close(resolve));
    if (raw) await new Promise((resolve) => raw!.close(resolve));
    wss = raw = undefined;
  });

  async function startWss(options: ConstructorParameters<typeof WebSocketServer>[0] = {}): Promise<string> {
    wss = new WebSocketServer({
      host: "127.0.0.1",
      port: 0,
      path: "/v1/ws",
      handleProtocols: (offered) => (offered.has("parley.v1.binary") ? "parley.v1.binary" : false),
      ...options,
    });
    await once(wss, "listening");
    return `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/v1/ws`;
  }

  interface Events {
    opened: Promise<void>;
    messages: Uint8Array[];
    closed: Promise<Error | undefined>;
    code: Promise<number | undefined>;
  }
  function client(url: string, readBuffer?: Uint8Array): { c: WsClient } & Events {
    let opened!: () => void;
    let closed!: (err: Error | undefined) => void;
    let code!: (code: number | undefined) => void;
    const messages: Uint8Array[] = [];
    const c = new WsClient(
      { url, protocol: "parley.v1.binary", ...(readBuffer ? { readBuffer } : {}), maxMessageBytes: 1 << 20 },
      {
        open: () => opened(),
        message: (data) => messages.push(data.slice()),
        close: (err, status) => {
          closed(err);
          code(status);
        },
      },
    );
    return {
      c,
      messages,
      opened: new Promise((resolve) => (opened = resolve)),
      closed: new Promise((resolve) => (closed = resolve)),
      code: new Promise((resolve) => (code = resolve)),
    };
  }
  const until = async (check: () => boolean): Promise<void> => {
    while (!check()) await new Promise((resolve) => setTimeout(resolve, 5));
  };
  const sizes = [0, 1, 125, 126, 65_535, 65_536, 300_000];
  const payload = (n: number, seed: number) =>
    Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

  it("exchanges binary messages of every length encoding both ways, and fragmented ones", async () => {
    const url = await startWss();
    const server = once(wss!, "connection") as Promise<[WebSocket]>;
    const { c, opened, messages, closed } = client(url, new Uint8Array(64 * 1024));
    await opened;
    const [ws] = await server;
    const received: Buffer[] = [];
    ws.on("message", (data: Buffer) => received.push(data));
    for (const [i, n] of sizes.entries()) c.send(payload(n, i));
    for (const [i, n] of sizes.entries()) ws.send(payload(n, 100 + i));
    ws.send(payload(10, 1), { fin: false });
    ws.send(payload(70_000, 2), { fin: false });
    ws.send(payload(5, 3), { fin: true });
    await until(() => received.length === sizes.length && messages.length === sizes.length + 1);
    expect(received.map((b) => b.length)).toEqual(sizes);
    for (const [i, n] of sizes.entries()) {
      expect(Buffer.compare(received[i]!, payload(n, i))).toBe(0);
      expect(Buffer.compare(messages[i]!, payload(n, 100 + i))).toBe(0);
    }
    expect(
      Buffer.compare(
        messages[sizes.length]!,
        Buffer.concat([payload(10, 1), payload(70_000, 2), payload(5, 3)]),
      ),
    ).toBe(0);
    c.terminate();
    expect(await closed).toBeUndefined();
  });

  it("keeps two connections that share a read buffer apart", async () => {
    const url = await startWss();
    const shared = new Uint8Array(64 * 1024);
    wss!.on("connection", (ws: WebSocket) => ws.on("message", (data: Buffer) => ws.send(data)));
    const a = client(url, shared);
    const b = client(url, shared);
    await Promise.all([a.opened, b.opened]);
    for (let i = 0; i < 50; i++) {
      a.c.send(payload(100 + i * 997, i));
      b.c.send(payload(50 + i * 1_301, 1000 + i));
    }
    await until(() => a.messages.length === 50 && b.messages.length === 50);
    for (let i = 0; i < 50; i++) {
      expect(Buffer.compare(a.messages[i]!, payload(100 + i * 997, i))).toBe(0);
      expect(Buffer.compare(b.messages[i]!, payload(50 + i * 1_301, 1000 + i))).toBe(0);
    }
    a.c.terminate();
    b.c.terminate();
  });

  it("answers a ping with a pong of the same data, and a close with the server's code", async () => {
    const url = await startWss();
    const server = once(wss!, "connection") as Promise<[WebSocket]>;
    const { c, opened, closed, code } = client(url);
    await opened;
    expect(c.handshakeBytes).toBeGreaterThan(100);
    const [ws] = await server;
    const pong = once(ws, "pong") as Promise<[Buffer]>;
    ws.ping(Buffer.from("are you there"));
    expect((await pong)[0].toString()).toBe("are you there");
    const serverClosed = once(ws, "close") as Promise<[number, Buffer]>;
    ws.close(4001, "bye");
    expect((await serverClosed)[0]).toBe(4001);
    expect(await closed).toBeUndefined();
    expect(await code).toBe(4001);
  });

  it("closes with an error on a text message", async () => {
    const url = await startWss();
    wss!.on("connection", (ws: WebSocket) => ws.send("text"));
    const { closed } = client(url);
    expect(await closed).toMatchObject({
      name: "WsProtocolError",
      message: expect.stringMatching(/text message/),
    });
  });

  it("refuses a server that picks no subprotocol, and a path the server does not serve", async () => {
    const url = await startWss({ handleProtocols: () => false });
    expect((await client(url).closed)?.message).toMatch(/chose subprotocol none/);
    const refused = await client(url.replace("/v1/ws", "/elsewhere")).closed;
    expect(refused?.message).toMatch(/unexpected server response: HTTP\/1\.1 400/);
    expect(refused).toBeInstanceOf(WsUpgradeRefused);
    expect((refused as WsUpgradeRefused).status).toBe(400);
  });

  it("refuses a handshake whose accept key is wrong, and one cut short", async () => {
    let answer = "";
    raw = createServer((socket) => {
      socket.once("data", () => socket.end(answer));
    });
    raw.listen(0, "127.0.0.1");
    await once(raw, "listening");
    const url = `ws://127.0.0.1:${(raw.address() as AddressInfo).port}/v1/ws`;
    answer =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\nSec-WebSocket-Protocol: parley.v1.binary\r\n\r\n";
    expect((await client(url).closed)?.message).toMatch(/Accept does not match/);
    answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n";
    expect((await client(url).closed)?.message).toMatch(/closed during the handshake/);
  });

  it("reports a connection that ends without a close frame", async () => {
    const url = await startWss();
    wss!.on("connection", (ws: WebSocket) => ws.terminate());
    const { opened, closed, code } = client(url);
    await opened;
    expect((await closed)?.message).toMatch(/without a close frame/);
    expect(await code).toBeUndefined();
  });
});
