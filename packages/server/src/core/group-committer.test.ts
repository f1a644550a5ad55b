import { describe, expect, it, vi } from "vitest";
import type { ParleyError } from "@parley/protocol";
import { MemoryStore } from "../store/memory/memory-store.ts";
import { Admission } from "./admission.ts";
import { GroupCommitter } from "./group-committer.ts";
import type { AppendResult, NewMessage } from "./ports/store.ts";

// The committer with admission control, on a store whose commits wait for the test to release
// them, and a clock the test moves: which sends are admitted is decided by arithmetic alone.

class GatedStore extends MemoryStore {
  private gates: Array<() => void> = [];
  /** The cids of every batch written, in order. */
  readonly batches: string[][] = [];
  /** Commits started and not yet released. */
  get waiting(): number {
    return this.gates.length;
  }
  release(): void {
    for (const open of this.gates.splice(0)) open();
  }
  override async appendMessages(batch: readonly NewMessage[]): Promise<AppendResult[]> {
    await new Promise<void>((resolve) => this.gates.push(resolve));
    this.batches.push(batch.map((m) => m.cid));
    return super.appendMessages(batch);
  }
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

/** A message to submit; only its cid and body size matter here. */
const item = (cid: string, bytes = 0): NewMessage => ({
  conv: "c",
  from: "u",
  dev: "d",
  cid,
  type: "t",
  body: new Uint8Array(bytes),
  ts: 0,
});

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !check(); i++) await turn();
  expect(check()).toBe(true);
}

/** Admission limits of every test here: batches of 10, sends refused beyond 100 ms of wait. */
const ADMISSION = {
  maxCommitQueueMs: 100,
  maxPendingSends: 1000,
  commitBatchMax: 10,
  maxRssBytes: 0,
  maxFanOutBacklog: 1000,
};

/** User "u" and conversation "c" with "u" in it, so that item()'s sends are stored. */
async function addConversation(store: MemoryStore): Promise<void> {
  await store.createUser({ id: "u", name: "u", passwordHash: "-", createdAt: 0 });
  await store.createConversation({
    id: "c",
    kind: "group",
    name: "g",
    createdAt: 0,
    members: [{ user: "u", role: "owner" }],
  });
}

function setup() {
  let now = 0;
  const store = new GatedStore();
  const admission = new Admission(ADMISSION, { now: () => now, random: () => 0 });
  const committed: AppendResult[] = [];
  const committer = new GroupCommitter(store, (r) => committed.push(...r), 10, admission);
  let n = 0;
  const outcomes: Array<"sent" | ParleyError> = [];
  const submit = (): void => {
    const i = n++;
    committer.submit(item(`m${i}`, 1)).then(
      () => (outcomes[i] = "sent"),
      (e: ParleyError) => (outcomes[i] = e),
    );
  };
  return { store, admission, committer, committed, outcomes, submit, advance: (ms: number) => (now += ms) };
}

