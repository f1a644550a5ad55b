import {
  copyFile,
  mkdir,
  mkdtemp,
  readFile,
  rm,
  stat,
  truncate,
  writeFile,
  open as openFile,
} from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { runStoreConformance } from "../store-conformance.ts";
import type { Store } from "../../core/ports/store.ts";
import { NUMBERED_LOG_APPLIED, SqliteStore } from "./sqlite-store.ts";
import { CommitLog } from "./commit-log.ts";
import { NumberedLog, encodeNumbered, logBase, logDirMarker } from "./numbered-log.ts";
import type { Logger } from "../../core/ports/logger.ts";
import { ThreadedSqliteStore } from "./threaded-sqlite-store.ts";
import {
  MIGRATIONS,
  MIGRATION_STARTED,
  MIGRATION_STEP_DONE,
  SCHEMA_VERSION,
  type MigrationFn,
} from "./sqlite-schema.ts";
import { T0, addGroup, addUsers, bytes, newMessage, readAll, sendMsg } from "../conformance/fixtures.ts";

/** The log-entry insert, as the store writes it, and as it was before migration 7. */
const INSERT_UPDATE =
  "INSERT INTO updates (log_num, useq, kind, conv_num, seq, snapshot, data) VALUES (?, ?, ?, ?, ?, ?, ?)";
const INSERT_UPDATE_V6 =
  "INSERT INTO updates (user_id, useq, kind, conv_id, seq, snapshot, data) VALUES (?, ?, ?, ?, ?, ?, ?)";

/** The VDBE opcodes SQLite compiles `insert` to on `db`, as it sees the schema now. */
function insertUpdateOpcodes(db: Database.Database, insert = INSERT_UPDATE): string[] {
  const rows = db.prepare(`EXPLAIN ${insert}`).all(...Array<null>(7).fill(null));
  return (rows as Array<{ opcode: string }>).map((r) => r.opcode);
}

/** Writes `file` as the first `version` migrations leave it, then `rows` (SQL) into it: a
 * database an earlier Parley wrote. */
function writeVersion(file: string, version: number, rows: string): void {
  const raw = new Database(file);
  raw.pragma("journal_mode = WAL");
  for (const m of MIGRATIONS.slice(0, version)) {
    if (typeof m === "string") raw.exec(m);
    else m(raw);
  }
  raw.pragma(`user_version = ${version}`);
  raw.exec(rows);
  raw.close();
}

/** Opening `file` fails with an error that names it and says it is damaged or not a database. */
async function expectRefused(file: string): Promise<void> {
  const err: unknown = await SqliteStore.open(file).then(
    async (store) => {
      await store.close();
      return undefined;
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(Error);
  expect((err as Error).message).toContain(file);
  expect((err as Error).message).toMatch(/damaged|not a usable SQLite database/);
}

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "parley-sqlite-"));
}

/** A fresh temporary directory for each test of the enclosing describe, removed after it. */
function useTempDir(): () => string {
  let dir: string | undefined;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });
  return () => dir!;
}

runStoreConformance("SqliteStore", async () => {
  const dir = await tempDir();
  const store = await SqliteStore.open(join(dir, "parley.db"));
  return { store, cleanup: () => rm(dir, { recursive: true, force: true }) };
});

