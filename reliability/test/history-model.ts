import fc from "fast-check";
import type { ChaosEvent, FinalMessage } from "../src/chaos/events.ts";
import { bodyOf, editBodyOf } from "../src/chaos/events.ts";

// A model of a correct chaos run, for the checker's property tests: a server (conversations with
// gap-free seqs, one update log per user whose message entries show the message's CURRENT state,
// as the real store's do) and devices that apply their user's log in order. Random steps start
// sends, edits, deletes and reads with random outcomes (acknowledged, applied but unacknowledged,
// lost) and deliver random amounts of each device's log; at the end every device drains its log
// and reports "final". The history is correct by construction and in a random interleaving that
// respects each device's own order.

export type Outcome = "acked" | "applied" | "dropped";

export type Step =
  | { op: "send"; dev: number; conv: number; outcome: Outcome | "failed" }
  | { op: "deliver"; dev: number; n: number }
  | { op: "edit"; dev: number; msg: number; outcome: Outcome }
  | { op: "delete"; dev: number; msg: number; outcome: Outcome }
  | { op: "read"; dev: number; conv: number }
  | { op: "fault" };

export interface Scenario {
  /** Devices of each user (the user count is this list's length). */
  devicesPerUser: number[];
  /** Per conversation, a bit mask of its member users (0 falls back to user 0). */
  convMasks: number[];
  steps: Step[];
}

const outcome = fc.constantFrom<Outcome>("acked", "acked", "applied", "dropped");

/** Relative frequencies of the step kinds. */
export type StepWeights = Record<Step["op"], number>;

const DEFAULT_WEIGHTS: StepWeights = { send: 5, deliver: 5, edit: 2, delete: 1, read: 1, fault: 1 };

/** Random scenarios: 1-3 users of 1-3 devices, 1-3 conversations, up to 80 steps. */
export function scenarios(weights: Partial<StepWeights> = {}): fc.Arbitrary<Scenario> {
  const w = { ...DEFAULT_WEIGHTS, ...weights };
  const step: fc.Arbitrary<Step> = fc.oneof(
    {
      arbitrary: fc.record({
        op: fc.constant("send" as const),
        dev: fc.nat(),
        conv: fc.nat(),
        outcome: fc.constantFrom<Outcome | "failed">(
          "acked",
          "acked",
          "acked",
          "applied",
          "dropped",
          "failed",
        ),
      }),
      weight: w.send,
    },
    {
      arbitrary: fc.record({ op: fc.constant("deliver" as const), dev: fc.nat(), n: fc.nat(6) }),
      weight: w.deliver,
    },
    {
      arbitrary: fc.record({ op: fc.constant("edit" as const), dev: fc.nat(), msg: fc.nat(), outcome }),
      weight: w.edit,
    },
    {
      arbitrary: fc.record({ op: fc.constant("delete" as const), dev: fc.nat(), msg: fc.nat(), outcome }),
      weight: w.delete,
    },
    {
      arbitrary: fc.record({ op: fc.constant("read" as const), dev: fc.nat(), conv: fc.nat() }),
      weight: w.read,
    },
    { arbitrary: fc.constant({ op: "fault" as const }), weight: w.fault },
  );
  return fc.record({
    devicesPerUser: fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 3 }),
    convMasks: fc.array(fc.nat(7), { minLength: 1, maxLength: 3 }),
    steps: fc.array(step, { maxLength: 80 }),
  });
}

export const scenarioArb: fc.Arbitrary<Scenario> = scenarios();

type Entry =
  { k: "msg" | "edit" | "del"; conv: string; seq: number } | { k: "read"; conv: string; seq: number };

interface ServerMessage extends FinalMessage {
  edits: number;
}

interface Device {
  key: string;
  user: string;
  cursor: number;
  sent: number;
  messages: Map<string, Map<number, FinalMessage>>;
  reads: Map<string, number>;
  received: Map<string, number>;
}