describe("GroupCommitter with admission control", () => {
  it("admits while the estimated wait is within maxCommitQueueMs, refuses the rest, and commits every admitted send", async () => {
    const h = setup();
    // Learn the throughput: one full batch of 10 that takes 20 ms.
    for (let i = 0; i < 10; i++) h.submit();
    await until(() => h.store.waiting === 1);
    h.advance(20);
    h.store.release();
    await until(() => h.outcomes.filter(Boolean).length === 10);
    expect(h.admission.throughput.perMs).toBe(0.5);

    // A batch of 10 is being written (20 ms left): a send behind q queued ones waits
    // 20 + (q + 1) / 0.5 ms, within 100 ms up to q = 39.
    for (let i = 0; i < 10; i++) h.submit();
    await until(() => h.store.waiting === 1);
    for (let i = 0; i < 45; i++) h.submit();
    expect(h.committer.pending).toBe(40);
    await turn();
    const refused = h.outcomes.slice(60);
    expect(refused).toHaveLength(5);
    for (const e of refused)
      expect(e).toMatchObject({ code: "E_OVERLOADED", retry: true, retryAfterMs: 102 });

    // Everything admitted commits, in batches of at most 10; nothing refused was stored.
    for (let i = 0; i < 5; i++) {
      h.advance(20);
      h.store.release();
      await until(() => h.store.waiting === 1 || h.committer.pending === 0);
    }
    await h.committer.drain();
    expect(h.outcomes.slice(0, 60).every((o) => o === "sent")).toBe(true);
    expect(h.committed).toHaveLength(60);
    expect(h.store.batches.map((b) => b.length)).toEqual([10, 10, 10, 10, 10, 10]);
    expect(h.store.batches.flat()).toEqual(Array.from({ length: 60 }, (_, i) => `m${i}`));
  });

  it("refuses at maxPendingSends even before any throughput is known", async () => {
    const store = new GatedStore();
    const admission = new Admission(
      {
        maxCommitQueueMs: 100,
        maxPendingSends: 3,
        commitBatchMax: 10,
        maxRssBytes: 0,
        maxFanOutBacklog: 1000,
      },
      { now: () => 0, random: () => 0 },
    );
    const committer = new GroupCommitter(store, () => {}, 10, admission);
    const admitted = ["a", "b", "c"].map((cid) => committer.submit(item(cid)));
    await expect(committer.submit(item("d"))).rejects.toMatchObject({
      code: "E_OVERLOADED",
      retryAfterMs: 500,
    });
    await until(() => store.waiting === 1);
    store.release();
    await expect(Promise.all(admitted)).resolves.toHaveLength(3);
  });

  it("reports each commit (size, duration, outcome) and each refusal to its Metrics", async () => {
    class FailingOnce extends GatedStore {
      fail = true;
      override async appendMessages(batch: readonly NewMessage[]): Promise<AppendResult[]> {
        const r = await super.appendMessages(batch);
        if (this.fail) {
          this.fail = false;
          throw new Error("disk full");
        }
        return r;
      }
    }
    const store = new FailingOnce();
    const admission = new Admission(
      {
        maxCommitQueueMs: 100,
        maxPendingSends: 2,
        commitBatchMax: 10,
        maxRssBytes: 0,
        maxFanOutBacklog: 1000,
      },
      { now: () => 0, random: () => 0 },
    );
    const commits: Array<[number, boolean]> = [];
    let refused = 0;
    const metrics = {
      commit(messages: number, seconds: number, ok: boolean) {
        expect(seconds).toBeGreaterThanOrEqual(0);
        commits.push([messages, ok]);
      },
      sendRefused: () => refused++,
    };
    const committer = new GroupCommitter(store, () => {}, 10, admission, Infinity, metrics);
    const first = [committer.submit(item("a")), committer.submit(item("b"))];
    await expect(committer.submit(item("c"))).rejects.toMatchObject({ code: "E_OVERLOADED" });
    await until(() => store.waiting === 1);
    store.release();
    await Promise.allSettled(first);
    const second = committer.submit(item("d"));
    await until(() => store.waiting === 1);
    store.release();
    await second;
    expect(commits).toEqual([
      [2, false],
      [1, true],
    ]);
    expect(refused).toBe(1);
  });

  it("ends a batch once its bodies reach maxBatchBytes (at least one message), and counts it as full", async () => {
    const store = new GatedStore();
    let now = 0;
    const admission = new Admission(
      {
        maxCommitQueueMs: 0,
        maxPendingSends: 1000,
        commitBatchMax: 10,
        maxRssBytes: 0,
        maxFanOutBacklog: 1000,
      },
      { now: () => now, random: () => 0 },
    );
    const committer = new GroupCommitter(store, () => {}, 10, admission, 1000);
    // 400 + 400 + 400 crosses 1000 at the third; a 5000-byte body goes alone; small ones fill up
    // to the count limit.
    const sizes = [400, 400, 400, 5000, 300, ...Array.from({ length: 12 }, () => 1)];
    const sent = sizes.map((b, i) => committer.submit(item(`m${i}`, b)));
    for (let i = 0; i < 4; i++) {
      await until(() => store.waiting === 1);
      now += 10;
      store.release();
    }
    await Promise.all(sent);
    expect(store.batches.map((b) => b.length)).toEqual([3, 1, 10, 3]);
    // The batches cut by bytes with more queued were full: throughput is known from them.
    expect(admission.throughput.perMs).toBeDefined();
  });
});

