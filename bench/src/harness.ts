import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServerProcess, type ServerProcess } from "../../packages/cli/src/testing/server-process.ts";
import { cpuPct, cpuSample, profileArgs, rssMb, type CpuSample } from "./proc-stats.ts";
import type { CoreOptions } from "../../packages/server/src/core/options.ts";
import { Provisioner } from "./provision.ts";

// What every scenario shares: a fresh data directory, provisioned in-process (provision.ts), then
// the server started on it as its own process with durable storage (SQLite WAL,
// synchronous=FULL), load processes, and CPU/RSS sampling of the server.

/** The options every scenario receives: `npm run bench -- <scenario> --name value ...`. */
export type BenchFlags = ReadonlyMap<string, string>;

/** The number given as --name (fallback if absent); positive, or also 0 with `zero`. */
export function numberFlag(flags: BenchFlags, name: string, fallback: number, zero = false): number {
  const raw = flags.get(name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0 || (n === 0 && !zero)) {
    throw new Error(`--${name} must be a ${zero ? "non-negative" : "positive"} number, got "${raw}"`);
  }
  return n;
}

export function listFlag(flags: BenchFlags, name: string, fallback: number[]): number[] {
  const raw = flags.get(name);
  if (raw === undefined) return fallback;
  return raw.split(",").map((v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be positive numbers, got "${raw}"`);
    return n;
  });
}

export function stringFlag<T extends string>(
  flags: BenchFlags,
  name: string,
  allowed: readonly T[],
  fallback: T,
): T {
  const raw = flags.get(name) ?? fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new Error(`--${name} must be one of ${allowed.join(", ")}, got "${raw}"`);
  }
  return raw as T;
}

/** One result line; the fields the issue asks for, plus whatever the scenario adds. */
export type BenchResult = Record<string, unknown> & { scenario: string };

export interface Scenario {
  name: string;
  /** One line for `npm run bench -- --help`. */
  help: string;
  run(flags: BenchFlags): Promise<BenchResult[]>;
}

export interface BenchServer {
  server: ServerProcess;
  dataDir: string;
  httpUrl: string;
  wsUrl: string;
  /** Stops the server and removes the data directory. */
  stop(): Promise<void>;
}

/** A fresh data directory, `setup` run against it in-process, then the server on it. Extra
 * server flags go in `args` (per-IP limits are off: benchmarks connect from one address). */
export async function startBench<T>(
  setup: (p: Provisioner) => Promise<T>,
  args: string[] = [],
  /** Core options of the provisioning core; give the server the matching flags in `args`. */
  coreOptions: Partial<CoreOptions> = {},
): Promise<{ bench: BenchServer; setup: T }> {
  const dataDir = mkdtempSync(join(tmpdir(), "parley-bench-"));
  const p = await Provisioner.open(dataDir, coreOptions);
  let result: T;
  try {
    result = await setup(p);
  } finally {
    await p.close();
  }
  // The metrics listener on a free port: scenarios read the server's own figures from it
  // (server-metrics.ts).
  const server = await startServerProcess(
    ["--max-connections-per-ip", "0", "--metrics-port", "0", ...args],
    dataDir,
  );
  const bench: BenchServer = {
    server,
    dataDir,
    httpUrl: `http://127.0.0.1:${server.httpPort}`,
    wsUrl: `ws://127.0.0.1:${server.httpPort}/v1/ws`,
    async stop() {
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return { bench, setup: result };
}

/** Runs `script` (a file in bench/src) as a load process with `config` as its JSON argument;
 * resolves with the last JSON line it prints. */
export function runLoadProcess<R>(script: string, config: unknown): Promise<R> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [...profileArgs(), "--import", "tsx", join(import.meta.dirname, script), JSON.stringify(config)],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.on("error", reject);
    child.on("exit", (code) => {
      if (code !== 0) return reject(new Error(`load process ${script} exited with ${String(code)}`));
      try {
        resolve(JSON.parse(out.trim().split("\n").pop()!) as R);
      } catch (err) {
        reject(new Error(`load process ${script} printed no JSON result`, { cause: err }));
      }
    });
  });
}

/** Samples a process's CPU between start() and stop(), and its peak RSS while running. */
export class ProcessMeter {
  private c0: CpuSample | undefined;
  private peakRss = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly pid: number) {}

  start(): void {
    this.c0 = cpuSample(this.pid);
    this.peakRss = rssMb(this.pid);
    this.timer = setInterval(() => (this.peakRss = Math.max(this.peakRss, rssMb(this.pid))), 250);
  }

  /** CPU in percent of one core since start(), RSS now and at its peak, in MB. */
  stop(): { cpu_pct: number; rss_mb: number; rss_peak_mb: number } {
    clearInterval(this.timer);
    const rss = rssMb(this.pid);
    return {
      cpu_pct: this.c0 ? Math.round(cpuPct(this.c0, cpuSample(this.pid))) : 0,
      rss_mb: Math.round(rss),
      rss_peak_mb: Math.round(Math.max(this.peakRss, rss)),
    };
  }
}

/** Nearest-rank percentile of sorted values, in ms with microsecond precision. */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  const v = sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return Number(v.toFixed(3));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
