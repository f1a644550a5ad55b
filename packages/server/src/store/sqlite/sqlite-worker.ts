import { setPriority } from "node:os";
import { parentPort, workerData, type MessagePort } from "node:worker_threads";
import type { DeviceId } from "@parley/protocol";
import { ParleyError } from "@parley/protocol/errors";
import type { Logger } from "../../core/ports/logger.ts";
import { SqliteStore } from "./sqlite-store.ts";
import { APPEND_PACKED, packResults, unpackBatch, type PackedBatch } from "./append-wire.ts";

// The writer thread of ThreadedSqliteStore: owns the database's one write connection and runs
// every write method of SqliteStore in arrival order, each in its own transaction with its fsync,
// while the main thread goes on with sockets and reads. Protocol: the main thread posts
// { id, method, args }; this thread answers { id, result } or { id, error }. Message batches
// travel packed (APPEND_PACKED, append-wire.ts); device cursors are saved many to a transaction
// (touchDevices). With a commit interval, an append's reply carries the epoch of the deferred
// transaction holding it (0: committed), and { committed: epoch } follows once it is committed;
// "commitNow" commits at once (a read on the main thread that must see those appends).
//
// As the applier of a sequencer (init.applier, sequencer-worker.ts), it serves the sequencer's
// thread on init.port instead, in the same protocol, plus { apply: records }: numbered batches,
// already acknowledged, to apply, answered with { applied: batch } (a failure is logged, and the
// store recovers from the log or stops: { stopped }, SqliteStore.applyNumbered). { committed }
// then carries the last batch committed.

/** The applier thread's nice value (see below). */
const APPLIER_NICE = 10;

export interface WorkerInit {
  path: string;
  cacheKib?: number;
  commitIntervalMs?: number;
  /** The applier of a sequencer: serve it on `port` (see the header). */
  applier?: boolean;
  port?: MessagePort;
  /** See SqliteStoreOptions.numberedLogDir. */
  numberedLogDir?: string;
}

/** An error as it crosses to the main thread (structured clone keeps no Error subclass). */
export interface WireError {
  message: string;
  code?: string;
  retryAfterMs?: number;
  stack?: string;
}

export type WorkerReply =
  /** `logSync`: seconds the sequencer spent writing and fdatasyncing this append's batch to the
   * numbered log (an append that wrote no record has none). */
  | { id: number; result: unknown; epoch?: number; logSync?: number }
  | { committed: number }
  /** An applier has applied every numbered batch up to this one (not committed yet). */
  | { applied: number }
  /** An applier could not apply an acknowledged batch, nor recover: it refuses everything. */
  | { stopped: WireError }
  | { id: number; error: WireError }
  | { ready: true }
  | { failed: string }
  | { log: { level: "debug" | "info" | "warn" | "error"; obj: object; msg?: string } };

function wireError(err: unknown): WireError {
  const e = err instanceof Error ? err : new Error(String(err));
  return {
    message: e.message,
    ...(e.stack !== undefined ? { stack: e.stack } : {}),
    ...(err instanceof ParleyError
      ? { code: err.code, ...(err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}) }
      : {}),
  };
}

const init = workerData as WorkerInit;
// An applier's work is off every send's path: it yields the cores to the threads on it (the main
// thread and the sequencer) when they are busy, and takes what they leave. On Linux this sets
// the calling thread's nice value only.
if (init.applier) {
  try {
    setPriority(0, APPLIER_NICE);
  } catch {
    // Not allowed here: it runs at the same priority, which is correct, only less smooth.
  }
}
/** Where the requests come from: the main thread, or the sequencer's thread. */
const port = init.port ?? parentPort!;

/** Log records go to the main thread's logger (objects are copied, so keep them plain). */
const log =
  (level: "debug" | "info" | "warn" | "error") =>
  (obj: object, msg?: string): void =>
    parentPort!.postMessage({
      log: { level, obj, ...(msg !== undefined ? { msg } : {}) },
    } satisfies WorkerReply);
const logger: Logger = { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error") };

try {
  const store = await SqliteStore.open(init.path, {
    logger,
    ...(init.cacheKib !== undefined ? { cacheKib: init.cacheKib } : {}),
    ...(init.commitIntervalMs !== undefined ? { commitIntervalMs: init.commitIntervalMs } : {}),
    onCommit: (epoch) => port.postMessage({ committed: epoch } satisfies WorkerReply),
    ...(init.applier ? { applier: true } : {}),
    ...(init.numberedLogDir !== undefined ? { numberedLogDir: init.numberedLogDir } : {}),
  });
  const methods = store as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const appendPacked = async (packed: PackedBatch) => {
    const batch = unpackBatch(packed);
    return packResults(batch, await store.appendMessages(batch));
  };
  const touchDevices = async (touches: Array<[DeviceId, number, number]>) =>
    (await store.touchDevices(touches)).map((e) => e && wireError(e));
  const run = (method: string, args: unknown[]): Promise<unknown> => {
    if (method === APPEND_PACKED) return appendPacked(args[0] as PackedBatch);
    // One WireError or null per touch: a ParleyError would arrive as a plain Error.
    if (method === "touchDevices") return touchDevices(args[0] as Array<[DeviceId, number, number]>);
    return methods[method]!.apply(store, args);
  };
  port.on("message", (msg: { id: number; method: string; args: unknown[] } | { apply: Uint8Array[] }) => {
    if ("apply" in msg) {
      store.applyNumbered(msg.apply).then(
        // The sequencer bounds what is on its way here by this.
        () => port.postMessage({ applied: store.appliedThrough } satisfies WorkerReply),
        (err: unknown) => {
          logger.error({ err: wireError(err) }, "sqlite applier: a numbered batch failed");
          // The sequencer must stop acknowledging what can no longer be applied or read.
          if (store.stopped) port.postMessage({ stopped: wireError(store.stopped) } satisfies WorkerReply);
        },
      );
      return;
    }
    const reply = (r: WorkerReply) => port.postMessage(r);
    run(msg.method, msg.args).then(
      (result) => {
        if (msg.method === APPEND_PACKED) reply({ id: msg.id, result, epoch: store.uncommittedEpoch });
        else reply({ id: msg.id, result });
        if (msg.method === "close") port.close();
      },
      (err: unknown) => reply({ id: msg.id, error: wireError(err) }),
    );
  });
  parentPort!.postMessage({ ready: true } satisfies WorkerReply);
} catch (err) {
  parentPort!.postMessage({ failed: err instanceof Error ? err.message : String(err) } satisfies WorkerReply);
  port.close();
}
