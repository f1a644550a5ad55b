import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import {
  FrameParser,
  decodeServerBinary,
  decodeServerJson,
  encodeFramed,
  encodeJson,
} from "@parley/protocol";
import type { ServerFrame } from "@parley/protocol";
import type { ServerConfig } from "../src/config.ts";
import { startServer } from "../src/main.ts";
import type { RunningServer } from "../src/main.ts";

// The composition root end to end: a real SQLite file in a temp dir, every listener on port 0,
// clients over REST, WebSocket and TCP; graceful stop; restart on the same data.

function config(dataDir: string, over: Partial<ServerConfig> = {}): ServerConfig {
  return {
    dataDir,
    host: "127.0.0.1",
    httpPort: 0,
    tcpPort: 0,
    store: "sqlite",
    logLevel: "silent",
    maxFrameBytes: 64 * 1024,
    ...over,
  };
}

interface Created {
  id: string;
  token: string;
}

/** POSTs JSON; the tests read `id` (register, conversations) or `token` (login). */
async function post(base: string, path: string, body: unknown, token?: string): Promise<Created> {
  const res = await fetch(base + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  if (res.status >= 300) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as Created;
}

interface Recorder {
  frames: ServerFrame[];
  closed: Promise<number>;
  next(t: ServerFrame["t"]): Promise<ServerFrame>;
}

function recorder(): { rec: Recorder; add: (f: ServerFrame) => void; close: (code: number) => void } {
  const frames: ServerFrame[] = [];
  let onClose!: (code: number) => void;
  const closed = new Promise<number>((r) => (onClose = r));
  const rec: Recorder = {
    frames,
    closed,
    async next(t) {
      for (let i = 0; i < 100; i++) {
        const f = frames.find((x) => x.t === t);
        if (f) return f;
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error(`no ${t}; got ${frames.map((f) => f.t).join(",")}`);
    },
  };
  return { rec, add: (f) => frames.push(f), close: onClose };
}

function tcpConnect(port: number, token: string): Recorder {
  const { rec, add, close } = recorder();
  const socket = net.connect(port, "127.0.0.1");
  const parser = new FrameParser();
  let bye = 0;
  socket.on("data", (chunk: Buffer) => {
    for (const body of parser.push(chunk)) {
      const f = decodeServerBinary(body);
      if (f.t === "bye") bye = f.code;
      add(f);
    }
  });
  socket.on("error", () => {});
  socket.on("close", () => close(bye));
  socket.write(encodeFramed({ t: "hello", versions: [1], token }));
  return rec;
}

function wsConnect(port: number, token: string): Recorder {
  const { rec, add, close } = recorder();
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/ws`, ["parley.v1.json"]);
  ws.on("message", (data: Buffer) => add(decodeServerJson(data.toString("utf8"))));
  ws.on("error", () => {});
  ws.on("close", (code) => close(code));
  ws.on("open", () => ws.send(encodeJson({ t: "hello", versions: [1], token })));
  return rec;
}

/** Registers alice, logs her in on device "d" and creates a group of hers with no one else. */
async function aliceWithGroup(base: string) {
  const alice = await post(base, "/v1/register", { name: "alice", password: "password-alice" });
  const login = await post(base, "/v1/login", { name: "alice", password: "password-alice", device: "d" });
  const conv = await post(base, "/v1/conversations", { kind: "group", name: "g", members: [] }, login.token);
  return { alice, login, conv };
}

describe("startServer", () => {
  let dir: string;
  let server: RunningServer | undefined;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "parley-server-"));
  });

  afterEach(async () => {
    await server?.stop();
    server = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it("serves REST, WebSocket and TCP; stops gracefully; keeps messages across a restart", async () => {
    const data = join(dir, "nested", "data");
    server = await startServer(config(data));
    expect(existsSync(join(data, "parley.db"))).toBe(true);
    const base = `http://127.0.0.1:${server.httpPort}`;

    const alice = await post(base, "/v1/register", { name: "alice", password: "password-alice" });
    const bob = await post(base, "/v1/register", { name: "bob", password: "password-bob" });
    const aliceLogin = await post(base, "/v1/login", {
      name: "alice",
      password: "password-alice",
      device: "tcp",
    });
    const bobLogin = await post(base, "/v1/login", { name: "bob", password: "password-bob", device: "ws" });
    const conv = await post(base, "/v1/conversations", { kind: "direct", user: bob.id }, aliceLogin.token);

    const overTcp = tcpConnect(server.tcpPort, aliceLogin.token);
    const overWs = wsConnect(server.httpPort, bobLogin.token);
    await overTcp.next("welcome");
    await overWs.next("welcome");

    // A bot posts over REST; both live connections get the push.
    await post(
      base,
      `/v1/conversations/${conv.id}/messages`,
      {
        cid: "m1",
        type: "text/plain",
        body: Buffer.from("from rest").toString("base64"),
      },
      aliceLogin.token,
    );
    for (const c of [overTcp, overWs]) {
      const push = (await c.next("push")) as Extract<ServerFrame, { t: "push" }>;
      expect(push.u.k === "msg" ? push.u.msg.seq : push.u.k).toBeDefined();
    }

    await server.stop();
    expect(await overTcp.closed).toBe(4000);
    expect(await overWs.closed).toBe(4000);
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
    server = undefined;

    server = await startServer(config(data));
    const login = await post(`http://127.0.0.1:${server.httpPort}`, "/v1/login", {
      name: "bob",
      password: "password-bob",
      device: "again",
    });
    const res = await fetch(`http://127.0.0.1:${server.httpPort}/v1/conversations/${conv.id}/messages`, {
      headers: { authorization: `Bearer ${login.token}` },
    });
    const page = (await res.json()) as { messages: Array<{ seq: number; from: string; body: string }> };
    expect(page.messages).toHaveLength(1);
    expect(page.messages[0]!.from).toBe(alice.id);
    expect(Buffer.from(page.messages[0]!.body, "base64").toString()).toBe("from rest");
  });

  it("serves Prometheus metrics on --metrics-port only: commits, refusals, connections, Node.js", async () => {
    server = await startServer(config(dir, { metricsPort: 0 }));
    const base = `http://127.0.0.1:${server.httpPort}`;
    const { alice, login, conv } = await aliceWithGroup(base);
    expect(alice.id).toBeDefined();
    const live = tcpConnect(server.tcpPort, login.token);
    await live.next("welcome");
    for (const cid of ["m1", "m2"])
      await post(base, `/v1/conversations/${conv.id}/messages`, { cid, type: "t", body: "" }, login.token);

    // The GC histogram has buckets only once a collection ran after the server started: make one
    // (far more short-lived objects than a young generation holds), and let its observer report.
    let junk: unknown[] = [];
    for (let i = 0; i < 1_000_000; i++) junk = new Array<number>(32).fill(i);
    void junk;
    await new Promise((resolve) => setTimeout(resolve, 50));

    const port = server.metricsPort!;
    expect(port).toBeGreaterThan(0);
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
    const text = await res.text();
    const value = (name: string): number => {
      const line = text.split("\n").find((l) => l.startsWith(name + " "));
      if (line === undefined) throw new Error(`no ${name} in the metrics`);
      return Number(line.slice(name.length + 1));
    };
    expect(value("parley_messages_committed_total")).toBe(2);
    expect(value('parley_commit_seconds_count{outcome="ok"}')).toBe(2);
    // Each batch of sends was written to the numbered log (the default commit interval).
    expect(value("parley_log_sync_seconds_count")).toBe(2);
    expect(value("parley_log_sync_seconds_sum")).toBeGreaterThan(0);
    expect(value("parley_commit_messages_count")).toBe(2);
    expect(value("parley_sends_refused_total")).toBe(0);
    expect(value("parley_connections")).toBe(1);
    expect(value("parley_fanout_backlog")).toBe(0);
    expect(value("nodejs_eventloop_lag_p99_seconds")).toBeGreaterThan(0);
    expect(text).toMatch(/^nodejs_gc_duration_seconds_bucket/m);
    expect(value("process_resident_memory_bytes")).toBeGreaterThan(0);
    // Left out: each would walk every connection's descriptor or handle at every scrape.
    for (const name of ["process_open_fds", "nodejs_active_handles", "nodejs_active_resources"]) {
      expect(text).not.toMatch(new RegExp(`^${name}`, "m"));
    }
    // Nothing else is served there, and the main HTTP port does not serve metrics.
    expect((await fetch(`http://127.0.0.1:${port}/v1/users`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${port}/metrics`, { method: "POST" })).status).toBe(404);
    expect((await fetch(`${base}/metrics`)).status).toBe(404);

    await server.stop();
    server = undefined;
    await expect(fetch(`http://127.0.0.1:${port}/metrics`)).rejects.toThrow();
  });

  it("has no metrics listener unless asked", async () => {
    server = await startServer(config(dir));
    expect(server.metricsPort).toBeUndefined();
  });

  it("saves every connection's device cursor when it stops", async () => {
    server = await startServer(config(dir));
    const base = `http://127.0.0.1:${server.httpPort}`;
    await post(base, "/v1/register", { name: "alice", password: "password-alice" });
    const bob = await post(base, "/v1/register", { name: "bob", password: "password-bob" });
    const login = await post(base, "/v1/login", { name: "alice", password: "password-alice", device: "tcp" });
    const conv = await post(base, "/v1/conversations", { kind: "direct", user: bob.id }, login.token);
    for (const cid of ["m1", "m2"]) {
      const body = { cid, type: "text/plain", body: Buffer.from(cid).toString("base64") };
      await post(base, `/v1/conversations/${conv.id}/messages`, body, login.token);
    }

    const { rec, add, close } = recorder();
    const socket = net.connect(server.tcpPort, "127.0.0.1");
    const parser = new FrameParser();
    socket.on("data", (chunk: Buffer) => {
      for (const body of parser.push(chunk)) add(decodeServerBinary(body));
    });
    socket.on("error", () => {});
    socket.on("close", () => close(0));
    socket.write(encodeFramed({ t: "hello", versions: [1], token: login.token }));
    await rec.next("welcome");
    // The first cursor is saved at once, the next one only later (cursorFlushMs) or on close.
    // A sync's cursor is not an acknowledgement (a pipelining client asks ahead): only acks count.
    socket.write(encodeFramed({ t: "ack", cursor: 1 }));
    socket.write(encodeFramed({ t: "sync", id: 1, cursor: 3 }));
    socket.write(encodeFramed({ t: "ack", cursor: 2 }));
    socket.write(encodeFramed({ t: "sync", id: 2, cursor: 0 }));
    for (let i = 0; i < 100 && rec.frames.filter((f) => f.t === "synced").length < 2; i++)
      await new Promise((r) => setTimeout(r, 20));

    await server.stop();
    await rec.closed;
    server = await startServer(config(dir));
    const again = `http://127.0.0.1:${server.httpPort}`;
    const second = await post(again, "/v1/login", { name: "alice", password: "password-alice", device: "x" });
    const res = await fetch(`${again}/v1/devices`, { headers: { authorization: `Bearer ${second.token}` } });
    const { devices } = (await res.json()) as { devices: Array<{ name: string; cursor: number }> };
    expect(devices.find((d) => d.name === "tcp")?.cursor).toBe(2);
  });

  it("keeps the commit log in --commit-log-dir, creating it; a clean stop leaves no segment", async () => {
    const data = join(dir, "data");
    const logDir = join(dir, "other-disk", "log");
    const segments = (d: string) => readdirSync(d).filter((f) => /^parley\.db-commitlog\.\d+$/.test(f));
    server = await startServer(config(data, { commitLogDir: logDir, commitIntervalMs: 2000 }));
    const base = `http://127.0.0.1:${server.httpPort}`;
    const { login, conv } = await aliceWithGroup(base);
    await post(
      base,
      `/v1/conversations/${conv.id}/messages`,
      { cid: "m1", type: "t", body: "" },
      login.token,
    );
    // Acknowledged, not yet committed to SQLite (2 s interval): its record is in the log's directory.
    expect(segments(logDir).length).toBeGreaterThan(0);
    expect(segments(data)).toEqual([]);
    await server.stop();
    server = undefined;
    expect(segments(logDir)).toEqual([]);
  });

  it("stop() is idempotent", async () => {
    server = await startServer(config(dir, { store: "memory" }));
    await Promise.all([server.stop(), server.stop()]);
    await server.stop();
  });

  it("fails clearly when a port is taken, and leaves the data file closed", async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      await expect(startServer(config(dir, { tcpPort: port }))).rejects.toThrow(
        `cannot listen on 127.0.0.1:${port} (TCP, --tcp-port): the address is already in use`,
      );
      await expect(startServer(config(dir, { httpPort: port }))).rejects.toThrow(/HTTP, --port/);
      await expect(startServer(config(dir, { metricsPort: port }))).rejects.toThrow(
        `cannot listen on 127.0.0.1:${port} (metrics, --metrics-port): the address is already in use`,
      );
    } finally {
      await new Promise((r) => blocker.close(r));
    }
    // The failed starts released everything: the same data opens again.
    server = await startServer(config(dir));
  });

  it("refuses a damaged data file instead of serving it empty", async () => {
    writeFileSync(join(dir, "parley.db"), Buffer.alloc(8192, 0x5a));
    await expect(startServer(config(dir))).rejects.toThrow(/parley\.db/);
  });

  it("refuses unreadable TLS files naming the flag", async () => {
    await expect(
      startServer(config(dir, { tls: { certFile: join(dir, "none.pem"), keyFile: join(dir, "none.key") } })),
    ).rejects.toThrow(/--tls-cert: cannot read/);
  });
});
