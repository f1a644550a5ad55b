import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import {
  NumberedLog,
  decodeNumbered,
  encodeNumbered,
  type NumberedMessage,
} from "../../../packages/server/src/store/sqlite/numbered-log.ts";
import { typeScriptWorker } from "../../../packages/server/src/ts-worker.ts";
import type { CommitFlushConfig } from "../load/commit-flush.ts";
import { listFlag, numberFlag, percentile, stringFlag, type BenchResult, type Scenario } from "../harness.ts";

// log-sync: the disk's share of a send's latency, alone. The server acknowledges a send once its
// batch is in the numbered log and fdatasynced (architecture.md, "Acknowledging ahead of
// SQLite"); one batch is on its way at a time, and sends arriving meanwhile make the next one
// (core/group-committer.ts). This scenario runs that loop with nothing else: sends arrive open
// loop at --rates (evenly spaced intended times, so a slow sync delays every send behind it, as
// in direct-rate), each batch of the sends that have arrived is encoded and appended with the
// server's own NumberedLog (spare segments made ahead unless --spares 0, a rotation and release
// every --rotate-ms as at the applier's commits), and a send's latency runs from its intended
// time to the end of the fdatasync that covers it. No sockets, no codec, no thread hop, no SQLite: the
// floor the disk sets under direct-rate's p99 at the same rate, to be read beside raw-relay's
// (the transport's floor). --beside <MiB> adds what the applier's commits do to the same disk: a
// thread overwriting that many MiB of another file and fdatasyncing it every --rotate-ms
// (load/commit-flush.ts). The log goes in a fresh directory under the system's temporary
// directory, where the other scenarios put the server's data, unless --dir names another.

