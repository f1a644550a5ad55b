import { readFileSync } from "node:fs";
import net from "node:net";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { FrameParser, decodeBinary, encodeBinary, encodeFramed, parseServerFrame } from "@parley/protocol";
import type { ClientFrame, ServerFrame } from "@parley/protocol";
import { WsClient, WsUpgradeRefused } from "./ws-client.ts";

// The many-connections load client of the idle and login-storm scenarios, run as its own process
// (several of them, each under the 20,000 fd limit). Each client opens one connection (TCP, or
// WebSocket binary) from one of several 127.0.0.x source addresses, sends hello with its device
// token and waits for welcome.
//
// - mode "idle": connects its clients `concurrency` handshakes at a time, prints {"ev":"connected"},
//   then keeps them (answering the server's heartbeat pings) until told {"cmd":"stop"}.
// - mode "storm": on {"cmd":"go","at":T} starts every client at the wall-clock time T at once (or
//   spread over rampMs) and measures time to welcome from each client's intended start (so a slow
//   accept queue shows in the figures instead of delaying later clients' clocks).
//
// The config comes in a JSON file (argv[2]: thousands of tokens exceed the 128 KiB limit on one
// argument); commands arrive as JSON lines on stdin; events go out as JSON lines on stdout, the
// last one {"ev":"result"}.

export interface ConnsLoadConfig {
  mode: "idle" | "storm";
  transport: "tcp" | "ws";
  host: string;
  tcpPort: number;
  wsUrl: string;
  tokens: string[];
  /** Client i connects from localAddresses[i % length]. */
  localAddresses: string[];
  /** idle: handshakes in flight at once while connecting. */
  concurrency: number;
  /** storm: a client not welcomed this long after the start counts as failed ("timeout"). */
  timeoutMs: number;
  /** storm: 0 starts every client at once; else client i starts at `at + i / n * rampMs`. */
  rampMs: number;
}

/** What {"ev":"connected"} (idle) and {"ev":"result"} (storm) carry about the connect phase. */
export interface ConnectPhase {
  welcomed: number;
  failed: number;
  failures: Record<string, number>;
  /** Sorted times in ms, per welcomed client: from its start to TCP connect / WS open, and to
   * welcome. Storm: from the common start time. */
  openMs: number[];
  welcomeMs: number[];
  /** Wall-clock time of the first and last welcome. */
  firstWelcomeAt: number;
  lastWelcomeAt: number;
  /** CPU of this process over the phase, in percent of one core. */
  cpuPct: number;
}

/** {"ev":"result"} of an idle run, about the hold after connecting. */
export interface HoldPhase {
  pings: number;
  /** Connections closed after welcome while held, by reason. */
  dropped: number;
  drops: Record<string, number>;
  cpuPct: number;
}

export const now = (): number => performance.timeOrigin + performance.now();

export interface ClientHandlers {
  onOpen(): void;
  onFrame(frame: ServerFrame): void;
  /** Once, when the connection is gone: an error code (ECONNRESET, "HTTP 429", ...) or "closed". */
  onClose(reason: string): void;
  /** If set: the time each received frame took to decode and validate, in ms. */
  onDecode?(ms: number): void;
}

export interface ClientConn {
  send(frame: ClientFrame): void;
  /** Bytes read from the socket so far (TCP: with length prefixes; WS: with frame headers, after
   * the HTTP upgrade response). */
  bytesRead(): number;
  bytesWritten(): number;
  /** Closes with a reset, leaving no TIME_WAIT behind to hold the source port. */
  reset(): void;
}

/** Every WebSocket connection's reads, one buffer for all (see direct-load.ts). */
const READ_BUFFER = new Uint8Array(64 * 1024);

