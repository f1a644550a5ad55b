import { createInterface } from "node:readline";
import { readFile } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { afterAll, describe, expect, it } from "vitest";
import type { ClientFrame, ErrorFrame, ServerFrame } from "@parley/protocol";
import { startServerProcess, type ServerProcess } from "../../packages/cli/src/testing/server-process.ts";
import { ParleyClient, getTransport, type TransportFactory } from "../../packages/sdk/src/node.ts";
import { RawClient, api, newUser } from "../helpers/raw-client.ts";

// Issue 3, "Overload": offered 3x the sustainable rate, the server refuses the excess with a
// retryable error carrying retry-after, keeps the latency of what it admits bounded and its RSS
// under the configured bound; the SDK honours retry-after.
//
// A real server process on a real SQLite file, with a slow disk emulated by the test fault
// commit-delay (every group commit sleeps COMMIT_DELAY_MS first) and small batches
// (commit-batch-max), so that the sustainable rate is about BATCH * 1000 / COMMIT_DELAY_MS
// messages per second, low enough for this process to offer three times as much on a loaded
// two-core machine. The rate is measured first (closed loop), then 3x is offered open loop (a
// fixed schedule; latency counts from the intended send time, so a late sender cannot hide
// queueing) from many raw connections, which see every error frame.
//
// Bound (b) is the one timing assertion allowed here, and generous (4x the target + 1 s): without
// admission control the latency of admitted sends grows with the length of the run, since the
// queue grows by (offered - sustainable) messages every second. Observed on the shared 2-core
// development machine, same run, 6 s at 3x:
//   --max-commit-queue-ms 250 (this test): sustainable ~860/s; 15,480 offered, 5,281 admitted,
//     10,199 refused; admitted latency p50 275 ms, p99 318 ms, max 337 ms; peak RSS 182 MB.
//   --max-commit-queue-ms 0 (only the 20,000-send cap): sustainable ~810/s; all 14,580
//     admitted, none refused; p50 6.2 s, p99 12.2 s, max 12.3 s; peak RSS 239 MB. The queue
//     grew by about 1,600 sends, two seconds of commit work, for every second of the run.
// The memory guard (--max-rss-mb) refusing sends is shown deterministically in
// packages/server/src/core/admission.test.ts; here the bound must simply hold under overload.

const COMMIT_DELAY_MS = 20;
const BATCH = 20;
const TARGET_MS = 250;
/** About twice the peak RSS observed (above): the server must stay under it while overloaded. */
const MAX_RSS_MB = 384;
const CONNECTIONS = 12;
const MEASURE_MS = 2000;
const OVERLOAD_MS = 6000;
const TICK_MS = 5;
const SDK_SENDS = 100;
/** The one timing bound the test allows itself (see the header): generous on purpose. */
const LATENCY_BOUND_MS = 4 * TARGET_MS + 1000;

/** 1 KiB per message, so that a queue that grows shows in RSS. */
const body = new Uint8Array(1024).fill(120);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `p`, or a rejection naming `what` after `ms`; leaves no timer behind. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** One raw connection's sends: their intended times by request id, and the replies seen. */
class Sender {
  private seen = 0;
  private nextId = 1;
  readonly waiting = new Map<number, number>();

  constructor(
    readonly client: RawClient,
    private readonly conv: string,
    private readonly tag: string,
  ) {}

  send(intendedAt: number): void {
    const id = this.nextId++;
    this.waiting.set(id, intendedAt);
    this.client.send({ t: "send", id, conv: this.conv, cid: `${this.tag}-${id}`, type: "text/plain", body });
  }

  /** Hands every reply received since the last poll to `onReply`, with its send's intended time. */
  poll(onReply: (reply: ServerFrame, intendedAt: number) => void): void {
    const frames = this.client.frames;
    while (this.seen < frames.length) {
      const f = frames[this.seen++]!;
      if ((f.t !== "sent" && f.t !== "error") || f.id === undefined) continue;
      const intendedAt = this.waiting.get(f.id);
      if (intendedAt === undefined) continue;
      this.waiting.delete(f.id);
      onReply(f, intendedAt);
    }
  }
}