/** Runs a scenario; returns its history (setup first, end last). Deterministic. */
export function simulate(s: Scenario): ChaosEvent[] {
  return new Simulation(s).run();
}

class Simulation {
  private readonly events: ChaosEvent[] = [];
  private t = 0;
  private readonly devices: Device[] = [];
  private readonly convs = new Map<string, string[]>();
  private readonly userConvs = new Map<string, string[]>();
  private readonly messages = new Map<string, ServerMessage[]>();
  private readonly logs = new Map<string, Entry[]>();
  private readonly readMarks = new Map<string, number>();
  /** Acknowledged messages by sender, the ones a device may edit or delete. */
  private readonly own = new Map<string, ServerMessage[]>();

  constructor(private readonly s: Scenario) {
    const users = s.devicesPerUser.map((_, i) => `usr_${i}`);
    s.devicesPerUser.forEach((n, u) => {
      for (let d = 1; d <= n; d++) {
        this.devices.push({
          key: `n${u}/${d}`,
          user: users[u]!,
          cursor: 0,
          sent: 0,
          messages: new Map(),
          reads: new Map(),
          received: new Map(),
        });
      }
    });
    for (const u of users) {
      this.userConvs.set(u, []);
      this.logs.set(u, []);
      this.own.set(u, []);
    }
    s.convMasks.forEach((mask, c) => {
      const members = users.filter((_, i) => (mask & (1 << i)) !== 0);
      if (members.length === 0) members.push(users[0]!);
      const conv = `c_${c}`;
      this.convs.set(conv, members);
      this.messages.set(conv, []);
      for (const m of members) this.userConvs.get(m)!.push(conv);
    });
  }

  run(): ChaosEvent[] {
    this.emit({
      e: "setup",
      t: this.t,
      seed: 1,
      convs: Object.fromEntries(this.convs),
      devices: Object.fromEntries(this.devices.map((d) => [d.key, d.user])),
    });
    for (const st of this.s.steps) this.step(st);
    for (const d of this.devices) {
      this.deliver(d, Infinity);
      this.emit(this.final(d));
    }
    this.emit({ e: "end", t: ++this.t });
    return this.events;
  }

  private emit(ev: ChaosEvent): void {
    this.events.push(ev);
  }

  private step(st: Step): void {
    if (st.op === "fault") return this.emit({ e: "fault", t: ++this.t, kind: "cut" });
    const d = this.devices[st.dev % this.devices.length]!;
    switch (st.op) {
      case "send":
        return this.send(d, st.conv, st.outcome);
      case "deliver":
        return this.deliver(d, st.n);
      case "edit":
        return this.edit(d, st.msg, st.outcome);
      case "delete":
        return this.delete(d, st.msg, st.outcome);
      case "read":
        return this.read(d, st.conv);
    }
  }

  private send(d: Device, convIndex: number, outcome: Outcome | "failed"): void {
    const convs = this.userConvs.get(d.user)!;
    if (convs.length === 0) return;
    const conv = convs[convIndex % convs.length]!;
    const cid = `${d.key}#${++d.sent}`;
    this.emit({ e: "send", t: ++this.t, dev: d.key, user: d.user, conv, cid });
    if (outcome === "failed") {
      return this.emit({ e: "send-failed", t: ++this.t, dev: d.key, conv, cid, code: "E_FORBIDDEN" });
    }
    if (outcome === "dropped") return;
    const list = this.messages.get(conv)!;
    const msg: ServerMessage = {
      seq: list.length + 1,
      from: d.user,
      cid,
      body: bodyOf(cid),
      deleted: false,
      edits: 0,
    };
    list.push(msg);
    this.append(conv, { k: "msg", conv, seq: msg.seq });
    if (outcome === "acked") {
      this.own.get(d.user)!.push(msg);
      this.emit({ e: "ack", t: ++this.t, dev: d.key, user: d.user, conv, cid, seq: msg.seq });
    }
  }

