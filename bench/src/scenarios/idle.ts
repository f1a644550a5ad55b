import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";
import { createInterface } from "node:readline";
import { WebSocket } from "ws";
import { startServerProcess, type ServerProcess } from "../../../packages/cli/src/testing/server-process.ts";
import {
  ProcessMeter,
  listFlag,
  numberFlag,
  percentile,
  sleep,
  stringFlag,
  type BenchFlags,
  type BenchResult,
  type Scenario,
} from "../harness.ts";
import type { ConnectPhase, ConnsLoadConfig, HoldPhase } from "../load/idle-load.ts";
import { Provisioner } from "../provision.ts";

// idle: N authenticated connections that then do nothing but answer the server's heartbeat
// pings; the figure is the server's RSS per connection over the same server with none. The
// connections come from several load processes (each under the 20,000 fd limit) and several
// 127.0.0.x source addresses (ephemeral ports are per source address). The server process has
// the same fd limit, so a count it cannot hold is measured at the largest multiple of 1000 that
// fits and reported with "blocked".
// Memory is read on the empty server (once its RSS has stopped falling for --settle seconds: a
// fresh server hands startup memory back for about a minute), with the first half of the connections, and with all of
// them after --hold seconds (long enough for a heartbeat round), each time after forced full GCs
// (the server runs with --inspect on a local port; --gc 0 turns that off), so that the readings
// compare live memory rather than whatever garbage the startup or the connect ramp left. The
// empty server holds slack (heap and allocator pages freed after startup) that the first
// connections fill without growing RSS: the second half over the first gives the marginal cost.
// Kernel socket memory is not in RSS and not counted.
//
// Also the shared pieces of login-storm: provisioning devices, the interactive load processes.

/** Source addresses the load processes connect from (all route to loopback on Linux). */
export function sourceAddresses(flags: BenchFlags): string[] {
  const count = numberFlag(flags, "addresses", 8);
  return Array.from({ length: Math.min(count, 254) }, (_, i) => `127.0.0.${i + 2}`);
}

/** Device tokens for `n` connections: ceil(n / perUser) users with up to `perUser` devices each
 * (a user may hold 32 connections). Token i is device floor(i / users) of user i % users. */
