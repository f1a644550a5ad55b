import { ParleyError } from "@parley/protocol";
import { ClientError, MemoryLocalStore, ParleyClient, textOf } from "@parley/sdk/node";
import { bodyOf, editBodyOf, type ChaosEvent, type FinalMessage } from "./events.ts";
import type { DeviceSpec, FromWorker, ToWorker, WorkerSpec } from "./ipc.ts";
import { Random } from "./random.ts";

// A chaos client process: all devices of one user, each a ParleyClient over its own fault proxy.
// Each device sends, edits, deletes and marks read at random until told to quiesce, and reports
// every send, ack and receive as an event. It uses only the SDK's public API, as an application
// would.

interface OwnMessage {
  conv: string;
  seq: number;
  cid: string;
  edits: number;
  busy: boolean;
  deleted: boolean;
}

let unsent = 0;
let allSent: (() => void) | undefined;
function post(msg: FromWorker): void {
  unsent++;
  process.send?.(msg, (err: Error | null) => {
    if (err) process.stderr.write(`chaos worker: IPC send failed: ${err.message}\n`);
    if (--unsent === 0) allSent?.();
  });
}

/** Resolves once every posted message has been handed to the channel (a disconnect drops the
 * ones that have not: a large final state takes a while). */
function sent(): Promise<void> {
  if (unsent === 0) return Promise.resolve();
  return new Promise((resolve) => (allSent = resolve));
}

let queue: ChaosEvent[] = [];
function record(ev: ChaosEvent): void {
  if (queue.length === 0) setImmediate(flushEvents);
  queue.push(ev);
}
function flushEvents(): void {
  if (queue.length === 0) return;
  post({ type: "events", events: queue });
  queue = [];
}

function log(msg: string): void {
  post({ type: "log", msg });
}

/** One device of the user. */
class Device {
  connected = 0;
  private n = 0;
  private timer: NodeJS.Timeout | undefined;
  private active = false;
  private readonly own: OwnMessage[] = [];
  private readonly inFlight = new Set<Promise<unknown>>();
  /** Highest seq received per conversation. */
  readonly received = new Map<string, number>();
  /** This user's read mark per conversation as this device knows it: the highest read receipt
   * of this user, or seq of this user's own message, it received. */
  readonly readMark = new Map<string, number>();
  errors = 0;

  constructor(
    readonly spec: DeviceSpec,
    readonly client: ParleyClient,
    private readonly user: User,
    private readonly rng: Random,
  ) {
    client.on("message", (msg) => {
      this.received.set(msg.conv, Math.max(this.received.get(msg.conv) ?? 0, msg.seq));
      // The server counts a sender as having read what they sent (without a receipt update).
      if (msg.from === client.user) this.raiseRead(msg.conv, msg.seq);
      record({
        e: "recv",
        t: Date.now(),
        dev: spec.key,
        conv: msg.conv,
        seq: msg.seq,
        from: msg.from,
        cid: msg.cid,
        body: textOf(msg),
      });
    });
    client.on("receipt", (r) => {
      if (r.user === client.user && r.kind === "read") this.raiseRead(r.conv, r.seq);
    });
    client.on("connected", () => this.connected++);
    client.on("error", (err) => {
      if (this.errors++ < 3) log(`${spec.key}: ${err.message}`);
    });
  }

  private raiseRead(conv: string, seq: number): void {
    this.readMark.set(conv, Math.max(this.readMark.get(conv) ?? 0, seq));
  }

  start(opsPerSecond: number): void {
    this.active = true;
    const tick = () => {
      if (!this.active) return;
      this.act();
      this.timer = setTimeout(tick, this.rng.exp(1000 / opsPerSecond));
    };
    this.timer = setTimeout(tick, this.rng.exp(1000 / opsPerSecond));
  }

