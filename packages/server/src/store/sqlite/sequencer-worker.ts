import { parentPort, workerData, type MessagePort } from "node:worker_threads";
import { openReader } from "./sqlite-open.ts";
import { Sequencer } from "./sequencer.ts";
import { NumberedLog, encodeNumbered, logBase } from "./numbered-log.ts";
import { APPEND_PACKED, packResults, unpackBatch, type PackedBatch } from "./append-wire.ts";
import type { WireError, WorkerReply } from "./sqlite-worker.ts";

// The sequencer's thread of ThreadedSqliteStore (architecture.md, "Acknowledging ahead of
// SQLite"). The main thread talks to it exactly as to a plain writer thread (sqlite-worker.ts):
// { id, method, args } in, { id, result, epoch } or { id, error } and { committed } out. Here an
// append is numbered (sequencer.ts), written to the numbered log and fdatasynced, acknowledged,
// and only then handed to the applier (a sqlite-worker.ts serving this thread on `applier`),
// which writes it to SQLite and commits every interval. So no SQLite commit or checkpoint stands
// between a send and its acknowledgement. An append's epoch is its batch number; { committed: b }
// says the applier has committed every batch up to b, and is passed on to the main thread.
//
// Records go to the applier a few at a time (toApply). Every other write is a barrier: it goes to
// the applier behind every batch numbered before it, the applier commits those first (as
// SqliteStore does before any other write), and the sequencer forgets what it counted, since the
// write may have changed members or logs. Sends that arrive meanwhile wait for it. Device cursors
// change nothing the sequencer counts and go without one, as do the commits reads ask for.

export interface SequencerInit {
  path: string;
  /** The applier thread's port. */
  applier: MessagePort;
  /** Where the numbered log's segments go (default: beside the database). */
  numberedLogDir?: string;
  /** TEST ONLY (PARLEY_TEST_FAULTS ack-before-commit): acknowledge without writing the log, so
   * that a crash loses acknowledged sends and the chaos checker can be shown to see it. */
  unsafeNoLog?: boolean;
}

type Reply = { result: unknown } | { error: WireError };

const port = parentPort!;
const init = workerData as SequencerInit;
const applier = init.applier;

// Nothing is opened before the main thread says "start": the applier, booting meanwhile, first
// applies and removes what the numbered log holds.
await new Promise((resolve) => port.once("message", resolve));

const log = (level: "info" | "error", obj: object, msg: string): void =>
  port.postMessage({ log: { level, obj, msg } } satisfies WorkerReply);

let sequencer: Sequencer;
let numbered: NumberedLog | undefined;
let closeReader: () => void;
try {
  const db = openReader(init.path);
  closeReader = () => db.close();
  sequencer = new Sequencer(db);
  numbered = init.unsafeNoLog
    ? undefined
    : NumberedLog.create(logBase(init.path, init.numberedLogDir), { spares: true });
} catch (err) {
  port.postMessage({ failed: err instanceof Error ? err.message : String(err) } satisfies WorkerReply);
  port.close();
  applier.close();
  throw err;
}

/** Set when the log cannot be written, or the applier stopped: every call but close fails. */
let broken: Error | undefined;
/** Set once close was asked for: later requests are refused. */
let closing = false;

/** How far the applier may fall behind: messages numbered and not committed (their keys are
 * kept here, and one SQLite transaction holds them), and bytes not yet applied (held in memory on
 * their way). It runs at a lower priority (sqlite-worker.ts): on a machine busy with sends it gets
 * what is left, and these bounds make sends wait for it (the main thread then refuses new ones,
 * E_OVERLOADED) rather than let memory and the log grow without end. */
const MAX_UNCOMMITTED = 100_000;
const MAX_UNAPPLIED_BYTES = 8 * 1024 * 1024;

