import {
  appendFileSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CommitLog } from "./commit-log.ts";
import {
  NumberedLog,
  decodeNumbered,
  encodeNumbered,
  logBase,
  logDirMarker,
  recordLogDir,
  refuseStraySegments,
  type NumberedBatch,
} from "./numbered-log.ts";
import { arbitraryNewMessage } from "../testing/arbitraries.ts";

// The numbered log holds every send acknowledged ahead of SQLite, with the seq and useqs it was
// acknowledged with: a batch must come back with exactly those numbers, the segments in the order
// they were written, a torn write must end only its own segment, and a segment may go only once
// SQLite has committed every batch in it.

let dir: string;
let db: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "parley-numberedlog-"));
  db = join(dir, "parley.db");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const positive = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER });

const arbitraryBatch: fc.Arbitrary<NumberedBatch> = fc.record({
  batch: positive,
  messages: fc.array(
    fc
      .record({
        msg: arbitraryNewMessage,
        seq: positive,
        entries: fc.array(
          fc.tuple(
            fc.oneof(
              fc.string(),
              fc.string().map((c) => `#${c}`),
            ),
            positive,
          ),
          {
            maxLength: 6,
          },
        ),
      })
      .map(({ msg, seq, entries }) => ({
        msg,
        seq,
        logs: entries.map(([log]) => log),
        useqs: entries.map(([, useq]) => useq),
      })),
    { maxLength: 8 },
  ),
});

/** A batch with bodies as plain arrays, so that toEqual compares their bytes whatever holds them. */
const plain = (b: NumberedBatch) => ({
  ...b,
  messages: b.messages.map((m) => ({ ...m, msg: { ...m.msg, body: Array.from(m.msg.body) } })),
});

/** Records as plain arrays. */
const arrays = (records: readonly Uint8Array[]): number[][] => records.map((r) => Array.from(r));

const bytes = (...values: number[]) => new Uint8Array(values);

describe("numbered batch records", () => {
  it("decode(encode(batch)) is the batch, bodies copied", () => {
    fc.assert(
      fc.property(arbitraryBatch, (b) => {
        const payload = encodeNumbered(b);
        const back = decodeNumbered(payload);
        expect(plain(back)).toEqual(plain(b));
        for (const m of back.messages) {
          expect(Object.getPrototypeOf(m.msg.body)).toBe(Uint8Array.prototype);
          expect(m.msg.body.buffer).not.toBe(payload.buffer);
        }
      }),
    );
  });

  it("keeps group logs, empty logs and odd keys", () => {
    const msg = { conv: "c", from: "ü", dev: "d", cid: "x", type: "text", body: bytes(1, 2), ts: 5 };
    const b: NumberedBatch = {
      batch: 7,
      messages: [
        { msg, seq: 1, logs: [], useqs: [] },
        { msg: { ...msg, cid: "y", replyTo: 1 }, seq: 2, logs: ["#c"], useqs: [9] },
        { msg: { ...msg, cid: "z" }, seq: 3, logs: ["a", "", "😀"], useqs: [1, 2, 2 ** 53 - 1] },
      ],
    };
    expect(plain(decodeNumbered(encodeNumbered(b)))).toEqual(plain(b));
  });

  it("refuses a record cut short, padded, with another first byte or a damaged count", () => {
    fc.assert(
      fc.property(arbitraryBatch, fc.array(fc.nat(), { minLength: 1, maxLength: 4 }), (b, cuts) => {
        const whole = encodeNumbered(b);
        for (const c of [0, ...cuts]) {
          expect(() => decodeNumbered(whole.subarray(0, c % whole.byteLength))).toThrow(/cut short/);
        }
        const longer = new Uint8Array(whole.byteLength + 1);
        longer.set(whole);
        expect(() => decodeNumbered(longer)).toThrow(/trailing bytes/);
        const other = new Uint8Array(whole);
        other[0] = other[0]! ^ 0xff;
        expect(() => decodeNumbered(other)).toThrow(/not a numbered batch/);
        // The message count is the u32 after the magic byte and the batch number.
        for (const count of [b.messages.length + 1, 2 ** 32 - 1]) {
          const damaged = Buffer.from(whole);
          damaged.writeUInt32LE(count, 9);
          expect(() => decodeNumbered(damaged)).toThrow(/cut short/);
        }
        if (b.messages.length > 0) {
          const fewer = Buffer.from(whole);
          fewer.writeUInt32LE(b.messages.length - 1, 9);
          expect(() => decodeNumbered(fewer)).toThrow(/trailing bytes/);
        }
      }),
    );
  });

  it("refuses to encode a message without one useq per log, or a number that is not positive", () => {
    const msg = { conv: "c", from: "u", dev: "d", cid: "x", type: "text", body: bytes(), ts: 5 };
    expect(() =>
      encodeNumbered({ batch: 1, messages: [{ msg, seq: 1, logs: ["a", "b"], useqs: [1] }] }),
    ).toThrow(/2 logs and 1 useqs/);
    expect(() => encodeNumbered({ batch: 0, messages: [] })).toThrow(/batch 0/);
    expect(() => encodeNumbered({ batch: 1, messages: [{ msg, seq: 1.5, logs: [], useqs: [] }] })).toThrow(
      /seq 1.5/,
    );
    expect(() => encodeNumbered({ batch: 1, messages: [{ msg, seq: 1, logs: ["a"], useqs: [-1] }] })).toThrow(
      /useq -1/,
    );
  });

  it("owns its bytes, so that they can be transferred to another thread", () => {
    const msg = { conv: "c", from: "u", dev: "d", cid: "x", type: "text", body: bytes(1), ts: 5 };
    const payload = encodeNumbered({ batch: 1, messages: [{ msg, seq: 1, logs: ["u"], useqs: [1] }] });
    expect(payload.byteOffset).toBe(0);
    expect(payload.buffer.byteLength).toBe(payload.byteLength);
  });
});