  /** Stops starting operations and waits for those in flight (each retries until answered). */
  async quiesce(): Promise<void> {
    this.active = false;
    clearTimeout(this.timer);
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  final(): ChaosEvent {
    const messages: Record<string, FinalMessage[]> = {};
    const reads: Record<string, number> = {};
    for (const conv of this.user.spec.convs) {
      messages[conv] = this.client.messages(conv, { limit: Number.MAX_SAFE_INTEGER }).map((m) => ({
        seq: m.seq,
        from: m.from,
        cid: m.cid,
        body: textOf(m),
        deleted: m.deleted === true,
      }));
      reads[conv] = this.readMark.get(conv) ?? 0;
    }
    return { e: "final", t: Date.now(), dev: this.spec.key, user: this.client.user, reads, messages };
  }

  private act(): void {
    const r = this.rng.next();
    if (r < 0.8) this.send();
    else if (r < 0.88) this.edit();
    else if (r < 0.92) this.delete();
    else this.read();
  }

  private track(p: Promise<unknown>): void {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  private send(): void {
    const conv = this.rng.pick(this.user.spec.convs);
    const cid = `${this.spec.key}#${++this.n}`;
    const dev = this.spec.key;
    record({ e: "send", t: Date.now(), dev, user: this.client.user, conv, cid });
    this.track(
      this.client.send(conv, bodyOf(cid), { cid }).then(
        (r) => {
          record({ e: "ack", t: Date.now(), dev, user: this.client.user, conv, cid, seq: r.seq });
          this.own.push({ conv, seq: r.seq, cid, edits: 0, busy: false, deleted: false });
        },
        (err: unknown) => {
          if (err instanceof ParleyError && !err.retry) {
            record({ e: "send-failed", t: Date.now(), dev, conv, cid, code: err.code });
          } else if (!(err instanceof ClientError && err.code === "E_CLIENT_CLOSED")) {
            log(`${dev}: send ${cid} rejected: ${String(err)}`);
          }
        },
      ),
    );
  }

  private pickOwn(): OwnMessage | undefined {
    const free = this.own.filter((m) => !m.busy && !m.deleted);
    return free.length === 0 ? undefined : this.rng.pick(free);
  }

  private edit(): void {
    const m = this.pickOwn();
    if (!m) return this.send();
    m.busy = true;
    const body = editBodyOf(m.cid, ++m.edits);
    const base = { dev: this.spec.key, conv: m.conv, seq: m.seq, body };
    record({ e: "edit", t: Date.now(), ...base });
    this.track(
      this.client
        .edit(m.conv, m.seq, body)
        .then(() => record({ e: "edit-ack", t: Date.now(), ...base }))
        .catch((err: unknown) => log(`${this.spec.key}: edit failed: ${String(err)}`))
        .finally(() => (m.busy = false)),
    );
  }

  private delete(): void {
    const m = this.pickOwn();
    if (!m) return this.send();
    m.busy = true;
    m.deleted = true;
    const base = { dev: this.spec.key, conv: m.conv, seq: m.seq };
    record({ e: "delete", t: Date.now(), ...base });
    this.track(
      this.client
        .delete(m.conv, m.seq)
        .then(() => record({ e: "delete-ack", t: Date.now(), ...base }))
        .catch((err: unknown) => log(`${this.spec.key}: delete failed: ${String(err)}`))
        .finally(() => (m.busy = false)),
    );
  }

  private read(): void {
    const conv = this.rng.pick(this.user.spec.convs);
    const seq = this.received.get(conv) ?? 0;
    if (seq <= (this.user.issuedReads.get(conv) ?? 0)) return;
    this.user.issuedReads.set(conv, seq);
    record({ e: "read", t: Date.now(), dev: this.spec.key, user: this.client.user, conv, seq });
    this.client.markRead(conv, seq);
  }
}

/** The user this process plays, with all of its devices. */
class User {
  readonly devices: Device[] = [];
  /** Highest read mark any of this user's devices asked for, per conversation. */
  readonly issuedReads = new Map<string, number>();

  constructor(readonly spec: WorkerSpec) {}

  async start(): Promise<void> {
    const rng = new Random(this.spec.seed);
    for (const d of this.spec.devices) {
      const client = await ParleyClient.login({
        url: d.url,
        name: this.spec.name,
        password: this.spec.password,
        device: d.key,
        transport: d.transport,
        tcpPort: d.tcpPort,
        encoding: d.encoding,
        store: new MemoryLocalStore({ maxMessagesPerConversation: 1_000_000 }),
        reconnectBaseMs: 50,
        reconnectCapMs: 1000,
        readDelayMs: 100,
      });
      this.devices.push(new Device(d, client, this, new Random(rng.int(1, 2 ** 31))));
    }
    await Promise.all(this.devices.map((d) => d.client.connect()));
    for (const d of this.devices) d.start(this.spec.opsPerSecond);
  }

  async quiesce(): Promise<void> {
    await withTimeout(
      Promise.all(this.devices.map((d) => d.quiesce())),
      this.spec.settleTimeoutMs,
      "operations still unanswered",
    );
  }

  /** Waits until every device has reconnected since `baseline` and is caught up, then reports. */
  async final(targets: Record<string, number>, baseline: number[]): Promise<void> {
    const caughtUp = (d: Device, i: number) =>
      d.connected > baseline[i]! &&
      this.spec.convs.every(
        (c) =>
          (d.received.get(c) ?? 0) >= (targets[c] ?? 0) &&
          (d.readMark.get(c) ?? 0) >= (this.issuedReads.get(c) ?? 0),
      );
    const deadline = Date.now() + this.spec.settleTimeoutMs;
    while (!this.devices.every(caughtUp) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    this.devices.forEach((d, i) => {
      if (caughtUp(d, i)) return;
      const behind = this.spec.convs
        .filter((c) => (d.received.get(c) ?? 0) < (targets[c] ?? 0))
        .map((c) => `${c} ${d.received.get(c) ?? 0}/${targets[c]}`);
      log(
        `${d.spec.key}: not caught up at the deadline (state ${d.client.state}, reconnected ` +
          `${d.connected > baseline[i]!}, behind: ${behind.join(", ") || "none"})`,
      );
    });
    for (const d of this.devices) record(d.final());
    flushEvents();
    await Promise.all(this.devices.map((d) => d.client.close()));
  }
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => {
      log(`timed out: ${what}`);
      resolve(undefined);
    }, ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

let user: User | undefined;
process.on("message", (msg: ToWorker) => {
  void (async () => {
    try {
      switch (msg.type) {
        case "start":
          user = new User(msg.spec);
          await user.start();
          post({ type: "ready" });
          break;
        case "quiesce":
          await user!.quiesce();
          flushEvents();
          post({ type: "quiet" });
          break;
        case "final": {
          const baseline = user!.devices.map((d) => d.connected);
          post({ type: "armed" });
          await user!.final(msg.targets, baseline);
          post({ type: "done" });
          await sent();
          process.disconnect();
          break;
        }
      }
    } catch (err) {
      log(`worker failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      process.exit(1);
    }
  })();
});
