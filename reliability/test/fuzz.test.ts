import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { WebSocketServer } from "ws";
import { encodeBinary, encodeFramed } from "@parley/protocol";
import type { ServerFrame } from "@parley/protocol";
import { runCase } from "../src/fuzz/connection.ts";
import { runFuzz } from "../src/fuzz/fuzz.ts";
import { CaseGenerator, type FuzzCase, type Unit } from "../src/fuzz/generate.ts";
import { ConnectionOracle, checkCloseCode, checkServerFrame } from "../src/fuzz/oracle.ts";
import { type Prediction, predict } from "../src/fuzz/predict.ts";
import { type Transport, encodeFor, prefixed } from "../src/fuzz/wire.ts";

// The frame fuzzer: its oracle flags what it must (unit tests and fake servers that misbehave),
// its predictions follow the protocol, its generator is reproducible and covers every kind of
// bad input, and 10^4 frames against a real server process find no violation.

const MAX = 65536;
const TOKEN = "valid-token";
const ctx = { maxFrameBytes: MAX, tokens: new Set([TOKEN]) };
const targets = { convs: ["c_1", "c_2"], users: ["u_1", "u_2"], tokens: [TOKEN], maxFrameBytes: MAX };

function fuzzCase(transport: Transport, units: Unit[], login = false): FuzzCase {
  return { seed: 0, index: 0, transport, login, account: 0, units, cuts: [], end: "close" };
}

const unit = (transport: Transport, frame: unknown): Unit => ({
  label: "test",
  ...encodeFor(transport, frame),
});

describe("checkServerFrame", () => {
  it("flags an undocumented error code, a wrong retry flag and E_INTERNAL", () => {
    const problem = (value: unknown): string | undefined => checkServerFrame(value).problem;
    expect(problem({ t: "error", code: "E_NOPE", message: "", retry: false })).toBe(
      'undocumented error code "E_NOPE"',
    );
    expect(problem({ t: "error", code: "E_RATE_LIMITED", message: "", retry: false })).toBe(
      "error E_RATE_LIMITED with retry=false, documented true",
    );
    expect(problem({ t: "error", code: "E_INTERNAL", message: "boom", retry: true })).toBe(
      "E_INTERNAL (a server bug): boom",
    );
  });

  it("flags an undocumented bye code and anything that is not a server frame", () => {
    expect(checkServerFrame({ t: "bye", code: 4999, reason: "" }).problem).toBe(
      "undocumented disconnect code 4999 in bye",
    );
    expect(checkServerFrame({ t: "bye", code: 4005, reason: "x" }).problem).toBe(
      "bye 4005 (internal error): x",
    );
    expect(checkServerFrame({ t: "hello", versions: [1], token: "x" }).problem).toMatch(
      /^invalid server frame/,
    );
    expect(checkServerFrame([1, 2]).problem).toMatch(/^invalid server frame/);
  });

  it("accepts documented frames", () => {
    const ok: ServerFrame[] = [
      { t: "error", id: 3, code: "E_NOT_FOUND", message: "no such conversation", retry: false },
      { t: "bye", code: 4100, reason: "E_BAD_FRAME" },
      { t: "pong", n: 1 },
    ];
    for (const f of ok) expect(checkServerFrame(f)).toEqual({ frame: f });
  });
});

describe("checkCloseCode", () => {
  it("accepts documented disconnect codes and only the predicted standard ones", () => {
    expect(checkCloseCode(4100)).toBeUndefined();
    expect(checkCloseCode(4001)).toBeUndefined();
    expect(checkCloseCode(1007, new Set([1007]))).toBeUndefined();
    expect(checkCloseCode(1007)).toMatch(/nothing sent called for/);
    expect(checkCloseCode(1011)).toBe("undocumented close code 1011");
    expect(checkCloseCode(4200)).toBe("undocumented close code 4200");
    expect(checkCloseCode(1006)).toBe("undocumented close code 1006");
  });
});