/** VmRSS of a process, in bytes (Linux). */
async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!kb) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(kb[1]) * 1024;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Wraps the SDK's TCP transport to watch, frame by frame, whether the SDK resends a refused
 * send before the retryAfterMs it was given. When a refusal arrives, the watch starts its own
 * timer of retryAfterMs, before the SDK sees the frame and starts its retry timer (the watch's
 * listener is subscribed first): both timers start from the same event-loop time, and Node fires
 * equal timers in creation order, so a resend that finds the watch's timer not yet fired came
 * early, and one that finds it fired did not, with no clock slack to choose. */
class RetryAfterWatch {
  refusals = 0;
  resends = 0;
  readonly early: string[] = [];
  readonly unexpected: ServerFrame[] = [];
  private readonly cidOf = new Map<number, string>();
  private readonly windows = new Map<string, { over: boolean; retryAfterMs: number; at: number }>();

  readonly transport: TransportFactory = (options) => {
    const tcp = getTransport("tcp");
    if (!tcp) throw new Error("the tcp transport is not registered");
    const t = tcp(options);
    t.events.on("frame", (frame) => this.received(frame));
    const send = t.send.bind(t);
    t.send = (frame) => {
      this.sending(frame);
      send(frame);
    };
    return t;
  };

  private sending(frame: ClientFrame): void {
    if (frame.t !== "send") return;
    const window = this.windows.get(frame.cid);
    if (window) {
      this.resends++;
      if (!window.over) {
        const after = Math.round(performance.now() - window.at);
        this.early.push(`${frame.cid}: resent after ${after} ms, told ${window.retryAfterMs}`);
      }
      this.windows.delete(frame.cid);
    }
    this.cidOf.set(frame.id, frame.cid);
  }

  private received(frame: ServerFrame): void {
    if (frame.t !== "error" || frame.id === undefined) return;
    const cid = this.cidOf.get(frame.id);
    if (cid === undefined) return;
    const { retryAfterMs } = frame;
    if (frame.code !== "E_OVERLOADED" || !frame.retry || retryAfterMs === undefined || retryAfterMs <= 0) {
      this.unexpected.push(frame);
      return;
    }
    this.refusals++;
    const window = { over: false, retryAfterMs, at: performance.now() };
    this.windows.set(cid, window);
    setTimeout(() => (window.over = true), retryAfterMs).unref();
  }
}

