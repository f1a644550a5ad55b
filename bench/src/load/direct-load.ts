import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { PerformanceObserver, monitorEventLoopDelay } from "node:perf_hooks";
import { Unpackr } from "msgpackr";
import { FrameParser, encodeBinary, encodeFramed } from "@parley/protocol";
import type { ClientFrame, SendFrame, ServerFrame } from "@parley/protocol";
import { skim, type Skimmed } from "./skim.ts";
import { WsClient } from "./ws-client.ts";
import { newCid } from "../../../packages/sdk/src/client.ts";
import { profileArgs } from "../proc-stats.ts";

// The load client of direct-max, direct-rate and raw-relay: 1:1 sender/receiver pairs over TCP
// (length-prefixed MessagePack) or WebSocket (binary subprotocol), either closed loop (each
// sender keeps `window` sends in flight) or open loop (sends on a fixed schedule at `ratePerS`,
// whatever the replies do).
//
// This file is both the load process (run as a script: `main` below) and its driver
// (`runDirectLoad`, called by the scenarios), which spreads the pairs over `loadProcs` processes,
// starts them on one wall-clock schedule and merges what they measured. Every process measures
// the same window: [measureFrom, measureTo) on performance.timeOrigin + performance.now(), the
// clock the driver and the server meter use too.
//
// Latency: each message body carries its intended send time (float64 at offset 0): in open loop
// its slot on the schedule, so a late send (a slow client, a full socket) counts against the
// latency instead of silently moving the schedule (no coordinated omission); in closed loop the
// moment the previous reply freed the slot. The latency is from that time to the receiver's
// push callback. It is sampled for every message whose intended time is in the window, however
// late it arrives (the processes wait up to `drainMs` for stragglers; what never comes is `lost`).
//
// Every connection acknowledges its pushes with a cumulative `ack` every 64 pushes or on the
// first push a second after its last ack (so that the acks of 2,000 connections are spread out
// rather than sent in one burst that would stall this process), and once its pushes stop.
//
// The connections speak protocol version 2, as the SDK does: the sender gets `sent` in place of
// the push of its own message (and counts its useq as pushed), one frame per message. Under
// version 1 (PARLEY_BENCH_PROTOCOL=1, to compare the two) it gets that push and then `sent`. The
// relay answers `sent` without a useq, and echoes nothing, whatever the version.

export type Transport = "tcp" | "ws";

/** The connections' read buffer, one for all of them, TCP and WebSocket (net.connect's `onread`).
 * Without it Node allocates 64 KiB for every read and copies what arrived into a new buffer of
 * its own; with thousands of reads a second that was this process's largest use of malloc.
 * Sharing is safe because a read's callback parses and decodes the whole chunk before it returns
 * (FrameParser and WsFrameReader copy the part of a frame a chunk leaves incomplete, and nothing
 * keeps a view of it: see decodeTrusted), and the event loop runs one callback at a time. */
const READ_BUFFER = new Uint8Array(64 * 1024);

/** The server's frames as msgpackr reads them (maps as objects, no records, as the codec does),
 * without decodeBinary's checks: that the bytes are plain MessagePack (checkPlainMsgpack) and the
 * copy of every byte string into a plain Uint8Array. This process trusts its server, and the
 * checks were 7% of its CPU at direct-max. A push's body is then a view into the bytes it was
 * read from (the shared READ_BUFFER): it is read before the callback returns, never kept. */
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: "number" });

/** A frame as this process reads it: a `sent` or message `push` skimmed for the numbers and
 * body it uses (skim.ts: 0.2-0.4 us a frame against msgpackr's 0.6-1.0; the load client's CPU
 * at direct-max went from 60% to 51%), anything else decoded in full by msgpackr. */
type LoadFrame = ServerFrame | Skimmed;
const decodeTrusted = (bytes: Uint8Array): LoadFrame => skim(bytes) ?? (unpackr.unpack(bytes) as ServerFrame);

export interface LoadTarget {
  transport: Transport;
  host: string;
  tcpPort: number;
  wsUrl: string;
}

export interface LoadPair {
  senderToken: string;
  receiverToken: string;
  conv: string;
}

