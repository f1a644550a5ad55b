import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import {
  ProcessMeter,
  listFlag,
  numberFlag,
  percentile,
  sleep,
  startBench,
  stringFlag,
  type BenchResult,
  type Scenario,
} from "../harness.ts";
import type { FanoutLoadConfig, FanoutLoadResult, FromLoad, ToLoad } from "../load/fanout-load.ts";
import { DEFAULT_CORE_OPTIONS } from "../../../packages/server/src/core/options.ts";
import { ServerMetricsWindow } from "../server-metrics.ts";

// group-fanout (issue 4): one group per size in --members, of which at most --online members are
// connected (authenticated, reading pushes, acking); the others are offline and only get log
// entries. One member (online) sends --group-rate messages/s, open loop. For each group message,
// fanout_complete_ms runs from its intended send time until EVERY online member (the sender's own
// push included) has received it. At the same time --pairs 1:1 pairs on separate users send
// --direct-rate messages/s in total, open loop; their end-to-end latency is the line's
// p50/p99/p999 (the target: p99 under 20 ms during fanout to 10,000 members).
//
// Processes: the 1:1 pairs and the group sender in one load process, the online members spread
// over --load-procs others, so that a burst of 1,000 pushes never sits in front of a 1:1 receive
// callback in the same event loop. They share one schedule through a wall-clock start sent over
// IPC once every process has its connections open. Each size gets a fresh server and data dir.

const LOAD_SCRIPT = join(import.meta.dirname, "../load/fanout-load.ts");
const SERVER_FLAGS = "--max-connections-per-ip 0";

const now = (): number => performance.timeOrigin + performance.now();