describe("ConnectionOracle", () => {
  const run = (prediction: Prediction, feed: (o: ConnectionOracle) => void): string[] => {
    const problems: string[] = [];
    const o = new ConnectionOracle(prediction, (p) => problems.push(p));
    feed(o);
    o.finish();
    return problems;
  };
  const open = predict(fuzzCase("tcp", [unit("tcp", { t: "sync", id: 5, cursor: 0 })], true), ctx);

  it("flags a close of a connection predicted to stay open", () => {
    const problems = run(open, (o) => {
      o.value({
        t: "welcome",
        version: 1,
        user: "u",
        device: "d",
        heartbeatMs: 1,
        maxFrameBytes: 1,
        serverTime: 1,
        head: 0,
      });
      o.value({ t: "error", code: "E_BAD_FRAME", message: "", retry: false });
      o.value({ t: "bye", code: 4100, reason: "" });
      o.closed(undefined, false);
    });
    expect(problems).toEqual([
      "error E_BAD_FRAME; predicted to stay open",
      "closed with 4100; predicted to stay open",
    ]);
  });

  it("flags a missing reply, a reply to no request, and a reply of the wrong type", () => {
    expect(run(open, (o) => o.closed(undefined, true))).toEqual([
      "no welcome after a valid hello",
      "no reply to sync id 5",
    ]);
    const problems = run(open, (o) => {
      o.value({ t: "ok", id: 5 });
      o.value({ t: "ok", id: 6 });
    });
    expect(problems).toEqual([
      "ok reply with id 5 that answers no request of that type",
      "ok reply with id 6 that answers no request of that type",
      "no welcome after a valid hello",
      "no reply to sync id 5",
    ]);
  });

  it("matches the replies of requests that share an id, in any order (found by the long run)", () => {
    const shared = predict(
      fuzzCase(
        "tcp",
        [
          unit("tcp", { t: "send", id: 7, conv: "c", cid: "m", type: "text/plain", body: new Uint8Array() }),
          unit("tcp", { t: "react", id: 7, conv: "c", seq: 1, emoji: "x", on: true }),
        ],
        true,
      ),
      ctx,
    );
    const welcome = {
      t: "welcome",
      version: 1,
      user: "u",
      device: "d",
      heartbeatMs: 1,
      maxFrameBytes: 1,
      serverTime: 1,
      head: 0,
    };
    const error = { t: "error", id: 7, code: "E_NOT_FOUND", message: "", retry: false };
    const sent = { t: "sent", id: 7, conv: "c", cid: "m", seq: 1, ts: 1 };
    for (const order of [
      [error, sent],
      [sent, error],
    ]) {
      expect(run(shared, (o) => [welcome, ...order].forEach((f) => o.value(f)))).toEqual([]);
    }
    expect(run(shared, (o) => [welcome, error, error, error].forEach((f) => o.value(f)))).toEqual([
      "error reply with id 7 that answers no request",
    ]);
    expect(run(shared, (o) => [welcome, error, error, sent].forEach((f) => o.value(f)))).toEqual([
      "more replies than requests with id 7",
    ]);
    expect(run(shared, (o) => [welcome, error].forEach((f) => o.value(f)))).toEqual([
      "no reply to send or react id 7",
    ]);
  });

  it("flags the wrong error code, and a bye that does not match it", () => {
    const tooLarge = predict(
      fuzzCase("tcp", [{ label: "t", bytes: prefixed(MAX + 1, new Uint8Array()), text: false }]),
      ctx,
    );
    const problems = run(tooLarge, (o) => {
      o.value({ t: "error", code: "E_BAD_FRAME", message: "", retry: false });
      o.value({ t: "bye", code: 4101, reason: "" });
      o.closed(undefined, false);
    });
    expect(problems).toEqual([
      "error E_BAD_FRAME; predicted to close with E_FRAME_TOO_LARGE",
      "bye 4101 after E_BAD_FRAME, documented 4100",
    ]);
  });

  it("flags a WebSocket close code that differs from the bye, and a close with no bye", () => {
    const doomed = predict(fuzzCase("ws-binary", [unit("ws-binary", { t: "ping", n: 1 })]), ctx);
    const differs = run(doomed, (o) => {
      o.value({ t: "error", code: "E_NOT_AUTHENTICATED", message: "", retry: false });
      o.value({ t: "bye", code: 4100, reason: "" });
      o.closed(4102, false);
    });
    expect(differs).toEqual(["WebSocket close 4102 differs from bye 4100"]);
    expect(run(doomed, (o) => o.closed(undefined, false))).toEqual([
      "the server closed the connection without a bye",
    ]);
  });
});

