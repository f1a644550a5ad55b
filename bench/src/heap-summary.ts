// Summarises a sampling heap profile (.heapprofile, from PARLEY_HEAP_PROFILE_DIR: see
// packages/cli/src/testing/heap-sampling.ts): the bytes allocated in all, and the functions that
// allocated the most themselves, each with the callers it allocated under. Divide the total by
// the messages of the run for the garbage per message. Where V8 inlined a function, what it
// allocates is counted to the function it was inlined into.
//
//   node --import tsx bench/src/heap-summary.ts <file.heapprofile> [--top 30]

import { readFileSync } from "node:fs";
import { basename } from "node:path";

interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: HeapNode[];
}
export interface HeapProfile {
  head: HeapNode;
}

export interface AllocationSite {
  /** "function file:line". */
  site: string;
  bytes: number;
  /** Its callers (up to two frames up, "caller <- its caller"), most bytes first. */
  callers: Array<[string, number]>;
}

function label(n: HeapNode): string {
  const f = n.callFrame;
  const file = f.url ? basename(f.url.replace(/^file:\/\//, "")) : "";
  return `${f.functionName || "(anonymous)"}${file ? ` ${file}:${f.lineNumber + 1}` : ""}`;
}

/** The bytes sampled in all, and the `top` sites by bytes allocated themselves. */
export function allocationSites(
  p: HeapProfile,
  top: number,
): { totalBytes: number; sites: AllocationSite[] } {
  const sites = new Map<string, { bytes: number; callers: Map<string, number> }>();
  let totalBytes = 0;
  // Iterative: a deep stack must not overflow this one.
  const stack: Array<{ node: HeapNode; up: string[] }> = [{ node: p.head, up: [] }];
  while (stack.length > 0) {
    const { node, up } = stack.pop()!;
    const here = label(node);
    if (node.selfSize > 0) {
      totalBytes += node.selfSize;
      const site = sites.get(here) ?? { bytes: 0, callers: new Map<string, number>() };
      site.bytes += node.selfSize;
      const caller = up.slice(-2).reverse().join(" <- ") || "(none)";
      site.callers.set(caller, (site.callers.get(caller) ?? 0) + node.selfSize);
      sites.set(here, site);
    }
    for (const child of node.children) stack.push({ node: child, up: [...up.slice(-1), here] });
  }
  return {
    totalBytes,
    sites: [...sites]
      .sort((a, b) => b[1].bytes - a[1].bytes)
      .slice(0, top)
      .map(([site, s]) => ({
        site,
        bytes: s.bytes,
        callers: [...s.callers].sort((a, b) => b[1] - a[1]).slice(0, 3),
      })),
  };
}

function main(argv: string[]): void {
  const file = argv[0];
  if (!file) {
    console.error("usage: heap-summary.ts <file.heapprofile> [--top 30]");
    process.exit(2);
  }
  const i = argv.indexOf("--top");
  const top = i >= 0 ? Number(argv[i + 1]) : 30;
  const { totalBytes, sites } = allocationSites(JSON.parse(readFileSync(file, "utf8")) as HeapProfile, top);
  const mb = (b: number): string => `${(b / 1e6).toFixed(1).padStart(8)} MB`;
  console.log(`${file}: ${mb(totalBytes).trim()} allocated (sampled)`);
  for (const s of sites) {
    console.log(`${mb(s.bytes)} ${((100 * s.bytes) / totalBytes).toFixed(1).padStart(5)}%  ${s.site}`);
    for (const [caller, bytes] of s.callers) console.log(`${" ".repeat(18)}${mb(bytes)}  <- ${caller}`);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) main(process.argv.slice(2));
