import { spawn } from "node:child_process";
import { join } from "node:path";
import { cpuPct, cpuSample, rssMb } from "./proc-stats.ts";
import { startServerProcess, type ServerProcess } from "../../packages/cli/src/testing/server-process.ts";
import type { DirectLoadConfig } from "./load-direct.ts";

// `npm run bench -- [scenario...] [--pairs N] [--window N] [--duration S]`
// Starts the server as its own process (durable SQLite: WAL, synchronous=FULL), sets up users
// over REST, runs the load client as another process, prints one JSON line per scenario.
// Scenarios so far: direct-ws (1:1 over WebSocket binary, closed loop, `window` in flight).

interface Args {
  scenarios: string[];
  pairs: number;
  window: number;
  durationS: number;
  warmupS: number;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { scenarios: [], pairs: 100, window: 8, durationS: 10, warmupS: 2 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v <= 0) throw new Error(`${a} needs a positive number`);
      return v;
    };
    if (a === "--pairs") args.pairs = next();
    else if (a === "--window") args.window = next();
    else if (a === "--duration") args.durationS = next();
    else if (a === "--warmup") args.warmupS = next();
    else if (a.startsWith("--")) throw new Error(`unknown flag ${a}`);
    else args.scenarios.push(a);
  }
  if (args.scenarios.length === 0) args.scenarios = ["direct-ws"];
  return args;
}

async function rest<T>(base: string, path: string, body: unknown, token?: string): Promise<T> {
  const res = await fetch(base + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

async function setupPairs(server: ServerProcess, pairs: number): Promise<DirectLoadConfig["pairs"]> {
  const base = `http://127.0.0.1:${server.httpPort}`;
  const out: DirectLoadConfig["pairs"] = [];
  const tag = Math.random().toString(36).slice(2, 8);
  for (let i = 0; i < pairs; i++) {
    const names = [`s${tag}${i}`, `r${tag}${i}`];
    const logins: Array<{ token: string; user: string }> = [];
    for (const name of names) {
      await rest(base, "/v1/register", { name, password: "bench-password" });
      logins.push(await rest(base, "/v1/login", { name, password: "bench-password", device: "bench" }));
    }
    const conv = await rest<{ id: string }>(
      base,
      "/v1/conversations",
      { kind: "direct", user: logins[1]!.user },
      logins[0]!.token,
    );
    out.push({ senderToken: logins[0]!.token, receiverToken: logins[1]!.token, conv: conv.id });
  }
  return out;
}

function runLoad(cfg: DirectLoadConfig): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", join(import.meta.dirname, "load-direct.ts"), JSON.stringify(cfg)],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.on("exit", (code) => {
      if (code !== 0) return reject(new Error(`load client exited with ${String(code)}`));
      resolve(JSON.parse(out.trim().split("\n").pop()!) as Record<string, number>);
    });
  });
}

async function directWs(args: Args): Promise<Record<string, unknown>> {
  const server = await startServerProcess();
  try {
    const pairs = await setupPairs(server, args.pairs);
    const cfg: DirectLoadConfig = {
      wsUrl: `ws://127.0.0.1:${server.httpPort}/v1/ws`,
      pairs,
      window: args.window,
      warmupS: args.warmupS,
      durationS: args.durationS,
    };
    const load = runLoad(cfg);
    await new Promise((r) => setTimeout(r, args.warmupS * 1000 + 1000));
    const c0 = cpuSample(server.pid);
    await new Promise((r) => setTimeout(r, (args.durationS - 1) * 1000));
    const c1 = cpuSample(server.pid);
    const rss = rssMb(server.pid);
    const result = await load;
    return {
      scenario: "direct-ws",
      transport: "ws-binary",
      connections: args.pairs * 2,
      window: args.window,
      offered_per_s: null,
      ...result,
      server_cpu_pct: Math.round(cpuPct(c0, c1)),
      server_rss_mb: Math.round(rss),
      durable: true,
    };
  } finally {
    await server.stop();
  }
}

const SCENARIOS: Record<string, (args: Args) => Promise<Record<string, unknown>>> = {
  "direct-ws": directWs,
};

const args = parseArgs(process.argv.slice(2));
for (const name of args.scenarios) {
  const run = SCENARIOS[name];
  if (!run) throw new Error(`unknown scenario ${name}; known: ${Object.keys(SCENARIOS).join(", ")}`);
  process.stdout.write(JSON.stringify(await run(args)) + "\n");
}
