import { constants as fsConstants } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import type { Message } from "@parley/protocol";
import { base64ToBytes, bytesToBase64 } from "../base64.ts";
import type { PendingSend, StoreOp, StoreOptions, StoreSnapshot } from "../local-store.ts";
import { StoreState } from "../local-store.ts";

// A durable LocalStore for Node: the state lives in memory and every mutation is appended to a
// JSON-lines log (`log-<gen>.jsonl`), written and fdatasync'ed by flush(). When the log grows
// past `compactAfterLines`, the state is written to `snapshot.json` (temp file, fsync, rename,
// fsync of the directory) with the next generation, and the old log is deleted.
//
// Crash safety: a flush writes its lines in one append, cursor last, so a torn write leaves a
// prefix of the mutations; on open an incomplete last line is dropped (and truncated away). An
// unreadable snapshot or a bad line in the middle of the log is corruption and open() throws;
// the store never silently starts empty over damaged files. A write error makes the store
// fail-stop: every later flush rejects with it. A `lock` file holding the pid keeps a second live
// process out of the same directory.

export interface FileStoreOptions extends StoreOptions {
  /** Log lines after which flush() compacts into a snapshot. Default 5000. */
  compactAfterLines?: number;
}

const SNAPSHOT = "snapshot.json";
const LOCK = "lock";
const FORMAT = 1;

interface SnapshotFile {
  format: number;
  gen: number;
  state: StoreSnapshot;
}

export class FileLocalStore extends StoreState {
  private pendingLines: string[] = [];
  private pendingCursor: number | undefined;
  /** The same for the cursors of large groups' logs, by conversation. */
  private readonly pendingLogCursors = new Map<string, number>();
  private chain: Promise<void> = Promise.resolve();
  private failure: Error | undefined;
  private closed = false;
  private logLines = 0;

  private constructor(
    private readonly dir: string,
    private gen: number,
    private logFile: fs.FileHandle | undefined,
    private readonly compactAfterLines: number,
    options: StoreOptions,
  ) {
    super(options);
  }

  /** Opens (creating if needed) the store in `dir`. Rejects if the files are damaged or another
   * live process holds the directory. */
  static async open(dir: string, options: FileStoreOptions = {}): Promise<FileLocalStore> {
    await fs.mkdir(dir, { recursive: true });
    await acquireLock(dir);
    try {
      const snapshot = await readSnapshot(dir);
      const store = new FileLocalStore(
        dir,
        snapshot?.gen ?? 0,
        undefined,
        options.compactAfterLines ?? 5000,
        options,
      );
      if (snapshot) store.restore(decodeSnapshot(snapshot.state));
      await store.replayLog();
      await removeStaleLogs(dir, store.gen);
      store.logFile = await fs.open(logPath(dir, store.gen), "a");
      return store;
    } catch (err) {
      await fs.rm(path.join(dir, LOCK), { force: true });
      throw err;
    }
  }

  protected record(op: StoreOp): void {
    if (this.closed) throw new Error("the local store is closed");
    // Only the last cursor of a batch matters (the user's, and each group log's); it is written
    // after the batch's other lines.
    if (op.o === "cur") this.pendingCursor = op.v;
    else if (op.o === "lcur") this.pendingLogCursors.set(op.c, op.v);
    else this.pendingLines.push(JSON.stringify(encodeOp(op)));
    // `clear` resets the cursors, `rmconv` a group's: one set before must not be written after.
    if (op.o === "clear") {
      this.pendingCursor = undefined;
      this.pendingLogCursors.clear();
    }
    if (op.o === "rmconv") this.pendingLogCursors.delete(op.c);
  }

  flush(): Promise<void> {
    const next = this.chain.then(() => this.writePending());
    this.chain = next.catch(() => {});
    return next;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
    } finally {
      this.closed = true;
      await this.chain;
      await this.logFile?.close();
      this.logFile = undefined;
      await fs.rm(path.join(this.dir, LOCK), { force: true });
    }
  }

  private async writePending(): Promise<void> {
    if (this.failure) throw this.failure;
    for (const [c, v] of this.pendingLogCursors) this.pendingLines.push(JSON.stringify({ o: "lcur", c, v }));
    this.pendingLogCursors.clear();
    if (this.pendingCursor !== undefined) {
      this.pendingLines.push(JSON.stringify({ o: "cur", v: this.pendingCursor }));
      this.pendingCursor = undefined;
    }
    if (this.pendingLines.length === 0) return;
    const lines = this.pendingLines;
    this.pendingLines = [];
    const log = this.logFile;
    if (!log) throw new Error("the local store is closed");
    try {
      await log.write(lines.join("\n") + "\n");
      await log.datasync();
      this.logLines += lines.length;
      if (this.logLines >= this.compactAfterLines) await this.compact();
    } catch (err) {
      this.failure = new Error(`local store ${this.dir}: write failed; reopen it`, { cause: err });
      throw this.failure;
    }
  }

  private async compact(): Promise<void> {
    const gen = this.gen + 1;
    const file: SnapshotFile = { format: FORMAT, gen, state: encodeSnapshot(this.snapshot()) };
    // The snapshot holds every mutation made so far, including those recorded during the write
    // above: they must not go to the new log too, where a torn append could replay an older
    // value over the snapshot's newer one. A later flush() finds them durable with the snapshot.
    this.pendingLines = [];
    this.pendingCursor = undefined;
    this.pendingLogCursors.clear();
    const tmp = path.join(this.dir, `${SNAPSHOT}.tmp`);
    const handle = await fs.open(tmp, "w");
    try {
      await handle.writeFile(JSON.stringify(file));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, path.join(this.dir, SNAPSHOT));
    await syncDir(this.dir);
    // From here the snapshot names generation `gen`: an absent log for it reads as empty.
    const old = this.logFile;
    this.logFile = await fs.open(logPath(this.dir, gen), "a");
    this.gen = gen;
    this.logLines = 0;
    await old?.close();
    await fs.rm(logPath(this.dir, gen - 1), { force: true });
  }

  private async replayLog(): Promise<void> {
    const file = logPath(this.dir, this.gen);
    let text: string;
    try {
      text = await fs.readFile(file, "utf8");
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    // Every line but the last piece ends with "\n"; that piece is empty or a torn append.
    const lines = text.split("\n");
    let goodBytes = 0;
    for (let i = 0; i < lines.length - 1; i++) {
      const line = lines[i] ?? "";
      let op: StoreOp;
      try {
        op = decodeOp(JSON.parse(line));
      } catch (err) {
        // A torn append only ever loses the end of the file, so a bad complete line is damage.
        throw new Error(`local store ${file}: line ${i + 1} is damaged`, { cause: err });
      }
      this.apply(op);
      this.logLines++;
      goodBytes += Buffer.byteLength(line) + 1;
    }
    // A crash mid-append leaves an incomplete last line: cut it so later appends start clean.
    if (goodBytes < Buffer.byteLength(text)) await fs.truncate(file, goodBytes);
  }
}

