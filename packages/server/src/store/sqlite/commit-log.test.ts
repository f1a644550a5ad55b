import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CommitLog, decodeBatch, encodeBatch } from "./commit-log.ts";
import { arbitraryNewMessage } from "../testing/arbitraries.ts";

// The commit log holds every acknowledged send until SQLite has committed it: what was appended
// must come back whole and in order, and a write cut short by a crash must end the log, never be
// read as a record or hide the ones before it.

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "parley-commitlog-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const payload = fc.uint8Array({ minLength: 1, maxLength: 200 });

/** Records as plain arrays, so that toEqual compares their bytes. */
const arrays = (records: readonly Uint8Array[]): number[][] => records.map((r) => Array.from(r));

/** A new log file holding `payloads`; its path. */
function filled(payloads: readonly Uint8Array[]): string {
  const path = join(dir, `log-${Math.random()}`);
  const { log } = CommitLog.open(path);
  for (const p of payloads) log.append(p);
  log.close();
  return path;
}

describe("commit log records", () => {
  it("gives back every appended record, in order, after a reopen", () => {
    fc.assert(
      fc.property(fc.array(payload, { maxLength: 20 }), (payloads) => {
        const path = filled(payloads);
        const { log, records } = CommitLog.open(path);
        expect(arrays(records)).toEqual(arrays(payloads));
        expect(log.records).toBe(payloads.length);
        log.close();
      }),
      { numRuns: 50 },
    );
  });

  it("a file cut anywhere gives back exactly the records whole before the cut, and appends go after them", () => {
    fc.assert(
      fc.property(
        fc.array(payload, { minLength: 1, maxLength: 8 }),
        fc.nat(),
        payload,
        (payloads, at, next) => {
          const path = filled(payloads);
          const size = statSync(path).size;
          const cut = at % (size + 1);
          truncateSync(path, cut);
          if (cut < HEADER_BYTES) {
            // Cut inside the header: not a commit log any more (an empty file is a new one).
            if (cut === 0) expect(CommitLog.read(path)).toEqual([]);
            else expect(() => CommitLog.read(path)).toThrow(path);
            return;
          }
          const ends = endsOf(payloads);
          const kept = ends.filter((e) => e <= cut).length;
          const { log, records } = CommitLog.open(path);
          expect(arrays(records)).toEqual(arrays(payloads.slice(0, kept)));
          log.append(next);
          log.close();
          const again = CommitLog.read(path);
          expect(arrays(again)).toEqual(arrays([...payloads.slice(0, kept), next]));
        },
      ),
      { numRuns: 100 },
    );
  });

  it("a record whose bytes changed ends the log there", () => {
    fc.assert(
      fc.property(
        fc.array(payload, { minLength: 1, maxLength: 8 }),
        fc.nat(),
        fc.nat(),
        (payloads, which, where) => {
          const path = filled(payloads);
          const i = which % payloads.length;
          const ends = endsOf(payloads);
          const start = (i === 0 ? HEADER_BYTES : ends[i - 1]!) + 8;
          const file = readFileSync(path);
          const at = start + (where % payloads[i]!.byteLength);
          file[at] = file[at]! ^ 0xff;
          writeFileSync(path, file);
          expect(arrays(CommitLog.read(path))).toEqual(arrays(payloads.slice(0, i)));
        },
      ),
      { numRuns: 100 },
    );
  });

  it("reset empties it; close(true) removes the file", () => {
    const path = join(dir, "log");
    const { log } = CommitLog.open(path);
    log.append(new Uint8Array([1, 2, 3]));
    log.reset();
    expect(log.records).toBe(0);
    expect(CommitLog.read(path)).toEqual([]);
    log.append(new Uint8Array([4]));
    expect(arrays(CommitLog.read(path))).toEqual([[4]]);
    log.reset();
    log.close(true);
    expect(() => statSync(path)).toThrow(/ENOENT/);
    expect(CommitLog.read(path)).toEqual([]);
  });

  it("refuses a file that is not a commit log, naming it", () => {
    const path = join(dir, "parley.db-commitlog");
    writeFileSync(path, "some other program's file\n");
    expect(() => CommitLog.open(path)).toThrow(path);
    expect(() => CommitLog.read(path)).toThrow(/not a Parley commit log/);
    // Left as it was.
    expect(readFileSync(path, "utf8")).toBe("some other program's file\n");
  });

  it("refuses an empty record", () => {
    const { log } = CommitLog.open(join(dir, "log"));
    expect(() => log.append(new Uint8Array(0))).toThrow(/0 bytes/);
    log.close();
  });
});

describe("commit log batches", () => {
  it("decode(encode(batch)) is the batch", () => {
    fc.assert(
      fc.property(fc.array(arbitraryNewMessage, { maxLength: 20 }), (batch) => {
        expect(decodeBatch(encodeBatch(batch))).toEqual(batch);
      }),
    );
  });

  it("refuses a batch record cut short or with bytes after it", () => {
    fc.assert(
      fc.property(fc.array(arbitraryNewMessage, { minLength: 1, maxLength: 5 }), fc.nat(), (batch, at) => {
        const whole = encodeBatch(batch);
        const cut = at % whole.byteLength;
        expect(() => decodeBatch(whole.subarray(0, cut))).toThrow(/cut short/);
        const longer = new Uint8Array(whole.byteLength + 1);
        longer.set(whole);
        expect(() => decodeBatch(longer)).toThrow(/trailing bytes/);
      }),
    );
  });
});

const HEADER_BYTES = "PARLEY-COMMIT-LOG 1\n".length;

/** Offsets at which each record of a log holding `payloads` ends. */
function endsOf(payloads: readonly Uint8Array[]): number[] {
  let end = HEADER_BYTES;
  return payloads.map((p) => (end += 8 + p.byteLength));
}
