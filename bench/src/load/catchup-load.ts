import type { ServerFrame } from "@parley/protocol";
import { now, openConn, type ClientConn } from "./idle-load.ts";

// The catch-up load client, run as its own process: one device connects, says hello, then syncs
// from `cursor` as docs/protocol.md describes (sync {cursor, limit}; again from the last useq
// while `more`) until it is caught up, checking that the updates come gap-free and in order.
// Bytes are counted on the socket (wire bytes: TCP length prefixes, WebSocket frame headers).
// Prints one JSON line.

export interface CatchupLoadConfig {
  transport: "tcp" | "ws";
  host: string;
  tcpPort: number;
  wsUrl: string;
  token: string;
  cursor: number;
  limit: number;
}

export interface CatchupLoadResult {
  connect_ms: number;
  catch_up_ms: number;
  updates: number;
  messages: number;
  pages: number;
  bytes_received: number;
  bytes_sent: number;
  page_ms: number[];
  /** Client time spent decoding and validating the synced frames (on the critical path: the next
   * sync needs the last useq). */
  client_decode_ms: number;
  client_cpu_pct: number;
  errors: number;
  final_cursor: number;
  head: number;
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? "{}") as CatchupLoadConfig;
  let cursor = cfg.cursor;
  let updates = 0;
  let messages = 0;
  let errors = 0;
  let head = 0;
  let decodeMs = 0;
  const pageMs: number[] = [];
  let nextId = 0;
  let pageStart = 0;
  let bytes0 = 0;
  let sent0 = 0;
  let tConnect = 0;
  let tSync = 0;
  let cpu0 = process.cpuUsage();

  const result = await new Promise<CatchupLoadResult>((resolve, reject) => {
    const t0 = now();
    const sync = (c: ClientConn): void => {
      pageStart = now();
      c.send({ t: "sync", id: ++nextId, cursor, limit: cfg.limit });
    };
    const conn: ClientConn = openConn(cfg, undefined, {
      onOpen: () => conn.send({ t: "hello", versions: [1], token: cfg.token }),
      onFrame(f: ServerFrame) {
        if (f.t === "welcome") {
          tConnect = now();
          bytes0 = conn.bytesRead();
          sent0 = conn.bytesWritten();
          cpu0 = process.cpuUsage();
          tSync = now();
          return sync(conn);
        }
        if (f.t === "error") {
          errors++;
          return reject(new Error(`error ${f.code}: ${f.message}`));
        }
        if (f.t !== "synced") return;
        pageMs.push(now() - pageStart);
        for (const { useq, u } of f.updates) {
          if (useq !== cursor + 1) errors++;
          cursor = useq;
          updates++;
          if (u.k === "msg") messages++;
        }
        head = f.head;
        if (f.more) return sync(conn);
        const done = now();
        const cpu = process.cpuUsage(cpu0);
        conn.send({ t: "ack", cursor });
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
          errors,
          final_cursor: cursor,
          head,
        });
        setTimeout(() => conn.reset(), 50); // let the ack go out
      },
      onClose(reason) {
        reject(new Error(`connection closed before catching up: ${reason}`));
      },
      onDecode(ms) {
        decodeMs += ms;
      },
    });
  });
  process.stdout.write(JSON.stringify(result) + "\n");
  await new Promise((r) => setTimeout(r, 100));
  process.exit(0);
}

void main();