export interface LoadOptions {
  target: LoadTarget;
  pairs: LoadPair[];
  mode: "closed" | "open";
  /** Closed loop: sends in flight per sender. */
  window: number;
  /** Open loop: total offered msg/s over all pairs and processes. */
  ratePerS: number;
  bodyBytes: number;
  warmupS: number;
  durationS: number;
  loadProcs: number;
  /** Local addresses to connect from, round robin (empty: the OS picks). */
  sourceAddrs: string[];
}

/** What the load processes measured together, in the result line's field names. */
export interface LoadSummary {
  connections: number;
  offered_per_s: number | null;
  sent_per_s: number;
  delivered_per_s: number;
  p50_ms: number;
  p99_ms: number;
  p999_ms: number;
  max_ms: number;
  /** Error replies and connections lost, over the whole run (warm-up included), and by code. */
  errors: number;
  error_codes: Record<string, number>;
  lost: number;
  /** Of `lost`: messages whose send was acknowledged (`sent`) but whose push never came. A
   * durable server that delivers what it acknowledges keeps this at 0 whatever the load. */
  acked_not_delivered: number;
  client_cpu_pct: number;
  client_cpu_pct_max: number;
  /** A load process used 90% of a core or more: it may be what limits the figures. */
  client_saturated: boolean;
  load_procs: number;
  /** Per load process: GC time (average, ms per second), longest GC pause, event-loop delay. */
  client_gc_ms_per_s: number;
  client_gc_max_ms: number;
  client_loop_delay_p99_ms: number;
  client_loop_delay_max_ms: number;
  send_lag_p99_ms?: number;
  send_lag_max_ms?: number;
}

interface ChildConfig {
  target: LoadTarget;
  pairs: LoadPair[];
  mode: "closed" | "open";
  window: number;
  ratePerS: number;
  /** Open loop: this process's schedule is shifted by phase / ratePerS seconds (0..1). */
  phase: number;
  bodyBytes: number;
  sourceAddrs: string[];
}

interface Go {
  startAt: number;
  measureFrom: number;
  measureTo: number;
  drainMs: number;
}

interface ChildResult {
  sent: number;
  delivered: number;
  offered: number;
  errors: number;
  errorCodes: Record<string, number>;
  lost: number;
  ackedNotDelivered: number;
  cpuMs: number;
  /** Garbage collection pauses in the window: total and longest, ms. */
  gcMs: number;
  gcMaxMs: number;
  /** Event-loop delay in the window (perf_hooks, 1 ms resolution): p99 and max, ms. */
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
  windowMs: number;
  /** Latencies of the messages intended in the window, in microseconds. */
  latUs: number[];
  /** Open loop: actual minus intended send time, in microseconds. */
  lagUs: number[];
}

const now = (): number => performance.timeOrigin + performance.now();
const ACK_EVERY = 64;
/** The protocol versions the connections offer in `hello`. */
const VERSIONS = process.env.PARLEY_BENCH_PROTOCOL === "1" ? [1] : [1, 2];
const ACK_AFTER_MS = 1000;
const CONNECT_CONCURRENCY = 64;

// ---------------------------------------------------------------------------------------------
// The driver.

/** Runs the load over `loadProcs` processes; `onWindowStart`/`onWindowEnd` are called at the
 * start and the end of the measured window (to meter the server over the same interval). */
