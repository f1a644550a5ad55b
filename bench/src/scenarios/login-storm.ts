import { rmSync } from "node:fs";
import {
  ProcessMeter,
  numberFlag,
  percentile,
  sleep,
  stringFlag,
  type BenchResult,
  type Scenario,
} from "../harness.ts";
import type { ConnectPhase } from "../load/idle-load.ts";
import {
  LoadProcess,
  addCounts,
  mergeSorted,
  provisionDevices,
  provisionDir,
  sourceAddresses,
  splitLoad,
  startServer,
  tcpCounters,
} from "./idle.ts";

// login-storm: `clients` devices connect and send hello with their token all at the same instant
// (a server restart, a network coming back), spread over load processes and 127.0.0.x source
// addresses. Time to welcome counts from that instant, for every client. Each transport gets its
// own fresh server on the same provisioned data.

const now = (): number => performance.timeOrigin + performance.now();

export const loginStorm: Scenario = {
  name: "login-storm",
  help:
    "N clients connect and authenticate at once: connects/s, time to welcome, failures " +
    "(--clients 10000 --transport tcp|ws|both --procs 2 --addresses 8 --devices-per-user 1 --timeout 60 " +
    "--ramp-ms 0: spread the starts over that long instead of all at once)",
  async run(flags) {
    const clients = Math.floor(numberFlag(flags, "clients", 10_000));
    const transport = stringFlag(flags, "transport", ["tcp", "ws", "both"] as const, "both");
    const procs = Math.floor(numberFlag(flags, "procs", 2));
    const devicesPerUser = numberFlag(flags, "devices-per-user", 1);
    const timeoutMs = numberFlag(flags, "timeout", 60) * 1000;
    const rampMs = flags.has("ramp-ms") ? numberFlag(flags, "ramp-ms", 1) : 0;
    const addresses = sourceAddresses(flags);
    if (clients / procs > 19_000) throw new Error("each load process must stay under the 20,000 fd limit");
    const { dir, setup: tokens } = await provisionDir((p) => provisionDevices(p, clients, devicesPerUser));
    const results: BenchResult[] = [];
    try {
      for (const t of transport === "both" ? (["tcp", "ws"] as const) : [transport]) {
        results.push(
          await storm(dir, tokens, t, { procs, addresses, timeoutMs, rampMs, devicesPerUser }).catch(
            (e: unknown) => ({
              scenario: "login-storm",
              transport: t === "ws" ? "ws-binary" : "tcp",
              connections: clients,
              error: e instanceof Error ? e.message : String(e),
            }),
          ),
        );
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    return results;
  },
};

async function storm(
  dir: string,
  tokens: string[],
  transport: "tcp" | "ws",
  opts: { procs: number; addresses: string[]; timeoutMs: number; rampMs: number; devicesPerUser: number },
): Promise<BenchResult> {
  const server = await startServer(dir);
  const loads: LoadProcess[] = [];
  try {
    await sleep(1000);
    const configs = splitLoad(
      {
        mode: "storm",
        transport,
        host: "127.0.0.1",
        tcpPort: server.tcpPort,
        wsUrl: `ws://127.0.0.1:${server.httpPort}/v1/ws`,
        concurrency: 0,
        timeoutMs: opts.timeoutMs,
        rampMs: opts.rampMs,
      },
      tokens,
      opts.addresses,
      Math.ceil(tokens.length / opts.procs),
    );
    for (const cfg of configs) loads.push(new LoadProcess("idle-load.ts", cfg));
    await Promise.all(loads.map((l) => l.next("ready")));
    const tcp0 = tcpCounters();
    const meter = new ProcessMeter(server.pid);
    const at = now() + 300;
    for (const l of loads) l.send({ cmd: "go", at });
    await sleep(300);
    meter.start();
    const phases = await Promise.all(loads.map((l) => l.next<ConnectPhase>("result")));
    const serverStats = meter.stop();
    const tcp1 = tcpCounters();

    const welcomed = phases.reduce((s, p) => s + p.welcomed, 0);
    const failed = phases.reduce((s, p) => s + p.failed, 0);
    const failures: Record<string, number> = {};
    for (const p of phases) addCounts(failures, p.failures);
    const lastWelcome = Math.max(...phases.map((p) => p.lastWelcomeAt));
    const elapsedMs = welcomed > 0 ? lastWelcome - at : 0; // from the first scheduled start
    const welcome = mergeSorted(phases.map((p) => p.welcomeMs));
    const open = mergeSorted(phases.map((p) => p.openMs));
    const delta = (k: string): number => (tcp1[k] ?? 0) - (tcp0[k] ?? 0);
    return {
      scenario: "login-storm",
      transport: transport === "ws" ? "ws-binary" : "tcp",
      connections: tokens.length,
      offered_per_s: null,
      sent_per_s: null,
      delivered_per_s: null,
      welcomed,
      connects_per_s: elapsedMs > 0 ? Math.round(welcomed / (elapsedMs / 1000)) : 0,
      elapsed_ms: Math.round(elapsedMs),
      latency:
        opts.rampMs > 0
          ? `time to welcome from each client's scheduled start (starts spread over ${opts.rampMs} ms)`
          : "time to welcome from the common start instant",
      ramp_ms: opts.rampMs,
      offered_connects_per_s: opts.rampMs > 0 ? Math.round(tokens.length / (opts.rampMs / 1000)) : null,
      p50_ms: percentile(welcome, 0.5),
      p99_ms: percentile(welcome, 0.99),
      p999_ms: percentile(welcome, 0.999),
      max_ms: percentile(welcome, 1),
      open_p50_ms: percentile(open, 0.5),
      open_p99_ms: percentile(open, 0.99),
      errors: failed,
      failures,
      // System-wide kernel counters over the storm: SYNs dropped because the accept queue was full.
      listen_overflows: delta("ListenOverflows"),
      listen_drops: delta("ListenDrops"),
      server_cpu_pct: serverStats.cpu_pct,
      client_cpu_pct: phases.reduce((s, p) => s + p.cpuPct, 0),
      client_cpu_pct_max_process: Math.max(...phases.map((p) => p.cpuPct)),
      server_rss_mb: serverStats.rss_mb,
      server_rss_peak_mb: serverStats.rss_peak_mb,
      load_processes: loads.length,
      source_addresses: opts.addresses.length,
      devices_per_user: opts.devicesPerUser,
      durable: true,
    };
  } finally {
    await Promise.all(loads.map((l) => l.close()));
    await server.stop();
  }
}
