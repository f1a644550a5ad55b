// The fuzz run: a server process, the accounts of world.ts, the control clients, then a pool of
// concurrent connections each running one generated case after another until the frame budget is
// spent (a warm-up first, after which the server's resting RSS is the baseline). Returns a summary
// and every violation the oracle, the control clients and the server watch found.

import { DEFAULT_MAX_FRAME_BYTES } from "@parley/protocol";
import { type CaseResult, runCase } from "./connection.ts";
import { ControlClients } from "./control.ts";
import { CaseGenerator, type FuzzCase } from "./generate.ts";
import { predict } from "./predict.ts";
import { ServerWatch } from "./server-watch.ts";
import type { Transport } from "./wire.ts";
import { type World, setUpWorld } from "./world.ts";

export interface FuzzOptions {
  /** Frames (messages) to send in all, warm-up included. */
  frames: number;
  seed: number;
  /** Connections open at once. Default 8. */
  concurrency?: number;
  /** Frames of the warm-up. Default 5% of `frames`, from 500 to 20000. */
  warmupFrames?: number;
  /** Run only these cases of the seed (a replay), one at a time, with no warm-up. */
  cases?: readonly number[];
  /** How long the server gets for each awaited answer. Default 30 s. */
  timeoutMs?: number;
  /** Progress lines (every ~5 s); default none. */
  progress?: (line: string) => void;
}

export interface FuzzSummary {
  frames: number;
  connections: number;
  frames_by_transport: Record<Transport, number>;
  /** error frames received, by code */
  replies_by_code: Record<string, number>;
  /** every server frame received, by `t` */
  server_frames: Record<string, number>;
  /** how connections ended: the server's disconnect / close code, or "client" */
  closes_by_code: Record<string, number>;
  /** what the generator made, by label */
  units_by_kind: Record<string, number>;
  rss_start_mb: number;
  rss_end_mb: number;
  rss_peak_mb: number;
  rss_limit_mb: number;
  /** the server's V8 heapUsed after a full GC, at the same two points */
  heap_start_mb: number;
  heap_end_mb: number;
  control_sent: number;
  control_delivered: number;
  server_warnings: number;
  violations: number;
  seed: number;
  duration_s: number;
}

export interface FuzzResult {
  summary: FuzzSummary;
  /** Every violation, in the order found (at most MAX_KEPT). */
  violations: string[];
}

const MAX_KEPT = 1000;
/** A run stops early after this many violations: something is badly broken already. */
const GIVE_UP = 10_000;

/** RSS after the run may exceed the baseline by this much (MiB) or this fraction of it, whichever
 * is larger. See FUZZ-NOTES.md for why. */
export const RSS_SLACK_MB = 64;
export const RSS_SLACK_FRACTION = 0.5;

export function rssLimitMb(startMb: number): number {
  return startMb + Math.max(RSS_SLACK_MB, startMb * RSS_SLACK_FRACTION);
}

class Tally {
  readonly byTransport: Record<Transport, number> = { tcp: 0, "ws-binary": 0, "ws-json": 0 };
  readonly replies: Record<string, number> = {};
  readonly serverFrames: Record<string, number> = {};
  readonly closes: Record<string, number> = {};
  readonly kinds: Record<string, number> = {};
  frames = 0;
  connections = 0;

  add(c: FuzzCase, r: CaseResult): void {
    this.connections++;
    this.frames += r.framesSent;
    this.byTransport[c.transport] += r.framesSent;
    for (const u of c.units.slice(0, r.framesSent)) bump(this.kinds, u.label);
    for (const [code, n] of r.oracle.errors) bump(this.replies, code, n);
    for (const [t, n] of r.oracle.frameTypes) bump(this.serverFrames, t, n);
    bump(this.closes, String(r.oracle.closedWith ?? "none"));
  }
}

function bump(counts: Record<string, number>, key: string, n = 1): void {
  counts[key] = (counts[key] ?? 0) + n;
}

