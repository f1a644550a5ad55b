import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type BetterSqlite3 from "better-sqlite3";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { AppendResult, NewMessage, Store } from "../../core/ports/store.ts";
import { addGroup, addUsers, newMessage, readAll } from "../conformance/fixtures.ts";
import { SqliteStore } from "./sqlite-store.ts";
import { openReader } from "./sqlite-open.ts";
import { Sequencer } from "./sequencer.ts";
import { encodeNumbered } from "./numbered-log.ts";

// The sequencer numbers sends from counters instead of from SQLite's open transaction, and the
// applier writes them as numbered. The pair must do exactly what SqliteStore.appendMessages
// does: the same results (seqs, useqs, resends, refusals) and the same rows, whenever the
// applier happens to commit.

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "parley-sequencer-"));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

const USERS = ["a", "b", "c", "d"];
const CONVS = ["g1", "g2", "big", "none"];

async function setUp(store: Store): Promise<void> {
  await addUsers(store, ...USERS);
  await addGroup(store, "g1", ["a", "b"]);
  await addGroup(store, "g2", ["a", "b", "c"]);
  await store.createConversation({
    id: "big",
    kind: "group",
    name: "big",
    createdAt: 1,
    large: true,
    members: [
      { user: "a", role: "owner" },
      { user: "c", role: "member" },
    ],
  });
}

/** A sequencer over `file` and its applier. */
async function openPair(file: string): Promise<{
  applier: SqliteStore;
  reader: BetterSqlite3.Database;
  seq: Sequencer;
  send(batch: NewMessage[]): Promise<AppendResult[]>;
  commit(): Promise<void>;
  close(): Promise<void>;
}> {
  const applier = await SqliteStore.open(file, { commitIntervalMs: 60_000, applier: true });
  await setUp(applier);
  const reader = openReader(file);
  const seq = new Sequencer(reader);
  return {
    applier,
    reader,
    seq,
    async send(batch) {
      const { results, record, resends } = seq.number(batch);
      if (record) await applier.applyNumbered([encodeNumbered(record)]);
      if (resends.length > 0) {
        await applier.commitNow();
        seq.committedThrough(seq.lastBatch);
        seq.fillResends(batch, results, resends);
      }
      return results;
    },
    async commit() {
      await applier.commitNow();
      seq.committedThrough(seq.lastBatch);
    },
    async close() {
      reader.close();
      await applier.close();
    },
  };
}

const arbitrarySend = fc.record({
  conv: fc.constantFrom(...CONVS),
  from: fc.constantFrom(...USERS),
  // Few cids, so that resends (same sender and cid) come up often.
  cid: fc.constantFrom("c1", "c2", "c3", "c4", "c5", "c6"),
  replyTo: fc.option(fc.integer({ min: -1, max: 6 }), { nil: undefined }),
  ts: fc.integer({ min: 1, max: 1000 }),
});

