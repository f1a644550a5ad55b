// Shows when in a run the slow messages were sent, from the traces the direct load processes
// write with PARLEY_LATENCY_TRACE=<prefix> (one `<intended ms>\t<latency ms>` line per message).
// The window is cut into buckets; the buckets holding a message slower than --over-ms are listed
// with their median and slowest latency. Periodic slow buckets point at periodic work in the
// server (a commit, a checkpoint), scattered ones at load.
//
//   PARLEY_LATENCY_TRACE=/tmp/lat npm run bench -- direct-rate --rates 10000 --raw-relay off
//   node --import tsx bench/src/latency-trace.ts /tmp/lat-*.tsv [--bucket-ms 50] [--over-ms 15]

import { readFileSync } from "node:fs";

export interface SlowBucket {
  at_ms: number;
  messages: number;
  p50_ms: number;
  max_ms: number;
}

export interface TraceSummary {
  messages: number;
  bucket_ms: number;
  over_ms: number;
  /** Messages slower than over_ms, and the share of all messages that were sent in a bucket
   * that holds one. */
  slow_messages: number;
  in_slow_buckets_share: number;
  slow_buckets: SlowBucket[];
}

/** Parses trace lines ("<intended ms>\t<latency ms>"); blank lines are skipped. */
export function parseTrace(text: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const [at, lat] = line.split("\t").map(Number);
    if (at === undefined || lat === undefined || !Number.isFinite(at) || !Number.isFinite(lat)) {
      throw new Error(`latency trace: bad line "${line}"`);
    }
    out.push([at, lat]);
  }
  return out;
}

export function summariseTrace(
  points: ReadonlyArray<[number, number]>,
  bucketMs: number,
  overMs: number,
): TraceSummary {
  const buckets = new Map<number, number[]>();
  for (const [at, lat] of points) {
    const k = Math.floor(at / bucketMs);
    let b = buckets.get(k);
    if (!b) buckets.set(k, (b = []));
    b.push(lat);
  }
  const slow: SlowBucket[] = [];
  let inSlow = 0;
  for (const [k, lats] of [...buckets].sort((a, b) => a[0] - b[0])) {
    lats.sort((a, b) => a - b);
    const max = lats[lats.length - 1]!;
    if (max <= overMs) continue;
    inSlow += lats.length;
    slow.push({
      at_ms: k * bucketMs,
      messages: lats.length,
      p50_ms: lats[Math.floor(lats.length / 2)]!,
      max_ms: max,
    });
  }
  return {
    messages: points.length,
    bucket_ms: bucketMs,
    over_ms: overMs,
    slow_messages: points.filter(([, lat]) => lat > overMs).length,
    in_slow_buckets_share: points.length > 0 ? Number((inSlow / points.length).toFixed(3)) : 0,
    slow_buckets: slow,
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const flag = (name: string, fallback: number): number => {
    const i = args.indexOf(`--${name}`);
    if (i < 0) return fallback;
    const v = Number(args.splice(i, 2)[1]);
    if (!(v > 0)) throw new Error(`--${name} must be a positive number`);
    return v;
  };
  const bucketMs = flag("bucket-ms", 50);
  const overMs = flag("over-ms", 15);
  if (args.length === 0) {
    console.error("usage: latency-trace.ts <trace.tsv>... [--bucket-ms 50] [--over-ms 15]");
    process.exit(2);
  }
  const points = args.flatMap((file) => parseTrace(readFileSync(file, "utf8")));
  const s = summariseTrace(points, bucketMs, overMs);
  const { slow_buckets, ...head } = s;
  console.log(JSON.stringify(head));
  for (const b of slow_buckets) {
    console.log(
      `${(b.at_ms / 1000).toFixed(2)} s: ${b.messages} msgs, p50 ${b.p50_ms.toFixed(1)} ms, max ${b.max_ms.toFixed(1)} ms`,
    );
  }
}
