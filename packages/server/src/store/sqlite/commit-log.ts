import {
  closeSync,
  constants,
  fdatasyncSync,
  fsyncSync,
  fstatSync,
  ftruncateSync,
  openSync,
  readSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";
import { crc32 } from "node:zlib";
import type { NewMessage } from "../../core/ports/store.ts";

// The commit log: an append-only file in front of SQLite (architecture.md, "Storage"). A batch of
// sends is acknowledged once it is applied to SQLite's open transaction AND appended here and
// fdatasynced; SQLite commits later, many batches at a time, so that each page it writes carries
// many messages. After each SQLite commit the log is emptied. At start, what the log still holds
// was acknowledged but perhaps not committed: it is applied again, in order, to the last committed
// state, which gives every message the seq and useqs it was acknowledged with (appendMessages
// depends only on the batch and the database), and a batch that was committed after all is
// answered as resends (the unique (cid, from_num) key) and writes nothing.
//
// Our own format rather than a library: it is a few lines of framing, and it is the durability
// of every acknowledged message, so we want to know exactly what is on disk.
//
// File: HEADER, then records. A record is [payload length u32 LE][crc32 of payload u32 LE]
// [payload]; the payload is one batch (encodeBatch). A record cut short or whose checksum fails
// ends the log: it is the write a crash interrupted, which was never acknowledged (the
// acknowledgement waits for fdatasync), and it is cut off when the log is opened.

const HEADER = Buffer.from("PARLEY-COMMIT-LOG 1\n", "latin1");
const RECORD_HEAD = 8;
/** A record longer than this is taken as damage, not as a batch (a batch is a few MB at most). */
const MAX_RECORD = 1 << 30;

export class CommitLog {
  private constructor(
    readonly path: string,
    private readonly header: Buffer,
    private fd: number,
    /** Where the next record goes (the end of the last whole record). */
    private end: number,
    /** Records appended since the last reset. */
    private count: number,
  ) {}

  /** Opens the log at `path`, creating it if absent, and returns it with the payloads of the
   * whole records it holds, in order (a torn last record is cut off). Throws an Error naming the
   * file if it does not begin with `header`: another format with the same framing (the numbered
   * log's segments, numbered-log.ts) has its own, so that neither is ever read as the other. */
  static open(path: string, header: Buffer = HEADER): { log: CommitLog; records: Uint8Array[] } {
    // Not "a+": Linux ignores the position of a write to a file opened for appending.
    const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600);
    try {
      const { records, end } = readRecords(fd, path, header);
      if (end === 0) {
        writeAll(fd, header, 0);
        fdatasyncSync(fd);
        // The file's name must be durable too, or a power loss could take the whole log.
        syncDirectory(dirname(path));
      } else if (end < fstatSync(fd).size) {
        ftruncateSync(fd, end);
        fdatasyncSync(fd);
      }
      return {
        log: new CommitLog(path, header, fd, Math.max(end, header.length), records.length),
        records,
      };
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** Opens for appending a file that holds `header` and then only zeros (numbered-log.ts makes
   * them ahead of time): appends overwrite blocks already written, so their fdatasync changes no
   * file size or allocation. The reader ends a file's records at a zero length, so the zeros
   * after the last record are never read as one. Throws if the file does not begin with `header`. */
  static openPrefilled(path: string, header: Buffer): CommitLog {
    const fd = openSync(path, constants.O_RDWR);
    try {
      const head = Buffer.alloc(header.length + RECORD_HEAD);
      const got = readSync(fd, head, 0, head.length, 0);
      checkHeader(head.subarray(0, got), header, path);
      if (got === head.length && head.readUInt32LE(header.length) !== 0) {
        throw new Error(`${path} holds records: not a prefilled segment`);
      }
      return new CommitLog(path, header, fd, header.length, 0);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** Bytes from the start of the file to the end of the last record. */
  get size(): number {
    return this.end;
  }

  /** The payloads of the whole records in the file at `path` ([] if there is none), without
   * changing it. */
  static read(path: string, header: Buffer = HEADER): Uint8Array[] {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    try {
      return readRecords(fd, path, header).records;
    } finally {
      closeSync(fd);
    }
  }

  /** Records appended since the last reset (including those found at open). */
  get records(): number {
    return this.count;
  }

  /** Appends one record and makes it durable (fdatasync) before returning. If it throws, the
   * record may be partly written: the caller must not acknowledge it, and truncateTail() drops it. */
  append(payload: Uint8Array): void {
    if (payload.byteLength === 0 || payload.byteLength > MAX_RECORD) {
      throw new Error(`commit log: a record of ${payload.byteLength} bytes`);
    }
    const head = Buffer.allocUnsafe(RECORD_HEAD);
    head.writeUInt32LE(payload.byteLength, 0);
    head.writeUInt32LE(crc32(payload), 4);
    writeAll(this.fd, head, this.end);
    writeAll(this.fd, payload, this.end + RECORD_HEAD);
    fdatasyncSync(this.fd);
    this.end += RECORD_HEAD + payload.byteLength;
    this.count++;
  }

  /** Cuts off anything after the last record append() completed (after it threw halfway). */
  truncateTail(): void {
    ftruncateSync(this.fd, this.end);
  }

  /** Empties the log: everything in it is committed to SQLite. Not fsynced: a crash that undoes
   * the truncation replays batches that are already committed, which write nothing. */
  reset(): void {
    if (this.count === 0) return;
    ftruncateSync(this.fd, this.header.length);
    this.end = this.header.length;
    this.count = 0;
  }

  /** Closes the file; with `remove`, deletes it (it must be empty: everything is committed). */
  close(remove = false): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
    if (remove) unlinkSync(this.path);
  }
}

function readRecords(fd: number, path: string, header: Buffer): { records: Uint8Array[]; end: number } {
  const size = fstatSync(fd).size;
  if (size === 0) return { records: [], end: 0 };
  const file = Buffer.allocUnsafe(size);
  let got = 0;
  while (got < size) {
    const n = readSync(fd, file, got, size - got, got);
    if (n === 0) break;
    got += n;
  }
  checkHeader(file.subarray(0, got), header, path);
  const records: Uint8Array[] = [];
  let at = header.length;
  while (at + RECORD_HEAD <= got) {
    const len = file.readUInt32LE(at);
    const sum = file.readUInt32LE(at + 4);
    const start = at + RECORD_HEAD;
    if (len === 0 || len > MAX_RECORD || start + len > got) break;
    const payload = file.subarray(start, start + len);
    if (crc32(payload) !== sum) break;
    records.push(payload);
    at = start + len;
  }
  return { records, end: at };
}

/** Throws, naming `path`, unless `start` (the file's first bytes) begins with `header`. */
function checkHeader(start: Buffer, header: Buffer, path: string): void {
  if (start.length < header.length || !start.subarray(0, header.length).equals(header)) {
    throw new Error(`${path} is not a Parley commit log (or was written by another version)`);
  }
}

export function syncDirectory(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function writeAll(fd: number, data: Uint8Array, position: number): void {
  let done = 0;
  while (done < data.byteLength) {
    done += writeSync(fd, data, done, data.byteLength - done, position + done);
  }
}

// ------------------------------------------------------------------ batch codec

/** One batch of sends as a log record: count u32, then each message (writeMessage). */
export function encodeBatch(batch: readonly NewMessage[]): Uint8Array {
  let size = 4;
  for (const m of batch) size += messageSize(m);
  const out = Buffer.allocUnsafe(size);
  let at = out.writeUInt32LE(batch.length, 0);
  for (const m of batch) at = writeMessage(out, at, m);
  return out;
}

/** The batch encodeBatch wrote (bodies are copies). Throws on a payload it did not write. */
export function decodeBatch(payload: Uint8Array): NewMessage[] {
  const r = new RecordReader(payload, "a batch record");
  const n = r.u32();
  const batch: NewMessage[] = [];
  for (let i = 0; i < n; i++) batch.push(r.message());
  r.end();
  return batch;
}

// One message as the records of both logs hold it (this one's batches, and the numbered log's,
// numbered-log.ts): conv, from, dev, cid, type (each u32 length + UTF-8, as SQLite keeps them),
// ts f64, whether replyTo is set (u8) and replyTo f64, body (u32 length + bytes). Written field by
// field, without a temporary array per message: both encoders are on the path of every send.

/** The fixed part of a message: five string lengths, ts, the replyTo flag and value, body length. */
const MESSAGE_FIXED = 5 * 4 + 8 + 1 + 8 + 4;

/** Bytes writeMessage writes for `m`. */
export function messageSize(m: NewMessage): number {
  return (
    MESSAGE_FIXED +
    Buffer.byteLength(m.conv, "utf8") +
    Buffer.byteLength(m.from, "utf8") +
    Buffer.byteLength(m.dev, "utf8") +
    Buffer.byteLength(m.cid, "utf8") +
    Buffer.byteLength(m.type, "utf8") +
    m.body.byteLength
  );
}

/** Writes `m` into `out` at `at` (which has messageSize(m) bytes there); the offset after it. */
export function writeMessage(out: Buffer, at: number, m: NewMessage): number {
  at = writeString(out, at, m.conv);
  at = writeString(out, at, m.from);
  at = writeString(out, at, m.dev);
  at = writeString(out, at, m.cid);
  at = writeString(out, at, m.type);
  at = out.writeDoubleLE(m.ts, at);
  at = out.writeUInt8(m.replyTo === undefined ? 0 : 1, at);
  at = out.writeDoubleLE(m.replyTo ?? 0, at);
  at = out.writeUInt32LE(m.body.byteLength, at);
  out.set(m.body, at);
  return at + m.body.byteLength;
}

/** Writes `s` as u32 length + UTF-8 at `at` (room counted with Buffer.byteLength); the offset
 * after it. */
export function writeString(out: Buffer, at: number, s: string): number {
  const n = out.write(s, at + 4, "utf8");
  out.writeUInt32LE(n, at);
  return at + 4 + n;
}

/** Reads a record's fields in order. Every read checks that the bytes are there, and throws
 * "commit log: <what> is cut short" if not; end() throws if bytes are left over. */
export class RecordReader {
  private readonly buf: Buffer;
  private at = 0;

  constructor(
    payload: Uint8Array,
    /** The record, as the errors name it ("a batch record"). */
    private readonly what: string,
  ) {
    this.buf = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  }

  /** Bytes not read yet. */
  get left(): number {
    return this.buf.byteLength - this.at;
  }

  /** Throws unless `n` more bytes are there. */
  need(n: number): void {
    if (this.at + n > this.buf.byteLength) throw new Error(`commit log: ${this.what} is cut short`);
  }

  u8(): number {
    this.need(1);
    return this.buf.readUInt8(this.at++);
  }

  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.at);
    this.at += 4;
    return v;
  }

  f64(): number {
    this.need(8);
    const v = this.buf.readDoubleLE(this.at);
    this.at += 8;
    return v;
  }

  /** A u32 length + UTF-8 string. */
  str(): string {
    const n = this.u32();
    this.need(n);
    const s = this.buf.toString("utf8", this.at, this.at + n);
    this.at += n;
    return s;
  }

  /** A u32 length + bytes, copied: a record's buffer is the whole file read at open, which a
   * message kept in a cache must not hold on to. */
  bytes(): Uint8Array {
    const n = this.u32();
    this.need(n);
    const b = new Uint8Array(n);
    this.buf.copy(b, 0, this.at, this.at + n);
    this.at += n;
    return b;
  }

  /** A message as writeMessage wrote it. */
  message(): NewMessage {
    const conv = this.str();
    const from = this.str();
    const dev = this.str();
    const cid = this.str();
    const type = this.str();
    const ts = this.f64();
    const hasReply = this.u8() === 1;
    const replyTo = this.f64();
    const body = this.bytes();
    const m: NewMessage = { conv, from, dev, cid, type, body, ts };
    if (hasReply) m.replyTo = replyTo;
    return m;
  }

  /** Throws if bytes are left after the record. */
  end(): void {
    if (this.at !== this.buf.byteLength) throw new Error(`commit log: trailing bytes after ${this.what}`);
  }
}