describe("SqliteStore on disk", () => {
  let dir: string;
  let file: string;

  beforeEach(async () => {
    dir = await tempDir();
    file = join(dir, "parley.db");
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A closed database with a few pages of data in it. */
  async function populated(): Promise<void> {
    const store = await SqliteStore.open(file);
    await addUsers(store, "a", "b");
    await addGroup(store, "g1", ["a", "b"]);
    await store.appendMessages(
      Array.from({ length: 200 }, (_, i) =>
        newMessage("g1", i % 2 ? "a" : "b", `c${i}`, { body: randomBytes(300) }),
      ),
    );
    await store.close();
  }

  it("keeps everything across close and reopen, and goes on from there", async () => {
    const first = await SqliteStore.open(file);
    await addUsers(first, "a", "b");
    await first.createDevice(
      { id: "d1", userId: "a", name: "phone", createdAt: T0, cursor: 0, lastSeenAt: T0 },
      { hash: "t1", userId: "a", deviceId: "d1", createdAt: T0, expiresAt: T0 + 1 },
    );
    await first.touchDevice("d1", 2, T0 + 1);
    await addGroup(first, "g1", ["a", "b"]);
    await sendMsg(first, "g1", "a", "c1", { body: bytes("hello") });
    await first.changeMessage({ kind: "react", conv: "g1", seq: 1, user: "b", emoji: "👍", on: true });
    await first.setReceipt("g1", "b", "read", 1);
    const before = {
      conv: await first.getConversation("g1"),
      logA: await readAll(first, "a"),
      logB: await readAll(first, "b"),
      device: await first.getDevice("d1"),
      token: await first.findToken("t1"),
    };
    await first.close();

    const second = await SqliteStore.open(file);
    try {
      expect(await second.getConversation("g1")).toEqual(before.conv);
      expect(await readAll(second, "a")).toEqual(before.logA);
      expect(await readAll(second, "b")).toEqual(before.logB);
      expect(await second.getDevice("d1")).toEqual(before.device);
      expect(await second.findToken("t1")).toEqual(before.token);
      expect((await second.findUserByName("NAME-A"))?.id).toBe("a");
      const [again] = await second.appendMessages([newMessage("g1", "a", "c1")]);
      expect(again).toMatchObject({ ok: true, duplicate: true, msg: { seq: 1 } });
      expect(await sendMsg(second, "g1", "b", "c2")).toMatchObject({ seq: 2 });
      expect(await second.head("a")).toBe(before.logA.length + 1);
    } finally {
      await second.close();
    }
  });

  it("sets WAL mode (persistent) and synchronous FULL", async () => {
    const store = await SqliteStore.open(file);
    const db = (store as unknown as { db: Database.Database }).db;
    expect(db.pragma("synchronous", { simple: true })).toBe(2);
    expect(db.pragma("foreign_keys", { simple: true })).toBe(1);
    expect(db.pragma("cache_size", { simple: true })).toBe(-64 * 1024);
    expect(db.pragma("wal_autocheckpoint", { simple: true })).toBe(20_000);
    await store.close();
    const small = await SqliteStore.open(file, { cacheKib: 2048 });
    expect((small as unknown as { db: Database.Database }).db.pragma("cache_size", { simple: true })).toBe(
      -2048,
    );
    await small.close();
    const raw = new Database(file, { readonly: true });
    expect(raw.pragma("journal_mode", { simple: true })).toBe("wal");
    expect(raw.pragma("user_version", { simple: true })).toBe(SCHEMA_VERSION);
    raw.close();
  });

  it("logs no migration steps when it creates a new file", async () => {
    const { logger, messages } = recording();
    const store = await SqliteStore.open(file, { logger });
    expect(messages).not.toContain(MIGRATION_STARTED);
    expect(messages).not.toContain(MIGRATION_STEP_DONE);
    expect(messages).toContain("sqlite schema migrated");
    await store.close();
  });

  it("commits a batch of 500 in one call", async () => {
    const store = await SqliteStore.open(file);
    await addUsers(store, "a", "b", "c");
    await addGroup(store, "g1", ["a", "b", "c"]);
    await addGroup(store, "g2", ["a", "b"]);
    const batch = Array.from({ length: 500 }, (_, i) =>
      newMessage(i % 3 ? "g1" : "g2", i % 2 ? "a" : "b", `c${i}`),
    );
    const results = await store.appendMessages(batch);
    expect(results.every((r) => r.ok && !r.duplicate)).toBe(true);
    const n1 = batch.filter((m) => m.conv === "g1").length;
    expect((await store.getConversation("g1"))?.lastSeq).toBe(n1);
    expect((await store.getConversation("g2"))?.lastSeq).toBe(500 - n1);
    expect(await store.head("c")).toBe(1 + n1);
    expect(await store.head("a")).toBe(2 + 500);
    await store.close();
  });

  it("migrates a version-1 file: logs go on gap-free, messages, reactions and resend keys kept", async () => {
    // A version-1 database written the way version 1 did: with a user_heads row per user.
    writeVersion(
      file,
      1,
      `
      INSERT INTO users VALUES ('a', 'a', 'h', 0), ('b', 'b', 'h', 0), ('c', 'c', 'h', 0);
      INSERT INTO user_heads VALUES ('a', 2), ('b', 1), ('c', 0);
      INSERT INTO conversations VALUES ('g0', 'group', 'g', 0, NULL, 0, 0), ('g1', 'group', 'g', 0, NULL, 1, 0);
      INSERT INTO members (conv_id, user_id, role) VALUES ('g1', 'a', 'owner'), ('g1', 'b', 'member');
      INSERT INTO messages (conv_id, seq, from_user, from_dev, cid, type, body, ts)
        VALUES ('g1', 1, 'a', 'd', 'c0', 'text', x'00', 0);
      INSERT INTO updates (user_id, useq, kind, conv_id, seq) VALUES
        ('a', 1, 'left', 'g0', NULL), ('a', 2, 'msg', 'g1', 1), ('b', 1, 'msg', 'g1', 1);
      INSERT INTO reactions (conv_id, seq, emoji, user_id) VALUES ('g1', 1, '+1', 'b');
    `,
    );

    // Each step is logged, with the version it reached, so that a long start is not taken for a hang.
    const { logger, records: logged } = recording();
    const store = await SqliteStore.open(file, { logger });
    expect(logged.find((l) => l.msg === MIGRATION_STARTED)?.obj).toMatchObject({
      from: 1,
      to: SCHEMA_VERSION,
    });
    const steps = logged.filter((l) => l.msg === MIGRATION_STEP_DONE).map((l) => l.obj);
    expect(steps.map((o) => o.version)).toEqual(Array.from({ length: SCHEMA_VERSION - 1 }, (_, i) => i + 2));
    for (const o of steps) expect(typeof o.ms === "number" && o.ms >= 0).toBe(true);
    expect([await store.head("a"), await store.head("b"), await store.head("c")]).toEqual([2, 1, 0]);
    const [r] = await store.appendMessages([newMessage("g1", "b", "c1")]);
    expect(r).toMatchObject({ ok: true, duplicate: false, msg: { seq: 2 } });
    expect((await store.readUpdates("a", 0, 10)).map((u) => u.useq)).toEqual([1, 2, 3]);
    // Entries name their conversations and messages by number since migration 7: read back by id.
    expect((await store.readUpdates("a", 0, 10)).map((e) => e.u)).toMatchObject([
      { k: "left", conv: "g0" },
      { k: "msg", msg: { conv: "g1", seq: 1, from: "a", cid: "c0" } },
      { k: "msg", msg: { conv: "g1", seq: 2, from: "b", cid: "c1" } },
    ]);
    expect((await store.readUpdates("b", 0, 10)).map((u) => u.useq)).toEqual([1, 2]);
    // The message and its reaction came through the rebuilt table; a resend is still found.
    expect(await store.getMessage("g1", 1)).toMatchObject({ cid: "c0", reactions: { "+1": ["b"] } });
    const [again] = await store.appendMessages([newMessage("g1", "a", "c0")]);
    expect(again).toMatchObject({ ok: true, duplicate: true, msg: { seq: 1 } });
    // Groups from before migration 4 are not large, and can become so.
    expect((await store.getConversation("g1"))?.large).toBeUndefined();
    await store.changeConversation({ kind: "large", conv: "g1" });
    expect(await store.largeConversations("b")).toEqual([{ conv: "g1", head: 0 }]);
    // Users and conversations made after the migration are numbered after those it numbered.
    await addUsers(store, "d");
    await addGroup(store, "g2", ["d", "c"]);
    expect(await sendMsg(store, "g2", "c", "c2")).toMatchObject({ conv: "g2", from: "c", seq: 1 });
    expect((await store.readUpdates("d", 0, 10)).at(-1)?.u).toMatchObject({ msg: { from: "c", cid: "c2" } });
    await store.close();
    const check = new Database(file, { readonly: true });
    expect(check.pragma("user_version", { simple: true })).toBe(SCHEMA_VERSION);
    expect(check.prepare("SELECT id, num FROM users ORDER BY num").raw().all()).toEqual([
      ["a", 1],
      ["b", 2],
      ["c", 3],
      ["d", 4],
    ]);
    expect(check.prepare("SELECT id, num FROM conversations ORDER BY num").raw().all()).toEqual([
      ["g0", 1],
      ["g1", 2],
      ["g2", 3],
    ]);
    expect(check.prepare("SELECT count(*) FROM sqlite_schema WHERE name = 'user_heads'").pluck().get()).toBe(
      0,
    );
    // The resend key leads with cid (migration 3).
    const indexes = check.pragma("index_list(messages)") as Array<{
      name: string;
      unique: number;
      origin: string;
    }>;
    const unique = indexes
      .filter((x) => x.unique === 1 && x.origin === "u")
      .map((x) => (check.pragma(`index_info(${x.name})`) as Array<{ name: string }>).map((c) => c.name));
    expect(unique).toEqual([["cid", "from_num"]]);
    expect(check.pragma("foreign_key_check")).toEqual([]);
    // Migration 6 rewrote the updates table's CHECK in place: the file is sound and the rows kept.
    expect(check.pragma("integrity_check", { simple: true })).toBe("ok");
    expect(check.prepare("SELECT sql FROM sqlite_schema WHERE name = 'updates'").pluck().get()).toContain(
      "kind = 'msg' OR kind = 'edit'",
    );
    expect(
      check
        .prepare(
          "SELECT kind FROM updates JOIN logs ON num = log_num WHERE key = 'a' AND useq <= 3 ORDER BY useq",
        )
        .pluck()
        .all(),
    ).toEqual(["left", "msg", "msg"]);
    check.close();
  });

  it("migration 6 takes effect on the migrating connection at once, inside its transaction", () => {
    const raw = new Database(file);
    raw.transaction(() => {
      for (const m of MIGRATIONS.slice(0, 5)) raw.exec(m as string);
      expect(insertUpdateOpcodes(raw, INSERT_UPDATE_V6)).toContain("OpenEphemeral");
      (MIGRATIONS[5] as MigrationFn)(raw);
      expect(insertUpdateOpcodes(raw, INSERT_UPDATE_V6)).not.toContain("OpenEphemeral");
    })();
    raw.close();
  });

  it("inserts a log entry without building a temporary B-tree, and still refuses an unknown kind", async () => {
    const store = await SqliteStore.open(file);
    await addUsers(store, "a");
    const db = (store as unknown as { db: Database.Database }).db;
    const opcodes = insertUpdateOpcodes(db);
    expect(opcodes).toContain("IdxInsert");
    expect(opcodes).not.toContain("OpenEphemeral");
    const log = Number(db.prepare("INSERT INTO logs (key) VALUES ('a')").run().lastInsertRowid);
    expect(() => db.prepare(INSERT_UPDATE).run(log, 1, "bogus", 1, null, null, null)).toThrow(
      /CHECK constraint failed/,
    );
    db.prepare(INSERT_UPDATE).run(log, 1, "left", 1, null, null, null);
    // Unsafe mode was for the migration only: even with writable_schema on, sqlite_schema is
    // read-only again.
    db.pragma("writable_schema = ON");
    expect(() => db.prepare("UPDATE sqlite_schema SET sql = sql WHERE name = 'updates'").run()).toThrow(
      /may not be modified/,
    );
    db.pragma("writable_schema = OFF");
    await store.close();
  });

  it("numbers given in a transaction that rolls back are not used after it (logs, conversations)", async () => {
    const store = await SqliteStore.open(file);
    await addUsers(store, "a", "b", "c");
    const db = (store as unknown as { db: Database.Database }).db;
    // Fails the group's creation at b's first log entry: after a's log and the conversation were
    // numbered, inside the transaction.
    db.exec(`CREATE TRIGGER fail_b BEFORE INSERT ON updates
      WHEN (SELECT key FROM logs WHERE num = NEW.log_num) = 'b' BEGIN SELECT RAISE(ABORT, 'boom'); END`);
    await expect(addGroup(store, "g1", ["a", "b"])).rejects.toThrow(/boom/);
    db.exec("DROP TRIGGER fail_b");
    expect(db.prepare("SELECT count(*) FROM logs").pluck().get()).toBe(0);
    // The numbers the rolled back transaction gave go to others now: a number kept from it would
    // name no log (a foreign key error) or another conversation.
    await addGroup(store, "g2", ["c", "a"]);
    expect(await sendMsg(store, "g2", "a", "m1")).toMatchObject({ conv: "g2", seq: 1, from: "a" });
    for (const user of ["a", "c"]) {
      const log = await readAll(store, user);
      expect(log.map((e) => e.useq)).toEqual([1, 2]);
      expect(log[1]?.u).toMatchObject({ k: "msg", msg: { conv: "g2", seq: 1, cid: "m1" } });
    }
    expect(await store.getConversation("g1")).toBeUndefined();
    // The failed id made again: numbered after g2 now, not as it was in the rolled back attempt.
    await addGroup(store, "g1", ["a", "b"]);
    expect(await sendMsg(store, "g1", "b", "m2")).toMatchObject({ conv: "g1", seq: 1, from: "b" });
    expect((await store.history("g2", { limit: 10 })).map((m) => m.cid)).toEqual(["m1"]);
    expect((await store.history("g1", { limit: 10 })).map((m) => m.cid)).toEqual(["m2"]);
    // Entries that name only the conversation (a receipt) name the right one.
    await store.setReceipt("g1", "a", "read", 1);
    expect((await readAll(store, "b")).at(-1)?.u).toMatchObject({ k: "receipt", conv: "g1", user: "a" });
    expect(db.pragma("foreign_key_check")).toEqual([]);
    await store.close();
  });

  it("refuses to read a log entry whose conversation is missing, rather than skip it", async () => {
    const store = await SqliteStore.open(file);
    await addUsers(store, "a", "b");
    await addGroup(store, "g1", ["a", "b"]);
    const db = (store as unknown as { db: Database.Database }).db;
    const log = db.prepare("SELECT num FROM logs WHERE key = 'a'").pluck().get() as number;
    db.prepare(INSERT_UPDATE).run(log, 2, "left", 999, null, null, null);
    await expect(store.readUpdates("a", 0, 10)).rejects.toThrow(/update 2 names a missing conversation/);
    expect(await store.readUpdates("a", 0, 1)).toMatchObject([{ useq: 1, u: { k: "conv" } }]);
    await store.close();
  });

  it("refuses migration 7 when a row names a conversation that does not exist, changing nothing", async () => {
    writeVersion(
      file,
      6,
      `
      INSERT INTO users VALUES ('a', 'a', 'h', 0);
      INSERT INTO updates (user_id, useq, kind, conv_id, seq) VALUES ('a', 1, 'left', 'nowhere', NULL);
    `,
    );
    await expect(SqliteStore.open(file)).rejects.toThrow(
      /migration 7 would lose rows of updates \(0 of 1 kept\)/,
    );
    const check = new Database(file, { readonly: true });
    expect(check.pragma("user_version", { simple: true })).toBe(6);
    expect(check.prepare("SELECT user_id, conv_id FROM updates").all()).toEqual([
      { user_id: "a", conv_id: "nowhere" },
    ]);
    check.close();
  });

  it("applies a numbered log left by a version-6 server after migrating (the log names ids)", async () => {
    writeVersion(
      file,
      6,
      `
      INSERT INTO users VALUES ('a', 'a', 'h', 0), ('b', 'b', 'h', 0);
      INSERT INTO conversations VALUES ('g1', 'group', 'g', 0, NULL, 0, 0, 0);
      INSERT INTO members (conv_id, user_id, role) VALUES ('g1', 'a', 'owner'), ('g1', 'b', 'member');
      INSERT INTO updates (user_id, useq, kind, conv_id, seq) VALUES ('a', 1, 'left', 'g1', NULL),
        ('b', 1, 'left', 'g1', NULL);
    `,
    );
    // A send the version-6 server acknowledged and had not committed to SQLite when it stopped.
    const log = NumberedLog.create(file);
    const msg = newMessage("g1", "a", "m1");
    log.append(encodeNumbered({ batch: 1, messages: [{ msg, seq: 1, logs: ["a", "b"], useqs: [2, 2] }] }), 1);
    log.close();
    await log.settled();
    // As the server opens it (commitIntervalMs: the store owns the file and applies its logs).
    const store = await SqliteStore.open(file, { commitIntervalMs: 60_000 });
    expect(await store.getMessage("g1", 1)).toMatchObject({ conv: "g1", from: "a", cid: "m1", seq: 1 });
    for (const user of ["a", "b"]) {
      expect((await store.readUpdates(user, 0, 10)).map((e) => e.u)).toMatchObject([
        { k: "left", conv: "g1" },
        { k: "msg", msg: { conv: "g1", from: "a", cid: "m1" } },
      ]);
    }
    expect(NumberedLog.segments(file)).toEqual([]);
    expect(await sendMsg(store, "g1", "b", "m2")).toMatchObject({ seq: 2 });
    await store.close();
  });

  it("opens an existing empty file as a new database", async () => {
    await writeFile(file, new Uint8Array(0));
    const store = await SqliteStore.open(file);
    expect(await store.head("x")).toBe(0);
    await store.close();
  });

  it("refuses a file of random bytes, naming it", async () => {
    await writeFile(file, randomBytes(64 * 1024));
    await expect(SqliteStore.open(file)).rejects.toThrow(file);
    await expect(SqliteStore.open(file)).rejects.toThrow(/not a usable SQLite database/);
    // Refusing did not touch the file.
    expect((await stat(file)).size).toBe(64 * 1024);
  });

  it("refuses a truncated database", async () => {
    await populated();
    const { size } = await stat(file);
    await truncate(file, Math.floor(size / 2 / 4096) * 4096);
    await expectRefused(file);
  });

  it("refuses a database with a damaged page", async () => {
    await populated();
    const { size } = await stat(file);
    expect(size).toBeGreaterThan(8 * 4096);
    // Overwrite the middle of the file (b-tree pages of the message table) with garbage.
    const fh = await openFile(file, "r+");
    await fh.write(randomBytes(4096 * 2), 0, 4096 * 2, 4 * 4096);
    await fh.close();
    await expectRefused(file);
  });

  it("refuses a database in which quick_check finds problems", async () => {
    await populated();
    // Bytes 32-35 of the header: the first freelist trunk page, now pointing far past the end.
    const fh = await openFile(file, "r+");
    await fh.write(Buffer.alloc(4, 0x41), 0, 4, 32);
    await fh.close();
    await expect(SqliteStore.open(file)).rejects.toThrow(
      /is damaged; PRAGMA quick_check reported: .*Freelist/s,
    );
  });

  it("refuses a database from a newer Parley", async () => {
    await (await SqliteStore.open(file)).close();
    const raw = new Database(file);
    raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();
    await expect(SqliteStore.open(file)).rejects.toThrow(/newer/);
  });

  it("refuses another program's SQLite database", async () => {
    const raw = new Database(file);
    raw.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)");
    raw.close();
    await expect(SqliteStore.open(file)).rejects.toThrow(/not a Parley one/);
    const tagged = new Database(file);
    tagged.pragma("user_version = 1");
    tagged.close();
    await expect(SqliteStore.open(file)).rejects.toThrow(/not a Parley one/);
  });

  it("reports a path it cannot open, naming it", async () => {
    const missing = join(dir, "no-such-dir", "parley.db");
    await expect(SqliteStore.open(missing)).rejects.toThrow(missing);
  });
});

// With a commit interval far longer than any test: appends are committed only when something
// forces it (another write, or a read of the main thread that must see them). The threaded store
// runs only this way, as the server runs it (a worker thread costs about a second per test);
// its path without a commit log is SqliteStore's, above.
runStoreConformance("SqliteStore with a commit log", async () => {
  const dir = await tempDir();
  const store = await SqliteStore.open(join(dir, "parley.db"), { commitIntervalMs: 60_000 });
  return { store, cleanup: () => rm(dir, { recursive: true, force: true }) };
});

runStoreConformance("ThreadedSqliteStore with a commit log", async () => {
  const dir = await tempDir();
  const store = await ThreadedSqliteStore.open(join(dir, "parley.db"), { commitIntervalMs: 60_000 });
  return { store, cleanup: () => rm(dir, { recursive: true, force: true }) };
});

describe("device cursors, many to a transaction", () => {
  const dir = useTempDir();

  async function addDevices(store: SqliteStore | ThreadedSqliteStore, n: number): Promise<string[]> {
    await addUsers(store, "u");
    const ids = Array.from({ length: n }, (_, i) => `d${i}`);
    for (const id of ids) await addDevice(store, "u", id);
    return ids;
  }

  it("SqliteStore.touchDevices applies each in order and refuses the bad ones alone", async () => {
    const store = await SqliteStore.open(join(dir(), "parley.db"));
    await addDevices(store, 2);
    const outcomes = await store.touchDevices([
      ["d0", 5, T0 + 1],
      ["nope", 5, T0 + 1],
      ["d1", 1.5, T0 + 1],
      ["d1", 7, T0 + 2],
      ["d0", 3, T0 + 3],
    ]);
    expect(outcomes.map((e) => e?.code ?? null)).toStrictEqual([
      null,
      "E_NOT_FOUND",
      "E_INVALID",
      null,
      null,
    ]);
    // The cursor never goes down; lastSeenAt is the latest touch's.
    expect(await store.getDevice("d0")).toMatchObject({ cursor: 5, lastSeenAt: T0 + 3 });
    expect(await store.getDevice("d1")).toMatchObject({ cursor: 7, lastSeenAt: T0 + 2 });
    await store.close();
  });

  it("ThreadedSqliteStore sends the saves made while one is on its way together, and settles each alone", async () => {
    const store = await ThreadedSqliteStore.open(join(dir(), "parley.db"));
    const ids = await addDevices(store, 50);
    // Count what goes to the writer thread.
    const worker = (
      store as unknown as { worker: { postMessage(m: { method: string; args: unknown[] }): void } }
    ).worker;
    const post = worker.postMessage.bind(worker);
    const sent: number[] = [];
    worker.postMessage = (m) => {
      if (m.method === "touchDevices") sent.push((m.args[0] as unknown[]).length);
      else if (m.method === "touchDevice") sent.push(-1);
      post(m);
    };
    const saves = [...ids, "nope"].map((id, i) => store.touchDevice(id, i + 1, T0 + 10));
    const outcomes = await Promise.allSettled(saves);
    expect(outcomes.slice(0, 50).every((o) => o.status === "fulfilled")).toBe(true);
    expect(outcomes[50]).toMatchObject({ status: "rejected", reason: { code: "E_NOT_FOUND" } });
    // The first went alone; the other 50 waited for it and went in one transaction.
    expect(sent).toStrictEqual([1, 50]);
    expect(await store.getDevice("d49")).toMatchObject({ cursor: 50, lastSeenAt: T0 + 10 });
    // close() waits for saves still queued.
    const last = store.touchDevice("d0", 100, T0 + 20);
    const more = store.touchDevice("d1", 100, T0 + 20);
    await store.close();
    await expect(last).resolves.toBeUndefined();
    await expect(more).resolves.toBeUndefined();
    await expect(store.touchDevice("d0", 200, T0 + 30)).rejects.toThrow(/closed/);
    const reopened = await SqliteStore.open(join(dir(), "parley.db"));
    expect(await reopened.getDevice("d1")).toMatchObject({ cursor: 100 });
    await reopened.close();
  });
});

describe("what SqliteStore keeps between write transactions", () => {
  const dir = useTempDir();

  it("sees a membership change made since the last batch", async () => {
    const store = await SqliteStore.open(join(dir(), "parley.db"));
    await addUsers(store, "a", "b", "c");
    await addGroup(store, "g1", ["a", "b"]);
    await sendMsg(store, "g1", "b", "m1");
    await store.changeConversation({ kind: "remove", conv: "g1", user: "b" });
    await store.changeConversation({ kind: "add", conv: "g1", users: ["c"] });
    const [fromB, fromC] = await store.appendMessages([
      newMessage("g1", "b", "m2"),
      newMessage("g1", "c", "m3"),
    ]);
    expect(fromB).toMatchObject({ ok: false, code: "E_NOT_FOUND" });
    expect(fromC).toMatchObject({ ok: true, msg: { seq: 2 } });
    // The message reached the members now: a and c, not b.
    expect(fromC!.ok && fromC!.updates.map((u) => u.user).sort()).toStrictEqual(["a", "c"]);
    await store.close();
  });

  it("sees what another connection wrote to the file since its last transaction", async () => {
    const file = join(dir(), "parley.db");
    const first = await SqliteStore.open(file);
    await addUsers(first, "a", "b");
    await addGroup(first, "g1", ["a", "b"]);
    expect(await sendMsg(first, "g1", "a", "m1")).toMatchObject({ seq: 1 });
    // A second process on the same file (not how Parley runs, but SQLite allows it).
    const second = await SqliteStore.open(file);
    expect(await sendMsg(second, "g1", "b", "m2")).toMatchObject({ seq: 2 });
    await second.close();
    expect(await sendMsg(first, "g1", "a", "m3")).toMatchObject({ seq: 3 });
    const log = await readAll(first, "b");
    expect(log.map((e) => e.useq)).toStrictEqual(log.map((_, i) => i + 1));
    await first.close();
  });
});

/** Records what a store logs: the messages, and each record with its fields. */
function recording(): {
  logger: Logger;
  messages: string[];
  records: Array<{ obj: Record<string, unknown>; msg?: string }>;
} {
  const messages: string[] = [];
  const records: Array<{ obj: Record<string, unknown>; msg?: string }> = [];
  const note = (obj: object, msg?: string): void => {
    if (msg !== undefined) messages.push(msg);
    records.push({ obj: obj as Record<string, unknown>, ...(msg !== undefined ? { msg } : {}) });
  };
  return { logger: { debug: note, info: note, warn: note, error: note }, messages, records };
}

/** Copies the files of the database at `file` with these suffixes ("" is the database itself) to
 * `<to>/parley.db...`, skipping those that do not exist; the copy's path. */
async function copyFiles(file: string, to: string, suffixes: readonly string[]): Promise<string> {
  await mkdir(to, { recursive: true });
  const copy = join(to, "parley.db");
  for (const suffix of suffixes) {
    await copyFile(file + suffix, copy + suffix).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "ENOENT") throw e;
    });
  }
  return copy;
}