function tooFarAhead(): boolean {
  const { messages, unappliedBytes } = sequencer.uncommitted;
  return messages > MAX_UNCOMMITTED || unappliedBytes > MAX_UNAPPLIED_BYTES;
}

/** Resolved when the applier next applies or commits (or stops). */
let nextProgress: { promise: Promise<void>; resolve(): void } | undefined;

function applierProgress(): Promise<void> {
  if (!nextProgress) {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    nextProgress = { promise, resolve };
  }
  return nextProgress.promise;
}

function wakeWaiters(): void {
  nextProgress?.resolve();
  nextProgress = undefined;
}

// ------------------------------------------------------------------ the applier

const calls = new Map<number, (r: Reply) => void>();
let nextId = 1;

applier.on("message", (msg: WorkerReply) => {
  if ("committed" in msg) {
    committed(msg.committed);
    return;
  }
  if ("applied" in msg) {
    sequencer.appliedThrough(msg.applied);
    wakeWaiters();
    return;
  }
  if ("stopped" in msg) {
    // What it acknowledged is in the numbered log, applied at the next start.
    broken ??= new Error(msg.stopped.message);
    wakeWaiters();
    return;
  }
  if (!("id" in msg)) return;
  const done = calls.get(msg.id);
  calls.delete(msg.id);
  done?.("result" in msg ? { result: msg.result } : { error: msg.error });
});

// The applier's thread ended without being closed (it crashed or was terminated): nothing more
// can be applied or committed, and calls on their way to it would wait forever.
let applierGone = false;
applier.on("close", () => {
  applierGone = true;
  if (closing) return;
  broken ??= new Error("the SQLite applier thread stopped; the store must be reopened");
  for (const done of calls.values()) done({ error: { message: broken.message } });
  calls.clear();
  wakeWaiters();
});

function callApplier(method: string, args: unknown[]): Promise<Reply> {
  if (applierGone) return Promise.resolve({ error: { message: "the SQLite applier thread stopped" } });
  return new Promise((resolve) => {
    const id = nextId++;
    calls.set(id, resolve);
    flush();
    applier.postMessage({ id, method, args });
  });
}

/** The applier committed every batch up to `batch`: segments wholly below it can go. A new
 * segment is begun at each commit, so that the one being written is never what holds them. */
function committed(batch: number): void {
  sequencer.committedThrough(batch);
  try {
    numbered?.rotate();
    numbered?.release(sequencer.committedBatch);
  } catch (err) {
    log("error", { err: String(err) }, "sqlite sequencer: could not rotate the numbered log");
  }
  port.postMessage({ committed: batch } satisfies WorkerReply);
  wakeWaiters();
}

/** Records on their way to the applier. They go a few at a time: every message between threads
 * wakes the receiver, and at low rates a batch holds a message or two, so posting each was a
 * wake-up of the applier per send. Nothing waits for them but reads, and every call to the
 * applier (a read's commitNow among them) sends them first. */
let outbox: Uint8Array[] = [];
let outboxBytes = 0;
let outboxTimer: NodeJS.Timeout | undefined;
const OUTBOX_MS = 5;
const OUTBOX_BYTES = 1 << 20;

function toApply(record: Uint8Array): void {
  outbox.push(record);
  outboxBytes += record.byteLength;
  if (outboxBytes >= OUTBOX_BYTES) flush();
  else outboxTimer ??= setTimeout(flush, OUTBOX_MS);
}

function flush(): void {
  clearTimeout(outboxTimer);
  outboxTimer = undefined;
  if (outbox.length === 0) return;
  // Moved, not copied (encodeNumbered gives each record a buffer of its own).
  applier.postMessage(
    { apply: outbox },
    outbox.map((r) => r.buffer as ArrayBuffer),
  );
  outbox = [];
  outboxBytes = 0;
}

// ------------------------------------------------------------------ requests, in order

/** The epoch a reply carries: the last batch, while it may be uncommitted (a resend's original
 * may be in it too), else 0. */