/** One connection speaking MessagePack frames over TCP or WebSocket binary. */
export function openConn(
  cfg: { transport: "tcp" | "ws"; host: string; tcpPort: number; wsUrl: string },
  localAddress: string | undefined,
  h: ClientHandlers,
): ClientConn {
  let failure: string | undefined;
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    h.onClose(failure ?? "closed");
  };
  if (cfg.transport === "tcp") {
    const sock = net.connect({ host: cfg.host, port: cfg.tcpPort, localAddress, noDelay: true });
    // synced pages can exceed the default 64 KiB frame limit (the server caps them at ~1 MiB).
    const parser = new FrameParser({ maxFrameBytes: 1 << 24 });
    sock.on("connect", () => h.onOpen());
    sock.on("data", (chunk: Buffer) => {
      const t = h.onDecode ? performance.now() : 0;
      const frames = parser.push(chunk).map((body) => parseServerFrame(decodeBinary(body)));
      h.onDecode?.(performance.now() - t);
      for (const f of frames) h.onFrame(f);
    });
    sock.on("error", (e: NodeJS.ErrnoException) => (failure ??= e.code ?? e.message));
    sock.on("close", close);
    return {
      send: (f) => void sock.write(encodeFramed(f)),
      bytesRead: () => sock.bytesRead,
      bytesWritten: () => sock.bytesWritten,
      // A socket still connecting cannot be reset (node waits for the connect): destroy it.
      reset: () => void (sock.connecting ? sock.destroy() : sock.resetAndDestroy()),
    };
  }
  // ws-client.ts, as in every load process. Reads share READ_BUFFER: decodeBinary copies what
  // it keeps before the read's callback returns.
  const ws: WsClient = new WsClient(
    {
      url: cfg.wsUrl,
      protocol: "parley.v1.binary",
      readBuffer: READ_BUFFER,
      maxMessageBytes: 1 << 24,
      ...(localAddress !== undefined ? { localAddress } : {}),
    },
    {
      open: () => h.onOpen(),
      message: (data) => {
        const t = h.onDecode ? performance.now() : 0;
        const f = parseServerFrame(decodeBinary(data));
        h.onDecode?.(performance.now() - t);
        h.onFrame(f);
      },
      close: (err, code) => {
        // As the `ws` client's were: "HTTP <status>" for a refused upgrade, "ws close <code>"
        // after the server's close frame, else the socket's error code.
        if (err instanceof WsUpgradeRefused) failure ??= `HTTP ${err.status}`;
        else if (code !== undefined) failure ??= `ws close ${code}`;
        else if (err) failure ??= "code" in err ? String(err.code) : err.message;
        close();
      },
    },
  );
  const raw = ws.socket;
  return {
    send: (f) => ws.send(encodeBinary(f)),
    bytesRead: () => (ws.handshakeBytes > 0 ? raw.bytesRead - ws.handshakeBytes : 0),
    bytesWritten: () => raw.bytesWritten,
    // A socket still connecting cannot be reset (node waits for the connect): destroy it.
    reset: () => {
      if (!raw.connecting) raw.resetAndDestroy();
      ws.terminate();
    },
  };
}

function emit(ev: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(ev) + "\n");
}

function bump(counts: Record<string, number>, key: string): void {
  counts[key] = (counts[key] ?? 0) + 1;
}

function cpuPctSince(cpu0: NodeJS.CpuUsage, t0: number): number {
  const cpu = process.cpuUsage(cpu0);
  const ms = performance.now() - t0;
  return ms > 0 ? Math.round(((cpu.user + cpu.system) / 1000 / ms) * 100) : 0;
}

interface Client {
  conn?: ClientConn;
  welcomed: boolean;
  timedOut: boolean;
}