export async function provisionDevices(p: Provisioner, n: number, perUser: number): Promise<string[]> {
  if (perUser > 32) throw new Error("--devices-per-user must be at most 32 (maxConnectionsPerUser)");
  const users = await p.users(Math.ceil(n / perUser));
  const tokens = users.map((u) => u.token);
  const extra: Array<{ name: string; k: number }> = [];
  for (let k = 1; tokens.length + extra.length < n; k++) {
    for (const u of users) if (tokens.length + extra.length < n) extra.push({ name: u.name, k });
  }
  const more = new Array<string>(extra.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < extra.length; i = next++) {
      more[i] = (await p.core.login(extra[i]!.name, "bench-password", `bench-${extra[i]!.k}`)).token;
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  return [...tokens, ...more].slice(0, n);
}

/** A fresh data directory provisioned in-process; the caller starts servers on it (one per
 * measurement, so each starts from the same empty state) and removes it. */
export async function provisionDir<T>(
  setup: (p: Provisioner) => Promise<T>,
): Promise<{ dir: string; setup: T }> {
  const dir = mkdtempSync(join(tmpdir(), "parley-bench-"));
  const p = await Provisioner.open(dir);
  try {
    return { dir, setup: await setup(p) };
  } finally {
    await p.close();
  }
}

/** `parley serve` on `dir` with the per-address limit off (as startBench does). */
export function startServer(
  dir: string,
  args: string[] = [],
  nodeArgs: string[] = [],
): Promise<ServerProcess> {
  return startServerProcess(["--max-connections-per-ip", "0", ...args], dir, { nodeArgs });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** A DevTools-protocol session with a process started with --inspect=127.0.0.1:<port>: forced
 * full GCs (without them an RSS difference is mostly how much garbage each reading happened to
 * hold), the V8 heap in use, and the sampling heap profiler (live memory by allocation site). */
class Inspector {
  private readonly pending = new Map<number, (result: unknown) => void>();
  private id = 0;

  private constructor(private readonly ws: WebSocket) {
    ws.on("message", (data: Buffer) => {
      const m = JSON.parse(data.toString()) as { id?: number; result?: unknown };
      if (m.id !== undefined) this.pending.get(m.id)?.(m.result);
    });
  }

  static async open(port: number): Promise<Inspector> {
    const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as Array<{
      webSocketDebuggerUrl: string;
    }>;
    const ws = new WebSocket(targets[0]!.webSocketDebuggerUrl);
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    return new Inspector(ws);
  }

  call<T = unknown>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    return new Promise((resolve) => {
      this.pending.set(++this.id, resolve as (r: unknown) => void);
      this.ws.send(JSON.stringify({ id: this.id, method, params }));
    });
  }

  /** Two full GCs, then the V8 heap in use and committed, in KiB. */
  async gc(): Promise<{ used: number; total: number }> {
    await this.call("HeapProfiler.collectGarbage");
    await this.call("HeapProfiler.collectGarbage");
    const u = await this.call<{ usedSize: number; totalSize: number }>("Runtime.getHeapUsage");
    return { used: Math.round(u.usedSize / 1024), total: Math.round(u.totalSize / 1024) };
  }

  /** The `top` allocation sites holding the most live memory since startSampling, in KiB. */
  async liveSites(top: number): Promise<Array<{ site: string; kib: number }>> {
    interface Node {
      callFrame: { functionName: string; url: string; lineNumber: number };
      selfSize: number;
      children: Node[];
    }
    const { profile } = await this.call<{ profile: { head: Node } }>("HeapProfiler.getSamplingProfile");
    await this.call("HeapProfiler.stopSampling");
    const bySite = new Map<string, number>();
    const walk = (node: Node): void => {
      const f = node.callFrame;
      const site = `${f.functionName || "(anonymous)"} ${f.url.split("/").slice(-2).join("/")}:${f.lineNumber + 1}`;
      if (node.selfSize > 0) bySite.set(site, (bySite.get(site) ?? 0) + node.selfSize);
      node.children.forEach(walk);
    };
    walk(profile.head);
    return [...bySite]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([site, bytes]) => ({ site, kib: Math.round(bytes / 1024) }));
  }

  close(): void {
    this.ws.close();
  }
}

/** Resident memory of a process, in KiB: all, anonymous (heap, buffers) and file-backed (the
 * node binary and libraries as far as touched). */
export function memKib(pid: number): { rss: number; anon: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name: string): number => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
  return { rss: field("VmRSS"), anon: field("RssAnon"), file: field("RssFile") };
}

interface MemSample {
  rss: number;
  anon: number;
  file: number;
  /** V8 heap in use after a full GC, and committed (KiB); 0 without --gc. */
  heap: number;
  heapTotal: number;
}

/** Waits until the process's RSS has not dropped by more than 1 MiB for `windowMs` (at most
 * `maxMs`); returns the seconds waited. A freshly started server hands memory back for about a
 * minute in steps of tens of MB (V8's memory reducer, in the main isolate and in the tsx loader
 * thread, whose heap the forced GC does not reach): a reading taken before that counts the
 * startup's leftovers as "empty", and the connections then seem to cost nothing. */
async function settleRss(pid: number, windowMs: number, maxMs: number): Promise<number> {
  const t0 = performance.now();
  const readings: Array<{ at: number; rss: number }> = [];
  for (;;) {
    const at = performance.now();
    readings.push({ at, rss: rssKib(pid) });
    while (readings.length > 1 && readings[0]!.at < at - windowMs) readings.shift();
    const dropped = Math.max(...readings.map((r) => r.rss)) - readings[readings.length - 1]!.rss;
    if ((at - t0 >= windowMs && dropped <= 1024) || at - t0 >= maxMs) break;
    await sleep(1000);
  }
  return Number(((performance.now() - t0) / 1000).toFixed(1));
}

