import { listFlag, startBench, type BenchResult, type BenchServer, type Scenario } from "../harness.ts";
import type { LoadOptions, LoadPair, Transport } from "../load/direct-load.ts";
import type { Provisioner } from "../provision.ts";
import {
  TRANSPORT_NAME,
  closedLoop,
  directFlags,
  measureRawRelay,
  meteredDirectLoad,
  type DirectFlags,
} from "./raw-relay.ts";

// direct-max and direct-rate: `pairs` 1:1 conversations, one sender and one receiver connection
// each (2 x pairs connections), over TCP and/or WebSocket binary, against `parley serve` with
// durable commits; the load client is load/direct-load.ts (spread over --load-procs processes).
// Each transport (and each rate) gets a freshly provisioned server.
// - direct-max: closed loop, `window` sends in flight per sender: the most delivered msg/s. The
//   raw relay (raw-relay.ts) is measured first with the same load, and the line carries
//   raw_relay_delivered_per_s and raw_relay_ratio (--raw-relay off to skip it).
// - direct-rate: open loop at each of --rates (total msg/s): latency from the intended send time
//   to the receiver's push.

const SERVER_FLAGS = ["--max-connections-per-ip", "0"];

async function provisionPairs(p: Provisioner, n: number): Promise<LoadPair[]> {
  const users = await p.users(n * 2);
  const out = new Array<LoadPair>(n);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < n; i = next++) {
      const [s, r] = [users[2 * i]!, users[2 * i + 1]!];
      out[i] = { senderToken: s.token, receiverToken: r.token, conv: await p.direct(s, r) };
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  return out;
}

/** One load run against a fresh server; the result line without its scenario fields. */
async function againstServer(
  f: DirectFlags,
  transport: Transport,
  options: (target: LoadOptions["target"], pairs: LoadPair[]) => LoadOptions,
): Promise<Record<string, unknown>> {
  const serverFlags = [...SERVER_FLAGS, ...f.serverFlags];
  const { bench, setup: pairs } = await startBench((p) => provisionPairs(p, f.pairs), serverFlags);
  try {
    return {
      transport: TRANSPORT_NAME[transport],
      ...(await meteredDirectLoad(
        bench.server.pid,
        options(target(bench, transport), pairs),
        f.bodyBytes,
        bench.server.metricsPort,
      )),
      durable: true,
      server_flags: serverFlags.join(" "),
    };
  } finally {
    await bench.stop();
  }
}

function target(bench: BenchServer, transport: Transport): LoadOptions["target"] {
  return { transport, host: "127.0.0.1", tcpPort: bench.server.tcpPort, wsUrl: bench.wsUrl };
}

export const directMax: Scenario = {
  name: "direct-max",
  help:
    "1:1 closed loop, max delivered msg/s, vs raw-relay (--pairs 1000 --window 4 --transport tcp|ws|both " +
    "--load-procs 1 --duration 10 --warmup 2 --raw-relay on|off)",
  async run(flags) {
    const f = directFlags(flags);
    const withRelay = (flags.get("raw-relay") ?? "on") !== "off";
    const out: BenchResult[] = [];
    for (const t of f.transports) {
      const relay = withRelay ? await measureRawRelay(f, t) : undefined;
      const line: BenchResult = {
        scenario: "direct-max",
        window: f.window,
        ...(await againstServer(f, t, (target, pairs) => closedLoop(f, target, pairs))),
      };
      if (relay) {
        const relayed = relay.delivered_per_s as number;
        line.raw_relay_delivered_per_s = relayed;
        line.raw_relay_ratio =
          relayed > 0 ? Number(((line.delivered_per_s as number) / relayed).toFixed(3)) : null;
      }
      out.push(line);
    }
    return out;
  },
};

export const directRate: Scenario = {
  name: "direct-rate",
  help:
    "1:1 open loop at fixed total rates, latency from the intended send time (--pairs 1000 " +
    "--rates 2000,10000,20000 --transport tcp|ws|both --load-procs 1 --duration 10 --warmup 2 " +
    "--raw-relay on|off: the same load against the bare relay first, the latency floor)",
  async run(flags) {
    const f = directFlags(flags);
    const rates = listFlag(flags, "rates", [2000, 10000, 20000]);
    const withRelay = (flags.get("raw-relay") ?? "on") !== "off";
    const out: BenchResult[] = [];
    for (const t of f.transports) {
      for (const rate of rates) {
        // What the transport and the load client alone give at this rate on this machine: no
        // server can have a lower latency in the same run.
        const floor = withRelay ? await measureRawRelay(f, t, rate) : undefined;
        const run = await againstServer(f, t, (target, pairs) => ({
          ...closedLoop(f, target, pairs),
          mode: "open",
          ratePerS: rate,
        }));
        out.push({
          scenario: "direct-rate",
          rate_per_s: rate,
          ...run,
          ...(floor
            ? {
                raw_relay_p50_ms: floor.p50_ms,
                raw_relay_p99_ms: floor.p99_ms,
                raw_relay_p999_ms: floor.p999_ms,
                raw_relay_delivered_per_s: floor.delivered_per_s,
              }
            : {}),
        });
      }
    }
    return out;
  },
};
