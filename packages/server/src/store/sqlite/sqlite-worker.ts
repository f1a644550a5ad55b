import { parentPort, workerData } from "node:worker_threads";
import { ParleyError, type DeviceId } from "@parley/protocol";
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

export interface WorkerInit {
  path: string;
  cacheKib?: number;
  commitIntervalMs?: number;
  unsafeDeferCommitMs?: number;
}

/** An error as it crosses to the main thread (structured clone keeps no Error subclass). */
export interface WireError {
  message: string;
  code?: string;
  retryAfterMs?: number;
  stack?: string;
}

export type WorkerReply =
  | { id: number; result: unknown; epoch?: number }
  | { committed: number }
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

const port = parentPort!;
const init = workerData as WorkerInit;

/** Log records go to the main thread's logger (objects are copied, so keep them plain). */
const log =
  (level: "debug" | "info" | "warn" | "error") =>
  (obj: object, msg?: string): void =>
    port.postMessage({ log: { level, obj, ...(msg !== undefined ? { msg } : {}) } } satisfies WorkerReply);
const logger: Logger = { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error") };

try {
  const store = await SqliteStore.open(init.path, {
    logger,
    ...(init.cacheKib !== undefined ? { cacheKib: init.cacheKib } : {}),
    ...(init.commitIntervalMs !== undefined ? { commitIntervalMs: init.commitIntervalMs } : {}),
    onCommit: (epoch) => port.postMessage({ committed: epoch } satisfies WorkerReply),
    ...(init.unsafeDeferCommitMs !== undefined ? { unsafeDeferCommitMs: init.unsafeDeferCommitMs } : {}),
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
  port.on("message", (msg: { id: number; method: string; args: unknown[] }) => {
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
  port.postMessage({ ready: true } satisfies WorkerReply);
} catch (err) {
  port.postMessage({ failed: err instanceof Error ? err.message : String(err) } satisfies WorkerReply);
  port.close();
}