async function sampleMemory(pid: number, inspector: Inspector | undefined): Promise<MemSample> {
  const heap = inspector ? await inspector.gc() : { used: 0, total: 0 };
  if (inspector) await sleep(500); // let freed pages go back to the OS
  return { ...memKib(pid), heap: heap.used, heapTotal: heap.total };
}

/** Soft limit on open files of a process, and how many it has open. */
export function fdUsage(pid: number): { limit: number; open: number } {
  const limits = readFileSync(`/proc/${pid}/limits`, "utf8");
  const m = /Max open files\s+(\d+|unlimited)/.exec(limits);
  const limit = m && m[1] !== "unlimited" ? Number(m[1]) : Number.POSITIVE_INFINITY;
  return { limit, open: readdirSync(`/proc/${pid}/fd`).length };
}

export function rssKib(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : 0;
}

/** Kernel TCP counters (system-wide): accept-queue overflows show up in a login storm. */
export function tcpCounters(): Record<string, number> {
  const lines = readFileSync("/proc/net/netstat", "utf8").split("\n");
  const out: Record<string, number> = {};
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const names = lines[i]!.split(/\s+/);
    const values = lines[i + 1]!.split(/\s+/);
    if (names[0] !== "TcpExt:") continue;
    for (let k = 1; k < names.length; k++) out[names[k]!] = Number(values[k]);
  }
  return out;
}

/** A load process (bench/src/load/<script>) driven by JSON lines: commands on its stdin, events
 * on its stdout. The config travels in a file (it can be megabytes of tokens). */
export class LoadProcess {
  private readonly child: ChildProcess;
  private readonly events: Array<Record<string, unknown>> = [];
  private waiter: { ev: string; resolve: (e: Record<string, unknown>) => void } | undefined;
  private exitCode: number | null | undefined;
  private readonly exited: Promise<void>;
  private readonly dir: string;

  constructor(script: string, config: unknown) {
    this.dir = mkdtempSync(join(tmpdir(), "parley-load-"));
    const file = join(this.dir, "config.json");
    writeFileSync(file, JSON.stringify(config));
    this.child = spawn(
      process.execPath,
      ["--import", "tsx", join(import.meta.dirname, "../load", script), file],
      { stdio: ["pipe", "pipe", "inherit"] },
    );
    createInterface({ input: this.child.stdout! }).on("line", (line) => {
      let ev: Record<string, unknown>;
      try {
        ev = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return; // not an event
      }
      if (this.waiter && ev.ev === this.waiter.ev) {
        const w = this.waiter;
        this.waiter = undefined;
        w.resolve(ev);
      } else this.events.push(ev);
    });
    this.exited = new Promise((resolve) =>
      this.child.once("exit", (code) => {
        this.exitCode = code;
        rmSync(this.dir, { recursive: true, force: true });
        resolve();
      }),
    );
  }

  /** The next event named `ev` (earlier events of other names are skipped); rejects if the
   * process exits first. */
  next<T = Record<string, unknown>>(ev: string): Promise<T> {
    const i = this.events.findIndex((e) => e.ev === ev);
    if (i >= 0) return Promise.resolve(this.events.splice(0, i + 1).pop() as T);
    return new Promise<T>((resolve, reject) => {
      this.waiter = { ev, resolve: resolve as (e: Record<string, unknown>) => void };
      void this.exited.then(() =>
        reject(new Error(`load process exited (${String(this.exitCode)}) before "${ev}"`)),
      );
    });
  }

  send(cmd: Record<string, unknown>): void {
    this.child.stdin!.write(JSON.stringify(cmd) + "\n");
  }

  /** Closes its stdin (it exits on that) and waits; kills it after 10 s. */
  async close(): Promise<void> {
    if (this.exitCode === undefined) {
      this.child.stdin!.end();
      const timer = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
      await this.exited;
      clearTimeout(timer);
    }
  }
}