export async function runDirectLoad(
  opts: LoadOptions,
  onWindowStart: () => void,
  onWindowEnd: () => void,
): Promise<LoadSummary & MachineLoad> {
  const procs = Math.max(1, Math.min(opts.loadProcs, opts.pairs.length));
  const children: ChildProcess[] = [];
  try {
    const lines: Array<AsyncIterator<string>> = [];
    for (let p = 0; p < procs; p++) {
      const cfg: ChildConfig = {
        target: opts.target,
        pairs: opts.pairs.filter((_, i) => i % procs === p),
        mode: opts.mode,
        window: opts.window,
        ratePerS: opts.ratePerS / procs,
        phase: p / procs,
        bodyBytes: opts.bodyBytes,
        sourceAddrs: opts.sourceAddrs,
      };
      const child = spawn(
        process.execPath,
        // A larger young generation: fewer objects promoted, fewer long old-generation pauses.
        [...profileArgs(), "--max-semi-space-size=32", "--import", "tsx", fileURLToPath(import.meta.url)],
        {
          stdio: ["pipe", "pipe", "inherit"],
        },
      );
      children.push(child);
      child.stdin.write(JSON.stringify(cfg) + "\n");
      lines.push(createInterface({ input: child.stdout })[Symbol.asyncIterator]());
    }
    const next = async (p: number): Promise<Record<string, unknown>> => {
      const r = await lines[p]!.next();
      if (r.done) throw new Error(`load process ${p} exited early (exit code ${children[p]!.exitCode})`);
      return JSON.parse(r.value) as Record<string, unknown>;
    };
    // A failed process ends the run at once; one that exits normally may do so before its last
    // line is read, so only its missing line (next() above) says something went wrong.
    const exited = children.map(
      (c, p) =>
        new Promise<never>((_, reject) =>
          c.once("exit", (code, signal) => {
            if (code !== 0) reject(new Error(`load process ${p} exited with ${code ?? signal}`));
          }),
        ),
    );
    // Every process connected (and authenticated) all its connections before anyone sends.
    await Promise.race([Promise.all(children.map((_, p) => next(p))), ...exited]);
    const startAt = now() + 200;
    const measureFrom = startAt + opts.warmupS * 1000;
    const measureTo = measureFrom + opts.durationS * 1000;
    const go: Go = { startAt, measureFrom, measureTo, drainMs: 5000 };
    for (const c of children) c.stdin!.end(JSON.stringify(go) + "\n");
    let machine0 = machineSample();
    let machine: MachineLoad = { machine_cpu_pct: 0, cpu_pressure_pct: 0, io_pressure_pct: 0, steal_pct: 0 };
    const t1 = setTimeout(() => {
      machine0 = machineSample();
      onWindowStart();
    }, measureFrom - now());
    let t2: NodeJS.Timeout | undefined;
    const windowEnd = new Promise<void>((resolve) => {
      t2 = setTimeout(() => {
        machine = machineLoad(machine0, machineSample());
        onWindowEnd();
        resolve();
      }, measureTo - now());
    });
    let results: ChildResult[];
    try {
      results = (await Promise.race([
        Promise.all(children.map((_, p) => next(p))),
        ...exited,
      ])) as unknown as ChildResult[];
      // The processes may report a moment before this process's timer ends the window.
      await windowEnd;
    } finally {
      clearTimeout(t1);
      clearTimeout(t2);
    }
    // They exit by themselves once they have printed (writing their profile, if asked).
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            c.once("exit", () => resolve());
            setTimeout(resolve, 10_000).unref();
          }),
      ),
    );
    const summary = summarise(opts, results);
    if (summary.client_saturated) {
      process.stderr.write(
        `direct-load: a load process used ${summary.client_cpu_pct_max}% of a core; ` +
          `see whether more --load-procs (now ${procs}) change the figures\n`,
      );
    }
    return { ...summary, ...machine };
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  }
}

/** The whole machine over the window, to see what else ran: CPU used by every process (percent
 * of one core, so up to 100 x cores), the share of the time some runnable task waited for a CPU
 * and some task waited for I/O (/proc/pressure/cpu and io, "some"; 0 where the kernel has no
 * PSI), and the CPU time the hypervisor gave to other guests (steal, percent of one core): a
 * machine slower than the last one shows it in these. */
export interface MachineLoad {
  machine_cpu_pct: number;
  cpu_pressure_pct: number;
  io_pressure_pct: number;
  steal_pct: number;
}

interface MachineSample {
  at: number;
  busyTicks: number;
  stealTicks: number;
  stallUs: number;
  ioStallUs: number;
}