async function main(): Promise<void> {
  const cfg = JSON.parse(readFileSync(process.argv[2]!, "utf8")) as ConnsLoadConfig;
  const commands = createInterface({ input: process.stdin });
  const queue: Array<Record<string, unknown>> = [];
  let waiting: ((c: Record<string, unknown>) => void) | undefined;
  commands.on("line", (line) => {
    const cmd = JSON.parse(line) as Record<string, unknown>;
    if (waiting) {
      const w = waiting;
      waiting = undefined;
      w(cmd);
    } else queue.push(cmd);
  });
  // The parent going away (stdin closed) ends this process too: never leave sockets behind.
  commands.on("close", () => process.exit(0));
  const nextCommand = (): Promise<Record<string, unknown>> =>
    queue.length > 0 ? Promise.resolve(queue.shift()!) : new Promise((r) => (waiting = r));

  const n = cfg.tokens.length;
  const clients: Client[] = Array.from({ length: n }, () => ({ welcomed: false, timedOut: false }));
  const failures: Record<string, number> = {};
  const drops: Record<string, number> = {};
  const openMs: number[] = [];
  const welcomeMs: number[] = [];
  let welcomed = 0;
  let failed = 0;
  let dropped = 0;
  let pings = 0;
  let firstWelcomeAt = 0;
  let lastWelcomeAt = 0;
  let onSettled: (() => void) | undefined;
  const settled = (): void => {
    if (welcomed + failed === n) onSettled?.();
  };

  /** Starts client i; `t0` is its intended start (wall clock). `done` runs once it is welcomed
   * or has failed. */
  const start = (i: number, t0: number, done: () => void): void => {
    const client = clients[i]!;
    let errorCode: string | undefined;
    let finished = false;
    const finish = (ok: boolean, reason?: string): void => {
      if (finished) return;
      finished = true;
      if (ok) {
        const at = now();
        welcomed++;
        welcomeMs.push(at - t0);
        firstWelcomeAt = firstWelcomeAt === 0 ? at : Math.min(firstWelcomeAt, at);
        lastWelcomeAt = Math.max(lastWelcomeAt, at);
      } else {
        failed++;
        bump(failures, reason ?? "unknown");
      }
      done();
      settled();
    };
    const conn = openConn(cfg, cfg.localAddresses[i % cfg.localAddresses.length], {
      onOpen() {
        openMs.push(now() - t0);
        conn.send({ t: "hello", versions: [1], token: cfg.tokens[i]! });
      },
      onFrame(f) {
        switch (f.t) {
          case "welcome":
            client.welcomed = true;
            finish(true);
            return;
          case "ping":
            pings++;
            conn.send({ t: "pong", n: f.n });
            return;
          case "error":
            errorCode ??= f.code;
            return;
          case "bye":
            errorCode ??= `bye ${f.code}`;
            return;
          default:
            return;
        }
      },
      onClose(reason) {
        if (!finished) return finish(false, client.timedOut ? "timeout" : (errorCode ?? reason));
        if (client.welcomed && client.conn) {
          dropped++;
          bump(drops, errorCode ?? reason);
        }
        client.conn = undefined;
      },
    });
    client.conn = conn;
  };

  const connectPhase = (cpuPct: number): ConnectPhase => ({
    welcomed,
    failed,
    failures,
    openMs: openMs.sort((a, b) => a - b),
    welcomeMs: welcomeMs.sort((a, b) => a - b),
    firstWelcomeAt,
    lastWelcomeAt,
    cpuPct,
  });
  const resetAll = (): void => {
    for (const c of clients) {
      const conn = c.conn;
      c.conn = undefined; // not a drop
      conn?.reset();
    }
  };

  emit({ ev: "ready" });
  const go = await nextCommand();
  const allSettled = new Promise<void>((r) => (onSettled = r));

  if (cfg.mode === "storm") {
    const at = Number(go.at ?? now());
    await new Promise((r) => setTimeout(r, Math.max(0, at - now())));
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const timer = setTimeout(() => {
      for (const c of clients) {
        if (!c.welcomed && c.conn) {
          c.timedOut = true;
          c.conn.reset();
        }
      }
    }, cfg.timeoutMs);
    if (cfg.rampMs > 0) {
      // Each client's intended start is on the schedule; one started late still counts from it.
      let i = 0;
      const tick = (): void => {
        const t = now();
        for (; i < n && at + (i * cfg.rampMs) / n <= t; i++)
          start(i, at + (i * cfg.rampMs) / n, () => undefined);
        if (i < n) setTimeout(tick, 1);
      };
      tick();
    } else {
      for (let i = 0; i < n; i++) start(i, at, () => undefined);
    }
    if (n > 0) await allSettled;
    clearTimeout(timer);
    emit({ ev: "result", ...connectPhase(cpuPctSince(cpu0, t0)) });
    resetAll();
    process.exit(0);
  }

  // idle: connect with at most `concurrency` handshakes in flight.
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let next = 0;
  const launch = (): void => {
    if (next < n) {
      const i = next++;
      start(i, now(), launch);
    }
  };
  for (let k = 0; k < Math.min(cfg.concurrency, n); k++) launch();
  if (n > 0) await allSettled;
  emit({ ev: "connected", ...connectPhase(cpuPctSince(cpu0, t0)) });
  const cpu1 = process.cpuUsage();
  const t1 = performance.now();
  await nextCommand(); // stop
  const hold: HoldPhase = { pings, dropped, drops, cpuPct: cpuPctSince(cpu1, t1) };
  emit({ ev: "result", ...hold });
  resetAll();
  process.exit(0);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) void main();