/** Splits `tokens` over ceil(n / perProcess) load processes, each connecting from every source
 * address (rotated, so that each address carries a share of every process). */
export function splitLoad(
  base: Omit<ConnsLoadConfig, "tokens" | "localAddresses">,
  tokens: string[],
  addresses: string[],
  perProcess: number,
): ConnsLoadConfig[] {
  const procs = Math.max(1, Math.ceil(tokens.length / perProcess));
  const size = Math.ceil(tokens.length / procs);
  return Array.from({ length: procs }, (_, k) => ({
    ...base,
    tokens: tokens.slice(k * size, (k + 1) * size),
    localAddresses: addresses.map((_, j) => addresses[(j + k) % addresses.length]!),
  }));
}

/** Sorted merge of the processes' sorted samples. */
export function mergeSorted(lists: number[][]): number[] {
  return lists.flat().sort((a, b) => a - b);
}

export function addCounts(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

const MB = 1024;

async function measure(
  dir: string,
  tokens: string[],
  requested: number,
  transport: "tcp" | "ws",
  opts: {
    addresses: string[];
    perProcess: number;
    concurrency: number;
    holdS: number;
    devicesPerUser: number;
    gc: boolean;
    heapSites: number;
    settleS: number;
  },
): Promise<BenchResult> {
  const inspectPort = opts.gc ? await freePort() : undefined;
  const server = await startServer(dir, [], inspectPort ? [`--inspect=127.0.0.1:${inspectPort}`] : []);
  const loads: LoadProcess[] = [];
  let inspector: Inspector | undefined;
  try {
    if (inspectPort) inspector = await Inspector.open(inspectPort);
    if (inspector) await inspector.gc();
    const emptySettleS = await settleRss(server.pid, opts.settleS * 1000, 150_000);
    const fds = fdUsage(server.pid);
    // Keep 500 descriptors for the server's own files (SQLite, listeners, stdio, epoll, ...).
    const fits = Math.max(0, Math.min(tokens.length, fds.limit - fds.open - 500));
    const n = requested <= fits ? requested : Math.floor(fits / 1000) * 1000;
    const blocked = requested > fits ? `server fd limit ${fds.limit}` : null;
    const empty = await sampleMemory(server.pid, inspector);
    if (inspector && opts.heapSites > 0) {
      await inspector.call("HeapProfiler.startSampling", { samplingInterval: 4096 });
    }

    // At least two processes, an even number: the first half connects, then the second, so that
    // the second half's cost is measured over a server that already holds connections.
    const procs = 2 * Math.max(1, Math.ceil(n / opts.perProcess / 2));
    const configs = splitLoad(
      {
        mode: "idle",
        transport,
        host: "127.0.0.1",
        tcpPort: server.tcpPort,
        wsUrl: `ws://127.0.0.1:${server.httpPort}/v1/ws`,
        // In flight in all stays far under the server's accept backlog: the ramp measures the
        // server, not SYN retransmits (half of the processes connect at a time).
        concurrency: Math.max(1, Math.floor(opts.concurrency / (procs / 2))),
        timeoutMs: 0,
        rampMs: 0,
      },
      tokens.slice(0, n),
      opts.addresses,
      Math.ceil(n / procs),
    );
    for (const cfg of configs) loads.push(new LoadProcess("idle-load.ts", cfg));
    await Promise.all(loads.map((l) => l.next("ready")));
    const connectHalf = async (group: LoadProcess[]): Promise<ConnectPhase[]> => {
      for (const l of group) l.send({ cmd: "go" });
      return Promise.all(group.map((l) => l.next<ConnectPhase>("connected")));
    };
    const t0 = performance.now();
    const first = await connectHalf(loads.slice(0, procs / 2));
    const connectS1 = (performance.now() - t0) / 1000;
    await sleep(3000);
    const half = await sampleMemory(server.pid, inspector);
    const t1 = performance.now();
    const second = await connectHalf(loads.slice(procs / 2));
    const connectS = connectS1 + (performance.now() - t1) / 1000;
    const phases = [...first, ...second];

    await sleep(3000);
    const rssSettled = rssKib(server.pid);
    const fdsWith = fdUsage(server.pid).open;
    const meter = new ProcessMeter(server.pid);
    meter.start();
    await sleep(opts.holdS * 1000);
    const serverStats = meter.stop();
    const rssNoGc = rssKib(server.pid);
    const withSettleS = await settleRss(server.pid, 10_000, 60_000);
    const withAll = await sampleMemory(server.pid, inspector);
    const sites = inspector && opts.heapSites > 0 ? await inspector.liveSites(opts.heapSites) : undefined;
    for (const l of loads) l.send({ cmd: "stop" });
    const holds = await Promise.all(loads.map((l) => l.next<HoldPhase>("result")));

    const welcomed = phases.reduce((s, p) => s + p.welcomed, 0);
    const failures: Record<string, number> = {};
    const drops: Record<string, number> = {};
    for (const p of phases) addCounts(failures, p.failures);
    for (const h of holds) addCounts(drops, h.drops);
    const failed = phases.reduce((s, p) => s + p.failed, 0);
    const dropped = holds.reduce((s, h) => s + h.dropped, 0);
    const welcome = mergeSorted(phases.map((p) => p.welcomeMs));
    const per = (kib: number, conns = n): number => (conns > 0 ? Number((kib / conns).toFixed(2)) : 0);
    const perConn = per(withAll.rss - empty.rss);
    const nHalf = first.reduce((s, p) => s + p.welcomed, 0);
    const nSecond = second.reduce((s, p) => s + p.welcomed, 0);
    const marginal = per(withAll.rss - half.rss, nSecond);
    return {
      scenario: "idle",
      transport: transport === "ws" ? "ws-binary" : "tcp",
      connections: welcomed,
      requested_connections: requested,
      blocked,
      offered_per_s: null,
      sent_per_s: null,
      delivered_per_s: null,
      latency: `connect to welcome while ramping up, ${opts.concurrency} handshakes in flight in all`,
      p50_ms: percentile(welcome, 0.5),
      p99_ms: percentile(welcome, 0.99),
      p999_ms: percentile(welcome, 0.999),
      errors: failed + dropped,
      failures,
      drops,
      pings_answered: holds.reduce((s, h) => s + h.pings, 0),
      connect_s: Number(connectS.toFixed(2)),
      connects_per_s: Math.round(welcomed / connectS),
      hold_s: opts.holdS,
      server_cpu_pct: serverStats.cpu_pct,
      client_cpu_pct: phases.reduce((s, p) => s + p.cpuPct, 0),
      client_cpu_pct_max_process: Math.max(...phases.map((p) => p.cpuPct)),
      client_cpu_pct_hold: holds.reduce((s, h) => s + h.cpuPct, 0),
      // RSS after full GCs (with --gc 1), empty server vs. all connected after the hold.
      gc_before_rss: opts.gc,
      server_rss_empty_mb: Math.round(empty.rss / MB),
      server_rss_mb: Math.round(withAll.rss / MB),
      server_rss_kib: withAll.rss,
      rss_per_conn_kib: perConn,
      anon_per_conn_kib: per(withAll.anon - empty.anon),
      // The second half of the connections over the first: what one more costs once the slack of
      // the empty server (heap and allocator pages left from startup) is used up.
      conns_first_half: nHalf,
      server_rss_half_mb: Math.round(half.rss / MB),
      rss_per_conn_kib_marginal: marginal,
      // The two estimates should agree: when they do not, memory was handed back (or taken)
      // during the run and rss_per_conn_kib is not to be trusted.
      baseline_suspect: perConn <= 0 || Math.abs(perConn - marginal) > Math.max(1, perConn / 2),
      v8_heap_per_conn_kib_marginal: per(withAll.heap - half.heap, nSecond),
      file_rss_delta_mb: Math.round((withAll.file - empty.file) / MB),
      v8_heap_empty_mb: Math.round(empty.heap / MB),
      v8_heap_committed_empty_mb: Math.round(empty.heapTotal / MB),
      v8_heap_mb: Math.round(withAll.heap / MB),
      v8_heap_per_conn_kib: per(withAll.heap - empty.heap),
      ...(sites
        ? {
            live_heap_by_site_b_per_conn: sites.map((x) => ({
              site: x.site,
              bytes_per_conn: Math.round((x.kib * 1024) / Math.max(1, n)),
            })),
          }
        : {}),
      settle_s: [emptySettleS, withSettleS],
      // Without GC: 3 s after the last welcome (garbage of the ramp included), end of the hold.
      server_rss_settled_mb: Math.round(rssSettled / MB),
      server_rss_end_no_gc_mb: Math.round(rssNoGc / MB),
      ...(blocked
        ? { projected_rss_mb_at_requested: Math.round((empty.rss + perConn * requested) / MB) }
        : {}),
      server_fds: fdsWith,
      server_fd_limit: fds.limit,
      load_processes: loads.length,
      source_addresses: opts.addresses.length,
      users: Math.ceil(tokens.length / opts.devicesPerUser),
      devices_per_user: opts.devicesPerUser,
      durable: true,
    };
  } finally {
    inspector?.close();
    await Promise.all(loads.map((l) => l.close()));
    await server.stop();
  }
}

export const idle: Scenario = {
  name: "idle",
  help:
    "idle authenticated connections, server RSS per connection (--conns 10000,50000 --transport tcp|ws|both " +
    "--hold 45 --addresses 8 --per-process 5000 --concurrency 256 --devices-per-user 1 --gc 1|0 --settle 30 --heap-sites 0: top live allocation sites)",
  async run(flags) {
    const conns = listFlag(flags, "conns", [10_000, 50_000]).map(Math.floor);
    const transport = stringFlag(flags, "transport", ["tcp", "ws", "both"] as const, "both");
    const devicesPerUser = numberFlag(flags, "devices-per-user", 1);
    const opts = {
      addresses: sourceAddresses(flags),
      perProcess: numberFlag(flags, "per-process", 5000),
      concurrency: numberFlag(flags, "concurrency", 256),
      // The server pings after 30 s of silence, checking every 15 s: by 45 s every connection has
      // answered one.
      holdS: numberFlag(flags, "hold", 45),
      devicesPerUser,
      gc: stringFlag(flags, "gc", ["0", "1"] as const, "1") === "1",
      heapSites: flags.has("heap-sites") ? Math.floor(numberFlag(flags, "heap-sites", 10)) : 0,
      // A fresh server hands back ~70 MB over one to two minutes (tcp 10k, third session of the
      // benchmark issue: empty 211 MB after a 30 s window, -0.76 KiB per connection; 139-144 MB
      // after 90 s, 6.0 KiB): a shorter window reads the startup's leftovers as "empty".
      settleS: numberFlag(flags, "settle", 90),
    };
    if (opts.perProcess > 19_000) throw new Error("--per-process must stay under the 20,000 fd limit");
    // Provision what the server can hold at most (it inherits this process's fd limit).
    const self = fdUsage(process.pid).limit;
    const most = Math.min(Math.max(...conns), Math.floor((self - 600) / 1000) * 1000);
    const { dir, setup: tokens } = await provisionDir((p) => provisionDevices(p, most, devicesPerUser));
    try {
      const results: BenchResult[] = [];
      for (const t of transport === "both" ? (["tcp", "ws"] as const) : [transport]) {
        for (const requested of conns) {
          // One failed measurement (a crashed server, say) is reported; the others still run.
          results.push(
            await measure(dir, tokens, requested, t, opts).catch((e: unknown) => ({
              scenario: "idle",
              transport: t === "ws" ? "ws-binary" : "tcp",
              requested_connections: requested,
              error: e instanceof Error ? e.message : String(e),
            })),
          );
        }
      }
      return results;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