function logPath(dir: string, gen: number): string {
  return path.join(dir, `log-${gen}.jsonl`);
}

async function readSnapshot(dir: string): Promise<SnapshotFile | undefined> {
  const file = path.join(dir, SNAPSHOT);
  let text: string;
  try {
    text = await fs.readFile(file, "utf8");
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
  try {
    const parsed = JSON.parse(text) as SnapshotFile;
    if (parsed.format !== FORMAT || !Number.isSafeInteger(parsed.gen) || typeof parsed.state !== "object") {
      throw new Error("unknown snapshot format");
    }
    return parsed;
  } catch (err) {
    throw new Error(`local store ${file} is damaged`, { cause: err });
  }
}

async function removeStaleLogs(dir: string, gen: number): Promise<void> {
  for (const name of await fs.readdir(dir)) {
    const m = /^log-(\d+)\.jsonl$/.exec(name);
    if (m && Number(m[1]) !== gen) await fs.rm(path.join(dir, name), { force: true });
  }
  await fs.rm(path.join(dir, `${SNAPSHOT}.tmp`), { force: true });
}

async function syncDir(dir: string): Promise<void> {
  // Makes the rename durable. Not every platform can open a directory (Windows): best effort.
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(dir, fsConstants.O_RDONLY);
    await handle.sync();
  } catch {
    // ignored: see above
  } finally {
    await handle?.close();
  }
}

async function acquireLock(dir: string): Promise<void> {
  const file = path.join(dir, LOCK);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await fs.writeFile(file, String(process.pid), { flag: "wx" });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const pid = Number((await fs.readFile(file, "utf8").catch(() => "")).trim());
    if (Number.isSafeInteger(pid) && pid > 0 && isAlive(pid)) {
      throw new Error(`local store ${dir} is in use by process ${pid}`);
    }
    await fs.rm(file, { force: true }); // left by a process that died
  }
  throw new Error(`local store ${dir}: could not take the lock`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
}

// ---------------------------------------------------------------- JSON forms (bodies as base64)

type Json<T> = Omit<T, "body"> & { body: string };

function encodeMessage(m: Message): Json<Message> {
  return { ...m, body: bytesToBase64(m.body) };
}
function decodeMessage(m: Json<Message>): Message {
  return { ...m, body: base64ToBytes(m.body) };
}
function encodePending(p: PendingSend): Json<PendingSend> {
  return { ...p, body: bytesToBase64(p.body) };
}
function decodePending(p: Json<PendingSend>): PendingSend {
  return { ...p, body: base64ToBytes(p.body) };
}

function encodeOp(op: StoreOp): unknown {
  if (op.o === "msg") return { o: "msg", v: encodeMessage(op.v) };
  if (op.o === "out") return { o: "out", v: encodePending(op.v) };
  return op;
}

function decodeOp(value: unknown): StoreOp {
  const op = value as { o?: unknown; v?: unknown };
  if (typeof op !== "object" || op === null || typeof op.o !== "string") throw new Error("not an op");
  if (op.o === "msg") return { o: "msg", v: decodeMessage(op.v as Json<Message>) };
  if (op.o === "out") return { o: "out", v: decodePending(op.v as Json<PendingSend>) };
  if (!["meta", "cur", "lcur", "rcv", "conv", "rmconv", "unout", "clear"].includes(op.o)) {
    throw new Error(`unknown op ${op.o}`);
  }
  return value as StoreOp;
}

function encodeSnapshot(s: StoreSnapshot): StoreSnapshot {
  return {
    ...s,
    messages: s.messages.map(encodeMessage) as unknown as Message[],
    outbox: s.outbox.map(encodePending) as unknown as PendingSend[],
  };
}

function decodeSnapshot(s: StoreSnapshot): StoreSnapshot {
  return {
    ...s,
    messages: (s.messages as unknown as Array<Json<Message>>).map(decodeMessage),
    outbox: (s.outbox as unknown as Array<Json<PendingSend>>).map(decodePending),
  };
}