describe.skipIf(process.platform !== "linux")("overload (reads /proc/<pid>/status: Linux only)", () => {
  let server: ServerProcess | undefined;
  const raw: RawClient[] = [];
  let sdk: ParleyClient | undefined;
  let sampling = false;
  afterAll(async () => {
    sampling = false;
    for (const c of raw) c.close();
    await sdk?.close();
    await server?.stop();
  });

  it("refuses the excess with retry-after, bounds admitted latency and RSS; the SDK honours retry-after", async () => {
    server = await startServerProcess(
      ["--max-commit-queue-ms", String(TARGET_MS), "--max-rss-mb", String(MAX_RSS_MB)],
      undefined,
      {
        env: {
          ...process.env,
          PARLEY_TEST_FAULTS: `commit-delay=${COMMIT_DELAY_MS},commit-batch-max=${BATCH}`,
        },
      },
    );
    const srv = server;
    const base = `http://127.0.0.1:${srv.httpPort}`;
    // The server's log lines about shedding (admission.ts: one when it starts, one when it ends).
    const shedding: Array<{ msg: string; refused?: number }> = [];
    createInterface({ input: srv.child.stdout! }).on("line", (line) => {
      if (!line.includes("overloaded")) return;
      shedding.push(JSON.parse(line) as { msg: string; refused?: number });
    });

    // Each sender writes to its own direct conversation with an offline sink, so every message
    // is pushed once (to its sender) and the server's CPU goes to sends, not to fan-out.
    const sink = await newUser(base, "sink");
    const users = await Promise.all(
      Array.from({ length: CONNECTIONS }, (_, i) => newUser(base, `sender${i}`)),
    );
    const senders = await Promise.all(
      users.map(async (u, i) => {
        const conv = await api<{ id: string }>(
          base,
          "POST",
          "/v1/conversations",
          { kind: "direct", user: sink.user },
          u.token,
        );
        const c = await RawClient.login("tcp", srv, u.token);
        raw.push(c);
        return new Sender(c, conv.id, `s${i}`);
      }),
    );
    const pollAll = (onReply: (reply: ServerFrame, intendedAt: number) => void) => {
      for (const s of senders) s.poll(onReply);
    };

    // The SDK client and its conversation, ready before the load starts.
    const password = "password-sdk-user";
    await ParleyClient.register({ url: base, name: "sdkuser", password });
    const watch = new RetryAfterWatch();
    sdk = await ParleyClient.login({
      url: base,
      name: "sdkuser",
      password,
      device: "test",
      transport: watch.transport,
      tcpPort: srv.tcpPort,
    });
    await sdk.connect();
    const sdkConv = await sdk.createDirect(sink.user);

    // RSS, sampled from /proc every 100 ms from here to the end of the load.
    let peakRss = 0;
    let rssSamples = 0;
    sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peakRss = Math.max(peakRss, await rssOf(srv.pid));
        rssSamples++;
        await sleep(100);
      }
    })();
    sampler.catch(() => {}); // awaited (and so reported) below

    // 1. The sustainable rate: a closed loop (8 sends in flight per connection) for MEASURE_MS,
    // after half a second of warm-up. 96 in flight keep every batch full without building a
    // queue anywhere near TARGET_MS.
    const WINDOW = 8;
    let measuredAcks = 0;
    let measureRefused = 0;
    let measuring = false;
    const warmupEnd = performance.now() + 500;
    const measureEnd = warmupEnd + MEASURE_MS;
    for (const s of senders) for (let i = 0; i < WINDOW; i++) s.send(performance.now());
    while (performance.now() < measureEnd) {
      await sleep(TICK_MS);
      measuring = performance.now() >= warmupEnd;
      pollAll((reply) => {
        if (reply.t === "sent" && measuring) measuredAcks++;
        if (reply.t === "error") measureRefused++;
      });
      for (const s of senders) while (s.waiting.size < WINDOW) s.send(performance.now());
    }
    for (let i = 0; i < 1000 && senders.some((s) => s.waiting.size > 0); i++) {
      await sleep(TICK_MS);
      pollAll(() => {});
    }
    const sustainable = (measuredAcks / MEASURE_MS) * 1000;
    expect(sustainable).toBeGreaterThan(50);

    // 2. Three times that, open loop, for OVERLOAD_MS; the SDK client sends SDK_SENDS into it
    // after a second.
    const offeredRate = 3 * sustainable;
    const interval = 1000 / offeredRate;
    const total = Math.floor((OVERLOAD_MS / 1000) * offeredRate);
    const latencies: number[] = [];
    const refusals: ErrorFrame[] = [];
    const otherReplies: ServerFrame[] = [];
    const onReply = (reply: ServerFrame, intendedAt: number) => {
      if (reply.t === "sent") latencies.push(performance.now() - intendedAt);
      else if (reply.t === "error" && reply.code === "E_OVERLOADED") refusals.push(reply);
      else otherReplies.push(reply);
    };
    let sdkSends: Promise<Array<{ seq: number; cid: string }>> | undefined;
    const start = performance.now();
    let offered = 0;
    while (offered < total) {
      await sleep(TICK_MS);
      const now = performance.now();
      const due = Math.min(total, Math.floor((now - start) / interval) + 1);
      for (; offered < due; offered++) senders[offered % CONNECTIONS]!.send(start + offered * interval);
      pollAll(onReply);
      if (sdkSends === undefined && now - start >= 1000) {
        sdkSends = Promise.all(
          Array.from({ length: SDK_SENDS }, (_, i) => sdk!.send(sdkConv.id, `sdk ${i}`, { cid: `sdk-${i}` })),
        );
        sdkSends.catch(() => {}); // awaited (and so reported) below
      }
    }
    // Every send gets its answer (bounded wait; a lost reply fails below).
    for (let i = 0; i < 3000 && senders.some((s) => s.waiting.size > 0); i++) {
      await sleep(TICK_MS);
      pollAll(onReply);
    }
    const unanswered = senders.reduce((n, s) => n + s.waiting.size, 0);
    const sdkResults = await within(sdkSends!, 30_000, "the SDK's sends acknowledged");
    sampling = false;
    await sampler;

    const p99 = percentile(latencies, 99);
    // Shown with any failure below.
    const summary = JSON.stringify({
      sustainable: Math.round(sustainable),
      measureRefused,
      offered,
      admitted: latencies.length,
      refused: refusals.length,
      p50: Math.round(percentile(latencies, 50)),
      p99: Math.round(p99),
      max: Math.round(Math.max(...latencies)),
      peakRssMb: Math.round(peakRss / 2 ** 20),
      rssSamples,
    });

    expect(unanswered, summary).toBe(0);
    expect(otherReplies).toEqual([]);
    // (a) The excess is refused, retryably, with a retry-after.
    expect(refusals.length, summary).toBeGreaterThan(0);
    expect(latencies.length, summary).toBeGreaterThan(0);
    expect(refusals.length + latencies.length).toBe(offered);
    for (const e of refusals) {
      expect(e.retry).toBe(true);
      expect(e.retryAfterMs).toBeGreaterThan(0);
    }
    // Jittered: the refused clients are not all told to come back at the same moment.
    expect(new Set(refusals.map((e) => e.retryAfterMs)).size).toBeGreaterThan(1);
    // (b) What was admitted was committed within a bounded time.
    expect(p99, summary).toBeLessThan(LATENCY_BOUND_MS);
    // (c) RSS stayed under the configured bound, in every sample.
    expect(rssSamples, summary).toBeGreaterThan(10);
    expect(peakRss, summary).toBeLessThan(MAX_RSS_MB * 2 ** 20);

    // The SDK: every send acknowledged, exactly once, and never retransmitted before the
    // retryAfterMs it was given.
    expect(sdkResults.map((r) => r.cid)).toEqual(Array.from({ length: SDK_SENDS }, (_, i) => `sdk-${i}`));
    expect(new Set(sdkResults.map((r) => r.seq)).size).toBe(SDK_SENDS);
    expect(watch.unexpected).toEqual([]);
    expect(watch.early).toEqual([]);
    // The SDK was refused at least once (else this part proves nothing), and resent each time.
    expect(watch.refusals).toBeGreaterThan(0);
    expect(watch.resends).toBe(watch.refusals);
    // Stored exactly once each, with gap-free seqs.
    const sinkClient = await RawClient.login("tcp", srv, sink.token);
    raw.push(sinkClient);
    const page = await sinkClient.request({ t: "history", conv: sdkConv.id, limit: 500 });
    if (page.t !== "history") throw new Error(`history failed: ${JSON.stringify(page)}`);
    expect(page.messages.map((m) => m.cid).sort()).toEqual(sdkResults.map((r) => r.cid).sort());
    expect(page.messages.map((m) => m.seq)).toEqual(page.messages.map((_, i) => i + 1));

    // The log told when shedding began and, after a second without refusals, at the next send,
    // that it ended: a line per episode, not per refused send.
    await sleep(1100);
    await sdk.send(sdkConv.id, "after the storm");
    const starts = shedding.filter((l) => l.msg.startsWith("overloaded: refusing sends"));
    const ends = shedding.filter((l) => l.msg.startsWith("no longer overloaded"));
    expect(starts.length, JSON.stringify(shedding)).toBeGreaterThan(0);
    expect(starts.length).toBeLessThan(refusals.length);
    expect(ends.length).toBe(starts.length);
    expect(shedding.at(-1)!.msg).toMatch(/^no longer overloaded/);
    expect(ends.reduce((n, l) => n + (l.refused ?? 0), 0)).toBeGreaterThanOrEqual(refusals.length);
  }, 90_000);
});