describe("predict", () => {
  it("refuses a zero length prefix and one beyond maxFrameBytes", () => {
    const zero = predict(
      fuzzCase("tcp", [{ label: "t", bytes: prefixed(0, new Uint8Array()), text: false }]),
      ctx,
    );
    expect(zero.outcome).toEqual({ kind: "close", errors: ["E_BAD_FRAME"], wsCloses: [] });
    const large = predict(
      fuzzCase("tcp", [{ label: "t", bytes: prefixed(MAX + 1, new Uint8Array()), text: false }]),
      ctx,
    );
    expect(large.outcome).toEqual({ kind: "close", errors: ["E_FRAME_TOO_LARGE"], wsCloses: [] });
  });

  it("expects ws's own close codes for invalid UTF-8 and an oversized message", () => {
    const text = predict(
      fuzzCase("ws-json", [{ label: "t", bytes: Uint8Array.of(0x7b, 0xff, 0x7d), text: true }]),
      ctx,
    );
    expect(text.outcome).toEqual({ kind: "close", errors: [], wsCloses: [1007] });
    const huge = predict(
      fuzzCase("ws-binary", [{ label: "t", bytes: new Uint8Array(2 * MAX + 1), text: false }]),
      ctx,
    );
    expect(huge.outcome).toEqual({ kind: "close", errors: [], wsCloses: [1009] });
    const wrongType = predict(
      fuzzCase("ws-json", [{ ...unit("ws-json", { t: "ping", n: 1 }), text: false }]),
      ctx,
    );
    expect(wrongType.outcome).toEqual({ kind: "close", errors: ["E_BAD_FRAME"], wsCloses: [] });
  });

  it("follows hello: refused before it, a bad token (which later input may overtake), or replies owed", () => {
    expect(predict(fuzzCase("ws-json", [unit("ws-json", { t: "ping", n: 1 })]), ctx).outcome).toEqual({
      kind: "close",
      errors: ["E_NOT_AUTHENTICATED"],
      wsCloses: [],
    });
    const badToken = predict(
      fuzzCase("ws-binary", [
        unit("ws-binary", { t: "hello", versions: [1], token: "nope" }),
        { label: "t", bytes: Uint8Array.of(0xc1), text: false },
      ]),
      ctx,
    );
    expect(badToken.outcome).toEqual({
      kind: "close",
      errors: ["E_TOKEN_INVALID", "E_BAD_FRAME"],
      wsCloses: [],
    });
    const good = predict(
      fuzzCase("tcp", [
        unit("tcp", { t: "hello", versions: [7, 1], token: TOKEN }),
        unit("tcp", { t: "send", id: 5, conv: "c", cid: "m", type: "text/plain", body: new Uint8Array() }),
        unit("tcp", { t: "ping", n: 9 }),
        unit("tcp", { t: "hello", versions: [1], token: TOKEN }),
      ]),
      ctx,
    );
    expect(good).toEqual({
      outcome: { kind: "open" },
      validHello: true,
      replies: new Map([[5, ["send"]]]),
      pongs: new Map([[9, 1]]),
      alreadyAuthenticated: 1,
      endsReady: true,
    });
  });

  it("lets a frame before a bad TCP prefix in the same message be read first (found by the long run)", () => {
    // One write: a frame that does not decode, then a prefix beyond the limit. A server that reads
    // it in one chunk refuses the prefix first; one that reads the frame alone refuses the frame.
    const bytes = Buffer.concat([prefixed(1, Uint8Array.of(0xc1)), prefixed(MAX + 1, new Uint8Array())]);
    const p = predict(fuzzCase("tcp", [{ label: "t", bytes, text: false }]), ctx);
    expect(p.outcome).toEqual({ kind: "close", errors: ["E_BAD_FRAME", "E_FRAME_TOO_LARGE"], wsCloses: [] });
  });

  it("lets a bad TCP prefix overtake an earlier error (the parser drops frames before it)", () => {
    const p = predict(
      fuzzCase("tcp", [
        unit("tcp", { t: "ping", n: 1 }),
        { label: "t", bytes: prefixed(MAX + 1, new Uint8Array()), text: false },
      ]),
      ctx,
    );
    expect(p.outcome).toEqual({
      kind: "close",
      errors: ["E_NOT_AUTHENTICATED", "E_FRAME_TOO_LARGE"],
      wsCloses: [],
    });
  });
});