function epoch(): number {
  return sequencer.lastBatch > sequencer.committedBatch ? sequencer.lastBatch : 0;
}

/** The append's results, and the seconds its record took to write and fdatasync (undefined if it
 * wrote none). */
async function append(packed: PackedBatch): Promise<{ result: unknown; logSync?: number }> {
  const batch = unpackBatch(packed);
  const { results, record, resends } = sequencer.number(batch);
  let logSync: number | undefined;
  if (record) {
    const payload = encodeNumbered(record);
    if (numbered) {
      try {
        const t0 = performance.now();
        numbered.append(payload, record.batch);
        logSync = (performance.now() - t0) / 1000;
      } catch (err) {
        numbered.truncateTail();
        // Numbered but not durable: nothing of it may be acknowledged, and the counts are wrong.
        throw new Error(`the numbered log could not be written; the store must be reopened: ${String(err)}`, {
          cause: err,
        });
      }
    }
    toApply(payload);
  }
  if (resends.length > 0) {
    // Resends of sends not committed yet (this batch's too): answered from SQLite after a commit.
    const r = await callApplier("commitNow", []);
    if ("error" in r) throw new Error(r.error.message);
    sequencer.fillResends(batch, results, resends);
  }
  const result = packResults(batch, results);
  return logSync === undefined ? { result } : { result, logSync };
}

async function handle(msg: { id: number; method: string; args: unknown[] }): Promise<void> {
  const reply = (r: WorkerReply) => port.postMessage(r);
  if (broken && msg.method !== "close") {
    reply({ id: msg.id, error: { message: broken.message } });
    return;
  }
  if (msg.method === APPEND_PACKED) {
    while (tooFarAhead() && !broken) await applierProgress();
    if (broken) {
      reply({ id: msg.id, error: { message: broken.message } });
      return;
    }
    try {
      const { result, logSync } = await append(msg.args[0] as PackedBatch);
      reply({ id: msg.id, result, epoch: epoch(), ...(logSync !== undefined ? { logSync } : {}) });
    } catch (err) {
      broken = err as Error;
      log("error", { err: String(err) }, "sqlite sequencer: stopped");
      reply({ id: msg.id, error: { message: broken.message } });
    }
    return;
  }
  if (msg.method === "touchDevices" || msg.method === "commitNow") {
    // Not barriers: sends go on meanwhile. (A cursor save settles with the applier's next commit,
    // up to an interval later.)
    void callApplier(msg.method, msg.args).then((r) => reply({ id: msg.id, ...r }));
    return;
  }
  // Closing after the applier ended: nothing to ask it; the log keeps what it did not commit.
  const r =
    msg.method === "close" && applierGone ? { result: undefined } : await callApplier(msg.method, msg.args);
  // Whatever it was, the applier committed every batch before it (or it failed and stopped).
  if (sequencer.committedBatch >= sequencer.lastBatch) sequencer.forget();
  if (msg.method === "close" && "result" in r) {
    numbered?.close(sequencer.committedBatch >= sequencer.lastBatch);
    // A spare segment being made is deleted once made: none is left behind a clean stop.
    await numbered?.settled();
    closeReader();
  }
  reply({ id: msg.id, ...r });
  if (msg.method === "close") {
    applier.close();
    port.close();
  }
}

let queue: Promise<void> = Promise.resolve();
port.on("message", (msg: { id: number; method: string; args: unknown[] }) => {
  if (closing) {
    port.postMessage({ id: msg.id, error: { message: "SqliteStore is closed" } } satisfies WorkerReply);
    return;
  }
  if (msg.method === "close") closing = true;
  // In arrival order: a barrier holds back everything after it.
  queue = queue
    .then(() => handle(msg))
    .catch((err: unknown) => log("error", { err: String(err) }, "sqlite sequencer: a request failed"));
});

port.postMessage({ ready: true } satisfies WorkerReply);
