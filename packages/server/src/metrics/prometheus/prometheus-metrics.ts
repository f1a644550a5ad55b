import { createServer, type Server } from "node:http";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { Metrics } from "../../core/ports/metrics.ts";

// The Metrics port over prom-client, served in the Prometheus text format at GET /metrics on a
// listener of its own (docs/operations.md, "Metrics"). Besides the core's reports it carries
// prom-client's default Node.js metrics: CPU, memory, event-loop delay, GC pauses.

/** Seconds: from well under one fsync to the admission bound and beyond. */
const COMMIT_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
/** How often prom-client samples the event loop (its default). Node records the time between two
 * samples, so nodejs_eventloop_lag_* include this interval: an idle loop reads about 10 ms. */
export const EVENT_LOOP_SAMPLE_MS = 10;
/** prom-client defaults left out: each scrape would walk every open file descriptor or libuv handle
 * (readdir of /proc/self/fd; process._getActiveHandles(), twice; getActiveResourcesInfo(), twice)
 * on the event loop: 27 ms at 19,000 descriptors, about 1.4 ms per 1,000 connections of stalled
 * sends at every scrape. parley_connections counts the connections instead. */
export const OMITTED_DEFAULT_METRICS = [
  "process_open_fds",
  "nodejs_active_handles",
  "nodejs_active_handles_total",
  "nodejs_active_resources",
  "nodejs_active_resources_total",
] as const;
/** Sends per group commit, up to the largest batch (commitBatchMax, 4,000 by default). */
const BATCH_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 4000];

export class PrometheusMetrics implements Metrics {
  readonly registry = new Registry();
  private readonly commitSeconds: Histogram;
  private readonly batchSize: Histogram;
  private readonly committed: Counter;
  private readonly refused: Counter;
  private readonly logSyncSeconds: Histogram;

  /** `connections` reads the number of open client connections when scraped, `fanOutBacklog`
   * the pushes of large groups waiting to go out. */
  constructor(connections: () => number, fanOutBacklog: () => number = () => 0) {
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
    for (const name of OMITTED_DEFAULT_METRICS) this.registry.removeSingleMetric(name);
    this.commitSeconds = new Histogram({
      name: "parley_commit_seconds",
      help: "Duration of group commits (transaction, fsync, writer-thread round trip), by outcome",
      labelNames: ["outcome"],
      buckets: COMMIT_BUCKETS,
      registers: [this.registry],
    });
    this.batchSize = new Histogram({
      name: "parley_commit_messages",
      help: "Messages per committed group commit",
      buckets: BATCH_BUCKETS,
      registers: [this.registry],
    });
    this.committed = new Counter({
      name: "parley_messages_committed_total",
      help: "Messages committed durably (resends of a committed message included)",
      registers: [this.registry],
    });
    this.logSyncSeconds = new Histogram({
      name: "parley_log_sync_seconds",
      help: "Duration of each numbered log append (write and fdatasync) that a batch of sends waits for before it is acknowledged",
      buckets: COMMIT_BUCKETS,
      registers: [this.registry],
    });
    this.refused = new Counter({
      name: "parley_sends_refused_total",
      help: "Sends refused by admission control (E_OVERLOADED)",
      registers: [this.registry],
    });
    this.readOnScrape(
      "parley_connections",
      "Open client connections (TCP and WebSocket, any state)",
      connections,
    );
    this.readOnScrape(
      "parley_fanout_backlog",
      "Pushes of large groups waiting to go out (sends are refused beyond the core's maxFanOutBacklog)",
      fanOutBacklog,
    );
  }

  /** A gauge whose value is read when scraped. */
  private readOnScrape(name: string, help: string, read: () => number): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }

  commit(messages: number, seconds: number, ok: boolean): void {
    this.commitSeconds.observe({ outcome: ok ? "ok" : "failed" }, seconds);
    if (!ok) return;
    this.batchSize.observe(messages);
    this.committed.inc(messages);
  }

  sendRefused(): void {
    this.refused.inc();
  }

  /** The store wrote a batch of sends to its numbered log in `seconds` (ThreadedSqliteStore's
   * onLogSync). Not a port method: the store reports it to whoever opened it. */
  logSync(seconds: number): void {
    this.logSyncSeconds.observe(seconds);
  }

  /** Serves GET /metrics on host:port (0: any free port). Resolves with the bound port. */
  async listen(host: string, port: number): Promise<{ port: number; close(): Promise<void> }> {
    const server: Server = createServer((req, res) => {
      const path = (req.url ?? "").split("?")[0];
      if (path !== "/metrics" || (req.method !== "GET" && req.method !== "HEAD")) {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found: GET /metrics\n");
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": this.registry.contentType }).end(text),
        (err: unknown) =>
          res.writeHead(500, { "content-type": "text/plain" }).end(`metrics failed: ${String(err)}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const address = server.address();
    return {
      port: typeof address === "object" && address !== null ? address.port : port,
      close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    };
  }
}