describe("CaseGenerator", () => {
  const generator = new CaseGenerator(targets);
  const hex = (c: FuzzCase): string =>
    JSON.stringify({
      ...c,
      units: c.units.map((u) => [u.label, u.text, Buffer.from(u.bytes).toString("hex")]),
    });

  it("is reproducible from (seed, index)", () => {
    for (let i = 0; i < 50; i++) expect(hex(generator.generate(7, i))).toBe(hex(generator.generate(7, i)));
    expect(hex(generator.generate(7, 1))).not.toBe(hex(generator.generate(8, 1)));
  });

  it("makes every kind of input, on every transport, with every predicted outcome", () => {
    const kinds = new Set<string>();
    const outcomes = new Set<string>();
    const transports = new Set<string>();
    let cut = 0;
    let login = 0;
    for (let i = 0; i < 3000; i++) {
      const c = generator.generate(1, i);
      transports.add(c.transport);
      if (c.cuts.length > 0) cut++;
      if (c.login) login++;
      for (const u of c.units) kinds.add(u.label.split(":")[0]!);
      for (const u of c.units) kinds.add(u.label);
      const { outcome } = predict(c, ctx);
      if (outcome.kind === "open") outcomes.add("open");
      else for (const code of [...outcome.errors, ...outcome.wsCloses]) outcomes.add(String(code));
    }
    expect([...transports].sort()).toEqual(["tcp", "ws-binary", "ws-json"]);
    expect(cut).toBeGreaterThan(0);
    expect(login).toBeGreaterThan(1000);
    expect(login).toBeLessThan(2500);
    for (const k of ["valid", "any", "structure", "raw", "json", "bytes", "random", "tcp", "ws", "big"])
      expect(kinds).toContain(k);
    for (const k of [
      "structure:missing",
      "structure:extra",
      "structure:unknown-t",
      "structure:nest",
      "tcp:len-zero",
      "tcp:len-over-max",
      "tcp:len-larger",
      "tcp:len-smaller",
      "ws:bad-utf8",
      "ws:wrong-type",
      "bytes:bitflip",
      "bytes:truncate",
      "bytes:splice",
      "bytes:duplicate",
      "raw:ext",
      "raw:deep",
      "json:deep",
      "valid:big",
    ]) {
      expect(kinds).toContain(k);
    }
    for (const o of [
      "open",
      "E_BAD_FRAME",
      "E_FRAME_TOO_LARGE",
      "E_UNKNOWN_FRAME",
      "E_NOT_AUTHENTICATED",
      "E_TOKEN_INVALID",
      "E_UNSUPPORTED_VERSION",
      "1007",
      "1009",
    ]) {
      expect(outcomes).toContain(o);
    }
  });
});

