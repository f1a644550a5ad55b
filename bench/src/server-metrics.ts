import { EVENT_LOOP_SAMPLE_MS } from "../../packages/server/src/metrics/prometheus/prometheus-metrics.ts";

// The server's own view of a measured window, from its Prometheus endpoint (--metrics-port,
// docs/operations.md "Metrics"): how long its group commits took, how big they were, how long
// the disk held them (the numbered log's write and fdatasync), how late its event loop ran and
// how long GC paused it. Scraped when the window starts (which also resets the event-loop delay
// histogram) and when it ends; the figures are the difference.

/** One scrape: every sample line, keyed by the series as written (`name{labels}`). */
export type Scrape = Map<string, number>;

export function parsePrometheus(text: string): Scrape {
  const out: Scrape = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    const value = Number(line.slice(space + 1));
    if (space > 0 && !Number.isNaN(value)) out.set(line.slice(0, space), value);
  }
  return out;
}

async function scrape(port: number): Promise<Scrape> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (!res.ok) throw new Error(`GET /metrics: ${res.status}`);
  return parsePrometheus(await res.text());
}

/** Upper bound (ms) of the histogram bucket where the q-quantile of the window's observations
 * falls: "at most this". Infinity when it is beyond the last bucket; undefined without data. */
function quantileBound(before: Scrape, after: Scrape, series: string, labels: string, q: number) {
  const buckets: Array<[number, number]> = [];
  for (const [key, value] of after) {
    if (!key.startsWith(`${series}_bucket{`) || !key.includes(labels)) continue;
    const le = /le="([^"]+)"/.exec(key)?.[1];
    if (le === undefined) continue;
    buckets.push([le === "+Inf" ? Infinity : Number(le), value - (before.get(key) ?? 0)]);
  }
  buckets.sort((a, b) => a[0] - b[0]);
  const total = buckets[buckets.length - 1]?.[1] ?? 0;
  if (total === 0) return undefined;
  const bound = buckets.find(([, count]) => count >= q * total)![0];
  return bound === Infinity ? Infinity : Number((bound * 1000).toFixed(1));
}

interface Taken {
  at: number;
  scrape: Promise<Scrape>;
}

/** Resolves when `p` settles; a failed scrape is reported by result(), not here. */
function settled(p: Promise<unknown>): Promise<void> {
  return p.then(
    () => {},
    () => {},
  );
}

export class ServerMetricsWindow {
  private first: Taken | undefined;
  private last: Taken | undefined;

  private constructor(private readonly port: number) {}

  /** A window over the server at `port`, after one scrape whose figures are dropped: the first
   * scrape costs the server and this process more than the next (code run for the first time,
   * fetch's own start), and taken at the window's start, that cost showed in the window's
   * latencies. Open it before the load starts. */
  static async open(port: number): Promise<ServerMetricsWindow> {
    await scrape(port);
    return new ServerMetricsWindow(port);
  }

  /** Takes the first scrape; resolves once it is taken (the window's figures start there). */
  start(): Promise<void> {
    this.first = this.take();
    return settled(this.first.scrape);
  }

  /** Takes the last scrape; resolves once it is taken. */
  stop(): Promise<void> {
    this.last = this.take();
    return settled(this.last.scrape);
  }

  private take(): Taken {
    return { at: performance.now(), scrape: scrape(this.port) };
  }

  /** The window's figures, as result fields (server_*). */
  async result(): Promise<Record<string, number | undefined>> {
    if (!this.first || !this.last) return {};
    const [a, b] = await Promise.all([this.first.scrape, this.last.scrape]);
    const d = (key: string): number => (b.get(key) ?? 0) - (a.get(key) ?? 0);
    const seconds = (this.last.at - this.first.at) / 1000;
    const commits = d('parley_commit_seconds_count{outcome="ok"}');
    const commitBound = (q: number) => quantileBound(a, b, "parley_commit_seconds", 'outcome="ok"', q);
    const syncs = d("parley_log_sync_seconds_count");
    const gcKinds = ["minor", "major", "incremental", "weakcb"];
    const gcSeconds = gcKinds.reduce((s, k) => s + d(`nodejs_gc_duration_seconds_sum{kind="${k}"}`), 0);
    const gcCount = gcKinds.reduce((s, k) => s + d(`nodejs_gc_duration_seconds_count{kind="${k}"}`), 0);
    const gcUnder10ms = gcKinds.reduce(
      (s, k) => s + d(`nodejs_gc_duration_seconds_bucket{le="0.01",kind="${k}"}`),
      0,
    );
    return {
      server_commits_per_s: Math.round(commits / seconds),
      server_msgs_per_commit:
        commits > 0 ? Number((d("parley_messages_committed_total") / commits).toFixed(1)) : 0,
      server_commit_p50_ms_at_most: commitBound(0.5),
      server_commit_p99_ms_at_most: commitBound(0.99),
      server_commits_over_10ms_per_s: Number(
        ((commits - d('parley_commit_seconds_bucket{le="0.01",outcome="ok"}')) / seconds).toFixed(2),
      ),
      // Only a server with a commit interval (the default) has a numbered log.
      ...(syncs > 0
        ? {
            server_log_syncs_per_s: Math.round(syncs / seconds),
            server_log_sync_p99_ms_at_most: quantileBound(a, b, "parley_log_sync_seconds", "", 0.99),
            server_log_syncs_over_10ms_per_s: Number(
              ((syncs - d('parley_log_sync_seconds_bucket{le="0.01"}')) / seconds).toFixed(2),
            ),
            // How long per second sends were held by the disk (the sequencer waits for each).
            server_log_sync_ms_per_s: Number(
              ((d("parley_log_sync_seconds_sum") * 1000) / seconds).toFixed(1),
            ),
          }
        : {}),
      server_loop_delay_p99_ms: loopDelayMs(b.get("nodejs_eventloop_lag_p99_seconds")),
      server_loop_delay_max_ms: loopDelayMs(b.get("nodejs_eventloop_lag_max_seconds")),
      server_gc_ms_per_s: Number(((gcSeconds * 1000) / seconds).toFixed(1)),
      server_gc_pauses_over_10ms_per_s: Number(((gcCount - gcUnder10ms) / seconds).toFixed(2)),
    };
  }
}

/** How late the event loop ran, from prom-client's lag gauge, which holds the whole time between
 * two samples: the sampling interval is taken off (an idle loop reads 10.1 ms, i.e. 0.1 ms late).
 * Figures before 2026-11-28 in docs/benchmarks.md include the 10 ms. */
export function loopDelayMs(seconds: number | undefined): number | undefined {
  return seconds === undefined
    ? undefined
    : Math.max(0, Number((seconds * 1000 - EVENT_LOOP_SAMPLE_MS).toFixed(1)));
}
