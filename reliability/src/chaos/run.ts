import { fork, type ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServerProcess, type ServerProcess } from "@parley/cli/src/testing/server-process.ts";
import { COMMIT_LOG_APPLIED, NUMBERED_LOG_APPLIED } from "@parley/server";
import { ParleyClient } from "@parley/sdk/node";
import { check, summaryLine, type CheckResult } from "./checker.ts";
import type { ChaosEvent, FaultKind } from "./events.ts";
import { FaultProxy } from "./fault-proxy.ts";
import type { DeviceSpec, FromWorker, ToWorker, WorkerSpec } from "./ipc.ts";
import { Random } from "./random.ts";

// The chaos orchestrator: a server process on a fresh data dir, one client process per user
// (each device behind its own fault proxy), faults injected for `durationS`, then a quiet phase
// in which every operation settles and every device catches up, then the checker over the
// recorded history. docs/reliability.md describes the run and its guarantees.

export interface ChaosOptions {
  durationS: number;
  users: number;
  devicesPerUser: number;
  groups: number;
  directs: number;
  /** Mean operations per second per device. */
  opsPerSecond: number;
  /** Mean seconds between server SIGKILLs (0: none). */
  killEveryS: number;
  /** Each SIGKILL first waits until the server has acknowledged a send in the last
   * KILL_ON_TRAFFIC_MS (while clients are still reconnecting after a restart there is nothing
   * to lose), so that it lands on acknowledged sends its store may not have committed yet. */
  killOnTraffic?: boolean;
  /** Mean seconds between clean server restarts (0: none). */
  restartEveryS: number;
  /** Mean seconds between network faults on some device: cut, stall or offline (0: none). */
  netFaultEveryS: number;
  seed: number;
  /** Where to write the history (JSON lines); default a temp file, removed afterwards. */
  historyPath?: string;
  /** PARLEY_TEST_FAULTS for the server (a deliberately broken build). */
  serverFaults?: string;
  /** The server's --commit-interval-ms (default: the server's). */
  commitIntervalMs?: number;
  /** How long the quiet phase may wait for operations to settle and devices to catch up. */
  settleTimeoutS: number;
  /** The server's --large-group-members (0: its default). 3 makes every group large (groups
   * have at least 3 members), so their messages go through the groups' own logs. */
  largeGroupMembers: number;
  /** Progress to stderr. */
  verbose?: boolean;
}

/** killOnTraffic: how recent the last acknowledged send must be when a SIGKILL lands. */
const KILL_ON_TRAFFIC_MS = 500;

export const DEFAULT_CHAOS: ChaosOptions = {
  durationS: 60,
  users: 6,
  devicesPerUser: 2,
  groups: 2,
  directs: 3,
  opsPerSecond: 4,
  killEveryS: 5,
  restartEveryS: 20,
  netFaultEveryS: 1,
  seed: 1,
  settleTimeoutS: 60,
  largeGroupMembers: 0,
};

export interface ChaosReport {
  /** The one JSON summary line. */
  line: string;
  summary: Record<string, unknown>;
  result: CheckResult;
}