/** The "some" total (microseconds) of a PSI file; 0 where the kernel has none. */
function pressureUs(file: string): number {
  try {
    return Number(/^some .*total=(\d+)/m.exec(readFileSync(file, "utf8"))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

function machineSample(): MachineSample {
  // cpu user nice system idle iowait irq softirq steal ... (USER_HZ = 100 ticks per second)
  const cpu = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const busyTicks = cpu.slice(0, 8).reduce((a, b) => a + b, 0) - cpu[3]! - cpu[4]!;
  return {
    at: performance.now(),
    busyTicks,
    stealTicks: cpu[7] ?? 0,
    stallUs: pressureUs("/proc/pressure/cpu"),
    ioStallUs: pressureUs("/proc/pressure/io"),
  };
}

function machineLoad(a: MachineSample, b: MachineSample): MachineLoad {
  const ms = b.at - a.at;
  return {
    machine_cpu_pct: Math.round(((b.busyTicks - a.busyTicks) * 10 * 100) / ms),
    cpu_pressure_pct: Math.round(((b.stallUs - a.stallUs) / 1000 / ms) * 100),
    io_pressure_pct: Math.round(((b.ioStallUs - a.ioStallUs) / 1000 / ms) * 100),
    steal_pct: Math.round(((b.stealTicks - a.stealTicks) * 10 * 100) / ms),
  };
}

function summarise(opts: LoadOptions, results: ChildResult[]): LoadSummary {
  const windowS = opts.durationS;
  const sum = (f: (r: ChildResult) => number): number => results.reduce((a, r) => a + f(r), 0);
  const lat = Float64Array.from(results.flatMap((r) => r.latUs)).sort();
  const lag = Float64Array.from(results.flatMap((r) => r.lagUs)).sort();
  const ms = (sorted: Float64Array, q: number): number =>
    sorted.length === 0
      ? 0
      : Number((sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! / 1000).toFixed(3));
  const cpu = results.map((r) => (r.cpuMs / r.windowMs) * 100);
  const out: LoadSummary = {
    connections: opts.pairs.length * 2,
    offered_per_s: opts.mode === "open" ? opts.ratePerS : null,
    sent_per_s: Math.round(sum((r) => r.sent) / windowS),
    delivered_per_s: Math.round(sum((r) => r.delivered) / windowS),
    p50_ms: ms(lat, 0.5),
    p99_ms: ms(lat, 0.99),
    p999_ms: ms(lat, 0.999),
    max_ms: ms(lat, 1),
    errors: sum((r) => r.errors),
    error_codes: results.reduce<Record<string, number>>((acc, r) => {
      for (const [code, n] of Object.entries(r.errorCodes)) acc[code] = (acc[code] ?? 0) + n;
      return acc;
    }, {}),
    lost: sum((r) => r.lost),
    acked_not_delivered: sum((r) => r.ackedNotDelivered),
    client_cpu_pct: Math.round(cpu.reduce((a, b) => a + b, 0)),
    client_cpu_pct_max: Math.round(Math.max(...cpu)),
    client_saturated: Math.max(...cpu) >= 90,
    load_procs: results.length,
    client_gc_ms_per_s: Number((sum((r) => r.gcMs) / results.length / windowS).toFixed(1)),
    client_gc_max_ms: Number(Math.max(...results.map((r) => r.gcMaxMs)).toFixed(1)),
    client_loop_delay_p99_ms: Number(Math.max(...results.map((r) => r.loopDelayP99Ms)).toFixed(1)),
    client_loop_delay_max_ms: Number(Math.max(...results.map((r) => r.loopDelayMaxMs)).toFixed(1)),
  };
  if (opts.mode === "open") {
    out.offered_per_s = Math.round(sum((r) => r.offered) / windowS);
    out.send_lag_p99_ms = ms(lag, 0.99);
    out.send_lag_max_ms = ms(lag, 1);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The load process.

/** One authenticated connection; acknowledges its pushes by itself. */
interface Conn {
  send(frame: ClientFrame): void;
  /** Sends an `ack` if pushes are unacknowledged and none came for ACK_AFTER_MS. */
  flushIdleAck(): void;
  close(): void;
}

/** Uncorks of the connections corked in this turn: one nextTick runs them all (as the server's
 * gateway does), rather than one nextTick per connection. */
let toUncork: Array<() => void> = [];

function uncorkAfterThisTurn(uncork: () => void): void {
  if (toUncork.length === 0) process.nextTick(uncorkAll);
  toUncork.push(uncork);
}

function uncorkAll(): void {
  const list = toUncork;
  toUncork = [];
  for (const uncork of list) uncork();
}

type FrameHandler = (f: LoadFrame) => void;

/** Opens a connection, says hello and resolves on `welcome`. Pushes are acknowledged here and
 * then passed on, like every other frame. `onClose` is called if it closes after `welcome`. */
function open(
  target: LoadTarget,
  token: string,
  localAddress: string | undefined,
  onFrame: FrameHandler,
  onClose: () => void,
): Promise<Conn> {
  return new Promise((resolve, reject) => {
    let cursor = 0;
    let unacked = 0;
    let lastAck = 0;
    let lastPush = 0;
    let welcomed = false;
    let ended = false;
    let conn: Conn;
    const receive = (f: LoadFrame): void => {
      // A version 2 `sent` with a useq stands for the push of that entry.
      if (f.t === "push" || (f.t === "sent" && f.useq !== undefined)) {
        cursor = f.useq!;
        // Every ACK_EVERY pushes, or on the first push ACK_AFTER_MS after the last ack: spread
        // over the pushes, never all connections at once.
        lastPush = performance.now();
        if (++unacked >= ACK_EVERY || lastPush - lastAck >= ACK_AFTER_MS) flushAck();
        onFrame(f);
      } else if (welcomed) {
        onFrame(f);
      } else if (f.t === "welcome") {
        welcomed = true;
        resolve(conn);
      } else {
        reject(new Error(`hello answered with ${JSON.stringify(f)}`));
      }
    };
    const closed = (err?: Error): void => {
      if (ended) return;
      ended = true;
      if (welcomed) onClose();
      else reject(err ?? new Error("closed before welcome"));
    };
    const flushAck = (): void => {
      unacked = 0;
      lastAck = performance.now();
      conn.send({ t: "ack", cursor });
    };
    const flushIdleAck = (): void => {
      if (unacked > 0 && performance.now() - lastPush >= ACK_AFTER_MS) flushAck();
    };
    if (target.transport === "tcp") {
      const parser = new FrameParser({ maxFrameBytes: 1 << 24 });
      const socket: Socket = connect({
        host: target.host,
        port: target.tcpPort,
        ...(localAddress ? { localAddress } : {}),
        // Reads go into one buffer that every connection of this process shares (see READ_BUFFER),
        // and each chunk is parsed and decoded before the callback returns.
        onread: {
          buffer: READ_BUFFER,
          callback: (n: number, buf: Uint8Array): boolean => {
            for (const body of parser.push(buf.subarray(0, n))) receive(decodeTrusted(body));
            return true;
          },
        },
      });
      socket.setNoDelay(true);
      // Writes of one event-loop turn leave in one writev.
      let corked = false;
      const uncork = (): void => {
        corked = false;
        socket.uncork();
      };
      conn = {
        send(frame) {
          if (!corked) {
            corked = true;
            socket.cork();
            uncorkAfterThisTurn(uncork);
          }
          socket.write(encodeFramed(frame));
        },
        flushIdleAck,
        close: () => socket.destroy(),
      };
      socket.on("connect", () => conn.send({ t: "hello", versions: VERSIONS, token }));
      socket.on("error", (err) => closed(err));
      socket.on("close", () => closed());
    } else {
      // ws-client.ts rather than the `ws` library: reads into the same shared READ_BUFFER, and
      // every frame is parsed and decoded before the read's callback returns, as on TCP.
      const ws: WsClient = new WsClient(
        {
          url: target.wsUrl,
          protocol: "parley.v1.binary",
          readBuffer: READ_BUFFER,
          maxMessageBytes: 1 << 24,
          ...(localAddress ? { localAddress } : {}),
        },
        {
          open: () => conn.send({ t: "hello", versions: VERSIONS, token }),
          message: (data) => receive(decodeTrusted(data)),
          close: (err) => closed(err),
        },
      );
      // As on TCP, the frames of one event-loop turn leave in one writev.
      let corked = false;
      const uncork = (): void => {
        corked = false;
        ws.socket.uncork();
      };
      conn = {
        send(frame) {
          if (!corked) {
            corked = true;
            ws.socket.cork();
            uncorkAfterThisTurn(uncork);
          }
          ws.send(encodeBinary(frame));
        },
        flushIdleAck,
        close: () => ws.terminate(),
      };
    }
  });
}

async function main(): Promise<void> {
  const input = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const cfg = JSON.parse((await input.next()).value as string) as ChildConfig;
  let stopping = false;
  let go: Go = { startAt: Infinity, measureFrom: Infinity, measureTo: Infinity, drainMs: 0 };
  const r: ChildResult = {
    sent: 0,
    delivered: 0,
    offered: 0,
    errors: 0,
    errorCodes: {},
    lost: 0,
    ackedNotDelivered: 0,
    cpuMs: 0,
    gcMs: 0,
    gcMaxMs: 0,
    loopDelayP99Ms: 0,
    loopDelayMaxMs: 0,
    windowMs: 0,
    latUs: [],
    lagUs: [],
  };
  /** Messages intended in the window and sent; compared with latUs.length to find the lost. */
  let expected = 0;
  const inWindow = (t: number): boolean => t >= go.measureFrom && t < go.measureTo;
  const error = (code: string): void => {
    r.errors++;
    r.errorCodes[code] = (r.errorCodes[code] ?? 0) + 1;
  };
  const onClose = (): void => {
    if (!stopping) error("closed");
  };

  interface Sender {
    conn?: Conn;
    index: number;
    conv: string;
    reqId: number;
    /** Frames sent and not yet answered, by request id (resent after an error). */
    inflight: Map<number, SendFrame>;
    /** By request id, for the window's messages: ACKED and DELIVERED bits. */
    marks: Uint8Array;
  }
  const ACKED = 1;
  const DELIVERED = 2;
  const mark = (s: Sender, id: number, bit: number): void => {
    if (id >= s.marks.length) {
      const grown = new Uint8Array(Math.max(2 * s.marks.length, id + 1));
      grown.set(s.marks);
      s.marks = grown;
    }
    s.marks[id]! |= bit;
  };
  const senders: Sender[] = [];
  const conns: Conn[] = [];

  // PARLEY_LATENCY_TRACE=<prefix>: this process also writes <prefix>-<pid>.tsv, one line per
  // message of the window: its intended send time (ms after the window's start), its latency
  // (ms) and, when the body has room for it, how late it was sent (ms after its intended time,
  // carried in the body at offset 16). `bench/src/latency-trace.ts` shows when in the window the
  // slow ones were sent, and how much of their latency was this process's own lag.
  const traceTo = process.env.PARLEY_LATENCY_TRACE;
  const traceLag = traceTo !== undefined && cfg.bodyBytes >= 24;
  const trace: string[] = [];

  const sendMessage = (s: Sender, intended: number): void => {
    const body = new Uint8Array(cfg.bodyBytes);
    const id = ++s.reqId;
    const view = new DataView(body.buffer);
    view.setFloat64(0, intended);
    view.setUint32(8, s.index);
    view.setUint32(12, id);
    if (traceLag) view.setFloat64(16, now());
    const frame: SendFrame = {
      t: "send",
      id,
      conv: s.conv,
      // As the SDK makes them (time-ordered UUIDv7), since the server's resend index favours them.
      cid: newCid(),
      type: "bench",
      body,
    };
    s.inflight.set(frame.id, frame);
    if (inWindow(intended)) expected++;
    s.conn!.send(frame);
  };

  // Messages of the window acknowledged to their sender and delivered to their receiver are
  // marked in the sender's `marks`: a pair's two ends are in the same process, and the body names
  // the message after its send time (the sender's index and the request id, u32 each at offsets
  // 8 and 12). Two sets of 300,000 cids did this before, and were much of this process's GC.
  const intendedOf = (body: Uint8Array): number =>
    new DataView(body.buffer, body.byteOffset, body.byteLength).getFloat64(0);

  const senderFrame = (s: Sender, f: LoadFrame): void => {
    if (f.t === "sent") {
      const frame = s.inflight.get(f.id);
      if (frame && inWindow(intendedOf(frame.body))) mark(s, f.id, ACKED);
      s.inflight.delete(f.id);
      if (inWindow(now())) r.sent++;
      if (cfg.mode === "closed" && !stopping) sendMessage(s, now());
    } else if (f.t === "error") {
      error(f.code);
      const frame = f.id === undefined ? undefined : s.inflight.get(f.id);
      // Retry a refused send (rate limit, overload) with the same cid and intended time, also
      // after the window (it is one of the window's messages, awaited until drainMs).
      if (frame) setTimeout(() => s.conn!.send(frame), f.retryAfterMs ?? 100);
    }
  };

  const receiverFrame = (f: LoadFrame): void => {
    if (f.t !== "push" || f.u.k !== "msg") return;
    const t = now();
    if (inWindow(t)) r.delivered++;
    const body = f.u.msg.body;
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    const intended = view.getFloat64(0);
    if (inWindow(intended)) {
      r.latUs.push(Math.round((t - intended) * 1000));
      if (traceTo) {
        let line = `${(intended - go.measureFrom).toFixed(3)}\t${(t - intended).toFixed(3)}`;
        if (traceLag) line += `\t${(view.getFloat64(16) - intended).toFixed(3)}`;
        trace.push(line);
      }
      const s = senders[view.getUint32(8)];
      if (s) mark(s, view.getUint32(12), DELIVERED);
    }
  };

  // Connect everything, CONNECT_CONCURRENCY at a time.
  let nextPair = 0;
  let nextAddr = 0;
  const addr = (): string | undefined =>
    cfg.sourceAddrs.length > 0 ? cfg.sourceAddrs[nextAddr++ % cfg.sourceAddrs.length] : undefined;
  const connector = async (): Promise<void> => {
    for (let i = nextPair++; i < cfg.pairs.length; i = nextPair++) {
      const pair = cfg.pairs[i]!;
      const receiver = await open(cfg.target, pair.receiverToken, addr(), receiverFrame, onClose);
      // Created first: frames may follow `welcome` in the same read.
      const s: Sender = {
        index: i,
        conv: pair.conv,
        reqId: 0,
        inflight: new Map(),
        marks: new Uint8Array(64),
      };
      s.conn = await open(cfg.target, pair.senderToken, addr(), (f) => senderFrame(s, f), onClose);
      senders[i] = s;
      conns.push(receiver, s.conn);
    }
  };
  await Promise.all(Array.from({ length: CONNECT_CONCURRENCY }, connector));
  process.stdout.write(JSON.stringify({ ready: true, connections: conns.length }) + "\n");

  go = JSON.parse((await input.next()).value as string) as Go;
  const ackTimer = setInterval(() => {
    for (const c of conns) c.flushIdleAck();
  }, 1000);
  let cpu0 = process.cpuUsage();
  let wall0 = 0;
  const loopDelay = monitorEventLoopDelay({ resolution: 1 });
  const gc = new PerformanceObserver((list) => {
    if (!inWindow(now())) return;
    for (const e of list.getEntries()) {
      r.gcMs += e.duration;
      r.gcMaxMs = Math.max(r.gcMaxMs, e.duration);
    }
  });
  setTimeout(() => {
    cpu0 = process.cpuUsage();
    wall0 = now();
    loopDelay.enable();
    gc.observe({ entryTypes: ["gc"] });
  }, go.measureFrom - now());
  const windowEnd = new Promise<void>((resolve) =>
    setTimeout(() => {
      const cpu = process.cpuUsage(cpu0);
      r.cpuMs = (cpu.user + cpu.system) / 1000;
      loopDelay.disable();
      gc.disconnect();
      r.loopDelayP99Ms = loopDelay.percentile(99) / 1e6;
      r.loopDelayMaxMs = loopDelay.max / 1e6;
      r.windowMs = now() - wall0;
      stopping = true;
      resolve();
    }, go.measureTo - now()),
  );
  await new Promise((resolve) => setTimeout(resolve, go.startAt - now()));

  if (cfg.mode === "closed") {
    for (const s of senders) for (let k = 0; k < cfg.window; k++) sendMessage(s, now());
  } else {
    // Message n of this process is due at startAt + (n + phase) / rate, from sender n mod P:
    // each sender sends every P / rate seconds, the senders evenly staggered.
    const interval = 1000 / cfg.ratePerS;
    const first = go.startAt + cfg.phase * interval;
    let n = 0;
    const tick = (): void => {
      const t = now();
      const until = Math.min(t, go.measureTo);
      for (let due = first + n * interval; due <= until; due = first + ++n * interval) {
        if (inWindow(due)) {
          r.offered++;
          r.lagUs.push(Math.round((t - due) * 1000));
        }
        sendMessage(senders[n % senders.length]!, due);
      }
      if (t < go.measureTo) setTimeout(tick, 1);
    };
    tick();
  }

  await windowEnd;
  // Wait for the messages of the window still on their way.
  const drainEnd = now() + go.drainMs;
  while (r.latUs.length < expected && now() < drainEnd)
    await new Promise((resolve) => setTimeout(resolve, 10));
  r.lost = expected - r.latUs.length;
  if (traceTo) writeFileSync(`${traceTo}-${process.pid}.tsv`, trace.join("\n") + "\n");
  for (const s of senders) for (const m of s.marks) if (m === ACKED) r.ackedNotDelivered++;
  clearInterval(ackTimer);
  process.stdout.write(JSON.stringify(r) + "\n", () => {
    for (const c of conns) c.close();
    process.exit(0);
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`direct-load: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