describe("Sequencer with its applier", () => {
  it("numbers, refuses and finds resends exactly as SqliteStore.appendMessages, whenever commits fall", async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({ sends: fc.array(arbitrarySend, { minLength: 1, maxLength: 6 }), commit: fc.boolean() }),
          {
            minLength: 1,
            maxLength: 8,
          },
        ),
        async (batches) => {
          run++;
          const ref = await SqliteStore.open(join(dir, `ref-${run}.db`));
          await setUp(ref);
          const pair = await openPair(join(dir, `seq-${run}.db`));
          try {
            for (const { sends, commit } of batches) {
              const batch = sends.map((s) =>
                newMessage(s.conv, s.from, s.cid, {
                  ts: s.ts,
                  ...(s.replyTo !== undefined ? { replyTo: s.replyTo } : {}),
                }),
              );
              expect(await pair.send(batch)).toEqual(await ref.appendMessages(batch));
              if (commit) await pair.commit();
            }
            await pair.commit();
            for (const u of USERS) expect(await readAll(pair.applier, u)).toEqual(await readAll(ref, u));
            for (const u of USERS) {
              expect(await pair.applier.listConversations(u)).toEqual(await ref.listConversations(u));
            }
            expect(await pair.applier.readConversationLog("big", 0, 100)).toEqual(
              await ref.readConversationLog("big", 0, 100),
            );
          } finally {
            await pair.close();
            await ref.close();
          }
        },
      ),
      { numRuns: 25 },
    );
  });

  it("counts on from what another write changed, once it is committed and forgotten", async () => {
    const pair = await openPair(join(dir, "p.db"));
    await pair.send([newMessage("g1", "a", "m1")]);
    // Not a member yet.
    expect(await pair.send([newMessage("g1", "c", "m2")])).toMatchObject([
      { ok: false, code: "E_NOT_FOUND" },
    ]);
    // The barrier: another write runs after every numbered batch is applied, and commits them.
    expect(() => pair.seq.forget()).toThrow(/uncommitted/);
    const { updates } = await pair.applier.changeConversation({ kind: "add", conv: "g1", users: ["c"] });
    pair.seq.committedThrough(pair.seq.lastBatch);
    pair.seq.forget();
    const [r] = await pair.send([newMessage("g1", "c", "m3")]);
    expect(r).toMatchObject({ ok: true, duplicate: false, msg: { seq: 2 } });
    // c's log goes on after the "conv" entry the add appended to it.
    const added = updates.find((u) => u.user === "c")!;
    const sent = r!.ok ? r!.updates.find((u) => u.user === "c") : undefined;
    expect(sent?.useq).toBe(added.useq + 1);
    await pair.close();
  });

  it("finds a resend of a committed send in SQLite, and of an uncommitted one in what it numbered", async () => {
    const pair = await openPair(join(dir, "p.db"));
    const [first] = await pair.send([newMessage("g2", "b", "x")]);
    expect(await pair.send([newMessage("g2", "b", "x")])).toEqual([
      { ok: true, duplicate: true, msg: first!.ok && first!.msg, updates: [] },
    ]);
    await pair.commit();
    expect(await pair.send([newMessage("g2", "b", "x", { body: new Uint8Array([9]) })])).toEqual([
      { ok: true, duplicate: true, msg: first!.ok && first!.msg, updates: [] },
    ]);
    // Nothing new was numbered for either.
    expect(pair.seq.lastBatch).toBe(1);
    await pair.close();
  });

  it("the applier commits a transaction older than its interval at the next batch, though its timer has not run", async () => {
    // A worker's port delivers every queued message before timers run: behind a backlog the
    // commit timer alone fired seconds late, and the transaction grew to the sequencer's bound.
    const file = join(dir, "cadence.db");
    const commits: number[] = [];
    const applier = await SqliteStore.open(file, {
      // Long enough that nothing but the wait below takes the test past it, even on a busy machine.
      commitIntervalMs: 300,
      applier: true,
      onCommit: (batch) => commits.push(batch),
    });
    await setUp(applier);
    const reader = openReader(file);
    const seq = new Sequencer(reader);
    try {
      const apply = (cid: string) => {
        const { record } = seq.number([newMessage("g1", "a", cid)]);
        return applier.applyNumbered([encodeNumbered(record!)]);
      };
      commits.length = 0;
      await apply("m1");
      await apply("m2");
      // Within the interval: nothing committed yet.
      expect(commits).toEqual([]);
      // The event loop held past the interval, as a backlog of messages would hold it.
      const until = performance.now() + 320;
      while (performance.now() < until);
      const third = apply("m3");
      // Committed with m3 in the same turn, before any timer could run.
      expect(commits).toEqual([seq.lastBatch]);
      await third;
      // The next transaction is young again: no commit.
      await apply("m4");
      expect(commits).toEqual([seq.lastBatch - 1]);
      expect(applier.uncommittedEpoch).toBeGreaterThan(0);
    } finally {
      reader.close();
      await applier.close();
    }
  });
});
