import {
  closeSync,
  existsSync,
  fsyncSync,
  openSync,
  readFileSync,
  readdirSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { open as openFile, unlink, type FileHandle } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import type { NewMessage } from "../../core/ports/store.ts";
import {
  CommitLog,
  RecordReader,
  messageSize,
  syncDirectory,
  writeMessage,
  writeString,
} from "./commit-log.ts";

// The numbered log: acknowledging ahead of SQLite (architecture.md). The sequencer gives each send
// its seq and its useqs from counters in memory, appends the batch, NUMBERED, here (fdatasynced)
// and acknowledges; the applier applies the numbered batches to SQLite later and commits every
// ~500 ms. A batch carries every number it was acknowledged with, so replaying it writes exactly
// those numbers whatever SQLite holds; a batch SQLite has committed (its number is at most the
// last committed batch) is skipped.
//
// Files: segments `<db>-commitlog.<n>`, n = 1, 2, ... in decimal, each in commit-log.ts's framing
// (a torn record ends its segment) under its own header, so that neither the old single-file log
// `<db>-commitlog` nor a segment is ever read as the other. The log goes on into a new segment at
// rotate(); a closed segment is deleted once a SQLite commit covers every batch in it, so the log
// on disk stays a few commit intervals long without ever truncating the file being appended to.
//
// The segments live beside the database unless a directory is given for them (`--commit-log-dir`):
// every append is an fdatasync, which on a disk shared with SQLite's files waits behind SQLite's
// own writes (architecture.md). The functions below take the log's base path, `<dir>/<db file
// name>` (logBase), so a log elsewhere is named as one beside the database would be.

const SEGMENT_HEADER = Buffer.from("PARLEY-COMMIT-LOG 2\n", "latin1");

/** A send with the numbers it was acknowledged with. */
export interface NumberedMessage {
  msg: NewMessage;
  /** Its seq in its conversation (positive safe integer). */
  seq: number;
  /** The logs it was appended to: user ids, or "#<conv>" for a large group's own log. */
  logs: string[];
  /** Its useq in each of `logs` (same length). */
  useqs: number[];
}

/** One batch of the sequencer; `batch` is a positive safe integer, increasing along the log. */
export interface NumberedBatch {
  batch: number;
  messages: NumberedMessage[];
}

// ------------------------------------------------------------------ codec

// Record: magic u8, batch f64, count u32, then per message the message as in encodeBatch
// (writeMessage), seq f64, log count u32, and per log its key (u32 length + UTF-8) and useq f64.
// Keys and useqs alternate, so a record cannot hold more of one than of the other.

/** First byte of a numbered batch record (format 1); not a likely first byte of anything else. */
const NUMBERED_MAGIC = 0xa1;
/** Bytes of a message with empty strings and body, and no logs. */
const MIN_MESSAGE = messageSize({
  conv: "",
  from: "",
  dev: "",
  cid: "",
  type: "",
  body: new Uint8Array(0),
  ts: 0,
});
/** Bytes of a log entry with an empty key. */
const MIN_LOG = 4 + 8;
const WHAT = "a numbered batch record";

/** The record of `b`. Throws if a number is not a positive safe integer or a message has not
 * one useq per log. The bytes own their ArrayBuffer (not Node's shared pool), so they can be
 * transferred to another thread. */
export function encodeNumbered(b: NumberedBatch): Uint8Array {
  positive(b.batch, "batch");
  let size = 1 + 8 + 4;
  for (const m of b.messages) {
    const n = m.logs.length;
    if (m.useqs.length !== n) {
      throw new Error(`numbered log: a message with ${n} logs and ${m.useqs.length} useqs`);
    }
    size += messageSize(m.msg) + 8 + 4 + n * MIN_LOG;
    for (let i = 0; i < n; i++) size += Buffer.byteLength(m.logs[i]!, "utf8");
  }
  // allocUnsafeSlow: a small allocUnsafe is a view of an 8 KB pool, which structured clone would
  // copy whole and which cannot be transferred.
  const out = Buffer.allocUnsafeSlow(size);
  let at = out.writeUInt8(NUMBERED_MAGIC, 0);
  at = out.writeDoubleLE(b.batch, at);
  at = out.writeUInt32LE(b.messages.length, at);
  for (const m of b.messages) {
    at = writeMessage(out, at, m.msg);
    at = out.writeDoubleLE(positive(m.seq, "seq"), at);
    const n = m.logs.length;
    at = out.writeUInt32LE(n, at);
    for (let i = 0; i < n; i++) {
      at = writeString(out, at, m.logs[i]!);
      at = out.writeDoubleLE(positive(m.useqs[i]!, "useq"), at);
    }
  }
  return out;
}

/** The batch encodeNumbered wrote; bodies are copies, not views of `payload`. Throws on anything
 * it did not write: a payload cut short or with bytes after it, another first byte, a number
 * that is not a positive safe integer. */
export function decodeNumbered(payload: Uint8Array): NumberedBatch {
  const r = new RecordReader(payload, WHAT);
  const magic = r.u8();
  if (magic !== NUMBERED_MAGIC) {
    throw new Error(`numbered log: not a numbered batch record (first byte ${magic})`);
  }
  const batch = positive(r.f64(), "batch");
  const count = r.u32();
  // A damaged count must fail here, not after allocating for billions of messages.
  r.need(count * MIN_MESSAGE);
  const messages = new Array<NumberedMessage>(count);
  for (let i = 0; i < count; i++) {
    const msg = r.message();
    const seq = positive(r.f64(), "seq");
    const n = r.u32();
    r.need(n * MIN_LOG);
    const logs = new Array<string>(n);
    const useqs = new Array<number>(n);
    for (let j = 0; j < n; j++) {
      logs[j] = r.str();
      useqs[j] = positive(r.f64(), "useq");
    }
    messages[i] = { msg, seq, logs, useqs };
  }
  r.end();
  return { batch, messages };
}

function positive(v: number, what: string): number {
  if (!Number.isSafeInteger(v) || v < 1)
    throw new Error(`numbered log: ${what} ${v} is not a positive integer`);
  return v;
}

// ------------------------------------------------------------------ segments

/** The base path of the numbered log of the database at `dbPath`: `dbPath` itself (segments
 * beside the database), or the same file name in `dir`. */
export function logBase(dbPath: string, dir?: string): string {
  return dir === undefined ? dbPath : join(dir, basename(dbPath));
}

/** The file beside the database naming the directory its log was last kept in, when not beside
 * it: a start that is told another place (or none) can then find segments left there. */
export function logDirMarker(dbPath: string): string {
  return `${dbPath}-commitlog-dir`;
}

/** Throws if segments of the log of `dbPath` lie anywhere but `dir` (undefined: beside the
 * database): beside the database, or in the directory the marker names. They hold acknowledged
 * sends that a start reading only `dir` would not apply (the log was moved, or the option
 * changed, after an unclean stop). */
export function refuseStraySegments(dbPath: string, dir: string | undefined): void {
  const here = resolve(dir ?? dirname(dbPath));
  const elsewhere = new Set([resolve(dirname(dbPath))]);
  const marked = markedDir(dbPath);
  if (marked !== undefined) elsewhere.add(resolve(marked));
  elsewhere.delete(here);
  for (const other of elsewhere) {
    const stray = NumberedLog.segments(logBase(dbPath, other));
    if (stray.length === 0) continue;
    throw new Error(
      `numbered log segments in ${other} (${stray.map((s) => s.path).join(", ")}) while the log is ` +
        `kept in ${here}: they hold acknowledged sends. Move them into ${here}, or start once with ` +
        `the log where they are, so that they are applied`,
    );
  }
}

/** Records durably where the log of `dbPath` is kept (the marker), or removes the marker when it
 * is beside the database. Call after refuseStraySegments, before the log is written. */
export function recordLogDir(dbPath: string, dir: string | undefined): void {
  const marker = logDirMarker(dbPath);
  if (dir === undefined || resolve(dir) === resolve(dirname(dbPath))) {
    if (existsSync(marker)) {
      unlinkQuietly(marker);
      syncDirectory(dirname(dbPath));
    }
    return;
  }
  const want = resolve(dir);
  if (markedDir(dbPath) === want) return;
  const fd = openSync(marker, "w");
  try {
    writeSync(fd, want + "\n");
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  syncDirectory(dirname(dbPath));
}

/** The directory the marker of `dbPath` names, if there is one. */
function markedDir(dbPath: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(logDirMarker(dbPath), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const dir = text.trim();
  return dir === "" ? undefined : dir;
}

interface Segment {
  n: number;
  path: string;
}

/** Zeros a spare segment holds after its header: 1.5 times what the last segment took, within
 * these bounds (a spare is made every commit interval, ~500 ms). */
const SPARE_MIN_BYTES = 64 * 1024;
const SPARE_MAX_BYTES = 16 * 1024 * 1024;

export interface NumberedLogOptions {
  /** Make each next segment ahead of time, off the append path, as its header followed by zeros,
   * durable: rotate() then opens it instead of creating a file, and appends overwrite blocks
   * already written. An fdatasync that must also record a new file size and allocate blocks
   * (ext4) costs about twice the time and the CPU (docs/benchmarks.md, sixteenth session). The
   * sequencer sets it; off by default, so that a log's files are only the segments it wrote. */
  spares?: boolean;
}

/** The numbered log of one database, as its sequencer writes it: one open segment, appended to,
 * and the closed segments of this log not yet released. Not shared between threads or processes:
 * the applier reads the segments with readAll. */
export class NumberedLog {
  /** Closed segments still on disk, oldest first, with the highest batch each holds. */
  private readonly closed: Array<Segment & { last: number }> = [];
  /** Highest batch appended to the current segment (0: none). */
  private last = 0;

  /** The next segment's number once its spare is durable. */
  private spareReady: number | undefined;
  /** The spare being made (it has taken that segment number), if one is. */
  private spareWork: { n: number; done: Promise<void> } | undefined;
  /** Bytes the last closed segment took: the next spare's size follows it. */
  private lastSize = 0;

  private constructor(
    private readonly dbPath: string,
    private current: Segment,
    private log: CommitLog | undefined,
    private readonly spares: boolean,
  ) {}

  /** The segment files of `dbPath`'s log, by n ascending. Other files (`<db>-commitlog`,
   * `<db>-wal`, `<db>-commitlog.7.tmp`...) are not segments. */
  static segments(dbPath: string): Array<{ n: number; path: string }> {
    const prefix = `${basename(dbPath)}-commitlog.`;
    let names: string[];
    try {
      names = readdirSync(dirname(dbPath));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    const found: Segment[] = [];
    for (const name of names) {
      if (!name.startsWith(prefix)) continue;
      const digits = name.slice(prefix.length);
      // Only the names we write (no sign, no leading zero), so that n names exactly one file.
      if (!/^[1-9][0-9]*$/.test(digits)) continue;
      const n = Number(digits);
      if (Number.isSafeInteger(n)) found.push({ n, path: segmentPath(dbPath, n) });
    }
    return found.sort((a, b) => a.n - b.n);
  }

  /** The payloads of every whole record of every segment, segment by segment, in order. A torn
   * record ends its own segment only: it is an append that failed (appends are durable before
   * they return), never acknowledged, and the segments after it hold later batches that were.
   * Leaves the files as they are. Throws an Error naming the file if a segment is not a numbered
   * log segment. */
  static readAll(dbPath: string): Uint8Array[] {
    const records: Uint8Array[] = [];
    for (const s of NumberedLog.segments(dbPath)) {
      // An empty file is a segment whose header a crash cut off: it holds nothing.
      for (const r of CommitLog.read(s.path, SEGMENT_HEADER)) records.push(r);
    }
    return records;
  }

  /** Deletes every segment of `dbPath` (after a replay committed them all). Not fsynced: a
   * segment a crash brings back holds committed batches only, which replay skips. */
  static removeAll(dbPath: string): void {
    for (const s of NumberedLog.segments(dbPath)) unlinkQuietly(s.path);
  }

  /** Starts a new log of `dbPath` in a new segment numbered after every existing one, durably
   * created (file and directory synced) before it returns. */
  static create(dbPath: string, opts: NumberedLogOptions = {}): NumberedLog {
    const existing = NumberedLog.segments(dbPath);
    const n = existing.length === 0 ? 1 : existing[existing.length - 1]!.n + 1;
    const path = segmentPath(dbPath, n);
    const log = new NumberedLog(dbPath, { n, path }, openSegment(path), opts.spares === true);
    log.makeSpare();
    return log;
  }

  /** Appends the record of batch `batch` to the current segment and makes it durable (fdatasync)
   * before returning. If it throws, the record may be partly written: the caller must not
   * acknowledge it, and truncateTail() drops it. */
  append(payload: Uint8Array, batch: number): void {
    this.open().append(payload);
    if (batch > this.last) this.last = batch;
  }

  /** Cuts off anything after the last record append() completed (after it threw halfway). */
  truncateTail(): void {
    this.open().truncateTail();
  }

  /** Closes the current segment and goes on in a new one, if the current one holds a record;
   * otherwise does nothing. The new segment is durable before the old one is closed, and if it
   * cannot be created the log goes on in the old one. */
  rotate(): void {
    const log = this.open();
    if (log.records === 0) return;
    let n = this.current.n + 1;
    let next: CommitLog | undefined;
    if (this.spareReady === n) {
      this.spareReady = undefined;
      try {
        next = CommitLog.openPrefilled(segmentPath(this.dbPath, n), SEGMENT_HEADER);
      } catch {
        // Not what makeSpare() left: make the segment here, as without spares.
        unlinkQuietly(segmentPath(this.dbPath, n));
      }
    } else if (this.spareWork?.n === n) {
      // Its spare is still being made and has taken its number: the log goes on after it, and
      // the spare is deleted once made (segments are read in order of number; it holds nothing).
      n++;
    }
    const path = segmentPath(this.dbPath, n);
    next ??= openSegment(path);
    this.lastSize = log.size;
    log.close();
    this.closed.push({ ...this.current, last: this.last });
    this.current = { n, path };
    this.log = next;
    this.last = 0;
    this.makeSpare();
  }

  /** Resolves once no spare is being made (after close(), once none is left on disk). */
  async settled(): Promise<void> {
    while (this.spareWork) await this.spareWork.done;
  }

  /** Starts making the next segment's spare, unless spares are off, one is being made or ready,
   * or the log is closed. A spare that cannot be made is no error: rotate() then creates the
   * segment as without spares. */
  private makeSpare(): void {
    if (!this.spares || this.log === undefined || this.spareWork || this.spareReady !== undefined) return;
    const n = this.current.n + 1;
    const path = segmentPath(this.dbPath, n);
    const zeros = Math.min(
      SPARE_MAX_BYTES,
      Math.max(SPARE_MIN_BYTES, Math.ceil((this.lastSize * 1.5) / SPARE_MIN_BYTES) * SPARE_MIN_BYTES),
    );
    const done = writeSpare(path, zeros).then(
      async (made) => {
        this.spareWork = undefined;
        if (!made) return;
        if (this.log !== undefined && this.current.n + 1 === n) {
          this.spareReady = n;
          return;
        }
        // The log went on past it, or was closed, meanwhile.
        await unlink(path).catch(() => undefined);
        this.makeSpare();
      },
      () => {
        this.spareWork = undefined;
      },
    );
    this.spareWork = { n, done };
  }

  /** Deletes every closed segment (never the current one) whose batches are all at most
   * `committed`, i.e. committed to SQLite; how many it deleted. Not fsynced: a segment a crash
   * brings back holds committed batches only, which replay skips. */
  release(committed: number): number {
    let deleted = 0;
    for (let i = 0; i < this.closed.length;) {
      const s = this.closed[i]!;
      if (s.last > committed) {
        i++;
        continue;
      }
      unlinkQuietly(s.path);
      this.closed.splice(i, 1);
      deleted++;
    }
    return deleted;
  }

  /** Closes the current segment. With `removeAll` (everything is committed), deletes every
   * segment of this log, the current one included. Once closed, append and rotate throw. */
  close(removeAll = false): void {
    if (this.log === undefined) return;
    this.log.close();
    this.log = undefined;
    // A spare holds nothing. One still being made is deleted when it is (settled()).
    if (this.spareReady !== undefined) unlinkQuietly(segmentPath(this.dbPath, this.spareReady));
    this.spareReady = undefined;
    if (!removeAll) return;
    for (const s of this.closed) unlinkQuietly(s.path);
    this.closed.length = 0;
    unlinkQuietly(this.current.path);
  }

  private open(): CommitLog {
    if (this.log === undefined) throw new Error(`numbered log of ${this.dbPath} is closed`);
    return this.log;
  }
}

/** A new segment at `path`, durably created (CommitLog.open syncs the file and its directory).
 * If that fails, the file is deleted: it holds no record, and a header cut short would make
 * readAll refuse the whole log. */
function openSegment(path: string): CommitLog {
  // Never another writer's segment (nor one this log would then delete).
  if (existsSync(path)) throw new Error(`${path} exists already: is another process writing this log?`);
  try {
    return CommitLog.open(path, SEGMENT_HEADER).log;
  } catch (err) {
    unlinkQuietly(path);
    throw err;
  }
}

/** Makes a spare segment at `path`: the header, then `zeros` zero bytes, file and directory
 * synced. Resolves false, leaving nothing, if it cannot (the path exists, the disk is full...). */
async function writeSpare(path: string, zeros: number): Promise<boolean> {
  let file;
  try {
    file = await openFile(path, "wx", 0o600);
  } catch {
    return false; // never touch a file this did not create
  }
  try {
    try {
      await writeAllAt(file, SEGMENT_HEADER, 0);
      // From one small block of zeros, not a buffer of the spare's size: that was up to 16 MiB
      // held, and touched, in the server's memory every commit interval.
      for (let at = 0; at < zeros; at += ZEROS.length) {
        const block = ZEROS.subarray(0, Math.min(ZEROS.length, zeros - at));
        await writeAllAt(file, block, SEGMENT_HEADER.length + at);
      }
      await file.datasync();
    } finally {
      await file.close();
    }
    const dir = await openFile(dirname(path), "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
    return true;
  } catch {
    await unlink(path).catch(() => undefined);
    return false;
  }
}

/** The block of zeros spares are written from. */
const ZEROS = Buffer.alloc(SPARE_MIN_BYTES);

async function writeAllAt(file: FileHandle, data: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < data.byteLength;) {
    done += (await file.write(data, done, data.byteLength - done, position + done)).bytesWritten;
  }
}

function segmentPath(dbPath: string, n: number): string {
  return `${dbPath}-commitlog.${n}`;
}

/** Deletes the file at `path`; one already gone is fine (deleting it was the point). */
function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}
