import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { NewMessage } from "../../../packages/server/src/core/ports/store.ts";
import { DB_FILE } from "../../../packages/server/src/main.ts";
import { SqliteStore } from "../../../packages/server/src/store/sqlite/sqlite-store.ts";
import { ThreadedSqliteStore } from "../../../packages/server/src/store/sqlite/threaded-sqlite-store.ts";
import { newCid } from "../../../packages/sdk/src/client.ts";
import { numberFlag, type BenchResult, type Scenario } from "../harness.ts";
import { Provisioner, type BenchUser } from "../provision.ts";
import type { ConversationId } from "@parley/protocol";

// store-append: the storage ceiling. SqliteStore.appendMessages alone, in this process, on a
// fresh file with the server's durability settings (WAL, synchronous=FULL), in batches of --batch
// (1,000 by default; the group committer makes batches of up to 4,000 under load), 1:1
// conversations. No sockets, no codec, no thread hop:
// the most the server's writer thread can commit, whatever the rest does. --commit-interval-ms
// puts the commit log in front (the server's default, 500; 0 here by default, for figures
// comparable with earlier runs): each batch is then fdatasynced to the log, and SQLite commits
// on that interval. --threaded 1 runs the server's store instead (ThreadedSqliteStore: with an
// interval, the sequencer and applier threads) and adds each busy thread's CPU per batch, which
// with small batches (--batch 3) is the per-batch cost of the thread hops and the log's fdatasync.

async function run(flags: ReadonlyMap<string, string>): Promise<BenchResult[]> {
  const pairs = numberFlag(flags, "pairs", 1000);
  const batchSize = numberFlag(flags, "batch", 1000);
  const total = numberFlag(flags, "messages", 200_000);
  const commitIntervalMs = numberFlag(flags, "commit-interval-ms", 0, true);
  const threaded = numberFlag(flags, "threaded", 0, true) === 1;
  const dir = mkdtempSync(join(tmpdir(), "parley-store-append-"));
  try {
    const prov = await Provisioner.open(dir);
    const users = await prov.users(pairs * 2);
    const convs: Array<{ conv: ConversationId; from: BenchUser }> = [];
    for (let i = 0; i < pairs; i++) {
      convs.push({ conv: await prov.direct(users[2 * i]!, users[2 * i + 1]!), from: users[2 * i]! });
    }
    await prov.close();

    const path = join(dir, DB_FILE);
    const store = threaded
      ? await ThreadedSqliteStore.open(path, { commitIntervalMs })
      : await SqliteStore.open(path, { commitIntervalMs });
    const body = new Uint8Array(32);
    let n = 0;
    const next = (): NewMessage => {
      const c = convs[n++ % pairs]!;
      return {
        conv: c.conv,
        from: c.from.id,
        dev: c.from.device,
        cid: newCid(),
        type: "bench",
        body,
        ts: Date.now(),
      };
    };
    const wchar0 = writtenBytes();
    const cpu0 = process.cpuUsage();
    const threads0 = threadTicks();
    const t0 = performance.now();
    let batches = 0;
    while (n < total) {
      const results = await store.appendMessages(
        Array.from({ length: Math.min(batchSize, total - n) }, next),
      );
      if (results.some((r) => !r.ok || r.duplicate)) throw new Error("store-append: an append was refused");
      batches++;
      // Let timers run between batches, as the writer thread does between messages: the commit
      // log's SQLite commit is one.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    // Before close: the threads it ends take their counts with them.
    const threads1 = threadTicks();
    // The last commit (the commit log's) belongs to the run.
    await store.close();
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const threads = busyThreads(threads0, threads1, batches);
    const written = writtenBytes() - wchar0;
    return [
      {
        scenario: "store-append",
        pairs,
        batch: batchSize,
        messages: total,
        commit_interval_ms: commitIntervalMs,
        threaded,
        per_s: Math.round((total * 1000) / ms),
        us_per_msg: Number(((ms * 1000) / total).toFixed(2)),
        ms_per_batch: Number((ms / batches).toFixed(2)),
        // CPU (user + system) of this process per message: steadier than the wall clock on a
        // shared machine.
        cpu_us_per_msg: Number(((cpu.user + cpu.system) / total).toFixed(2)),
        cpu_us_per_batch: Number(((cpu.user + cpu.system) / batches).toFixed(1)),
        // The main thread's, then the others' that used at least 2% of the CPU, busiest first.
        thread_cpu_us_per_batch: threads,
        written_bytes_per_msg: Math.round(written / total),
        durable: true,
      },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** CPU ticks (user + system, 1/100 s) of each thread of this process, by thread id. */
function threadTicks(): Map<string, number> {
  const ticks = new Map<string, number>();
  for (const tid of readdirSync("/proc/self/task")) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks.set(tid, Number(f[11]) + Number(f[12]));
    } catch {
      // The thread ended meanwhile.
    }
  }
  return ticks;
}

/** µs of CPU per batch between two threadTicks() (threads begun meanwhile count from zero): the
 * main thread's, then each other thread's with at least 2% of the total, busiest first. */
function busyThreads(before: Map<string, number>, after: Map<string, number>, batches: number): number[] {
  const perBatch = (ticks: number) => Number(((ticks * 10_000) / batches).toFixed(1));
  const used = new Map([...after].map(([tid, t]) => [tid, t - (before.get(tid) ?? 0)]));
  const total = [...used.values()].reduce((a, b) => a + b, 0);
  const main = String(process.pid);
  const others = [...used]
    .filter(([tid, t]) => tid !== main && t >= total * 0.02)
    .map(([, t]) => t)
    .sort((a, b) => b - a);
  return [used.get(main) ?? 0, ...others].map(perBatch);
}

/** Bytes this process has written (to files, before the page cache), from /proc/self/io. */
function writtenBytes(): number {
  const m = /^wchar: (\d+)$/m.exec(readFileSync("/proc/self/io", "utf8"));
  return m ? Number(m[1]) : Number.NaN;
}

export const storeAppend: Scenario = {
  name: "store-append",
  help: "SqliteStore.appendMessages alone, the writer thread's ceiling (--pairs 1000 --batch 1000 --messages 200000 --commit-interval-ms 0 --threaded 0|1: ThreadedSqliteStore, with CPU per batch of each busy thread)",
  run,
};