/** A load process driven over IPC (see fanout-load.ts): config, ready, go, result. */
class LoadProcess {
  private readonly child: ChildProcess;
  private readonly inbox: FromLoad[] = [];
  private waiter: { resolve: (m: FromLoad) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;

  constructor(readonly config: FanoutLoadConfig) {
    this.child = spawn(process.execPath, ["--import", "tsx", LOAD_SCRIPT], {
      stdio: ["ignore", "ignore", "inherit", "ipc"],
    });
    this.child.on("message", (m) => {
      this.inbox.push(m as FromLoad);
      this.wake();
    });
    this.child.on("error", (err) => this.fail(err));
    this.child.on("close", (code, signal) => {
      this.fail(new Error(`load process ${config.name} exited (${String(code ?? signal)})`));
    });
    this.send({ t: "config", config });
  }

  send(m: ToLoad): void {
    this.child.send(m);
  }

  async next<K extends FromLoad["t"]>(t: K): Promise<Extract<FromLoad, { t: K }>> {
    const m = await new Promise<FromLoad>((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.wake();
    });
    if (m.t !== t) throw new Error(`load process ${this.config.name}: expected ${t}, got ${m.t}`);
    return m as Extract<FromLoad, { t: K }>;
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    if (!w) return;
    const m = this.inbox.shift();
    if (m) {
      this.waiter = undefined;
      w.resolve(m);
    } else if (this.failure) {
      this.waiter = undefined;
      w.reject(this.failure);
    }
  }
}

/** Splits `items` into `n` nearly equal consecutive parts. */
function split<T>(items: readonly T[], n: number): T[][] {
  return Array.from({ length: n }, (_, i) =>
    items.slice(Math.floor((i * items.length) / n), Math.floor(((i + 1) * items.length) / n)),
  );
}

const round = (n: number): number => Math.round(n);

export const groupFanout: Scenario = {
  name: "group-fanout",
  help:
    "groups, open loop, with concurrent 1:1 (--members 100,1000,10000 --online 1000 --group-rate 10 " +
    "--pairs 100 --direct-rate 2000 --duration 20 --warmup 3 --drain 5 --load-procs 1 --addresses 1 " +
    "--receipts off --large-group-members 500 (1000000 keeps every group written per member) " +
    "--join-rate 0: users added to the group per second, one per REST call, during the run)",
  async run(flags) {
    const sizes = listFlag(flags, "members", [100, 1000, 10_000]);
    const results: BenchResult[] = [];
    for (const members of sizes) results.push(await runOne(flags, Math.floor(members)));
    return results;
  },
};

async function runOne(flags: ReadonlyMap<string, string>, members: number): Promise<BenchResult> {
  const online = Math.min(Math.floor(numberFlag(flags, "online", 1000)), members);
  const groupRate = numberFlag(flags, "group-rate", 10);
  const pairs = Math.floor(numberFlag(flags, "pairs", 100));
  const directRate = numberFlag(flags, "direct-rate", 2000);
  const durationS = numberFlag(flags, "duration", 20);
  const warmupS = numberFlag(flags, "warmup", 3);
  const drainS = numberFlag(flags, "drain", 5);
  const memberProcs = Math.floor(numberFlag(flags, "load-procs", 1));
  const addresses = Math.floor(numberFlag(flags, "addresses", 1));
  const receipts = stringFlag(flags, "receipts", ["off", "on"], "off") === "on";
  const largeFrom = Math.floor(
    numberFlag(flags, "large-group-members", DEFAULT_CORE_OPTIONS.largeGroupMembers),
  );
  // Read diffusion (docs/architecture.md): a large group's message is one log entry, not one per
  // member. The provisioning core and the server must agree on the threshold.
  const large = members >= largeFrom;
  const largeArgs = ["--large-group-members", String(largeFrom)];
  const joinRate = numberFlag(flags, "join-rate", 0);
  const nJoiners = Math.ceil(joinRate * (warmupS + durationS));
  if (members < 2) throw new Error("--members: a group needs at least 2 members");
  if (addresses > 9) throw new Error("--addresses: at most 9 (127.0.0.1-127.0.0.9)");
  const localAddresses = Array.from({ length: addresses }, (_, i) => `127.0.0.${i + 1}`);

  const t0 = now();
  const { bench, setup } = await startBench(
    async (p) => {
      const users = await p.users(members + 2 * pairs + nJoiners);
      const group = await p.group(users[0]!, users.slice(0, members));
      const direct: FanoutLoadConfig["pairs"] = [];
      for (let i = 0; i < pairs; i++) {
        const [s, r] = [users[members + 2 * i]!, users[members + 2 * i + 1]!];
        direct.push({ senderToken: s.token, receiverToken: r.token, conv: await p.direct(s, r) });
      }
      // The sender (member 0) is online; members 1..online-1 are the other online ones.
      return {
        group,
        sender: users[0]!.token,
        online: users.slice(1, online).map((u) => u.token),
        direct,
        joiners: users.slice(members + 2 * pairs).map((u) => u.id),
      };
    },
    largeArgs,
    { largeGroupMembers: largeFrom },
  );
  const provisionS = (now() - t0) / 1000;

  const base = {
    wsUrl: bench.wsUrl,
    localAddresses,
    group: setup.group,
    groupRate,
    receipts,
    warmupS,
    durationS,
    drainS,
  };
  const procs: LoadProcess[] = [];
  try {
    procs.push(
      new LoadProcess({
        ...base,
        name: "direct+sender",
        members: [],
        groupSender: setup.sender,
        pairs: setup.direct,
        directRate,
        ...(joinRate > 0
          ? {
              joins: {
                httpUrl: bench.httpUrl,
                ownerToken: setup.sender,
                users: setup.joiners,
                rate: joinRate,
              },
            }
          : {}),
      }),
    );
    for (const [i, part] of split(setup.online, memberProcs).entries()) {
      procs.push(new LoadProcess({ ...base, name: `members-${i}`, members: part, pairs: [], directRate: 0 }));
    }
    const ready = await Promise.all(procs.map((p) => p.next("ready")));
    const connections = ready.reduce((n, r) => n + r.connections, 0);
    const connectMs = Math.max(...ready.map((r) => r.connectMs));

    const own = await ServerMetricsWindow.open(bench.server.metricsPort!);
    const startAt = now() + 500;
    for (const p of procs) p.send({ t: "go", startAt });
    const windowStart = startAt + warmupS * 1000;
    const windowEnd = windowStart + durationS * 1000;
    const drainEnd = windowEnd + drainS * 1000;
    const meter = new ProcessMeter(bench.server.pid);
    await sleep(windowStart - now());
    meter.start();
    void own.start();
    await sleep(windowEnd - now());
    const server = meter.stop();
    void own.stop();
    const loads: FanoutLoadResult[] = (await Promise.all(procs.map((p) => p.next("result")))).map(
      (m) => m.result,
    );

    // Group messages: merge the processes' per-message counts and receive times.
    const nGroup = Math.floor((warmupS + durationS) * groupRate);
    const complete: number[] = [];
    const firsts: number[] = [];
    let measured = 0;
    let incomplete = 0;
    let fanoutDeliveries = 0;
    let duplicates = 0;
    for (let i = 0; i < nGroup; i++) {
      const intended = startAt + (i * 1000) / groupRate;
      if (intended < windowStart || intended >= windowEnd) continue;
      measured++;
      let count = 0;
      let first = Infinity;
      let last = 0;
      for (const l of loads) {
        const c = l.groupCount[i] ?? 0;
        if (c === 0) continue;
        count += c;
        first = Math.min(first, l.groupFirst[i]!);
        last = Math.max(last, l.groupLast[i]!);
      }
      fanoutDeliveries += count;
      if (count > online) duplicates += count - online;
      // A message some online member never got counts with its wait until the load processes
      // stopped (a lower bound), so that losses cannot make the percentiles look better.
      if (count < online) incomplete++;
      complete.push((count < online ? drainEnd : last) - intended);
      if (count > 0) firsts.push(first - intended);
    }
    complete.sort((a, b) => a - b);
    firsts.sort((a, b) => a - b);

    const direct = loads.flatMap((l) => l.directLatencies).sort((a, b) => a - b);
    const joins = loads.flatMap((l) => l.joinLatencies).sort((a, b) => a - b);
    const sum = (f: (l: FanoutLoadResult) => number): number => loads.reduce((n, l) => n + f(l), 0);
    const errorCodes: Record<string, number> = {};
    for (const l of loads) {
      for (const [code, n] of Object.entries(l.errors)) errorCodes[code] = (errorCodes[code] ?? 0) + n;
    }
    const errors = Object.values(errorCodes).reduce((a, b) => a + b, 0);
    const clientCpu = loads.map((l) => round((l.cpuMs / l.windowMs) * 100));

    return {
      scenario: "group-fanout",
      transport: "ws-binary",
      members,
      online,
      connections,
      group_rate: groupRate,
      pairs,
      direct_rate: directRate,
      offered_per_s: directRate + groupRate,
      sent_per_s: round((sum((l) => l.directSent) + sum((l) => l.groupSent)) / durationS),
      delivered_per_s: round((sum((l) => l.directDelivered) + fanoutDeliveries) / durationS),
      // The headline latency: 1:1 during the fanout.
      p50_ms: percentile(direct, 0.5),
      p99_ms: percentile(direct, 0.99),
      p999_ms: percentile(direct, 0.999),
      direct_max_ms: percentile(direct, 1),
      direct_sent_per_s: round(sum((l) => l.directSent) / durationS),
      direct_delivered_per_s: round(sum((l) => l.directDelivered) / durationS),
      // 1:1 messages of the window never delivered: in the percentiles with their wait so far.
      direct_undelivered: sum((l) => l.directUndelivered),
      fanout_messages: measured,
      // Messages that had not reached every online member when the load processes stopped.
      fanout_incomplete: incomplete,
      fanout_complete_p50_ms: percentile(complete, 0.5),
      fanout_complete_p99_ms: percentile(complete, 0.99),
      fanout_complete_max_ms: percentile(complete, 1),
      fanout_first_p50_ms: percentile(firsts, 0.5),
      fanout_deliveries_per_s: round(fanoutDeliveries / durationS),
      fanout_duplicates: duplicates,
      // What the server must write to update logs per second at the offered rates (one entry per
      // member per group message, or one in all for a large group; two per 1:1 message),
      // receipts not counted.
      large_group: large,
      large_group_members: largeFrom,
      log_entries_offered_per_s: round(groupRate * (large ? 1 : members) + 2 * directRate),
      join_rate: joinRate,
      joins_done_per_s: round(sum((l) => l.joinsDone) / durationS),
      join_p50_ms: joins.length > 0 ? percentile(joins, 0.5) : null,
      join_p99_ms: joins.length > 0 ? percentile(joins, 0.99) : null,
      errors,
      error_codes: errorCodes,
      disconnects: sum((l) => l.disconnects),
      server_cpu_pct: server.cpu_pct,
      ...(await own.result()),
      client_cpu_pct: clientCpu.reduce((a, b) => a + b, 0),
      client_cpu_pct_per_proc: clientCpu,
      server_rss_mb: server.rss_mb,
      server_rss_peak_mb: server.rss_peak_mb,
      load_procs: procs.length,
      source_addresses: addresses,
      receipts,
      server_flags: `${SERVER_FLAGS} ${largeArgs.join(" ")}`,
      duration_s: durationS,
      warmup_s: warmupS,
      provision_s: Number(provisionS.toFixed(1)),
      connect_ms: connectMs,
      durable: true,
    };
  } finally {
    for (const p of procs) p.kill();
    await bench.stop();
  }
}
