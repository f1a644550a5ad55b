// Summarises a V8 .cpuprofile (from `node --cpu-prof`, which the benchmark harness turns on with
// PARLEY_PROFILE_DIR): self and inclusive time of the top functions, and self time by file. One
// file per thread; the writer thread of the SQLite store has its own.
//
//   node --import tsx bench/src/profile-summary.ts <file.cpuprofile> [--top 30]

import { readFileSync } from "node:fs";
import { basename } from "node:path";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
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

const args = process.argv.slice(2);
const topAt = args.indexOf("--top");
const top = topAt >= 0 ? Number(args.splice(topAt, 2)[1]) : 30;
for (const file of args) process.stdout.write(summarise(file, top) + "\n\n");
