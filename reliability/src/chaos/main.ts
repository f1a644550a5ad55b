import { parseArgs } from "node:util";
import { DEFAULT_CHAOS, runChaos, type ChaosOptions } from "./run.ts";

// `npm run chaos -- [flags]`: one chaos run; prints one JSON summary line on stdout, the first
// violations on stderr, and exits 1 on any violation (2 on bad flags or a run that could not
// complete). docs/reliability.md explains the flags and the checks.

const FLAGS = {
  duration: ["durationS", "seconds of faults (then a quiet phase and the check)"],
  users: ["users", "users, one client process each"],
  devices: ["devicesPerUser", "devices per user (ws binary, tcp, ws json in turn)"],
  groups: ["groups", "group conversations"],
  directs: ["directs", "direct conversations"],
  ops: ["opsPerSecond", "mean operations per second per device"],
  "kill-every": ["killEveryS", "mean seconds between server SIGKILLs (0: none)"],
  "restart-every": ["restartEveryS", "mean seconds between clean restarts (0: none)"],
  "net-fault-every": ["netFaultEveryS", "mean seconds between network faults (0: none)"],
  seed: ["seed", "random seed"],
  "settle-timeout": ["settleTimeoutS", "seconds the quiet phase may wait"],
  "large-groups": ["largeGroupMembers", "the server's --large-group-members (0: its default, 500)"],
} as const satisfies Record<string, [keyof ChaosOptions, string]>;

function usage(): string {
  const lines = Object.entries(FLAGS).map(
    ([flag, [key, help]]) => `  --${flag.padEnd(16)} ${help} (default ${String(DEFAULT_CHAOS[key])})`,
  );
  return [
    "usage: npm run chaos -- [flags]",
    ...lines,
    "  --history FILE     keep the event history (JSON lines) in FILE",
    "  --server-faults S  PARLEY_TEST_FAULTS for the server: a deliberately broken build",
    "  --quiet            no progress on stderr",
  ].join("\n");
}

function parse(argv: string[]): ChaosOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...Object.fromEntries(Object.keys(FLAGS).map((f) => [f, { type: "string" as const }])),
      history: { type: "string" },
      "server-faults": { type: "string" },
      quiet: { type: "boolean" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(usage() + "\n");
    process.exit(0);
  }
  const o: ChaosOptions = { ...DEFAULT_CHAOS, verbose: values.quiet !== true };
  for (const [flag, [key]] of Object.entries(FLAGS)) {
    const raw = (values as Record<string, unknown>)[flag];
    if (typeof raw !== "string") continue;
    const n = Number(raw);
    if (!/^\d+(\.\d+)?$/.test(raw) || !Number.isFinite(n)) throw new Error(`--${flag} must be a number`);
    o[key] = n;
  }
  if (o.users < 2 || !Number.isInteger(o.users)) throw new Error("--users must be an integer >= 2");
  if (o.devicesPerUser < 1 || !Number.isInteger(o.devicesPerUser)) {
    throw new Error("--devices must be an integer >= 1");
  }
  if (o.opsPerSecond <= 0) throw new Error("--ops must be > 0");
  if (typeof values.history === "string") o.historyPath = values.history;
  if (typeof values["server-faults"] === "string") o.serverFaults = values["server-faults"];
  return o;
}

let options: ChaosOptions;
try {
  options = parse(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n${usage()}\n`);
  process.exit(2);
}

try {
  const { line, result } = await runChaos(options);
  process.stdout.write(line + "\n");
  for (const v of result.violations.slice(0, 20)) process.stderr.write(`violation: ${JSON.stringify(v)}\n`);
  process.exit(result.ok ? 0 : 1);
} catch (err) {
  process.stderr.write(
    `chaos run failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(2);
}
