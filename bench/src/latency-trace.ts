// Shows when in a run the slow messages were sent, from the traces the direct load processes
// write with PARLEY_LATENCY_TRACE=<prefix> (one `<intended ms>\t<latency ms>[\t<send lag ms>]`
// line per message). The window is cut into buckets; the buckets holding a message slower than
// --over-ms are listed with their median and slowest latency. Periodic slow buckets point at
// periodic work in the server (a commit, a checkpoint), scattered ones at load. Where the trace
// has the send lag (how late the load process sent the message), latency is split into that lag
// and the rest ("after send": transport, server, receiver), and `slow_in_worst_tenth` says how
// bunched the messages over --over-ms are: the share of them in the tenth of the buckets that
// hold the most (about 0.1 if they are spread evenly, near 1 if they come in bursts).
//
//   PARLEY_LATENCY_TRACE=/tmp/lat npm run bench -- direct-rate --rates 10000 --raw-relay off
//   node --import tsx bench/src/latency-trace.ts /tmp/lat-*.tsv [--bucket-ms 50] [--over-ms 15]

import { readFileSync } from "node:fs";
import { percentile } from "./harness.ts";

export interface SlowBucket {
  at_ms: number;
  messages: number;
  p50_ms: number;
  max_ms: number;
}

/** Percentiles of a latency, ms. */
export interface Percentiles {
  p50_ms: number;
  p99_ms: number;
  p999_ms: number;
}

/** A message of a trace: intended send time and latency, ms, and the send lag if traced. */
export type TracePoint = [at: number, latency: number, lag?: number];

export interface TraceSummary {
  messages: number;
  bucket_ms: number;
  over_ms: number;
  /** Messages slower than over_ms, and the share of all messages that were sent in a bucket
   * that holds one. */
  slow_messages: number;
  in_slow_buckets_share: number;
  /** Of the messages slower than over_ms, the share in the tenth of the buckets holding the
   * most of them (0 if there are none). */
  slow_in_worst_tenth: number;
  latency: Percentiles;
  /** When every point has its send lag: that lag, and the latency after it. */
  send_lag?: Percentiles;
  after_send?: Percentiles;
  slow_buckets: SlowBucket[];
}

/** Parses trace lines ("<intended ms>\t<latency ms>[\t<send lag ms>]"); blank lines are
 * skipped. */
export function parseTrace(text: string): TracePoint[] {
  const out: TracePoint[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const fields = line.split("\t");
    // Number("") is 0: an empty field is as bad as a word.
    const nums = fields.map((f) => (f.trim() === "" ? NaN : Number(f)));
    if ((fields.length !== 2 && fields.length !== 3) || !nums.every(Number.isFinite)) {
      throw new Error(`latency trace: bad line "${line}"`);
    }
    out.push(nums as TracePoint);
  }
  return out;
}

function percentiles(values: number[]): Percentiles {
  const sorted = values.sort((a, b) => a - b);
  return {
    p50_ms: percentile(sorted, 0.5),
    p99_ms: percentile(sorted, 0.99),
    p999_ms: percentile(sorted, 0.999),
  };
}

export function summariseTrace(
  points: readonly TracePoint[],
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
  const slowPerBucket = [...buckets.values()]
    .map((lats) => lats.filter((lat) => lat > overMs).length)
    .sort((a, b) => b - a);
  const slowMessages = slowPerBucket.reduce((sum, n) => sum + n, 0);
  const worstTenth = slowPerBucket
    .slice(0, Math.ceil(slowPerBucket.length / 10))
    .reduce((sum, n) => sum + n, 0);
  const lagged = points.length > 0 && points.every((p) => p[2] !== undefined);
  return {
    messages: points.length,
    bucket_ms: bucketMs,
    over_ms: overMs,
    slow_messages: slowMessages,
    in_slow_buckets_share: points.length > 0 ? Number((inSlow / points.length).toFixed(3)) : 0,
    slow_in_worst_tenth: slowMessages > 0 ? Number((worstTenth / slowMessages).toFixed(3)) : 0,
    latency: percentiles(points.map((p) => p[1])),
    ...(lagged
      ? {
          send_lag: percentiles(points.map((p) => p[2]!)),
          after_send: percentiles(points.map((p) => p[1] - p[2]!)),
        }
      : {}),
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
