// Summarises a V8 .cpuprofile (from `node --cpu-prof`, which the benchmark harness turns on with
// PARLEY_PROFILE_DIR): self and inclusive time of the top functions, and self time by file. One
// file per thread; the writer thread of the SQLite store has its own.
//
// With --stretches <ms>, it lists instead how the thread's busy time came: the runs of samples
// without an idle one (a turn of the event loop, or several back to back), how many lasted at
// least 1, 2, 3, 5, 10 and 20 ms, and the longest with the functions most sampled in them. A
// send that arrives during such a run waits for its end, so they are what a latency tail is made
// of. The times are wall time between samples: a thread the kernel preempted looks busy.
// --from / --to (seconds after the profile's start) keep to the measured window.
//
//   node --import tsx bench/src/profile-summary.ts <file.cpuprofile> [--top 30]
//   node --import tsx bench/src/profile-summary.ts <file.cpuprofile> --stretches 3 [--from 5 --to 15]

import { readFileSync } from "node:fs";
import { basename } from "node:path";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
export interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

function label(n: ProfileNode): string {
  const f = n.callFrame;
  const file = f.url ? basename(f.url.replace(/^file:\/\//, "")) : "";
  return `${f.functionName || "(anonymous)"} ${file}${file ? `:${f.lineNumber + 1}` : ""}`;
}

function summarise(path: string, top: number): string {
  const p = JSON.parse(readFileSync(path, "utf8")) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  // Time per sample: the delta that follows it.
  const selfUs = new Map<number, number>();
  p.samples.forEach((id, i) => {
    const dt = p.timeDeltas[i + 1] ?? 0;
    selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
  });
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
  const idle = [...selfUs].filter(([id]) => byId.get(id)!.callFrame.functionName === "(idle)");
  const idleUs = idle.reduce((a, [, us]) => a + us, 0);

  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const byFile = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const n = byId.get(id)!;
    self.set(label(n), (self.get(label(n)) ?? 0) + us);
    const file = n.callFrame.url ? basename(n.callFrame.url) : n.callFrame.functionName;
    byFile.set(file, (byFile.get(file) ?? 0) + us);
    // Inclusive: every distinct label on the stack once.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const l = label(byId.get(cur)!);
      if (seen.has(l)) continue;
      seen.add(l);
      inclusive.set(l, (inclusive.get(l) ?? 0) + us);
    }
  }
  const pct = (us: number): string => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
  const rows = (m: Map<string, number>): string =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([l, us]) => `  ${pct(us)}  ${l}`)
      .join("\n");
  return [
    `${path}: ${(total / 1e6).toFixed(1)} s sampled, idle ${pct(idleUs)}`,
    "self:",
    rows(self),
    "inclusive:",
    rows(inclusive),
    "self by file:",
    rows(byFile),
  ].join("\n");
}

export interface Stretch {
  /** Seconds after the profile's start. */
  start_s: number;
  ms: number;
  /** The functions most sampled in it (leaf frames), with their sample counts. */
  top: Array<[string, number]>;
}

export interface Stretches {
  /** Share of the window's time in non-idle samples. */
  busy_share: number;
  /** Runs of at least 1, 2, 3, 5, 10 and 20 ms. */
  at_least_ms: Record<string, number>;
  /** The runs of at least minMs, longest first. */
  longest: Stretch[];
}

const STRETCH_BOUNDS_MS = [1, 2, 3, 5, 10, 20];

/** The busy runs of `p` whose first sample is in [fromS, toS] (seconds after its start). A
 * sample lasts until the next one; a run ends at its first idle sample. */
export function busyStretches(p: Profile, minMs: number, fromS = 0, toS = Infinity): Stretches {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const runs: Array<{ startUs: number; us: number; hits: Map<string, number> }> = [];
  let run: (typeof runs)[number] | undefined;
  let windowUs = 0;
  let busyUs = 0;
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    const dt = p.timeDeltas[i + 1] ?? 0;
    const at = (t - p.startTime) / 1e6;
    const n = byId.get(p.samples[i]!)!;
    const idle = n.callFrame.functionName === "(idle)";
    if (idle || at < fromS || at > toS) {
      run = undefined;
      if (at >= fromS && at <= toS) windowUs += dt;
      continue;
    }
    windowUs += dt;
    busyUs += dt;
    if (run === undefined) runs.push((run = { startUs: t, us: 0, hits: new Map() }));
    run.us += dt;
    run.hits.set(label(n), (run.hits.get(label(n)) ?? 0) + 1);
  }
  const at_least_ms: Record<string, number> = {};
  for (const b of STRETCH_BOUNDS_MS) at_least_ms[String(b)] = runs.filter((r) => r.us >= b * 1000).length;
  const longest = runs
    .filter((r) => r.us >= minMs * 1000)
    .sort((a, b) => b.us - a.us)
    .map((r) => ({
      start_s: Number(((r.startUs - p.startTime) / 1e6).toFixed(3)),
      ms: Number((r.us / 1000).toFixed(1)),
      top: [...r.hits].sort((a, b) => b[1] - a[1]).slice(0, 3),
    }));
  return { busy_share: windowUs > 0 ? Number((busyUs / windowUs).toFixed(3)) : 0, at_least_ms, longest };
}

function stretchReport(path: string, minMs: number, fromS: number, toS: number, top: number): string {
  const s = busyStretches(JSON.parse(readFileSync(path, "utf8")) as Profile, minMs, fromS, toS);
  const counts = Object.entries(s.at_least_ms)
    .map(([b, n]) => `>=${b} ms: ${n}`)
    .join(", ");
  const lines = [`${path}: busy ${(100 * s.busy_share).toFixed(1)}%; busy runs ${counts}`];
  for (const r of s.longest.slice(0, top)) {
    lines.push(
      `  at ${r.start_s.toFixed(3)} s, ${r.ms} ms: ${r.top.map(([l, n]) => `${l} (${n})`).join(", ")}`,
    );
  }
  return lines.join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const flag = (name: string): number | undefined => {
    const i = args.indexOf(`--${name}`);
    if (i < 0) return undefined;
    const v = Number(args.splice(i, 2)[1]);
    if (!Number.isFinite(v) || v < 0) throw new Error(`--${name} must be a number of at least 0`);
    return v;
  };
  const top = flag("top") ?? 30;
  const stretches = flag("stretches");
  const fromS = flag("from") ?? 0;
  const toS = flag("to") ?? Infinity;
  const usage =
    "usage: profile-summary.ts <file.cpuprofile>... [--top N] [--stretches ms [--from s] [--to s]]\n";
  if (args.includes("--help") || args.includes("-h")) {
    process.stdout.write(usage);
    process.exit(0);
  }
  const unknown = args.find((a) => a.startsWith("-"));
  if (args.length === 0 || unknown !== undefined) {
    process.stderr.write((unknown !== undefined ? `unknown option ${unknown}\n` : "") + usage);
    process.exit(2);
  }
  for (const file of args) {
    let out: string;
    try {
      out = stretches === undefined ? summarise(file, top) : stretchReport(file, stretches, fromS, toS, top);
    } catch (e) {
      process.stderr.write(`${file}: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    }
    process.stdout.write(out + "\n\n");
  }
}