export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const o = options;
  const started = Date.now();
  const rng = new Random(o.seed);
  const log = (msg: string) => {
    if (o.verbose) process.stderr.write(`[chaos ${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}\n`);
  };
  const dataDir = mkdtempSync(join(tmpdir(), "parley-chaos-"));
  const historyPath = o.historyPath ?? join(dataDir, "history.jsonl");
  const historyFd = openSync(historyPath, "w");
  const events: ChaosEvent[] = [];
  /** When a client last saw a send acknowledged (killOnTraffic). */
  let lastAckAt = 0;
  const recordEvent = (ev: ChaosEvent) => {
    if (ev.e === "ack") lastAckAt = Math.max(lastAckAt, ev.t);
    events.push(ev);
    writeSync(historyFd, JSON.stringify(ev) + "\n");
  };

  const env = { ...process.env, PARLEY_TEST_FAULTS: o.serverFaults ?? "" };
  const storeDir = join(dataDir, "server");
  const serverArgs = [
    ...(o.largeGroupMembers > 0 ? ["--large-group-members", String(o.largeGroupMembers)] : []),
    ...(o.commitIntervalMs !== undefined ? ["--commit-interval-ms", String(o.commitIntervalMs)] : []),
  ];
  // Starts at which the store applied what its commit log held (acknowledged, uncommitted sends):
  // SIGKILLs that landed while the log had something to lose.
  let logReplays = 0;
  const onLog = (rec: Record<string, unknown>) => {
    if (rec.msg === COMMIT_LOG_APPLIED || rec.msg === NUMBERED_LOG_APPLIED) logReplays++;
  };
  const startServer = () => startServerProcess(serverArgs, storeDir, { env, onLog });
  let server: ServerProcess | undefined = await startServer();
  let serverUpAt = Date.now();
  const proxies: FaultProxy[] = [];
  const workers: ChildProcess[] = [];
  let sigkills = 0;
  let restarts = 0;
  try {
    const setup = await createUsersAndConversations(server.httpPort, o, rng);
    const devices: Record<string, string> = {};
    const specs: WorkerSpec[] = [];
    for (const u of setup.users) {
      const deviceSpecs: DeviceSpec[] = [];
      for (let d = 0; d < o.devicesPerUser; d++) {
        const http = await FaultProxy.start(() => server?.httpPort);
        const tcp = await FaultProxy.start(() => server?.tcpPort);
        proxies.push(http, tcp);
        const key = `${u.name}/${d}`;
        devices[key] = u.id;
        const kind = (specs.length * o.devicesPerUser + d) % 3;
        deviceSpecs.push({
          key,
          url: `http://127.0.0.1:${http.port}`,
          tcpPort: tcp.port,
          transport: kind === 1 ? "tcp" : "ws",
          encoding: kind === 2 ? "json" : "binary",
        });
      }
      specs.push({
        user: u.id,
        name: u.name,
        password: u.password,
        seed: rng.int(1, 2 ** 31),
        convs: setup.convs.filter((c) => c.members.includes(u.id)).map((c) => c.id),
        devices: deviceSpecs,
        opsPerSecond: o.opsPerSecond,
        settleTimeoutMs: o.settleTimeoutS * 1000,
      });
    }
    recordEvent({
      e: "setup",
      t: Date.now(),
      seed: o.seed,
      convs: Object.fromEntries(setup.convs.map((c) => [c.id, c.members])),
      devices,
    });

    const stepTimeoutMs = (o.settleTimeoutS + 60) * 1000;
    const pool = new WorkerPool(specs.length, recordEvent, log);
    specs.forEach((spec) => workers.push(pool.spawn(spec)));
    await pool.all("ready", stepTimeoutMs);
    log(`${specs.length} client processes, ${Object.keys(devices).length} devices ready`);

    // Faults until the deadline.
    const deadline = Date.now() + o.durationS * 1000;
    const fault = (kind: FaultKind, target?: string) =>
      recordEvent({ e: "fault", t: Date.now(), kind, ...(target ? { target } : {}) });
    const serverFaults = async () => {
      const killRate = o.killEveryS > 0 ? 1 / o.killEveryS : 0;
      const restartRate = o.restartEveryS > 0 ? 1 / o.restartEveryS : 0;
      if (killRate + restartRate === 0) return;
      for (;;) {
        const wait = rng.exp(1000 / (killRate + restartRate));
        if (Date.now() + wait >= deadline) return;
        await sleep(wait);
        const kill = rng.chance(killRate / (killRate + restartRate));
        if (kill && o.killOnTraffic) {
          while (lastAckAt < Math.max(serverUpAt, Date.now() - KILL_ON_TRAFFIC_MS)) {
            if (Date.now() >= deadline) return;
            await sleep(10);
          }
        }
        const old = server!;
        server = undefined;
        if (kill) {
          await old.kill();
          sigkills++;
          fault("sigkill");
        } else {
          await old.stop();
          restarts++;
          fault("restart");
        }
        await sleep(rng.int(0, 500));
        server = await startServer();
        serverUpAt = Date.now();
        log(`server ${kill ? "killed" : "restarted"}, up again on ${server.httpPort}/${server.tcpPort}`);
      }
    };
    const netFaults = async () => {
      if (o.netFaultEveryS <= 0) return;
      for (;;) {
        const wait = rng.exp(o.netFaultEveryS * 1000);
        if (Date.now() + wait >= deadline) return;
        await sleep(wait);
        const i = rng.int(0, proxies.length / 2 - 1);
        const [http, tcp] = [proxies[2 * i]!, proxies[2 * i + 1]!];
        const target = Object.keys(devices)[i]!;
        const r = rng.next();
        if (r < 0.5) {
          http.cut();
          tcp.cut();
          fault("cut", target);
        } else if (r < 0.8) {
          const ms = rng.int(500, 4000);
          http.stall(ms);
          tcp.stall(ms);
          fault("stall", target);
        } else {
          const ms = rng.int(1000, 8000);
          http.offline(ms);
          tcp.offline(ms);
          fault("offline", target);
        }
      }
    };
    await Promise.all([serverFaults(), netFaults()]);
    log(`faults over: ${sigkills} SIGKILLs, ${restarts} clean restarts`);

    // Quiet phase: everything settles, then every device reconnects once more and catches up.
    for (const p of proxies) p.online();
    pool.broadcast({ type: "quiesce" });
    await pool.all("quiet", stepTimeoutMs);
    log("every operation answered");
    const targets: Record<string, number> = {};
    for (const ev of events) {
      if (ev.e === "ack") targets[ev.conv] = Math.max(targets[ev.conv] ?? 0, ev.seq);
    }
    pool.broadcast({ type: "final", targets });
    await pool.all("armed", stepTimeoutMs);
    for (const p of proxies) p.dropAll();
    log("connections dropped; waiting for every device to catch up");
    await pool.all("done", stepTimeoutMs);
    log("every device reported its final state");
    recordEvent({ e: "end", t: Date.now() });
  } finally {
    closeSync(historyFd);
    for (const w of workers) if (w.exitCode === null) w.kill("SIGKILL");
    await Promise.all(proxies.map((p) => p.close()));
    await server?.stop();
    rmSync(storeDir, { recursive: true, force: true });
    if (o.historyPath === undefined) rmSync(dataDir, { recursive: true, force: true });
  }

  const result = check(events);
  const line = summaryLine(result, {
    restarts: sigkills + restarts,
    sigkills,
    logReplays,
    clean_restarts: restarts,
    duration_s: Math.round((Date.now() - started) / 100) / 10,
    seed: o.seed,
  });
  return { line, summary: JSON.parse(line) as Record<string, unknown>, result };
}

