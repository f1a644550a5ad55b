import { rmSync } from "node:fs";
import type { ConversationId } from "@parley/protocol";
import {
  ProcessMeter,
  numberFlag,
  percentile,
  runLoadProcess,
  sleep,
  stringFlag,
  type BenchResult,
  type Scenario,
} from "../harness.ts";
import type { CatchupLoadConfig, CatchupLoadResult } from "../load/catchup-load.ts";
import type { Provisioner } from "../provision.ts";
import { provisionDir, startServer } from "./idle.ts";

// catch-up: one device was offline while `missed` messages arrived across `convs` 1:1
// conversations (one peer each); it reconnects with its cursor just before them and syncs until
// caught up. Cases (each its own data directory and server):
//   - history 0,       missed --messages (100,000): the figure;
//   - history 0,       missed --new (10,000);
//   - history --history (100,000, already seen: before the cursor), missed --new (10,000).
// Cost proportional to what was missed means the last two take about the same time, a tenth of
// the first. The history is sent by the reader itself (its own earlier messages, in the same
// conversations and the same update log); the missed messages by the peers.
// Per transport, a fresh load process syncs each case twice on new connections: once unmeasured
// (warm-up: its JIT, the server's JIT, SQLite and page caches), then measured. It syncs with the
// SDK's SyncEngine (pipelined: --pipeline requests outstanding; 1 waits for each page before
// asking for the next). server_cpu_pct covers the whole load process (start-up, warm-up).

interface CatchupCase {
  history: number;
  missed: number;
}

/** `total` messages over the conversations (as evenly as possible), all conversations at once,
 * so that they interleave in the reader's log as concurrent arrivals would. */
async function spread(
  p: Provisioner,
  convs: Array<{ conv: ConversationId; sender: Parameters<Provisioner["messages"]>[0] }>,
  total: number,
  bytes: number,
): Promise<void> {
  const window = Math.max(1, Math.floor(1000 / convs.length));
  await Promise.all(
    convs.map(({ conv, sender }, i) => {
      const n = Math.floor(total / convs.length) + (i < total % convs.length ? 1 : 0);
      return n > 0 ? p.messages(sender, conv, n, bytes, window) : Promise.resolve();
    }),
  );
}

export const catchUp: Scenario = {
  name: "catch-up",
  help:
    "one device syncs what it missed while offline (--messages 100000 --convs 100 --limit 1000 --pipeline 4 " +
    "--history 100000 --new 10000 --proportional 1|0 --bytes 32 --transport tcp|ws|both)",
  async run(flags) {
    const messages = Math.floor(numberFlag(flags, "messages", 100_000));
    const convCount = Math.floor(numberFlag(flags, "convs", 100));
    const limit = Math.floor(numberFlag(flags, "limit", 1000));
    const pipeline = Math.floor(numberFlag(flags, "pipeline", 4));
    const history = Math.floor(numberFlag(flags, "history", messages));
    const fresh = Math.floor(numberFlag(flags, "new", Math.max(1, Math.floor(messages / 10))));
    const bytes = Math.floor(numberFlag(flags, "bytes", 32));
    const proportional = stringFlag(flags, "proportional", ["0", "1"] as const, "1") === "1";
    const transport = stringFlag(flags, "transport", ["tcp", "ws", "both"] as const, "both");
    const transports = transport === "both" ? (["tcp", "ws"] as const) : [transport];
    const cases: CatchupCase[] = [{ history: 0, missed: messages }];
    if (proportional) cases.push({ history: 0, missed: fresh }, { history, missed: fresh });

    const results: BenchResult[] = [];
    const byCase: Array<Map<string, number>> = [];
    for (const c of cases) {
      const t0 = performance.now();
      const { dir, setup } = await provisionDir(async (p) => {
        const [reader, ...peers] = await p.users(convCount + 1);
        const convs = [];
        for (const peer of peers) convs.push({ conv: await p.direct(reader!, peer), peer });
        await spread(
          p,
          convs.map(({ conv }) => ({ conv, sender: reader! })),
          c.history,
          bytes,
        );
        const cursor = await p.core.store.head(reader!.id);
        await spread(
          p,
          convs.map(({ conv, peer }) => ({ conv, sender: peer })),
          c.missed,
          bytes,
        );
        return { token: reader!.token, cursor, head: await p.core.store.head(reader!.id) };
      });
      const provisionS = (performance.now() - t0) / 1000;
      const server = await startServer(dir);
      const times = new Map<string, number>();
      byCase.push(times);
      try {
        await sleep(1000);
        const base = {
          host: "127.0.0.1",
          tcpPort: server.tcpPort,
          wsUrl: `ws://127.0.0.1:${server.httpPort}/v1/ws`,
          token: setup.token,
          cursor: setup.cursor,
          limit,
          pipeline,
        };
        for (const t of transports) {
          const meter = new ProcessMeter(server.pid);
          meter.start();
          const r = await runLoadProcess<CatchupLoadResult>("load/catchup-load.ts", {
            ...base,
            transport: t,
          } satisfies CatchupLoadConfig);
          const serverStats = meter.stop();
          times.set(t, r.catch_up_ms);
          const pages = [...r.page_ms].sort((a, b) => a - b);
          const s = r.catch_up_ms / 1000;
          results.push({
            scenario: "catch-up",
            transport: t === "ws" ? "ws-binary" : "tcp",
            connections: 1,
            offered_per_s: null,
            sent_per_s: null,
            delivered_per_s: Math.round(r.messages / s),
            latency: `time between sync replies (sync limit ${limit}, ${pipeline} outstanding)`,
            p50_ms: percentile(pages, 0.5),
            p99_ms: percentile(pages, 0.99),
            p999_ms: percentile(pages, 0.999),
            // Ends at the head, with every missed message applied exactly once.
            errors: r.errors + (r.final_cursor === setup.head ? 0 : 1) + (r.messages === c.missed ? 0 : 1),
            history: c.history,
            missed: c.missed,
            convs: convCount,
            body_bytes: bytes,
            sync_limit: limit,
            sync_pipeline: pipeline,
            cursor: setup.cursor,
            head: setup.head,
            catch_up_ms: Math.round(r.catch_up_ms),
            connect_ms: Math.round(r.connect_ms),
            messages_synced: r.messages,
            updates_synced: r.updates,
            messages_per_s: Math.round(r.messages / s),
            pages: r.pages,
            bytes_received: r.bytes_received,
            bytes_per_message: Number((r.bytes_received / Math.max(1, r.messages)).toFixed(1)),
            bytes_sent: r.bytes_sent,
            warmup_catch_up_ms: Math.round(r.warmup_catch_up_ms),
            client_decode_ms: r.client_decode_ms,
            server_cpu_pct: serverStats.cpu_pct,
            client_cpu_pct: r.client_cpu_pct,
            server_rss_mb: serverStats.rss_mb,
            provision_s: Number(provisionS.toFixed(1)),
            durable: true,
          });
        }
      } finally {
        await server.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    }
    // Proportionality: each line gets the time of the same transport's first case scaled by
    // what it missed, to compare with its own catch_up_ms.
    const first = byCase[0]!;
    for (const r of results) {
      const full = first.get(r.transport === "tcp" ? "tcp" : "ws");
      if (full !== undefined && r.missed !== messages) {
        r.if_proportional_ms = Math.round((full * (r.missed as number)) / messages);
      }
    }
    return results;
  },
};
