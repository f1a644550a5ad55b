import { describe, expect, it } from "vitest";
import { ParleyError } from "@parley/protocol";
import type { ErrorFrame, ServerFrame } from "@parley/protocol";
import { MemoryBus } from "../bus/memory/memory-bus.ts";
import { ManualClock } from "../clock/manual-clock.ts";
import { MemorySessionDirectory } from "../session/memory/memory-session-directory.ts";
import { MemoryStore } from "../store/memory/memory-store.ts";
import {
  Admission,
  CommitThroughput,
  RETRY_AFTER_MAX_MS,
  RETRY_AFTER_MIN_MS,
  REFUSAL_WINDOW_MS,
  RSS_SAMPLE_MS,
  type AdmissionOptions,
  type SheddingEvent,
} from "./admission.ts";
import { Core } from "./core.ts";
import { silentLogger } from "./ports/logger.ts";
import { TestConnection, plainHasher } from "./testing/test-connection.ts";

// Admission control, with time, randomness and the RSS reading injected: every number below is
// computed by hand from the inputs, nothing depends on the machine's speed.

const OPTIONS: AdmissionOptions = {
  maxCommitQueueMs: 100,
  maxPendingSends: 1000,
  commitBatchMax: 10,
  maxRssBytes: 0,
  maxFanOutBacklog: 500,
};

function setup(options: Partial<AdmissionOptions> = {}, random = () => 0) {
  let now = 1_000;
  let rss = 0;
  let backlog = 0;
  let rssReads = 0;
  const shedding: SheddingEvent[] = [];
  const admission = new Admission(
    { ...OPTIONS, ...options },
    {
      now: () => now,
      random,
      onShedding: (e) => shedding.push(e),
      fanOutBacklog: () => backlog,
      rssBytes: () => {
        rssReads++;
        return rss;
      },
    },
  );
  /** Runs one batch of `n` messages that takes `ms`. */
  const batch = (n: number, ms: number): void => {
    admission.batchStarted(n);
    now += ms;
    admission.batchFinished(true);
  };
  return {
    admission,
    batch,
    advance: (ms: number) => (now += ms),
    setRss: (bytes: number) => (rss = bytes),
    setBacklog: (n: number) => (backlog = n),
    shedding,
    rssReads: () => rssReads,
  };
}

function expectOverloaded(e: ParleyError | undefined): ParleyError {
  expect(e).toBeInstanceOf(ParleyError);
  expect(e).toMatchObject({ code: "E_OVERLOADED", retry: true });
  expect(e!.retryAfterMs).toBeGreaterThan(0);
  return e!;
}

describe("CommitThroughput", () => {
  it("knows nothing before a full batch: batches that were not full do not make an estimate", () => {
    const t = new CommitThroughput();
    expect(t.perMs).toBeUndefined();
    t.record(3, 50, false);
    t.record(999, 10, false);
    expect(t.perMs).toBeUndefined();
    t.record(10, 20, true);
    expect(t.perMs).toBe(0.5);
  });

  it("lets a batch that was not full raise an estimate it proves too low, never lower one", () => {
    const t = new CommitThroughput();
    t.record(10, 200, true); // a full batch on a stalled disk: 0.05 per ms
    expect(t.perMs).toBe(0.05);
    t.record(1, 100, false); // 0.01 per ms: a small batch says nothing against the estimate
    expect(t.perMs).toBe(0.05);
    t.record(5, 10, false); // 0.5 per ms: capacity is at least that
    expect(t.perMs).toBeCloseTo(0.05 + CommitThroughput.ALPHA * (0.5 - 0.05), 10);
  });

  it("pools full batches until a sample spans MIN_SAMPLE_MS (a coarse clock reads 0 ms)", () => {
    const t = new CommitThroughput();
    for (let i = 0; i < 9; i++) t.record(100, 1, true);
    t.record(100, 0, true);
    expect(t.perMs).toBeUndefined();
    t.record(100, 1, true);
    // 1100 messages in 10 ms.
    expect(t.perMs).toBe(110);
  });

  it("moves towards new samples by ALPHA (an EWMA), and ignores nonsense durations", () => {
    const t = new CommitThroughput();
    t.record(10, 10, true); // 1 per ms
    t.record(30, 10, true); // 3 per ms
    expect(t.perMs).toBeCloseTo(1 + CommitThroughput.ALPHA * 2, 10);
    t.record(10, -5, true);
    t.record(10, Number.NaN, true);
    t.record(0, 50, true);
    expect(t.perMs).toBeCloseTo(1 + CommitThroughput.ALPHA * 2, 10);
  });
});