interface SetupUser {
  id: string;
  name: string;
  password: string;
}

async function createUsersAndConversations(
  httpPort: number,
  o: ChaosOptions,
  rng: Random,
): Promise<{ users: SetupUser[]; convs: Array<{ id: string; members: string[] }> }> {
  const url = `http://127.0.0.1:${httpPort}`;
  const users: SetupUser[] = [];
  for (let i = 0; i < o.users; i++) {
    const name = `u${i}`;
    const password = `chaos-password-${i}`;
    const info = await ParleyClient.register({ url, name, password });
    users.push({ id: info.id, name, password });
  }
  const admins = new Map<string, ParleyClient>();
  const adminOf = async (u: SetupUser) => {
    let c = admins.get(u.id);
    if (!c) {
      c = await ParleyClient.login({ url, name: u.name, password: u.password, device: "setup" });
      admins.set(u.id, c);
    }
    return c;
  };
  const convs: Array<{ id: string; members: string[] }> = [];
  for (let g = 0; g < o.groups; g++) {
    const members = users.filter(() => rng.chance(0.7));
    while (members.length < Math.min(3, users.length)) {
      const u = rng.pick(users);
      if (!members.includes(u)) members.push(u);
    }
    const owner = members[0]!;
    const conv = await (
      await adminOf(owner)
    ).createGroup(
      `group ${g}`,
      members.slice(1).map((m) => m.id),
    );
    // Not conv.members: a group created large lists only its owner and admins.
    convs.push({ id: conv.id, members: members.map((m) => m.id) });
  }
  const pairs = new Set<string>();
  for (let d = 0; d < o.directs && users.length >= 2; d++) {
    const a = rng.pick(users);
    const b = rng.pick(users.filter((u) => u !== a));
    const key = [a.id, b.id].sort().join();
    if (pairs.has(key)) continue;
    pairs.add(key);
    const conv = await (await adminOf(a)).createDirect(b.name);
    convs.push({ id: conv.id, members: conv.members.map((m) => m.user) });
  }
  await Promise.all([...admins.values()].map((c) => c.close()));
  return { users, convs };
}

/** The client processes and the step they have reported. */
class WorkerPool {
  private readonly counts = new Map<string, number>();
  private readonly children: ChildProcess[] = [];
  private waiter: (() => void) | undefined;
  private failure: Error | undefined;

  constructor(
    private readonly size: number,
    private readonly onEvent: (ev: ChaosEvent) => void,
    private readonly log: (msg: string) => void,
  ) {}

  spawn(spec: WorkerSpec): ChildProcess {
    const child = fork(join(import.meta.dirname, "worker.ts"), [], {
      execArgv: ["--import", "tsx"],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    child.on("message", (msg: FromWorker) => {
      if (msg.type === "events") msg.events.forEach(this.onEvent);
      else if (msg.type === "log") this.log(`${spec.name}: ${msg.msg}`);
      else this.counts.set(msg.type, (this.counts.get(msg.type) ?? 0) + 1);
      this.waiter?.();
    });
    let done = false;
    child.on("message", (msg: FromWorker) => {
      if (msg.type === "done") done = true;
    });
    child.on("exit", (code, signal) => {
      if (!done) {
        this.failure ??= new Error(
          `client process ${spec.name} exited (${String(code ?? signal)}) before reporting its final state`,
        );
        this.waiter?.();
      }
    });
    child.send({ type: "start", spec } satisfies ToWorker);
    this.children.push(child);
    return child;
  }

  broadcast(msg: ToWorker): void {
    for (const c of this.children) c.send(msg);
  }

  /** Waits until every worker has reported `step`. */
  async all(step: FromWorker["type"], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while ((this.counts.get(step) ?? 0) < this.size) {
      if (this.failure) throw this.failure;
      if (Date.now() > deadline) throw new Error(`client processes did not report "${step}" in time`);
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 500);
      });
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
