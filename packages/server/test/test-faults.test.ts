import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseTestFaults } from "../src/config.ts";
import { addGroup, addUsers, sendMsg } from "../src/store/conformance/fixtures.ts";
import { SqliteStore } from "../src/store/sqlite/sqlite-store.ts";
import { ThreadedSqliteStore } from "../src/store/sqlite/threaded-sqlite-store.ts";
import { NumberedLog } from "../src/store/sqlite/numbered-log.ts";
import { withCommitDelay } from "../src/store/testing/commit-delay.ts";

// The deliberately broken server builds behind PARLEY_TEST_FAULTS, which the reliability tests
// use to show that their checkers can fail. Each fault must really do what it says.

describe("PARLEY_TEST_FAULTS", () => {
  it("parses the faults and their values", () => {
    expect(parseTestFaults(undefined)).toBeUndefined();
    expect(parseTestFaults(" ")).toBeUndefined();
    expect(parseTestFaults("ack-before-commit")).toEqual({ ackBeforeCommitMs: 500 });
    expect(parseTestFaults("ack-before-commit=50, commit-delay=20")).toEqual({
      ackBeforeCommitMs: 50,
      commitDelayMs: 20,
    });
  });

  it("refuses unknown faults and bad values, naming them", () => {
    expect(() => parseTestFaults("lose-everything")).toThrow(/unknown fault "lose-everything"/);
    expect(() => parseTestFaults("commit-delay")).toThrow(/commit-delay/);
    expect(() => parseTestFaults("commit-delay=abc")).toThrow(/commit-delay must be an integer/);
    expect(() => parseTestFaults("ack-before-commit=0")).toThrow(/ack-before-commit/);
  });
});

describe("test faults in the store", () => {
  let dir: string;
  let file: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "parley-faults-"));
    file = join(dir, "parley.db");
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function committedMessages(): number {
    const db = new Database(file, { readonly: true });
    try {
      return (db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n;
    } finally {
      db.close();
    }
  }

  it("ack-before-commit: a send resolves while nothing of it is committed", async () => {
    const store = await ThreadedSqliteStore.open(file, { unsafeDeferCommitMs: 60_000 });
    await addUsers(store, "u1", "u2");
    await addGroup(store, "c1", ["u1", "u2"]);
    const msg = await sendMsg(store, "c1", "u1", "cid-1");
    expect(msg.seq).toBe(1);
    // Another connection sees no message: the acknowledged write is not committed.
    expect(committedMessages()).toBe(0);
    // Any other kind of write commits first (accounts and tokens stay durable).
    await addUsers(store, "u3");
    expect(committedMessages()).toBe(1);
    await sendMsg(store, "c1", "u1", "cid-2");
    expect(committedMessages()).toBe(1);
    // Acknowledged without the log that would have kept them.
    expect(NumberedLog.segments(file)).toEqual([]);
    await store.close(); // commits
    expect(committedMessages()).toBe(2);
  });

  it("without the fault, a send is committed when it resolves", async () => {
    const store = await SqliteStore.open(file);
    await addUsers(store, "u1", "u2");
    await addGroup(store, "c1", ["u1", "u2"]);
    await sendMsg(store, "c1", "u1", "cid-1");
    expect(committedMessages()).toBe(1);
    await store.close();
  });

  it("commit-delay: appends wait, everything else passes through", async () => {
    const inner = await SqliteStore.open(file);
    const store = withCommitDelay(inner, 30);
    await addUsers(store, "u1", "u2");
    await addGroup(store, "c1", ["u1", "u2"]);
    let settled = false;
    const pending = sendMsg(store, "c1", "u1", "cid-1").then((m) => {
      settled = true;
      return m;
    });
    await new Promise((r) => setImmediate(r));
    expect(settled).toBe(false);
    expect((await pending).seq).toBe(1);
    expect(committedMessages()).toBe(1);
    await store.close();
  });
});