  private append(conv: string, entry: Entry): void {
    for (const user of this.convs.get(conv)!) this.logs.get(user)!.push(entry);
  }

  private conversationOf(msg: ServerMessage): string {
    for (const [conv, list] of this.messages) if (list[msg.seq - 1] === msg) return conv;
    throw new Error("message not found");
  }

  private edit(d: Device, index: number, outcome: Outcome): void {
    const own = this.own.get(d.user)!;
    if (own.length === 0) return;
    const msg = own[index % own.length]!;
    const conv = this.conversationOf(msg);
    const body = editBodyOf(msg.cid, ++msg.edits);
    this.emit({ e: "edit", t: ++this.t, dev: d.key, conv, seq: msg.seq, body });
    // The server refuses to edit a deleted message (E_CONFLICT): the edit stays unacknowledged.
    if (outcome === "dropped" || msg.deleted) return;
    msg.body = body;
    this.append(conv, { k: "edit", conv, seq: msg.seq });
    if (outcome === "acked") this.emit({ e: "edit-ack", t: ++this.t, dev: d.key, conv, seq: msg.seq, body });
  }

  private delete(d: Device, index: number, outcome: Outcome): void {
    const own = this.own.get(d.user)!;
    if (own.length === 0) return;
    const msg = own[index % own.length]!;
    const conv = this.conversationOf(msg);
    this.emit({ e: "delete", t: ++this.t, dev: d.key, conv, seq: msg.seq });
    if (outcome === "dropped") return;
    if (!msg.deleted) {
      msg.deleted = true;
      msg.body = "";
      this.append(conv, { k: "del", conv, seq: msg.seq });
    }
    if (outcome === "acked") this.emit({ e: "delete-ack", t: ++this.t, dev: d.key, conv, seq: msg.seq });
  }

  private read(d: Device, convIndex: number): void {
    const convs = this.userConvs.get(d.user)!;
    if (convs.length === 0) return;
    const conv = convs[convIndex % convs.length]!;
    const seq = d.received.get(conv) ?? 0;
    if (seq === 0) return;
    this.emit({ e: "read", t: ++this.t, dev: d.key, user: d.user, conv, seq });
    const k = `${d.user} ${conv}`;
    const mark = Math.max(this.readMarks.get(k) ?? 0, seq);
    this.readMarks.set(k, mark);
    this.logs.get(d.user)!.push({ k: "read", conv, seq: mark });
  }

  /** Applies up to `n` entries of the device's user log, in order. */
  private deliver(d: Device, n: number): void {
    const log = this.logs.get(d.user)!;
    for (let i = 0; i < n && d.cursor < log.length; i++) {
      const entry = log[d.cursor++]!;
      if (entry.k === "read") {
        d.reads.set(entry.conv, Math.max(d.reads.get(entry.conv) ?? 0, entry.seq));
        continue;
      }
      const { seq, from, cid, body, deleted } = this.messages.get(entry.conv)![entry.seq - 1]!;
      const state: FinalMessage = { seq, from, cid, body, deleted };
      let local = d.messages.get(entry.conv);
      if (!local) d.messages.set(entry.conv, (local = new Map<number, FinalMessage>()));
      local.set(seq, state);
      if (entry.k === "msg") {
        d.received.set(entry.conv, seq);
        this.emit({ e: "recv", t: ++this.t, dev: d.key, conv: entry.conv, seq, from, cid, body });
      }
    }
  }

  private final(d: Device): ChaosEvent {
    const reads: Record<string, number> = {};
    const messages: Record<string, FinalMessage[]> = {};
    for (const conv of this.userConvs.get(d.user)!) {
      reads[conv] = d.reads.get(conv) ?? 0;
      messages[conv] = [...(d.messages.get(conv)?.values() ?? [])].sort((a, b) => a.seq - b.seq);
    }
    return { e: "final", t: ++this.t, dev: d.key, user: d.user, reads, messages };
  }
}