describe("GroupCommitter pipelining", () => {
  it("hands the store the next batch before publishing the last one, and publishes in commit order", async () => {
    const events: string[] = [];
    class RecordingStore extends GatedStore {
      override appendMessages(batch: readonly NewMessage[]): Promise<AppendResult[]> {
        events.push(`append ${batch.map((m) => m.cid).join(",")}`);
        return super.appendMessages(batch);
      }
    }
    const store = new RecordingStore();
    const admission = new Admission(ADMISSION, { now: () => 0 });
    const committer = new GroupCommitter(
      store,
      (results) => events.push(`publish ${results.map((r) => (r.ok ? r.msg.cid : "?")).join(",")}`),
      10,
      admission,
    );
    await addConversation(store);
    const first = committer.submit(item("a"));
    await until(() => store.waiting === 1);
    const second = [committer.submit(item("b")), committer.submit(item("c"))];
    store.release();
    await first;
    expect(events).toStrictEqual(["append a", "append b,c", "publish a"]);
    await until(() => store.waiting === 1);
    store.release();
    await Promise.all(second);
    expect(events).toStrictEqual(["append a", "append b,c", "publish a", "publish b,c"]);
    expect((await store.history("c", { limit: 10 })).map((m) => m.cid)).toStrictEqual(["a", "b", "c"]);
  });
});

describe("GroupCommitter when publishing throws", () => {
  it("refuses that batch's sends and goes on committing the next ones", async () => {
    const store = new MemoryStore();
    await addConversation(store);
    const admission = new Admission(ADMISSION, { now: () => 0 });
    let calls = 0;
    const committer = new GroupCommitter(
      store,
      () => {
        if (++calls === 1) throw new Error("publish broke");
      },
      10,
      admission,
    );
    await expect(committer.submit(item("a"))).rejects.toMatchObject({ code: "E_INTERNAL" });
    await expect(committer.submit(item("b"))).resolves.toMatchObject({ ok: true, duplicate: false });
    // "a" was committed all the same: a resend finds it.
    await expect(committer.submit(item("a"))).resolves.toMatchObject({ ok: true, duplicate: true });
    await committer.drain();
  });
});

describe("GroupCommitter.enqueue (the callback form the send path uses)", () => {
  it("tells a refusal before returning, and each admitted send once, in order, after its batch", async () => {
    const store = new GatedStore();
    await addConversation(store);
    const admission = new Admission({ ...ADMISSION, maxPendingSends: 2 }, { now: () => 0, random: () => 0 });
    const committer = new GroupCommitter(store, () => {}, 10, admission);
    const told: string[] = [];
    const done =
      (cid: string) =>
      (err: Error | undefined, r: AppendResult | undefined): void => {
        told.push(
          r !== undefined ? `${cid} seq ${r.ok ? r.msg.seq : "-"}` : `${cid} ${(err as ParleyError).code}`,
        );
      };
    committer.enqueue(item("a"), done("a"));
    committer.enqueue(item("b"), done("b"));
    committer.enqueue(item("c"), done("c"));
    expect(told).toStrictEqual(["c E_OVERLOADED"]);
    await until(() => store.waiting === 1);
    expect(told).toStrictEqual(["c E_OVERLOADED"]);
    store.release();
    await committer.drain();
    expect(told).toStrictEqual(["c E_OVERLOADED", "a seq 1", "b seq 2"]);
  });

  it("tells the rest of a batch when one callback throws, and reports the throw as uncaught", async () => {
    const store = new MemoryStore();
    await addConversation(store);
    const committer = new GroupCommitter(store, () => {}, 10, new Admission(ADMISSION, { now: () => 0 }));
    const uncaught: unknown[] = [];
    vi.stubGlobal("queueMicrotask", (task: () => void) => {
      try {
        task();
      } catch (e) {
        uncaught.push(e);
      }
    });
    try {
      const told: string[] = [];
      committer.enqueue(item("a"), () => {
        told.push("a");
        throw new Error("bug in a callback");
      });
      committer.enqueue(item("b"), (err, r) => told.push(r?.ok ? "b stored" : String(err)));
      await committer.drain();
      expect(told).toStrictEqual(["a", "b stored"]);
      expect(uncaught).toMatchObject([{ message: "bug in a callback" }]);
    } finally {
      vi.unstubAllGlobals();
    }
  });
});
