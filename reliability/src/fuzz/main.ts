// `npm run fuzz -- [--frames N] [--seed S] [--concurrency N] [--warmup N] [--case N ...]`
// Runs the frame fuzzer against a fresh server process; prints one JSON summary line on stdout and
// the first violations on stderr; exits 1 if there was any. --case replays single cases of a seed.

import { runFuzz } from "./fuzz.ts";

interface Args {
  frames: number;
  seed: number;
  concurrency: number;
  warmup: number | undefined;
  cases: number[] | undefined;
}

function parseArgs(argv: readonly string[]): Args {
  const args: Args = {
    frames: 1_000_000,
    seed: Math.floor(Math.random() * 2 ** 31),
    concurrency: 8,
    warmup: undefined,
    cases: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = argv[++i];
    const n = Number(value);
    if (value === undefined || !Number.isSafeInteger(n) || n < 0) {
      throw new Error(`${flag} needs a non-negative integer, got ${String(value)}`);
    }
    switch (flag) {
      case "--frames":
        args.frames = n;
        break;
      case "--seed":
        args.seed = n;
        break;
      case "--concurrency":
        args.concurrency = Math.max(1, n);
        break;
      case "--warmup":
        args.warmup = n;
        break;
      case "--case":
        (args.cases ??= []).push(n);
        break;
      default:
        throw new Error(`unknown flag ${flag}`);
    }
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const { summary, violations } = await runFuzz({
  frames: args.frames,
  seed: args.seed,
  concurrency: args.concurrency,
  ...(args.warmup !== undefined ? { warmupFrames: args.warmup } : {}),
  ...(args.cases !== undefined ? { cases: args.cases } : {}),
  progress: (line) => process.stderr.write(line + "\n"),
});
process.stdout.write(JSON.stringify(summary) + "\n");
for (const v of violations.slice(0, 20)) process.stderr.write(`violation: ${v}\n`);
if (summary.violations > 20) process.stderr.write(`... and ${summary.violations - 20} more\n`);
process.exitCode = summary.violations > 0 ? 1 : 0;
