import { ProcessMeter, numberFlag, runLoadProcess, sleep, startBench, type Scenario } from "../harness.ts";
import type { DirectLoadConfig } from "../load-direct.ts";

// direct-ws: the first scenario (issue 2's baseline): `pairs` 1:1 pairs over WebSocket binary,
// each sender keeping `window` sends in flight (closed loop).

export const directWs: Scenario = {
  name: "direct-ws",
  help: "1:1 over WebSocket binary, closed loop (--pairs 100 --window 8 --duration 10 --warmup 2)",
  async run(flags) {
    const pairs = numberFlag(flags, "pairs", 100);
    const window = numberFlag(flags, "window", 8);
    const durationS = numberFlag(flags, "duration", 10);
    const warmupS = numberFlag(flags, "warmup", 2);
    const { bench, setup } = await startBench(async (p) => {
      const users = await p.users(pairs * 2);
      const out: DirectLoadConfig["pairs"] = [];
      for (let i = 0; i < pairs; i++) {
        const [s, r] = [users[2 * i]!, users[2 * i + 1]!];
        out.push({ senderToken: s.token, receiverToken: r.token, conv: await p.direct(s, r) });
      }
      return out;
    });
    try {
      const cfg: DirectLoadConfig = { wsUrl: bench.wsUrl, pairs: setup, window, warmupS, durationS };
      const load = runLoadProcess<Record<string, number>>("load-direct.ts", cfg);
      const meter = new ProcessMeter(bench.server.pid);
      await sleep(warmupS * 1000 + 1000);
      meter.start();
      await sleep((durationS - 1) * 1000);
      const server = meter.stop();
      const result = await load;
      return [
        {
          scenario: "direct-ws",
          transport: "ws-binary",
          connections: pairs * 2,
          window,
          offered_per_s: null,
          ...result,
          server_cpu_pct: server.cpu_pct,
          server_rss_mb: server.rss_mb,
          durable: true,
        },
      ];
    } finally {
      await bench.stop();
    }
  },
};