async function run(flags: ReadonlyMap<string, string>): Promise<BenchResult[]> {
  const rates = listFlag(flags, "rates", [2000, 10_000, 20_000]);
  const durationS = numberFlag(flags, "duration", 10);
  const warmupS = numberFlag(flags, "warmup", 1, true);
  const bodyBytes = numberFlag(flags, "bytes", 100, true);
  const rotateMs = numberFlag(flags, "rotate-ms", 500);
  const spares = stringFlag(flags, "spares", ["0", "1"], "1") === "1";
  const besideMib = numberFlag(flags, "beside", 0, true);
  const results: BenchResult[] = [];
  for (const rate of rates) {
    const dir = mkdtempSync(join(flags.get("dir") ?? tmpdir(), "parley-log-sync-"));
    try {
      const params: Run = { rate, durationS, warmupS, bodyBytes, rotateMs, spares };
      const beside =
        besideMib > 0
          ? await startFlusher({ path: join(dir, "beside"), mib: besideMib, intervalMs: rotateMs })
          : undefined;
      try {
        const result = await measure(join(dir, "bench.db"), params);
        const flushMs = (await beside?.stop()) ?? [];
        results.push(
          beside === undefined
            ? result
            : {
                ...result,
                beside_mib: besideMib,
                beside_flush_p50_ms: percentile(flushMs, 0.5),
                beside_flush_max_ms: percentile(flushMs, 1),
              },
        );
      } finally {
        await beside?.terminate();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return results;
}

/** The --beside thread (load/commit-flush.ts), once its file is made. stop() resolves with the
 * time of each of its fdatasyncs, sorted. */
async function startFlusher(
  cfg: CommitFlushConfig,
): Promise<{ stop(): Promise<number[]>; terminate(): Promise<number> }> {
  const worker = typeScriptWorker(new URL("../load/commit-flush.ts", import.meta.url), { workerData: cfg });
  const next = () =>
    new Promise<unknown>((resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
      worker.once("exit", () => reject(new Error("log-sync: the --beside thread exited")));
    });
  await next();
  return {
    async stop() {
      const done = next();
      worker.postMessage("stop");
      const { flushMs } = (await done) as { flushMs: number[] };
      return flushMs.sort((a, b) => a - b);
    },
    terminate: () => worker.terminate(),
  };
}

interface Run {
  rate: number;
  durationS: number;
  warmupS: number;
  bodyBytes: number;
  rotateMs: number;
  spares: boolean;
}

/** Sleeps the thread without spinning (sub-millisecond, unlike a timer). */
const sleeper = new Int32Array(new SharedArrayBuffer(4));

async function measure(dbPath: string, r: Run): Promise<BenchResult> {
  const log = NumberedLog.create(dbPath, { spares: r.spares });
  const body = new Uint8Array(r.bodyBytes).fill(0x61);
  const message = (i: number): NumberedMessage => ({
    msg: {
      conv: "c_bench000000000001",
      from: "u_bench000000000001",
      dev: "d_bench000000000001",
      cid: `cid${i}`,
      type: "text",
      body,
      ts: 0,
    },
    seq: i + 1,
    logs: ["u_bench000000000001", "u_bench000000000002"],
    useqs: [i + 1, i + 1],
  });
  const gapMs = 1000 / r.rate;
  const total = Math.round(r.rate * (r.durationS + r.warmupS));
  const firstMeasured = Math.round(r.rate * r.warmupS);
  const latencies: number[] = [];
  const syncs: number[] = [];
  let batch = 0;
  let next = 0; // the first send not yet in a batch
  let bytes = 0;
  const start = performance.now() + 5;
  let lastRotate = start;
  let measuredFrom = Number.NaN;
  let readBack = false;
  while (next < total) {
    const now = performance.now();
    const due = start + next * gapMs;
    if (due > now) {
      Atomics.wait(sleeper, 0, 0, due - now);
      continue;
    }
    // Every send whose intended time has come makes this batch.
    const upTo = Math.min(total, Math.floor((now - start) / gapMs) + 1);
    const messages: NumberedMessage[] = [];
    for (let i = next; i < upTo; i++) messages.push(message(i));
    batch++;
    const record = encodeNumbered({ batch, messages });
    const t0 = performance.now();
    log.append(record, batch);
    const end = performance.now();
    if (upTo > firstMeasured) {
      if (Number.isNaN(measuredFrom)) measuredFrom = t0;
      syncs.push(end - t0);
      bytes += record.byteLength;
      for (let i = Math.max(next, firstMeasured); i < upTo; i++) latencies.push(end - (start + i * gapMs));
    }
    next = upTo;
    if (next === total) {
      // The last batch, read back from the segment files (before a rotation could release it).
      const last = NumberedLog.readAll(dbPath).at(-1);
      readBack = last !== undefined && decodeNumbered(last).batch === batch;
    }
    if (end - lastRotate >= r.rotateMs) {
      // As at the applier's commit: a new segment, and the ones wholly committed deleted.
      log.rotate();
      log.release(batch);
      lastRotate = end;
    }
    // Lets the libuv pool's callbacks run: the spare segments are made there.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  const seconds = (performance.now() - measuredFrom) / 1000;
  log.close(true);
  await log.settled();
  latencies.sort((a, b) => a - b);
  syncs.sort((a, b) => a - b);
  const over = (ms: number) => Number((syncs.filter((s) => s > ms).length / seconds).toFixed(1));
  return {
    scenario: "log-sync",
    offered_per_s: r.rate,
    messages: latencies.length,
    body_bytes: r.bodyBytes,
    rotate_ms: r.rotateMs,
    spares: r.spares,
    syncs_per_s: Math.round(syncs.length / seconds),
    msgs_per_sync: Number((latencies.length / syncs.length).toFixed(1)),
    bytes_per_sync: Math.round(bytes / syncs.length),
    read_back: readBack,
    sync_p50_ms: percentile(syncs, 0.5),
    sync_p99_ms: percentile(syncs, 0.99),
    sync_max_ms: percentile(syncs, 1),
    syncs_over_5ms_per_s: over(5),
    syncs_over_10ms_per_s: over(10),
    sync_ms_per_s: Math.round(syncs.reduce((a, b) => a + b, 0) / seconds),
    // A send's latency from the disk alone: the floor under direct-rate's at this rate.
    p50_ms: percentile(latencies, 0.5),
    p99_ms: percentile(latencies, 0.99),
    p999_ms: percentile(latencies, 0.999),
    durable: true,
  };
}

export const logSync: Scenario = {
  name: "log-sync",
  help: "the numbered log's appends alone at open-loop rates: the disk's floor under direct-rate's latency (--rates 2000,10000,20000 --duration 10 --warmup 1 --bytes 100 --rotate-ms 500 --spares 1|0 --beside <MiB> --dir <tmpdir>)",
  run,
};
