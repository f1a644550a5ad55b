import { spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import {
  ProcessMeter,
  listFlag,
  numberFlag,
  stringFlag,
  type BenchFlags,
  type BenchResult,
  type Scenario,
} from "../harness.ts";
import { runDirectLoad, type LoadOptions, type LoadPair, type Transport } from "../load/direct-load.ts";
import { profileArgs } from "../proc-stats.ts";
import { ServerMetricsWindow } from "../server-metrics.ts";

// raw-relay: the direct load client (closed loop, as direct-max) against raw-relay-server.ts, a
// relay with no auth, storage, validation or limits that answers `send` with `sent` and forwards
// the message to the paired receiver: what moving these frames over this transport, with these
// codecs and this load client, costs on this machine, i.e. the ceiling for direct-max. Measured
// once per invocation and configuration: direct-max runs it first (unless --raw-relay off) and
// reports its own throughput as a ratio of it; `npm run bench -- direct-max raw-relay` then
// prints the relay lines without measuring twice. With --rates, it also runs the open loop of
// direct-rate against the relay: the latency floor of the load client and transport at each rate.
// server_* fields are the relay process's.

/** The flags direct-max, direct-rate and raw-relay share. */
export interface DirectFlags {
  pairs: number;
  window: number;
  warmupS: number;
  durationS: number;
  loadProcs: number;
  bodyBytes: number;
  sourceAddrs: string[];
  transports: Transport[];
  /** Extra `parley serve` flags (--server-flags "--max-commit-queue-ms 0"). */
  serverFlags: string[];
}

export function directFlags(flags: BenchFlags): DirectFlags {
  const transport = stringFlag(flags, "transport", ["tcp", "ws", "both"], "both");
  const addrs = numberFlag(flags, "source-addrs", 1);
  return {
    pairs: numberFlag(flags, "pairs", 1000),
    window: numberFlag(flags, "window", 4),
    warmupS: numberFlag(flags, "warmup", 2),
    durationS: numberFlag(flags, "duration", 10),
    loadProcs: numberFlag(flags, "load-procs", 1),
    bodyBytes: Math.max(16, numberFlag(flags, "body-bytes", 32)),
    // 127.0.0.1-127.0.0.N all reach the loopback listener; with one, the OS picks.
    sourceAddrs: addrs > 1 ? Array.from({ length: addrs }, (_, i) => `127.0.0.${i + 1}`) : [],
    transports: transport === "both" ? ["tcp", "ws"] : [transport],
    serverFlags: (flags.get("server-flags") ?? "").split(/\s+/).filter(Boolean),
  };
}

export const TRANSPORT_NAME: Record<Transport, string> = { tcp: "tcp", ws: "ws-binary" };

/** The load options of a closed-loop run of `f` against `target`. */
export function closedLoop(f: DirectFlags, target: LoadOptions["target"], pairs: LoadPair[]): LoadOptions {
  return {
    target,
    pairs,
    mode: "closed",
    window: f.window,
    ratePerS: 0,
    bodyBytes: f.bodyBytes,
    warmupS: f.warmupS,
    durationS: f.durationS,
    loadProcs: f.loadProcs,
    sourceAddrs: f.sourceAddrs,
  };
}

interface Relay {
  pid: number;
  tcpPort: number;
  httpPort: number;
  stop(): Promise<void>;
}

function startRelay(): Promise<Relay> {
  const child = spawn(
    process.execPath,
    [...profileArgs(), "--import", "tsx", join(import.meta.dirname, "../raw-relay-server.ts")],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await exited;
  };
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`raw relay exited with ${code}`)));
    createInterface({ input: child.stdout })
      .once("line", (line) => {
        const ports = JSON.parse(line) as { tcpPort: number; httpPort: number };
        resolve({ pid: child.pid!, ...ports, stop });
      })
      .on("error", reject);
  });
}

const measured = new Map<string, BenchResult>();

/** The raw-relay line for `f` over `transport`, closed loop or (with `rate`) open loop at `rate`
 * msg/s: measured now, or earlier in this invocation. */
export async function measureRawRelay(
  f: DirectFlags,
  transport: Transport,
  rate?: number,
): Promise<BenchResult> {
  const key = JSON.stringify({ ...f, transports: [transport], rate });
  const done = measured.get(key);
  if (done) return done;
  const relay = await startRelay();
  try {
    const pairs: LoadPair[] = Array.from({ length: f.pairs }, (_, i) => ({
      senderToken: `send:${i}`,
      receiverToken: `recv:c${i}`,
      conv: `c${i}`,
    }));
    const target = {
      transport,
      host: "127.0.0.1",
      tcpPort: relay.tcpPort,
      wsUrl: `ws://127.0.0.1:${relay.httpPort}/v1/ws`,
    };
    const closed = closedLoop(f, target, pairs);
    const result: BenchResult = {
      scenario: "raw-relay",
      ...(rate === undefined ? { window: f.window } : { mode: "open", rate_per_s: rate }),
      transport: TRANSPORT_NAME[transport],
      ...(await meteredDirectLoad(
        relay.pid,
        rate === undefined ? closed : { ...closed, mode: "open", ratePerS: rate },
        f.bodyBytes,
      )),
      durable: false,
    };
    measured.set(key, result);
    return result;
  } finally {
    await relay.stop();
  }
}

/** Runs the direct load client with `options`, metering the process `pid` (the server or the
 * relay) over the measured window: the load's fields, then the server_* ones, as direct-max,
 * direct-rate and raw-relay report them. */
export async function meteredDirectLoad(
  pid: number,
  options: LoadOptions,
  bodyBytes: number,
  /** The server's metrics port (a Parley server; the bare relay has none). */
  metricsPort?: number,
): Promise<Record<string, unknown>> {
  const meter = new ProcessMeter(pid);
  const own = metricsPort !== undefined ? await ServerMetricsWindow.open(metricsPort) : undefined;
  let server = { cpu_pct: 0, rss_mb: 0, rss_peak_mb: 0 };
  const load = await runDirectLoad(
    options,
    () => {
      meter.start();
      void own?.start();
    },
    () => {
      server = meter.stop();
      void own?.stop();
    },
  );
  return {
    ...(await own?.result()),
    ...load,
    server_cpu_pct: server.cpu_pct,
    server_rss_mb: server.rss_mb,
    server_rss_peak_mb: server.rss_peak_mb,
    // CPU of everything else on the machine meanwhile (other users' processes, the kernel);
    // approximate (/proc/stat against per-process ticks and cpuUsage): +-15 points.
    other_cpu_pct: load.machine_cpu_pct - load.client_cpu_pct - server.cpu_pct,
    body_bytes: bodyBytes,
  };
}

export const rawRelay: Scenario = {
  name: "raw-relay",
  help:
    "load client vs a bare relay process, the transport's ceiling (--pairs 1000 --window 4 --transport both " +
    "--load-procs 1 --duration 10 --warmup 2; with --rates: also open loop at those rates, the latency floor)",
  async run(flags) {
    const f = directFlags(flags);
    const rates = flags.has("rates") ? listFlag(flags, "rates", []) : [];
    const out: BenchResult[] = [];
    for (const t of f.transports) {
      out.push(await measureRawRelay(f, t));
      for (const rate of rates) out.push(await measureRawRelay(f, t, rate));
    }
    return out;
  },
};