describe("Admission", () => {
  it("admits everything under the hard cap while no throughput is known", () => {
    const h = setup();
    expect(h.admission.estimateWaitMs(500)).toBeUndefined();
    expect(h.admission.refusal(999)).toBeUndefined();
    const e = expectOverloaded(h.admission.refusal(1000));
    // Drain time unknown: 500 ms base, random() = 0 adds nothing.
    expect(e.retryAfterMs).toBe(500);
  });

  it("estimates the wait in whole batches and refuses beyond maxCommitQueueMs", () => {
    const h = setup();
    h.batch(10, 20); // a full batch of 10 in 20 ms: 0.5 messages per ms
    expect(h.admission.throughput.perMs).toBe(0.5);
    // Idle committer: a send behind q others waits for q + 1 messages at 0.5 per ms.
    expect(h.admission.estimateWaitMs(0)).toBe(2);
    expect(h.admission.estimateWaitMs(9)).toBe(20);
    expect(h.admission.estimateWaitMs(49)).toBe(100);
    expect(h.admission.refusal(49)).toBeUndefined(); // exactly the target is still admitted
    const e = expectOverloaded(h.admission.refusal(50));
    expect(e.message).toMatch(/wait too long for commit/);
    // retryAfterMs is the estimated drain time (102 ms) with random() = 0.
    expect(e.retryAfterMs).toBe(102);
  });

  it("counts what the running batch still needs, and lowers the rate when it is overdue", () => {
    const h = setup();
    h.batch(10, 20);
    h.admission.batchStarted(10);
    expect(h.admission.estimateWaitMs(0)).toBe(20 + 2);
    h.advance(5);
    expect(h.admission.estimateWaitMs(0)).toBe(15 + 2);
    // A commit stuck for 60 ms (a full batch takes 20): assumed to need 60 more, at 10 per 60 ms.
    h.advance(55);
    expect(h.admission.estimateWaitMs(0)).toBeCloseTo(60 + 6, 10);
    expect(h.admission.estimateWaitMs(5)).toBeCloseTo(60 + 36, 10);
    expect(h.admission.refusal(5)).toBeUndefined();
    expectOverloaded(h.admission.refusal(6));
    // It finishes: one 60 ms sample pulls the EWMA from 0.5 towards 10/60 per ms.
    h.admission.batchFinished(true);
    const rate = 0.5 + CommitThroughput.ALPHA * (10 / 60 - 0.5);
    expect(h.admission.throughput.perMs).toBeCloseTo(rate, 10);
  });

  it("still admits when a full batch takes longer than maxCommitQueueMs, and recovers", () => {
    const h = setup();
    h.batch(10, 200); // 0.05 per ms: a full batch alone would take twice the target
    expect(h.admission.refusal(0)).toBeUndefined();
    expect(h.admission.refusal(4)).toBeUndefined(); // 5 messages: 100 ms
    expectOverloaded(h.admission.refusal(5));
    // The disk is fast again: the small batches admission lets through show it.
    h.batch(5, 10);
    h.batch(5, 10);
    expect(h.admission.throughput.perMs).toBeGreaterThan(0.05);
    for (let i = 0; i < 20; i++) h.batch(5, 10);
    expect(h.admission.refusal(40)).toBeUndefined();
  });

  it("learns nothing from a failed commit", () => {
    const h = setup();
    h.admission.batchStarted(10);
    h.advance(20);
    h.admission.batchFinished(false);
    expect(h.admission.throughput.perMs).toBeUndefined();
  });

  it("keeps the hard cap even when the estimate would admit", () => {
    const h = setup({ maxCommitQueueMs: 60_000, maxPendingSends: 60 });
    h.batch(10, 20);
    expect(h.admission.refusal(59)).toBeUndefined();
    const e = expectOverloaded(h.admission.refusal(60));
    expect(e.message).toMatch(/too many sends/);
    expect(e.retryAfterMs).toBe(122); // drain estimate: 61 messages at 0.5 per ms
  });

  it("does not estimate when maxCommitQueueMs is 0", () => {
    const h = setup({ maxCommitQueueMs: 0 });
    h.batch(10, 20);
    expect(h.admission.refusal(999)).toBeUndefined();
    expectOverloaded(h.admission.refusal(1000));
  });

  it("jitters retryAfterMs between the drain time and twice it, within bounds", () => {
    let r = 0;
    const h = setup({}, () => r);
    const at = (drain: number, random: number): number => {
      r = random;
      return h.admission.retryAfterMs(drain);
    };
    expect(at(300, 0)).toBe(300);
    expect(at(300, 0.5)).toBe(450);
    expect(at(300, 0.999)).toBe(600);
    expect(at(0, 0)).toBe(RETRY_AFTER_MIN_MS);
    expect(at(-5, 0)).toBe(RETRY_AFTER_MIN_MS);
    expect(at(1e9, 0)).toBe(RETRY_AFTER_MAX_MS);
    expect(at(1e9, 0.999)).toBe(2 * RETRY_AFTER_MAX_MS - 10);
    expect(at(12.2, 0)).toBe(RETRY_AFTER_MIN_MS);
    expect(at(120.2, 0)).toBe(121);
  });

  it("spreads retries over refusals / commit rate, so that refused sends come back at about the commit rate", () => {
    const h = setup({ maxCommitQueueMs: 100 });
    h.batch(10, 20); // 0.5 messages per ms = 500 per second
    // Window 1: 2,000 refusals in REFUSAL_WINDOW_MS (queue beyond the 100 ms target).
    for (let i = 0; i < 2000; i++) expectOverloaded(h.admission.refusal(60));
    expect(h.admission.refusalsPerMs).toBe(0); // no complete window yet
    h.advance(REFUSAL_WINDOW_MS);
    // 2 refusals per ms over 0.5 commits per ms: spread over 4 s, more than the drain time.
    expect(h.admission.refusalsPerMs).toBe(2);
    expect(expectOverloaded(h.admission.refusal(60)).retryAfterMs).toBe(4000);
    // A window with fewer refusals lowers it again, back to the drain time (122 ms).
    h.advance(REFUSAL_WINDOW_MS);
    expect(h.admission.refusalsPerMs).toBeCloseTo(1 / REFUSAL_WINDOW_MS);
    expect(expectOverloaded(h.admission.refusal(60)).retryAfterMs).toBe(122);
    // A long quiet gap counts as no refusals at all; bounded by RETRY_AFTER_MAX_MS meanwhile.
    h.advance(10 * REFUSAL_WINDOW_MS);
    expect(h.admission.refusalsPerMs).toBe(0);
    for (let i = 0; i < 100_000; i++) h.admission.refusal(60);
    h.advance(REFUSAL_WINDOW_MS);
    expect(h.admission.retryAfterMs(0)).toBe(RETRY_AFTER_MAX_MS);
    // Admitted sends are not refusals.
    h.advance(REFUSAL_WINDOW_MS);
    for (let i = 0; i < 1000; i++) expect(h.admission.refusal(0)).toBeUndefined();
    h.advance(REFUSAL_WINDOW_MS);
    expect(h.admission.refusalsPerMs).toBe(0);
  });

  it("tells when shedding starts (first refusal) and stops (a whole window without one), once each", () => {
    const h = setup({ maxCommitQueueMs: 100 });
    h.batch(10, 20); // 0.5 per ms
    expect(h.admission.refusal(0)).toBeUndefined();
    expect(h.shedding).toEqual([]);
    for (let i = 0; i < 5; i++) expectOverloaded(h.admission.refusal(60));
    expect(h.shedding).toEqual([
      {
        shedding: true,
        reason: expect.stringMatching(/wait too long/) as unknown,
        queued: 60,
        commitsPerSecond: 500,
      },
    ]);
    h.advance(REFUSAL_WINDOW_MS); // this window had refusals: still shedding
    expect(h.admission.refusal(0)).toBeUndefined();
    expectOverloaded(h.admission.refusal(60));
    expect(h.shedding).toHaveLength(1);
    h.advance(REFUSAL_WINDOW_MS);
    expect(h.admission.refusal(0)).toBeUndefined(); // rolls the window with the refusal above
    expect(h.shedding).toHaveLength(1);
    h.advance(REFUSAL_WINDOW_MS);
    expect(h.admission.refusal(0)).toBeUndefined(); // a whole window without refusals
    expect(h.shedding.at(-1)).toEqual({ shedding: false, refused: 6, forMs: 3 * REFUSAL_WINDOW_MS });
    expect(h.shedding).toHaveLength(2);
    expectOverloaded(h.admission.refusal(60)); // a new episode
    expect(h.shedding).toHaveLength(3);
    expect(h.shedding.at(-1)).toMatchObject({ shedding: true });
  });

  it("refuses sends while maxFanOutBacklog pushes wait to go out, admits again once below", () => {
    const h = setup();
    h.setBacklog(499);
    expect(h.admission.refusal(0)).toBeUndefined();
    h.setBacklog(500);
    const refused = h.admission.refusal(0);
    expect(refused).toMatchObject({ code: "E_OVERLOADED", retry: true });
    expect(refused?.message).toMatch(/pushes wait to go out/);
    expect(refused?.retryAfterMs).toBe(1000);
    h.setBacklog(10);
    expect(h.admission.refusal(0)).toBeUndefined();
  });

  it("refuses without a stack trace (cheap under overload)", () => {
    const h = setup();
    const e = expectOverloaded(h.admission.refusal(1000));
    expect(e.stack ?? "").not.toMatch(/\n\s+at /);
    // Other errors keep theirs.
    expect(new Error("x").stack).toMatch(/\n\s+at /);
  });

  it("refuses sends while RSS is at 90% of maxRssBytes or above, reading it at most every 250 ms", () => {
    const h = setup({ maxRssBytes: 1000 });
    h.setRss(899);
    expect(h.admission.refusal(0)).toBeUndefined();
    expect(h.rssReads()).toBe(1);
    h.setRss(900);
    // Not read again yet: still the old value.
    expect(h.admission.refusal(0)).toBeUndefined();
    expect(h.rssReads()).toBe(1);
    h.advance(RSS_SAMPLE_MS);
    const e = expectOverloaded(h.admission.refusal(0));
    expect(e.message).toMatch(/memory/);
    expect(e.retryAfterMs).toBe(1000);
    expect(h.rssReads()).toBe(2);
    h.setRss(100);
    h.advance(RSS_SAMPLE_MS - 1);
    expectOverloaded(h.admission.refusal(0));
    h.advance(1);
    expect(h.admission.refusal(0)).toBeUndefined();
    expect(h.rssReads()).toBe(3);
  });

  it("never reads RSS when the bound is off", () => {
    const h = setup({ maxRssBytes: 0 });
    h.setRss(Number.MAX_SAFE_INTEGER);
    expect(h.admission.refusal(0)).toBeUndefined();
    expect(h.rssReads()).toBe(0);
  });
});

