import type { ServerFrame } from "@parley/protocol";
import { MemoryLocalStore, SyncEngine } from "@parley/sdk";
import { now, openConn, type ClientConn } from "./idle-load.ts";

// The catch-up load client, run as its own process: one device connects, says hello, then
// catches up from `cursor` with the SDK's own SyncEngine over a MemoryLocalStore (pages of
// `limit` updates, up to `pipeline` sync requests outstanding: docs/protocol.md), which applies
// the updates gap-free and in order; the run checks that it ends at the head with every message
// applied once. Bytes are counted on the socket (wire bytes: TCP length prefixes, WebSocket frame
// headers). It catches up twice, each time on a new connection into a new store: first to warm
// up (its own JIT as much as the server's caches), then measured. Prints one JSON line.

export interface CatchupLoadConfig {
  transport: "tcp" | "ws";
  host: string;
  tcpPort: number;
  wsUrl: string;
  token: string;
  cursor: number;
  limit: number;
  /** Sync requests outstanding at once (1: ask for the next page after applying the last). */
  pipeline: number;
}

export interface CatchupLoadResult {
  connect_ms: number;
  catch_up_ms: number;
  updates: number;
  messages: number;
  pages: number;
  bytes_received: number;
  bytes_sent: number;
  /** Time from one `synced` reply to the next (the first: from the first request). */
  page_ms: number[];
  /** Client time spent decoding and validating the synced frames. */
  client_decode_ms: number;
  client_cpu_pct: number;
  errors: number;
  final_cursor: number;
  head: number;
  /** The unmeasured first catch-up. */
  warmup_catch_up_ms: number;
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? "{}") as CatchupLoadConfig;
  const warm = await catchUp(cfg);
  const result = await catchUp(cfg);
  process.stdout.write(JSON.stringify({ ...result, warmup_catch_up_ms: warm.catch_up_ms }) + "\n");
  await new Promise((r) => setTimeout(r, 100));
  process.exit(0);
}

async function catchUp(cfg: CatchupLoadConfig): Promise<Omit<CatchupLoadResult, "warmup_catch_up_ms">> {
  let updates = 0;
  let messages = 0;
  let head = 0;
  let decodeMs = 0;
  const pageMs: number[] = [];
  let nextId = 0;
  let lastPage = 0;
  let bytes0 = 0;
  let sent0 = 0;
  let tConnect = 0;
  let tSync = 0;
  let cpu0 = process.cpuUsage();
  const store = new MemoryLocalStore();
  store.setCursor(cfg.cursor);
  const syncs = new Set<number>();

  return new Promise((resolve, reject) => {
    const t0 = now();
    const engine = new SyncEngine(
      store,
      {
        emit(e) {
          if (e.type === "message") messages++;
        },
        requestSync(cursor) {
          const id = ++nextId;
          syncs.add(id);
          conn.send({ t: "sync", id, cursor, limit: cfg.limit });
        },
        caughtUp() {
          const done = now();
          const cpu = process.cpuUsage(cpu0);
          const cursor = engine.cursor;
          const { duplicatePushes, duplicateMessages, dropped, resets } = engine.stats;
          resolve({
            connect_ms: Number((tConnect - t0).toFixed(3)),
            catch_up_ms: Number((done - tSync).toFixed(3)),
            updates,
            messages,
            pages: pageMs.length,
            bytes_received: conn.bytesRead() - bytes0,
            bytes_sent: conn.bytesWritten() - sent0,
            page_ms: pageMs.map((v) => Number(v.toFixed(3))),
            client_decode_ms: Number(decodeMs.toFixed(1)),
            client_cpu_pct: Math.round(((cpu.user + cpu.system) / 1000 / (done - tSync)) * 100),
            // Nothing may come twice or be dropped on a quiet server.
            errors: duplicatePushes + duplicateMessages + dropped + resets,
            final_cursor: cursor,
            head,
          });
          conn.reset();
        },
      },
      { pipeline: cfg.pipeline },
    );
    const conn: ClientConn = openConn(cfg, undefined, {
      onOpen: () => conn.send({ t: "hello", versions: [1], token: cfg.token }),
      onFrame(f: ServerFrame) {
        if (f.t === "welcome") {
          tConnect = now();
          bytes0 = conn.bytesRead();
          sent0 = conn.bytesWritten();
          cpu0 = process.cpuUsage();
          tSync = lastPage = now();
          head = f.head;
          return engine.start(f.head, cfg.limit);
        }
        if (f.t === "error") return reject(new Error(`error ${f.code}: ${f.message}`));
        if (f.t !== "synced" || !syncs.delete(f.id)) return;
        const t = now();
        pageMs.push(t - lastPage);
        lastPage = t;
        updates += f.updates.length;
        head = f.head;
        engine.onSynced(f.updates, f.more, f.head);
      },
      onClose(reason) {
        reject(new Error(`connection closed before catching up: ${reason}`));
      },
      onDecode(ms) {
        decodeMs += ms;
      },
    });
  });
}

void main();