export async function runFuzz(options: FuzzOptions): Promise<FuzzResult> {
  const started = Date.now();
  const violations: string[] = [];
  let violationCount = 0;
  const report = (problem: string): void => {
    violationCount++;
    if (violations.length < MAX_KEPT) violations.push(problem);
  };
  const tally = new Tally();
  const watch = await ServerWatch.start();
  let control: ControlClients | undefined;
  let peak = 0;
  const sampler = setInterval(() => {
    const rss = watch.rssMb();
    if (!Number.isNaN(rss)) peak = Math.max(peak, rss);
  }, 500);
  let rssStart = NaN;
  let rssEnd = NaN;
  let heapStart = NaN;
  try {
    const world = await setUpWorld(`http://127.0.0.1:${watch.server.httpPort}`, DEFAULT_MAX_FRAME_BYTES);
    control = await ControlClients.start(world, report);
    const run = new Runner(options, world, watch, tally, report, () => violationCount);
    if (options.cases) {
      for (const index of options.cases) await run.one(index);
      rssStart = await watch.restingRssMb();
      heapStart = watch.heapMb;
    } else {
      const warmup =
        options.warmupFrames ?? Math.min(20_000, Math.max(500, Math.round(options.frames * 0.05)));
      await run.phase(Math.min(warmup, options.frames));
      rssStart = await watch.restingRssMb();
      heapStart = watch.heapMb;
      await run.phase(options.frames);
    }
    await control.stop(options.timeoutMs ?? 30_000);
    if (!watch.exited) {
      await alive(world, report);
      rssEnd = await watch.restingRssMb();
      if (rssEnd > rssLimitMb(rssStart)) {
        report(`server RSS at rest grew from ${rssStart.toFixed(1)} to ${rssEnd.toFixed(1)} MiB`);
      }
    }
  } finally {
    clearInterval(sampler);
    await control?.stop(1000).catch(() => {}); // idempotent once stopped
    await watch.stop();
    for (const p of watch.problems) report(p);
  }
  const round = (mb: number): number => Math.round(mb * 10) / 10;
  return {
    violations,
    summary: {
      frames: tally.frames,
      connections: tally.connections,
      frames_by_transport: tally.byTransport,
      replies_by_code: tally.replies,
      server_frames: tally.serverFrames,
      closes_by_code: tally.closes,
      units_by_kind: tally.kinds,
      rss_start_mb: round(rssStart),
      rss_end_mb: round(rssEnd),
      rss_peak_mb: round(peak),
      rss_limit_mb: round(rssLimitMb(rssStart)),
      heap_start_mb: round(heapStart),
      heap_end_mb: round(watch.heapMb),
      control_sent: control?.sent ?? 0,
      control_delivered: control?.delivered ?? 0,
      server_warnings: watch.warnings,
      violations: violationCount,
      seed: options.seed,
      duration_s: Math.round((Date.now() - started) / 100) / 10,
    },
  };
}

/** The server still serves REST after the run. */
async function alive(world: World, report: (problem: string) => void): Promise<void> {
  try {
    const res = await fetch(`${world.url}/v1/conversations`, {
      headers: { authorization: `Bearer ${world.targets.tokens[0]}` },
    });
    if (!res.ok) report(`GET /v1/conversations after the run: ${res.status}`);
  } catch (err) {
    report(`GET /v1/conversations after the run failed: ${(err as Error).message}`);
  }
}

/** Runs cases in order of their index over a pool of connections. */
class Runner {
  private nextIndex = 0;
  private readonly generator: CaseGenerator;
  private readonly tokens: ReadonlySet<string>;
  private lastProgress = Date.now();

  constructor(
    private readonly options: FuzzOptions,
    private readonly world: World,
    private readonly watch: ServerWatch,
    private readonly tally: Tally,
    private readonly report: (problem: string) => void,
    private readonly violations: () => number,
  ) {
    this.generator = new CaseGenerator(world.targets);
    this.tokens = new Set(world.targets.tokens);
  }

  /** Runs cases until `frameTarget` frames have been sent in all (a little more: the cases in
   * flight finish), or the server died, or there are too many violations to go on. */
  async phase(frameTarget: number): Promise<void> {
    const worker = async (): Promise<void> => {
      while (this.tally.frames < frameTarget && !this.watch.exited && this.violations() < GIVE_UP) {
        await this.run(this.generator.generate(this.options.seed, this.nextIndex++));
      }
    };
    await Promise.all(Array.from({ length: this.options.concurrency ?? 8 }, worker));
  }

  /** Runs case `index` alone. */
  async one(index: number): Promise<void> {
    await this.run(this.generator.generate(this.options.seed, index));
  }

  private async run(c: FuzzCase): Promise<void> {
    const prediction = predict(c, { maxFrameBytes: this.world.targets.maxFrameBytes, tokens: this.tokens });
    const where = `case ${c.index} (${c.transport}${c.login ? ", logged in" : ""}; ${c.units.map((u) => u.label).join(" ")})`;
    const result = await runCase(
      c,
      prediction,
      {
        httpPort: this.watch.server.httpPort,
        tcpPort: this.watch.server.tcpPort,
        tokens: this.world.targets.tokens,
        timeoutMs: this.options.timeoutMs ?? 30_000,
      },
      (problem) => this.report(`${where}: ${problem}`),
    );
    this.tally.add(c, result);
    const progress = this.options.progress;
    if (progress && Date.now() - this.lastProgress > 5000) {
      this.lastProgress = Date.now();
      progress(`fuzz: ${this.tally.frames} frames, ${this.tally.connections} connections, case ${c.index}`);
    }
  }
}