/** The users and groups the commit log tests send between. */
async function setUp(store: Store): Promise<void> {
  await addUsers(store, "a", "b", "c");
  await addGroup(store, "g1", ["a", "b"]);
  await addGroup(store, "g2", ["a", "b", "c"]);
}

/** The first refusal of a send to g1 from `store`, once it comes (bounded: 200 tries 10 ms apart). */
async function refusalOf(store: Store): Promise<unknown> {
  let refusal: unknown;
  for (let i = 0; i < 200 && refusal === undefined; i++) {
    refusal = await store.appendMessages([newMessage("g1", "b", `after-${i}`)]).then(
      () => new Promise((r) => setTimeout(() => r(undefined), 10)),
      (err: unknown) => err,
    );
  }
  return refusal;
}

describe("commit log", () => {
  const dir = useTempDir();
  /** Never committed by its timer within a test: only what forces a commit commits. */
  const LONG = { commitIntervalMs: 60_000 };

  /** What a SIGKILL leaves on disk now: the files copied aside (the writer is synchronous, so
   * nothing is half-written between two of our calls). */
  function crashCopy(file: string, to: string): Promise<string> {
    return copyFiles(file, to, ["", "-wal", "-commitlog"]);
  }

  /** A store on `file` that only commits when forced, with setUp's users and groups. */
  async function openSetUp(file: string): Promise<SqliteStore> {
    const store = await SqliteStore.open(file, LONG);
    await setUp(store);
    return store;
  }

  /** One send to each group, as most of these tests make before the crash. */
  const twoSends = () => [newMessage("g1", "a", "m1"), newMessage("g2", "b", "m2")];

  it("acknowledged sends survive a crash before the commit, with the seqs and useqs they were given", async () => {
    const file = join(dir(), "parley.db");
    const store = await openSetUp(file);
    const acked = [
      ...(await store.appendMessages(twoSends())),
      ...(await store.appendMessages([
        newMessage("g2", "c", "m3", { replyTo: 1 }),
        newMessage("g1", "b", "m4"),
      ])),
    ];
    expect(acked.every((r) => r.ok && !r.duplicate)).toBe(true);
    // Not committed: another connection does not see them.
    expect(committedMessages(file)).toBe(0);
    const before = { a: await readAll(store, "a"), c: await readAll(store, "c") };

    await mkdir(join(dir(), "crash"));
    const copy = await crashCopy(file, join(dir(), "crash"));
    await store.close();

    // Reopened by a server without a commit interval: the log is applied all the same, then
    // removed.
    const reopened = await SqliteStore.open(copy, { commitIntervalMs: 0 });
    for (const r of acked) {
      if (!r.ok) throw new Error("unreachable");
      expect(await reopened.getMessage(r.msg.conv, r.msg.seq)).toEqual(r.msg);
    }
    expect(await readAll(reopened, "a")).toEqual(before.a);
    expect(await readAll(reopened, "c")).toEqual(before.c);
    await expect(stat(copy + "-commitlog")).rejects.toThrow(/ENOENT/);
    // A resend of an acknowledged message is a resend, not a new message.
    const [again] = await reopened.appendMessages([newMessage("g1", "a", "m1")]);
    expect(again).toMatchObject({ ok: true, duplicate: true, msg: { seq: 1 } });
    await reopened.close();
  });

  it("a log whose batches were committed after all writes nothing when applied", async () => {
    const file = join(dir(), "parley.db");
    const store = await openSetUp(file);
    await store.appendMessages(twoSends());
    const log = await readFile(file + "-commitlog");
    await store.close(); // commits, and removes the log
    await expect(stat(file + "-commitlog")).rejects.toThrow(/ENOENT/);
    const committed = { a: await readAllOf(file, "a"), b: await readAllOf(file, "b") };
    // The crash between SQLite's commit and the log's truncation.
    await writeFile(file + "-commitlog", log);
    const reopened = await SqliteStore.open(file, LONG);
    expect(await readAll(reopened, "a")).toEqual(committed.a);
    expect(await readAll(reopened, "b")).toEqual(committed.b);
    expect(await sendMsg(reopened, "g1", "b", "m3")).toMatchObject({ seq: 2 });
    await reopened.close();
  });

  it("a batch that fails in the open transaction is refused, and the acknowledged ones before it are kept", async () => {
    const file = join(dir(), "parley.db");
    const store = await openSetUp(file);
    // A fault SQLite raises in the middle of a batch (a full disk would do the same).
    failInsertsOfType(file, "boom");
    const [m1] = await store.appendMessages([newMessage("g1", "a", "m1")]);
    const [m2] = await store.appendMessages([newMessage("g2", "a", "m2")]);
    await expect(
      store.appendMessages([newMessage("g1", "b", "m3"), newMessage("g1", "b", "m4", { type: "boom" })]),
    ).rejects.toThrow(/boom/);
    expect(m1).toMatchObject({ ok: true, msg: { seq: 1 } });
    expect(m2).toMatchObject({ ok: true, msg: { seq: 1 } });
    // Kept, and already committed by the recovery: visible to another connection.
    expect(
      committed(
        file,
        "SELECT c.id AS conv, m.seq, m.cid FROM messages m JOIN conversations c ON c.num = m.conv_num ORDER BY cid",
      ),
    ).toEqual([
      { conv: "g1", seq: 1, cid: "m1" },
      { conv: "g2", seq: 1, cid: "m2" },
    ]);
    // The refused batch's first message was rolled back with it; the next send goes on from
    // what is kept, and the logs' useqs have no gap.
    expect(await sendMsg(store, "g1", "b", "m3")).toMatchObject({ seq: 2 });
    const log = await readAll(store, "b");
    expect(log.map((e) => e.useq)).toStrictEqual(log.map((_, i) => i + 1));
    await store.close();
  });

  it("other writes commit the appends before them; reads of the same store see them before", async () => {
    const file = join(dir(), "parley.db");
    const store = await openSetUp(file);
    await sendMsg(store, "g1", "a", "m1");
    expect(await store.history("g1", { limit: 10 })).toHaveLength(1);
    expect(committedMessages(file)).toBe(0);
    await store.changeConversation({ kind: "rename", conv: "g1", name: "renamed" });
    expect(committedMessages(file)).toBe(1);
    await sendMsg(store, "g1", "a", "m2");
    await store.commitNow();
    expect(committedMessages(file)).toBe(2);
    await store.close();
  });

  it("an append that finds the transaction older than the interval commits it, though the timer has not run", async () => {
    // The same in the applier (sequencer.test.ts); here appendMessages with the commit log.
    const file = join(dir(), "parley.db");
    const store = await SqliteStore.open(file, { commitIntervalMs: 300 });
    await setUp(store);
    await sendMsg(store, "g1", "a", "m1");
    expect(committedMessages(file)).toBe(0);
    const until = performance.now() + 320;
    while (performance.now() < until);
    await sendMsg(store, "g1", "a", "m2");
    expect(committedMessages(file)).toBe(2);
    expect(store.uncommittedEpoch).toBe(0);
    await store.close();
  });

  it("device cursors saved while appends wait for their commit ride in it, and settle with it", async () => {
    const file = join(dir(), "parley.db");
    const store = await openSetUp(file);
    await addDevice(store, "a", "d1");
    // No deferred transaction open: a cursor save is its own commit.
    await store.touchDevice("d1", 1, T0 + 1);
    await sendMsg(store, "g1", "a", "m1");
    let settled = false;
    const saved = store.touchDevice("d1", 2, T0 + 2).then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 20));
    // It did not commit the append, and is not done until the append's commit.
    expect(settled).toBe(false);
    expect(committedMessages(file)).toBe(0);
    await store.commitNow();
    await saved;
    expect(committedMessages(file)).toBe(1);
    expect(committed(file, "SELECT cursor FROM devices WHERE id = 'd1'")).toEqual([{ cursor: 2 }]);
    // One refused inside the transaction is refused alone (touchDevices' per-item outcome).
    await sendMsg(store, "g1", "a", "m2");
    const outcomes = store.touchDevices([
      ["d1", 3, T0 + 3],
      ["nope", 1, T0 + 3],
    ]);
    await store.commitNow();
    expect((await outcomes).map((e) => e?.code ?? null)).toEqual([null, "E_NOT_FOUND"]);
    await store.close();
  });

  it("a cursor save rolled back with a failed batch is refused, not reported saved", async () => {
    const file = join(dir(), "parley.db");
    const store = await openSetUp(file);
    await addDevice(store, "a", "d1");
    failInsertsOfType(file, "boom");
    await sendMsg(store, "g1", "a", "m1");
    const saved = store.touchDevice("d1", 5, T0 + 5);
    await expect(store.appendMessages([newMessage("g1", "b", "m2", { type: "boom" })])).rejects.toThrow(
      /boom/,
    );
    await expect(saved).rejects.toThrow(/boom/);
    expect((await store.getDevice("d1"))?.cursor).toBe(0);
    // The acknowledged append before it is kept.
    expect(committedMessages(file)).toBe(1);
    await store.close();
  });

  it("a store that does not own the log (a tool beside the server) applies it and leaves the file alone", async () => {
    const file = join(dir(), "parley.db");
    const store = await openSetUp(file);
    await store.appendMessages(twoSends());
    await mkdir(join(dir(), "crash"));
    const copy = await crashCopy(file, join(dir(), "crash"));
    await store.close();
    const log = await readFile(copy + "-commitlog");
    const tool = await SqliteStore.open(copy);
    expect(await tool.getMessage("g2", 1)).toMatchObject({ cid: "m2" });
    await tool.close();
    // The server may be appending to it: not truncated, not removed.
    expect(await readFile(copy + "-commitlog")).toEqual(log);
    // Its owner, opening next, finds the batches already stored and empties it.
    const owner = await SqliteStore.open(copy, LONG);
    const entries = await readAll(owner, "a");
    expect(entries.filter((e) => e.u.k === "msg")).toHaveLength(2);
    expect(entries.map((e) => e.useq)).toStrictEqual(entries.map((_, i) => i + 1));
    expect(CommitLog.read(copy + "-commitlog")).toEqual([]);
    expect(await sendMsg(owner, "g1", "b", "m3")).toMatchObject({ seq: 2 });
    await owner.close();
  });

  it("refuses to open when a record of the commit log cannot be applied, and keeps the log", async () => {
    const file = join(dir(), "parley.db");
    await (await SqliteStore.open(file)).close();
    const { log } = CommitLog.open(file + "-commitlog");
    log.append(new Uint8Array([1, 2, 3])); // whole and checksummed, but not a batch
    log.close();
    await expect(SqliteStore.open(file, LONG)).rejects.toThrow(
      `cannot apply the commit log ${file}-commitlog`,
    );
    await expect(SqliteStore.open(file)).rejects.toThrow(/cut short/);
    expect(CommitLog.read(file + "-commitlog")).toHaveLength(1);
  });

  it("refuses to open next to a commit log that is not one, naming it", async () => {
    const file = join(dir(), "parley.db");
    await writeFile(file + "-commitlog", "not a log");
    await expect(SqliteStore.open(file, LONG)).rejects.toThrow(file + "-commitlog");
    await expect(SqliteStore.open(file)).rejects.toThrow(file + "-commitlog");
  });

  it("ThreadedSqliteStore: a read that could show an acknowledged send waits for its commit; others do not ask for one", async () => {
    const file = join(dir(), "parley.db");
    const store = await ThreadedSqliteStore.open(file, LONG);
    await setUp(store);
    const [r] = await store.appendMessages([newMessage("g1", "a", "m1")]);
    // Reads that no append changes go straight to the reader: still nothing committed.
    await store.getUser("c");
    await store.getRole("g2", "c");
    await store.readUpdates("c", 0, 10);
    expect(committedMessages(file)).toBe(0);
    // One that could show it commits first.
    expect(await store.getMessage("g1", 1)).toEqual(r!.ok && r!.msg);
    expect(committedMessages(file)).toBe(1);
    await store.close();
  });
});

