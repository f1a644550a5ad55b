import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { NewMessage } from "../../../packages/server/src/core/ports/store.ts";
import { DB_FILE } from "../../../packages/server/src/main.ts";
import { SqliteStore } from "../../../packages/server/src/store/sqlite/sqlite-store.ts";
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
// on that interval.

async function run(flags: ReadonlyMap<string, string>): Promise<BenchResult[]> {
  const pairs = numberFlag(flags, "pairs", 1000);
  const batchSize = numberFlag(flags, "batch", 1000);
  const total = numberFlag(flags, "messages", 200_000);
  const commitIntervalMs = numberFlag(flags, "commit-interval-ms", 0, true);
  const dir = mkdtempSync(join(tmpdir(), "parley-store-append-"));
  try {
    const prov = await Provisioner.open(dir);
    const users = await prov.users(pairs * 2);
    const convs: Array<{ conv: ConversationId; from: BenchUser }> = [];
    for (let i = 0; i < pairs; i++) {
      convs.push({ conv: await prov.direct(users[2 * i]!, users[2 * i + 1]!), from: users[2 * i]! });
    }
    await prov.close();

    const store = await SqliteStore.open(join(dir, DB_FILE), { commitIntervalMs });
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
    // The last commit (the commit log's) belongs to the run.
    await store.close();
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const written = writtenBytes() - wchar0;
    return [
      {
        scenario: "store-append",
        pairs,
        batch: batchSize,
        messages: total,
        commit_interval_ms: commitIntervalMs,
        per_s: Math.round((total * 1000) / ms),
        us_per_msg: Number(((ms * 1000) / total).toFixed(2)),
        ms_per_batch: Number((ms / batches).toFixed(2)),
        // CPU (user + system) of this process per message: steadier than the wall clock on a
        // shared machine.
        cpu_us_per_msg: Number(((cpu.user + cpu.system) / total).toFixed(2)),
        written_bytes_per_msg: Math.round(written / total),
        durable: true,
      },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Bytes this process has written (to files, before the page cache), from /proc/self/io. */
function writtenBytes(): number {
  const m = /^wchar: (\d+)$/m.exec(readFileSync("/proc/self/io", "utf8"));
  return m ? Number(m[1]) : Number.NaN;
}

export const storeAppend: Scenario = {
  name: "store-append",
  help: "SqliteStore.appendMessages alone, the writer thread's ceiling (--pairs 1000 --batch 1000 --messages 200000 --commit-interval-ms 0)",
  run,
};