describe("the memory bound, through the core", () => {
  it("refuses sends with E_OVERLOADED while RSS is over the bound, and stores none of them", async () => {
    const clock = new ManualClock(1_700_000_000_000);
    let rss = 10 * 2 ** 20;
    const core = new Core({
      store: new MemoryStore(),
      bus: new MemoryBus<ServerFrame>(),
      sessions: new MemorySessionDirectory(),
      clock,
      hasher: plainHasher,
      logger: silentLogger,
      options: { maxRssBytes: 100 * 2 ** 20 },
      rssBytes: () => rss,
    });
    await core.register("alice", "password-alice");
    await core.register("bob", "password-bob");
    const login = await core.login("alice", "password-alice", "test");
    const alice = await core.authenticate(login.token);
    const bob = await core.findUser(alice, "bob");
    const conv = await core.createDirect(alice, bob.id);
    const c = new TestConnection(core);
    c.receive({ t: "hello", versions: [1], token: login.token });
    await c.waitFor((f) => f.t === "welcome");
    const body = new TextEncoder().encode("hi");
    const send = (id: number, cid: string) =>
      c.request({ t: "send", id, conv: conv.id, cid, type: "t", body });

    expect(await send(1, "m1")).toMatchObject({ t: "sent", seq: 1 });
    rss = 95 * 2 ** 20;
    clock.advance(RSS_SAMPLE_MS);
    const refused = (await send(2, "m2")) as ErrorFrame;
    expect(refused).toMatchObject({ t: "error", id: 2, code: "E_OVERLOADED", retry: true });
    expect(refused.retryAfterMs).toBeGreaterThanOrEqual(1000);
    expect(refused.retryAfterMs).toBeLessThanOrEqual(2000);
    // REST sends go through the same door.
    await expect(core.send(alice, { conv: conv.id, cid: "rest", type: "t", body })).rejects.toMatchObject({
      code: "E_OVERLOADED",
    });
    expect((await core.history(alice, conv.id, {})).messages.map((m) => m.cid)).toEqual(["m1"]);
    // Memory back under the bound: the resend (same cid) is admitted once RSS is read again.
    rss = 50 * 2 ** 20;
    clock.advance(RSS_SAMPLE_MS);
    expect(await send(3, "m2")).toMatchObject({ t: "sent", cid: "m2", seq: 2 });
    expect(c.closedWith).toBeUndefined();
    await core.shutdown();
  });
});