describe("numbered log (ThreadedSqliteStore: acknowledged ahead of SQLite)", () => {
  const dir = useTempDir();
  /** The applier never commits by its timer within a test. */
  const LONG = { commitIntervalMs: 60_000 };

  async function openSetUp(file: string, logger?: Logger): Promise<ThreadedSqliteStore> {
    const store = await ThreadedSqliteStore.open(file, { ...LONG, ...(logger ? { logger } : {}) });
    await setUp(store);
    return store;
  }

  /** The files a SIGKILL would leave now: the database, its WAL and the log's segments. What the
   * sequencer acknowledged is in the segments already (it writes them before it answers); the
   * database copy holds whatever SQLite had committed. */
  function crashCopy(file: string): Promise<string> {
    const segments = NumberedLog.segments(file).map((s) => s.path.slice(file.length));
    return copyFiles(file, join(dir(), "crash"), ["", "-wal", ...segments]);
  }

  it("acknowledged sends survive a crash before the applier commits, with the seqs and useqs they were given", async () => {
    const file = join(dir(), "parley.db");
    const store = await openSetUp(file);
    const acked = [
      ...(await store.appendMessages([newMessage("g1", "a", "m1"), newMessage("g2", "b", "m2")])),
      ...(await store.appendMessages([
        newMessage("g2", "c", "m3", { replyTo: 1 }),
        newMessage("g1", "b", "m4"),
      ])),
    ];
    expect(acked.map((r) => r.ok && !r.duplicate && r.msg.seq)).toEqual([1, 1, 2, 2]);
    expect(NumberedLog.readAll(file)).toHaveLength(2);
    const copy = await crashCopy(file);
    expect(committedMessages(copy)).toBe(0);
    // What the running store shows (its reads commit first).
    const before = { a: await readAll(store, "a"), c: await readAll(store, "c") };
    expect(before.a.at(-1)).toMatchObject({ u: { k: "msg", msg: { conv: "g1", seq: 2, cid: "m4" } } });
    await store.close();
    expect(NumberedLog.segments(file)).toEqual([]);

    const { logger, messages } = recording();
    const reopened = await SqliteStore.open(copy, { ...LONG, logger });
    expect(messages).toContain(NUMBERED_LOG_APPLIED);
    expect(NumberedLog.segments(copy)).toEqual([]);
    expect(committedMessages(copy)).toBe(4);
    expect(await readAll(reopened, "a")).toEqual(before.a);
    expect(await readAll(reopened, "c")).toEqual(before.c);
    // Counting goes on from there.
    expect(await sendMsg(reopened, "g2", "a", "m5")).toMatchObject({ seq: 3 });
    await reopened.close();
  });

  it("reports how long each batch written to the log took to write and fdatasync, and nothing for a batch of resends", async () => {
    const file = join(dir(), "parley.db");
    const syncs: number[] = [];
    const store = await ThreadedSqliteStore.open(file, { ...LONG, onLogSync: (s) => syncs.push(s) });
    await setUp(store);
    await store.appendMessages([newMessage("g1", "a", "m1"), newMessage("g2", "b", "m2")]);
    await store.appendMessages([newMessage("g1", "b", "m3")]);
    expect(NumberedLog.readAll(file)).toHaveLength(2);
    expect(syncs).toHaveLength(2);
    for (const s of syncs) expect(s > 0 && s < 60).toBe(true);
    // Resends only (of an uncommitted and of a committed send): no record, no sync.
    expect(await store.appendMessages([newMessage("g1", "a", "m1")])).toMatchObject([{ duplicate: true }]);
    await store.getMessage("g1", 1); // commits
    expect(await store.appendMessages([newMessage("g1", "b", "m3")])).toMatchObject([{ duplicate: true }]);
    expect(syncs).toHaveLength(2);
    await store.close();
  });

  it("keeps the numbered log in numberedLogDir when given, and a crash copy applies it from there", async () => {
    const file = join(dir(), "db", "parley.db");
    const logDir = join(dir(), "log");
    await mkdir(join(dir(), "db"));
    await mkdir(logDir);
    const store = await ThreadedSqliteStore.open(file, { ...LONG, numberedLogDir: logDir });
    await setUp(store);
    await store.appendMessages([newMessage("g1", "a", "m1"), newMessage("g2", "b", "m2")]);
    expect(NumberedLog.segments(file)).toEqual([]);
    const base = logBase(file, logDir);
    expect(base).toBe(join(logDir, "parley.db"));
    expect(NumberedLog.readAll(base)).toHaveLength(1);
    // A crash now: the database as SQLite had it (nothing committed) and the log's directory.
    const copy = await copyFiles(file, join(dir(), "crash"), ["", "-wal"]);
    const copyLogDir = join(dir(), "crash-log");
    const segments = NumberedLog.segments(base).map((s) => s.path.slice(base.length));
    await copyFiles(base, copyLogDir, segments);
    expect(committedMessages(copy)).toBe(0);
    await store.close();
    expect(NumberedLog.segments(base)).toEqual([]);

    // Opened with the log elsewhere while segments lie beside the database: refused, naming them.
    const stray = await copyFiles(copy, join(dir(), "stray"), [""]);
    await copyFiles(base.replace(logDir, copyLogDir), join(dir(), "stray"), segments);
    await expect(SqliteStore.open(stray, { ...LONG, numberedLogDir: copyLogDir })).rejects.toThrow(
      `${stray}-commitlog.1`,
    );
    // Left as they were (the segment written, and the spare made ahead of the next).
    expect(NumberedLog.segments(stray)).toHaveLength(segments.length);

    const { logger, messages } = recording();
    const reopened = await SqliteStore.open(copy, { ...LONG, numberedLogDir: copyLogDir, logger });
    expect(messages).toContain(NUMBERED_LOG_APPLIED);
    expect(committedMessages(copy)).toBe(2);
    expect(NumberedLog.segments(logBase(copy, copyLogDir))).toEqual([]);
    await reopened.close();

    // Where the log is kept is noted beside the database; after a clean stop it may move back.
    expect(await readFile(logDirMarker(file), "utf8")).toBe(logDir + "\n");
    const back = await SqliteStore.open(file, LONG);
    await expect(readFile(logDirMarker(file))).rejects.toThrow(/ENOENT/);
    await back.close();
  });

  it("a threaded store reopened on a crash copy gives resends their original, and numbers on", async () => {
    const file = join(dir(), "parley.db");
    const store = await openSetUp(file);
    const [m1] = await store.appendMessages([newMessage("g1", "a", "m1")]);
    const copy = await crashCopy(file);
    await store.close();
    const reopened = await ThreadedSqliteStore.open(copy, LONG);
    expect(await reopened.appendMessages([newMessage("g1", "a", "m1"), newMessage("g1", "b", "m2")])).toEqual(
      [
        { ok: true, duplicate: true, msg: m1!.ok && m1!.msg, updates: [] },
        expect.objectContaining({ ok: true, duplicate: false, msg: expect.objectContaining({ seq: 2 }) }),
      ],
    );
    await reopened.close();
  });

  it("segments whose batches are committed write nothing when applied again", async () => {
    const file = join(dir(), "parley.db");
    const store = await openSetUp(file);
    await store.appendMessages([newMessage("g1", "a", "m1"), newMessage("g2", "b", "m2")]);
    const segments = await Promise.all(
      NumberedLog.segments(file).map(async (s) => ({ path: s.path, data: await readFile(s.path) })),
    );
    await store.close(); // commits, and removes the segments
    const committedLogs = { a: await readAllOf(file, "a"), c: await readAllOf(file, "c") };
    // A crash between SQLite's commit and the segments' removal.
    for (const s of segments) await writeFile(s.path, s.data);
    const reopened = await SqliteStore.open(file, LONG);
    expect(await readAll(reopened, "a")).toEqual(committedLogs.a);
    expect(await readAll(reopened, "c")).toEqual(committedLogs.c);
    expect(await sendMsg(reopened, "g1", "b", "m3")).toMatchObject({ seq: 2 });
    await reopened.close();
  });

  it("an applier thread that ends unasked stops the store instead of leaving calls waiting", async () => {
    const file = join(dir(), "parley.db");
    const store = await openSetUp(file);
    const [m1] = await store.appendMessages([newMessage("g1", "a", "m1")]);
    expect(m1).toMatchObject({ ok: true, msg: { seq: 1 } });
    // As a crash of that thread would.
    await (store as unknown as { applier: { terminate(): Promise<number> } }).applier.terminate();
    expect(String(await refusalOf(store))).toMatch(/applier thread stopped/);
    await expect(store.createUser({ id: "d", name: "d", passwordHash: "x", createdAt: 1 })).rejects.toThrow(
      /applier thread stopped/,
    );
    await store.close();
    // What was acknowledged is in the log: the next start applies it.
    const reopened = await SqliteStore.open(file, LONG);
    expect(await reopened.getMessage("g1", 1)).toMatchObject({ cid: "m1" });
    await reopened.close();
  });

  it("an acknowledged batch SQLite refuses stops the store, and the log keeps it for the next start", async () => {
    const file = join(dir(), "parley.db");
    const store = await openSetUp(file);
    failInsertsOfType(file, "boom");
    // The sequencer cannot know: it acknowledges, and the applier fails behind it.
    const [boom] = await store.appendMessages([newMessage("g1", "a", "m1", { type: "boom" })]);
    expect(boom).toMatchObject({ ok: true, msg: { seq: 1 } });
    // Once the applier has stopped, so does everything else: nothing more is acknowledged.
    expect(String(await refusalOf(store))).toMatch(/must be reopened/);
    await store.close();
    expect(NumberedLog.readAll(file).length).toBeGreaterThan(0);
    // Fixed (the trigger gone), the next start applies what was acknowledged.
    const raw = new Database(file);
    raw.exec("DROP TRIGGER fail_boom");
    raw.close();
    const reopened = await SqliteStore.open(file, LONG);
    expect(await reopened.getMessage("g1", 1)).toMatchObject({ cid: "m1", type: "boom" });
    await reopened.close();
  });
});