describe("runCase against servers that break the rules", () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0)) await c();
  });

  async function tcpServer(onData: (socket: net.Socket) => void): Promise<number> {
    const sockets = new Set<net.Socket>();
    const server = net.createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
      s.once("data", () => onData(s));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    cleanup.push(async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    });
    return (server.address() as net.AddressInfo).port;
  }

  const env = (port: number) => ({ httpPort: port, tcpPort: port, tokens: [TOKEN], timeoutMs: 500 });
  async function problemsOf(c: FuzzCase, port: number): Promise<string[]> {
    const problems: string[] = [];
    await runCase(c, predict(c, ctx), env(port), (p) => problems.push(p));
    return problems;
  }

  it("reports an undocumented error code and disconnect code", async () => {
    const port = await tcpServer((s) => {
      s.write(encodeFramed({ t: "error", code: "E_BOGUS", message: "", retry: false }));
      s.end(encodeFramed({ t: "bye", code: 4999, reason: "" }));
    });
    const problems = await problemsOf(fuzzCase("tcp", [unit("tcp", { t: "ping", n: 1 })]), port);
    expect(problems).toContain('undocumented error code "E_BOGUS"');
    expect(problems).toContain("undocumented disconnect code 4999 in bye");
    expect(problems).toContain("undocumented close code 4999");
  });

  it("reports a server that accepts a frame it must refuse", async () => {
    const port = await tcpServer(() => {}); // reads and ignores everything
    const problems = await problemsOf(
      fuzzCase("tcp", [{ label: "t", bytes: prefixed(0, new Uint8Array()), text: false }]),
      port,
    );
    expect(problems).toEqual(["the server did not close the connection; predicted close with E_BAD_FRAME"]);
  });

  it("reports a WebSocket close code nobody documents, and a message of the wrong type", async () => {
    const wss = new WebSocketServer({
      port: 0,
      host: "127.0.0.1",
      handleProtocols: (p) => [...p][0] ?? false,
    });
    wss.on("connection", (ws) => {
      ws.once("message", () => {
        ws.send(JSON.stringify({ t: "pong", n: 1 }));
        ws.close(1011);
      });
    });
    await new Promise((resolve) => wss.once("listening", resolve));
    cleanup.push(() => {
      for (const client of wss.clients) client.terminate();
      return new Promise((resolve) => wss.close(() => resolve()));
    });
    const port = (wss.address() as net.AddressInfo).port;
    const problems = await problemsOf(
      fuzzCase("ws-binary", [{ label: "t", bytes: encodeBinary({ t: "ping", n: 1 }), text: false }]),
      port,
    );
    expect(problems).toEqual(["text message on parley.v1.binary", "undocumented close code 1011"]);
  });

  it("finds nothing wrong with a correct answer", async () => {
    const port = await tcpServer((s) => {
      s.write(encodeFramed({ t: "error", code: "E_NOT_AUTHENTICATED", message: "", retry: false }));
      s.end(encodeFramed({ t: "bye", code: 4100, reason: "" }));
    });
    expect(await problemsOf(fuzzCase("tcp", [unit("tcp", { t: "ping", n: 1 })]), port)).toEqual([]);
  });
});

describe("fuzzing a real server process", () => {
  it("survives 10^4 frames over TCP, WebSocket binary and WebSocket JSON with no violation", async () => {
    const seed = Number(process.env.PARLEY_FUZZ_SEED ?? 20_250_601);
    const { summary, violations } = await runFuzz({ frames: 10_000, seed });
    expect(violations, `seed ${seed}`).toEqual([]);
    expect(summary.violations).toBe(0);
    expect(summary.frames).toBeGreaterThanOrEqual(10_000);
    for (const t of ["tcp", "ws-binary", "ws-json"] as const)
      expect(summary.frames_by_transport[t]).toBeGreaterThan(1000);
    // It reached both the protocol's refusals and the authorised handlers.
    for (const code of [
      "E_BAD_FRAME",
      "E_FRAME_TOO_LARGE",
      "E_UNKNOWN_FRAME",
      "E_NOT_AUTHENTICATED",
      "E_NOT_FOUND",
    ]) {
      expect(summary.replies_by_code[code], code).toBeGreaterThan(0);
    }
    for (const t of ["welcome", "sent", "ok", "synced", "push"])
      expect(summary.server_frames[t], t).toBeGreaterThan(0);
    expect(summary.closes_by_code["4100"]).toBeGreaterThan(0);
    expect(summary.closes_by_code["1007"]).toBeGreaterThan(0);
    expect(summary.control_sent).toBeGreaterThan(0);
    expect(summary.control_delivered).toBe(summary.control_sent);
    expect(summary.rss_end_mb).toBeLessThanOrEqual(summary.rss_limit_mb);
  }, 180_000);
});
