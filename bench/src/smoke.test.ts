import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

// Every scenario, scaled down to seconds, through the real command (`npm run bench -- ...`): a
// server process, load processes and real sockets. What they assert is what a benchmark must
// never show whatever the machine's speed: every acknowledged send delivered, no send lost or
// refused, every group member given each message once, every missed message synced. No figure is
// compared with a time or a rate (docs/benchmarks.md: none of the benchmarks is a timed test), and
// stragglers get seconds (group-fanout's --drain, direct's 5 s) where a busy machine stalls.

const MAIN = join(import.meta.dirname, "main.ts");
const TIMEOUT_MS = 120_000;

type Result = Record<string, unknown>;

/** Runs `npm run bench -- <args>` and resolves with its JSON lines; rejects, with what it wrote to
 * stderr, if it exits with an error. */
function bench(args: string[], env: Record<string, string> = {}): Promise<Result[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", reject);
    child.on("exit", (code) => {
      if (code !== 0)
        return reject(new Error(`bench ${args.join(" ")} exited with ${String(code)}:\n${err}`));
      resolve(
        out
          .split("\n")
          .filter((l) => l.startsWith("{"))
          .map((l) => JSON.parse(l) as Result),
      );
    });
  });
}

/** Runs `fn` with a new empty directory, removed afterwards whatever happens. */
async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "parley-smoke-"));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Nothing refused, lost, or acknowledged and then not delivered. */
function expectAllDelivered(r: Result): void {
  expect(r).toMatchObject({ errors: 0, error_codes: {}, lost: 0, acked_not_delivered: 0 });
  expect(r.delivered_per_s).toBeGreaterThan(0);
}