/** What another connection to `file` sees (only committed rows): the rows `sql` selects. */
function committed(file: string, sql: string): unknown[] {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare(sql).all();
  } finally {
    db.close();
  }
}

function committedMessages(file: string): number {
  return (committed(file, "SELECT count(*) AS n FROM messages")[0] as { n: number }).n;
}

/** Makes SQLite fail, mid-batch, every insert of a message of `type` (as a full disk would). */
function failInsertsOfType(file: string, type: string): void {
  const raw = new Database(file);
  raw.exec(
    `CREATE TRIGGER fail_${type} BEFORE INSERT ON messages WHEN NEW.type = '${type}' ` +
      `BEGIN SELECT RAISE(ABORT, '${type}'); END`,
  );
  raw.close();
}

async function addDevice(store: Store, user: string, id: string): Promise<void> {
  await store.createDevice(
    { id, userId: user, name: id, createdAt: T0, cursor: 0, lastSeenAt: T0 },
    { hash: `h-${id}`, userId: user, deviceId: id, createdAt: T0, expiresAt: T0 + 1000 },
  );
}

async function readAllOf(file: string, user: string): Promise<unknown> {
  const store = await SqliteStore.open(file);
  try {
    return await readAll(store, user);
  } finally {
    await store.close();
  }
}
