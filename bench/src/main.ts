import type { BenchFlags } from "./harness.ts";
import { SCENARIOS } from "./scenarios/index.ts";
import { speedProbeMs } from "./speed-probe.ts";

// `npm run bench -- [scenario...|all] [--name value ...]`: runs each scenario against its own
// server process (durable SQLite) and load processes, and prints one JSON line per result.
// Flags go to every scenario named; each ignores the ones it does not know. docs/benchmarks.md
// lists the scenarios, their flags and the recorded figures. Never run two at once, or beside a
// test suite: the machine has two cores.

function parse(argv: string[]): { names: string[]; flags: BenchFlags } {
  const names: string[] = [];
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--")) {
      names.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const name = eq === -1 ? a.slice(2) : a.slice(2, eq);
    const value = eq === -1 ? argv[++i] : a.slice(eq + 1);
    if (name === "help") {
      flags.set("help", "1");
      continue;
    }
    if (value === undefined) throw new Error(`--${name} needs a value`);
    flags.set(name, value);
  }
  return { names, flags };
}

function usage(): string {
  return [
    "usage: npm run bench -- [scenario...|all] [--name value ...]",
    ...SCENARIOS.map((s) => `  ${s.name.padEnd(14)} ${s.help}`),
  ].join("\n");
}

const { names, flags } = parse(process.argv.slice(2));
if (flags.has("help")) {
  process.stdout.write(usage() + "\n");
  process.exit(0);
}
const chosen =
  names.length === 0 || names.includes("all")
    ? SCENARIOS
    : names.map((n) => {
        const s = SCENARIOS.find((x) => x.name === n);
        if (!s) {
          process.stderr.write(`unknown scenario "${n}"\n${usage()}\n`);
          process.exit(2);
        }
        return s;
      });
for (const scenario of chosen) {
  // Taken before each scenario, with nothing else of ours running: see speed-probe.ts.
  const machine_probe_ms = speedProbeMs();
  for (const result of await scenario.run(flags)) {
    process.stdout.write(JSON.stringify({ ...result, machine_probe_ms }) + "\n");
  }
}