describe("the benchmark scenarios, scaled down", () => {
  it(
    "direct-max beside the bare relay, over TCP",
    async () => {
      const [r, ...rest] = await bench([
        "direct-max",
        ...["--pairs", "10", "--window", "2", "--transport", "tcp", "--duration", "1", "--warmup", "0.5"],
      ]);
      expect(rest).toEqual([]);
      expect(r).toMatchObject({ scenario: "direct-max", transport: "tcp", connections: 20, durable: true });
      expectAllDelivered(r!);
      expect(r!.raw_relay_ratio).toBeGreaterThan(0);
    },
    TIMEOUT_MS,
  );

  it(
    "direct-rate over WebSocket with protocol version 2, and over TCP with version 1",
    async () => {
      const flags = [
        "--pairs",
        "10",
        "--rates",
        "200",
        "--duration",
        "1",
        "--warmup",
        "0.5",
        "--raw-relay",
        "off",
      ];
      const [ws] = await bench(["direct-rate", ...flags, "--transport", "ws"]);
      const [tcp] = await bench(["direct-rate", ...flags, "--transport", "tcp"], {
        PARLEY_BENCH_PROTOCOL: "1",
      });
      for (const r of [ws!, tcp!]) {
        expect(r).toMatchObject({ scenario: "direct-rate", rate_per_s: 200 });
        expectAllDelivered(r);
      }
      expect([ws!.transport, tcp!.transport]).toEqual(["ws-binary", "tcp"]);
    },
    TIMEOUT_MS,
  );

  it(
    "group-fanout: a group written per member and one read from its own log, with 1:1 beside",
    async () => {
      const results = await bench([
        "group-fanout",
        ...[
          "--members",
          "20,40",
          "--online",
          "20",
          "--group-rate",
          "5",
          "--pairs",
          "5",
          "--direct-rate",
          "50",
        ],
        ...["--duration", "1", "--warmup", "0.5", "--drain", "5", "--large-group-members", "30"],
      ]);
      expect(results.map((r) => [r.members, r.online, r.large_group_members])).toEqual([
        [20, 20, 30],
        [40, 20, 30],
      ]);
      for (const r of results) {
        expect(r).toMatchObject({
          errors: 0,
          fanout_incomplete: 0,
          fanout_duplicates: 0,
          direct_undelivered: 0,
        });
        expect(r.direct_delivered_per_s).toBeGreaterThan(0);
      }
    },
    TIMEOUT_MS,
  );

  it(
    "catch-up syncs every message missed, with and without history before it",
    async () => {
      const results = await bench([
        "catch-up",
        ...["--messages", "2000", "--convs", "10", "--history", "1000", "--new", "500", "--transport", "tcp"],
      ]);
      expect(results.map((r) => [r.history, r.missed])).toEqual([
        [0, 2000],
        [0, 500],
        [1000, 500],
      ]);
      for (const r of results) {
        expect(r.errors).toBe(0);
        expect(r.messages_synced).toBe(r.missed);
      }
    },
    TIMEOUT_MS,
  );

  it(
    "login-storm welcomes every client",
    async () => {
      const [r] = await bench(["login-storm", "--clients", "200", "--procs", "1", "--addresses", "2"]);
      expect(r).toMatchObject({ connections: 200, welcomed: 200, errors: 0, failures: {} });
    },
    TIMEOUT_MS,
  );

  it(
    "idle holds every connection it asked for",
    async () => {
      const [r] = await bench([
        "idle",
        ...["--conns", "300", "--transport", "tcp", "--hold", "1", "--settle", "1", "--addresses", "2"],
        ...["--per-process", "200"],
      ]);
      expect(r).toMatchObject({ connections: 300, requested_connections: 300, errors: 0, failures: {} });
      expect(r!.rss_per_conn_kib).toEqual(expect.any(Number));
    },
    TIMEOUT_MS,
  );

  it(
    "store-append through the server's threaded store",
    async () => {
      const [r] = await bench([
        "store-append",
        ...["--pairs", "20", "--batch", "100", "--messages", "2000", "--commit-interval-ms", "500"],
        ...["--threaded", "1"],
      ]);
      expect(r).toMatchObject({ scenario: "store-append", messages: 2000, threaded: true, durable: true });
      expect(r!.written_bytes_per_msg).toBeGreaterThan(0);
    },
    TIMEOUT_MS,
  );

  it(
    "log-sync appends every send to the numbered log and leaves nothing in --dir",
    () =>
      inTempDir(async (dir) => {
        // --rotate-ms 1: a rotation and release after every batch, the last one's included.
        const results = await bench([
          "log-sync",
          ...["--rates", "400,800", "--duration", "1", "--warmup", "0.5", "--rotate-ms", "1", "--dir", dir],
        ]);
        expect(results.map((r) => [r.offered_per_s, r.messages])).toEqual([
          [400, 400],
          [800, 800],
        ]);
        for (const r of results) {
          expect(r).toMatchObject({ scenario: "log-sync", read_back: true, durable: true });
          expect(r.msgs_per_sync).toBeGreaterThanOrEqual(1);
          expect(r.p50_ms as number).toBeLessThanOrEqual(r.p99_ms as number);
          expect(r.sync_p50_ms as number).toBeLessThanOrEqual(r.sync_max_ms as number);
        }
        expect(readdirSync(dir)).toEqual([]);
      }),
    TIMEOUT_MS,
  );

  it(
    "log-sync with a commit's flush beside it, which stops with the run",
    () =>
      inTempDir(async (dir) => {
        const [r, ...rest] = await bench([
          "log-sync",
          ...["--rates", "400", "--duration", "1", "--warmup", "0.5", "--beside", "1", "--dir", dir],
        ]);
        expect(rest).toEqual([]);
        expect(r).toMatchObject({ scenario: "log-sync", messages: 400, read_back: true, beside_mib: 1 });
        // At least one flush, every 500 ms of the run: its time is measured, whatever it is.
        expect(r!.beside_flush_max_ms).toBeGreaterThan(0);
        expect(readdirSync(dir)).toEqual([]);
      }),
    TIMEOUT_MS,
  );

  it(
    "log-sync refuses a directory that does not exist",
    async () => {
      await expect(
        bench(["log-sync", "--rates", "100", "--duration", "1", "--dir", "/nonexistent/parley"]),
      ).rejects.toThrow(/nonexistent\/parley/);
    },
    TIMEOUT_MS,
  );
});