describe("numbered log segments", () => {
  it("gives back every record in order across segments", () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.uint8Array({ minLength: 1, maxLength: 50 }), { maxLength: 4 }), {
          maxLength: 4,
        }),
        (segments) => {
          const db = join(mkdtempSync(join(dir, "run-")), "parley.db");
          const log = NumberedLog.create(db);
          let batch = 0;
          for (const records of segments) {
            for (const r of records) log.append(r, ++batch);
            log.rotate();
          }
          expect(arrays(NumberedLog.readAll(db))).toEqual(arrays(segments.flat()));
          // One segment per non-empty group (each rotated away), plus the empty current one.
          const files = segments.filter((s) => s.length > 0).length + 1;
          expect(NumberedLog.segments(db)).toHaveLength(files);
          expect(NumberedLog.segments(db).map((s) => s.n)).toEqual(range(1, files));
          log.close();
        },
      ),
      { numRuns: 15 },
    );
  });

  it("rotate() on an empty segment creates no file", () => {
    const log = NumberedLog.create(db);
    log.rotate();
    expect(NumberedLog.segments(db)).toEqual([{ n: 1, path: `${db}-commitlog.1` }]);
    log.append(bytes(1), 1);
    log.rotate();
    log.rotate();
    expect(NumberedLog.segments(db).map((s) => s.n)).toEqual([1, 2]);
    log.close();
  });

  it("release() deletes the closed segments whose batches are all committed, never the current one", () => {
    const log = NumberedLog.create(db);
    log.append(bytes(1), 1);
    log.append(bytes(2), 2);
    log.rotate(); // segment 1: batches 1-2
    log.append(bytes(3), 3);
    log.rotate(); // segment 2: batch 3
    log.append(bytes(4), 4); // segment 3, current
    expect(log.release(0)).toBe(0);
    expect(log.release(1)).toBe(0);
    expect(log.release(2)).toBe(1);
    expect(NumberedLog.segments(db).map((s) => s.n)).toEqual([2, 3]);
    expect(log.release(100)).toBe(1);
    expect(NumberedLog.segments(db).map((s) => s.n)).toEqual([3]);
    expect(arrays(NumberedLog.readAll(db))).toEqual([[4]]);
    log.append(bytes(5), 5);
    expect(arrays(NumberedLog.readAll(db))).toEqual([[4], [5]]);
    log.close();
  });

  it("a torn or damaged record ends its own segment, not the ones after it", () => {
    const log = NumberedLog.create(db);
    log.append(bytes(1, 1), 1);
    log.append(bytes(2, 2, 2), 2);
    log.rotate();
    log.append(bytes(3), 3);
    log.append(bytes(4), 4);
    log.close();
    const first = `${db}-commitlog.1`;
    const whole = readFileSync(first);

    truncateSync(first, whole.byteLength - 1);
    expect(arrays(NumberedLog.readAll(db))).toEqual([[1, 1], [3], [4]]);
    // readAll changes nothing.
    expect(readFileSync(first).byteLength).toBe(whole.byteLength - 1);

    const damaged = Buffer.from(whole);
    damaged[damaged.byteLength - 1] = damaged[damaged.byteLength - 1]! ^ 0xff;
    writeFileSync(first, damaged);
    expect(arrays(NumberedLog.readAll(db))).toEqual([[1, 1], [3], [4]]);

    writeFileSync(first, Buffer.concat([whole, Buffer.from([9, 0, 0])]));
    expect(arrays(NumberedLog.readAll(db))).toEqual([[1, 1], [2, 2, 2], [3], [4]]);
  });

  it("truncateTail() drops a record cut short, and the next append goes in its place", () => {
    const log = NumberedLog.create(db);
    log.append(bytes(1), 1);
    // What an append that threw halfway leaves.
    appendFileSync(`${db}-commitlog.1`, Buffer.from([50, 0, 0, 0, 1, 2]));
    log.truncateTail();
    log.append(bytes(2), 2);
    expect(arrays(NumberedLog.readAll(db))).toEqual([[1], [2]]);
    log.close();
  });

  it("create() numbers its segment after every existing one", () => {
    const first = NumberedLog.create(db);
    first.append(bytes(1), 1);
    first.rotate();
    first.append(bytes(2), 2);
    first.rotate();
    first.close(); // segment 3, empty, stays
    const second = NumberedLog.create(db);
    expect(NumberedLog.segments(db).map((s) => s.n)).toEqual([1, 2, 3, 4]);
    second.append(bytes(3), 3);
    expect(arrays(NumberedLog.readAll(db))).toEqual([[1], [2], [3]]);
    second.close();

    NumberedLog.removeAll(db);
    writeFileSync(`${db}-commitlog.9`, "");
    const third = NumberedLog.create(db);
    third.close();
    expect(NumberedLog.segments(db).map((s) => s.n)).toEqual([9, 10]);
  });

  it("a segment with another header makes readAll throw, naming the file", () => {
    const log = NumberedLog.create(db);
    log.append(bytes(1), 1);
    log.close();
    // A file of the single-file log's format under a segment's name.
    const v1 = `${db}-commitlog.2`;
    CommitLog.open(v1).log.close();
    expect(() => NumberedLog.readAll(db)).toThrow(v1);
    writeFileSync(v1, "something else entirely\n");
    expect(() => NumberedLog.readAll(db)).toThrow(v1);
    // An empty file is a segment whose header a crash cut off: nothing in it, not an error.
    writeFileSync(v1, "");
    expect(arrays(NumberedLog.readAll(db))).toEqual([[1]]);
  });

  it("removeAll() and close(true) delete the segments and nothing else", () => {
    const others = [
      `${db}-commitlog`,
      `${db}-wal`,
      `${db}-commitlog.3.tmp`,
      `${db}-commitlog.03`,
      join(dir, "x-commitlog.1"),
    ];
    for (const f of others) writeFileSync(f, "not a segment\n");
    const log = NumberedLog.create(db);
    log.append(bytes(1), 1);
    log.rotate();
    log.append(bytes(2), 2);
    log.close();
    expect(NumberedLog.segments(db).map((s) => s.n)).toEqual([1, 2]);
    NumberedLog.removeAll(db);
    expect(NumberedLog.segments(db)).toEqual([]);
    expect(NumberedLog.readAll(db)).toEqual([]);

    const again = NumberedLog.create(db);
    again.append(bytes(3), 3);
    again.rotate();
    again.append(bytes(4), 4);
    expect(NumberedLog.segments(db).map((s) => s.n)).toEqual([1, 2]);
    again.close(true);
    expect(NumberedLog.segments(db)).toEqual([]);
    expect(NumberedLog.segments(db)).toEqual([]);
    expect(() => again.append(bytes(5), 5)).toThrow(/closed/);
    for (const f of others) expect(existsSync(f)).toBe(true);
  });

  it("segments() ignores files that are not segments of this database", () => {
    for (const f of [
      `${db}-commitlog`,
      `${db}-wal`,
      `${db}-shm`,
      `${db}-commitlog.`,
      `${db}-commitlog.0`,
      `${db}-commitlog.07`,
      `${db}-commitlog.-1`,
      `${db}-commitlog.1x`,
      `${db}x-commitlog.1`,
      join(dir, "other.db-commitlog.4"),
    ]) {
      writeFileSync(f, "");
    }
    writeFileSync(`${db}-commitlog.12`, "");
    writeFileSync(`${db}-commitlog.2`, "");
    expect(NumberedLog.segments(db)).toEqual([
      { n: 2, path: `${db}-commitlog.2` },
      { n: 12, path: `${db}-commitlog.12` },
    ]);
    expect(NumberedLog.segments(join(dir, "missing", "parley.db"))).toEqual([]);
  });

  describe("spare segments (made ahead of time, header then zeros)", () => {
    const sizeOf = (n: number): number => statSync(`${db}-commitlog.${n}`).size;
    const header = "PARLEY-COMMIT-LOG 2\n".length;

    it("rotate() goes on in the spare: appends overwrite its zeros, and every record reads back in order", async () => {
      const log = NumberedLog.create(db, { spares: true });
      await log.settled();
      expect(NumberedLog.segments(db).map((s) => s.n)).toEqual([1, 2]);
      expect(sizeOf(2)).toBe(header + 64 * 1024);
      expect(NumberedLog.readAll(db)).toEqual([]);
      log.append(bytes(1, 1), 1);
      log.rotate();
      log.append(bytes(2), 2);
      log.append(bytes(3, 3, 3), 3);
      // Written in place: the file is as long as the spare was.
      expect(sizeOf(2)).toBe(header + 64 * 1024);
      expect(arrays(NumberedLog.readAll(db))).toEqual([[1, 1], [2], [3, 3, 3]]);
      await log.settled();
      expect(NumberedLog.segments(db).map((s) => s.n)).toEqual([1, 2, 3]);
      log.rotate();
      log.append(bytes(4), 4);
      expect(arrays(NumberedLog.readAll(db))).toEqual([[1, 1], [2], [3, 3, 3], [4]]);
      expect(log.release(3)).toBe(2);
      expect(arrays(NumberedLog.readAll(db))).toEqual([[4]]);
      log.close(true);
      await log.settled();
      expect(NumberedLog.segments(db)).toEqual([]);
    });

    it("a record torn in a spare's zeros ends that segment only; a crash's copy reads the rest", async () => {
      const log = NumberedLog.create(db, { spares: true });
      log.append(bytes(1), 1);
      await log.settled();
      log.rotate(); // into spare 2
      log.append(bytes(2, 2), 2);
      await log.settled();
      log.rotate(); // into spare 3
      log.append(bytes(3), 3);
      await log.settled(); // spare 4 made, empty
      // What a crash leaves of an append into segment 2 after its last whole record: a length and
      // part of a payload over the zeros.
      const fd = openSync(`${db}-commitlog.2`, "r+");
      writeSync(fd, Buffer.from([9, 0, 0, 0, 1, 2, 3, 4, 5]), 0, 9, header + 8 + 2);
      closeSync(fd);
      expect(arrays(NumberedLog.readAll(db))).toEqual([[1], [2, 2], [3]]);
      log.close();
      await log.settled();
      // close() deletes the spare, not the segments that hold records.
      expect(NumberedLog.segments(db).map((s) => s.n)).toEqual([1, 2, 3]);
    });

    it("a rotation while the spare is still being made goes on past it, and the spare is deleted", async () => {
      const log = NumberedLog.create(db, { spares: true });
      log.append(bytes(1), 1);
      log.rotate(); // spare 2 not made yet: segment 3
      log.append(bytes(2), 2);
      await log.settled();
      const after = NumberedLog.segments(db).map((s) => s.n);
      expect(after).not.toContain(2);
      expect(after).toEqual([1, 3, 4]); // 4: the spare made after 3
      expect(arrays(NumberedLog.readAll(db))).toEqual([[1], [2]]);
      log.close();
      await log.settled();
      expect(NumberedLog.segments(db).map((s) => s.n)).toEqual([1, 3]);
    });

    it("a spare that is not one (records in it, another header) is replaced, not appended to", async () => {
      const log = NumberedLog.create(db, { spares: true });
      await log.settled();
      writeFileSync(`${db}-commitlog.2`, "something else entirely\n");
      log.append(bytes(1), 1);
      log.rotate();
      log.append(bytes(2), 2);
      expect(arrays(NumberedLog.readAll(db))).toEqual([[1], [2]]);
      log.close(true);
      await log.settled();
      expect(NumberedLog.segments(db)).toEqual([]);
    });

    it("the next spare follows the size of the last segment", async () => {
      const log = NumberedLog.create(db, { spares: true });
      for (let i = 1; i <= 100; i++) log.append(new Uint8Array(1000).fill(i), i);
      await log.settled();
      log.rotate(); // segment 1 took ~100 KB: the next spare holds 1.5 times that, in 64 KiB steps
      await log.settled();
      expect(sizeOf(3)).toBe(header + 3 * 64 * 1024);
      log.close(true);
      await log.settled();
    });
  });

  it("a log kept in another directory is named as one beside the database, and segments left beside it are refused", () => {
    const elsewhere = join(dir, "log");
    expect(logBase(db)).toBe(db);
    expect(logBase(db, elsewhere)).toBe(join(elsewhere, "parley.db"));
    // Nothing beside the database: fine, wherever the log is.
    refuseStraySegments(db, elsewhere);
    refuseStraySegments(db, undefined);
    writeFileSync(`${db}-commitlog.3`, "");
    expect(() => refuseStraySegments(db, elsewhere)).toThrow(`${db}-commitlog.3`);
    // The database's own directory, however written, is where those segments belong.
    refuseStraySegments(db, undefined);
    refuseStraySegments(db, dir);
    refuseStraySegments(db, join(dir, "log", ".."));
  });

  it("remembers where the log was kept, so that a start told another place refuses segments left there", () => {
    const a = join(dir, "a");
    const b = join(dir, "b");
    mkdirSync(a);
    mkdirSync(b);
    recordLogDir(db, a);
    expect(readFileSync(logDirMarker(db), "utf8")).toBe(a + "\n");
    writeFileSync(`${logBase(db, a)}-commitlog.1`, "");
    // Kept in a: fine. Told b, or nothing (beside the database): refused, naming a's segment.
    refuseStraySegments(db, a);
    expect(() => refuseStraySegments(db, b)).toThrow(`${logBase(db, a)}-commitlog.1`);
    expect(() => refuseStraySegments(db, undefined)).toThrow(`${logBase(db, a)}-commitlog.1`);
    // Once a holds nothing, the log may move; beside the database again, the marker goes.
    rmSync(`${logBase(db, a)}-commitlog.1`);
    refuseStraySegments(db, undefined);
    recordLogDir(db, undefined);
    expect(existsSync(logDirMarker(db))).toBe(false);
    recordLogDir(db, b);
    recordLogDir(db, dir); // the database's own directory is "beside it"
    expect(existsSync(logDirMarker(db))).toBe(false);
  });
});

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
