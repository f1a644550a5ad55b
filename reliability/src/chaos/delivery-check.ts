import type { Counts, Violation } from "./checker.ts";
import type { ChaosEvent, DeviceKey } from "./events.ts";
import type { MessageOps } from "./message-state.ts";
import { newMessageOps, receivedBodyAllowed } from "./message-state.ts";

// The checker's first part: indexes the history and checks the stream of receives (lost,
// duplicated, reordered, gaps, phantom, diverged, unacked_duplicated). It keeps what the final
// checks (final-check.ts) need.
//
// The history interleaves the events of several client processes as they reach the orchestrator,
// so the order of events of DIFFERENT processes is only approximate: order is used only among one
// device's receives. Existence ("was this cid ever sent?") is looked up in the whole history.

export type Setup = Extract<ChaosEvent, { e: "setup" }>;
export type Recv = Extract<ChaosEvent, { e: "recv" }>;
export type Final = Extract<ChaosEvent, { e: "final" }>;

export interface SendState {
  conv: string;
  user: string;
  cid: string;
  started: boolean;
  failed: boolean;
  /** Distinct seqs the server acknowledged (more than one is a duplicate commit). */
  ackSeqs: number[];
  /** Distinct seqs devices received this cid under. */
  seen: Set<number>;
}

export interface DeviceConv {
  /** Highest seq received so far. */
  last: number;
  seqs: Set<number>;
  /** Who sent what this device received at each seq (the first one, if received twice). */
  senders: Map<number, string>;
}

export const SEP = "\u0000";

/** A map key of two or three parts. */
export const key = (a: string | number, b: string | number, c?: string): string =>
  c === undefined ? `${a}${SEP}${b}` : `${a}${SEP}${b}${SEP}${c}`;

export class DeliveryCheck {
  readonly violations: Violation[] = [];
  setup: Setup | undefined;
  /** user -> devices */
  readonly devicesOf = new Map<string, DeviceKey[]>();
  /** key(conv, user) of every membership. */
  readonly members = new Set<string>();
  /** key(conv, user, cid) -> the send */
  readonly sends = new Map<string, SendState>();
  /** key(conv, seq) -> its edits and deletes */
  readonly ops = new Map<string, MessageOps>();
  /** Each device's last final event. */
  readonly finals = new Map<DeviceKey, Final>();
  /** key(user, conv) -> highest read issued */
  readonly readMax = new Map<string, number>();
  /** key(dev, conv) -> what the device received */
  readonly devConvs = new Map<string, DeviceConv>();
  /** key(conv, seq) -> what the first device to receive it received */
  readonly identity = new Map<string, { from: string; cid: string }>();
  /** conv -> seq -> the send acknowledged with it */
  readonly ackedSeqs = new Map<string, Map<number, SendState>>();
  private readonly recvs: Array<[Recv, number]> = [];
  private readonly maxSeq = new Map<string, number>();

  constructor(readonly counts: Counts) {}

  /** Indexes every event, then (given a setup) checks acks and receives. */
  run(events: Iterable<ChaosEvent>): void {
    let i = 0;
    for (const ev of events) this.index(ev, i++);
    if (!this.setup) return this.report({ kind: "malformed", detail: "the history has no setup event" });
    for (const [dev, user] of Object.entries(this.setup.devices)) {
      const list = this.devicesOf.get(user) ?? [];
      list.push(dev);
      this.devicesOf.set(user, list);
    }
    for (const [conv, users] of Object.entries(this.setup.convs)) {
      for (const user of users) this.members.add(key(conv, user));
    }
    this.checkAcks();
    for (const [r, at] of this.recvs) this.checkRecv(r, at);
    this.checkCommits();
    this.checkCompleteness();
  }

  report(v: Violation): void {
    this.violations.push(v);
    this.counts[v.kind]++;
  }

  isMember(user: string | undefined, conv: string): boolean {
    return user !== undefined && this.members.has(key(conv, user));
  }

  /** Remembers what each event says, without judging order (a recv may legitimately precede its
   * send in the history: they come from different processes). */
  private index(ev: ChaosEvent, at: number): void {
    if (this.setup && "dev" in ev) this.checkDevice(ev, at);
    switch (ev.e) {
      case "setup":
        if (this.setup) this.report({ kind: "malformed", detail: `a second setup event (event ${at})` });
        else this.setup = ev;
        return;
      case "send": {
        this.counts.sends++;
        const s = this.send(ev.conv, ev.user, ev.cid);
        if (s.started)
          this.report({ kind: "malformed", conv: ev.conv, cid: ev.cid, detail: "cid sent twice" });
        s.started = true;
        return;
      }
      case "ack": {
        const s = this.send(ev.conv, ev.user, ev.cid);
        if (!s.ackSeqs.includes(ev.seq)) s.ackSeqs.push(ev.seq);
        return;
      }
      case "send-failed": {
        this.counts.send_failed++;
        const user = this.setup?.devices[ev.dev];
        if (user !== undefined) this.send(ev.conv, user, ev.cid).failed = true;
        return;
      }
      case "recv":
        this.counts.delivered++;
        this.recvs.push([ev, at]);
        return;
      case "edit":
      case "edit-ack": {
        if (ev.e === "edit") this.counts.edits++;
        const edits = this.messageOps(ev.conv, ev.seq).edits;
        const edit = edits.get(ev.body) ?? { start: -1, ack: -1 };
        if (ev.e === "edit" && edit.start < 0) edit.start = at;
        if (ev.e === "edit-ack") edit.ack = at;
        edits.set(ev.body, edit);
        return;
      }
      case "delete":
        this.counts.deletes++;
        this.messageOps(ev.conv, ev.seq).deleteStarted = true;
        return;
      case "delete-ack":
        this.messageOps(ev.conv, ev.seq).deleteAcked = true;
        return;
      case "read": {
        this.counts.reads++;
        const k = key(ev.user, ev.conv);
        this.readMax.set(k, Math.max(this.readMax.get(k) ?? 0, ev.seq));
        return;
      }
      case "final":
        this.counts.finals++;
        this.finals.set(ev.dev, ev);
        return;
      case "fault":
        this.counts.faults++;
        return;
      case "end":
        return;
    }
  }

  private checkDevice(ev: Extract<ChaosEvent, { dev: string }>, at: number): void {
    const user = this.setup!.devices[ev.dev];
    if (user === undefined) {
      this.report({ kind: "malformed", dev: ev.dev, detail: `${ev.e} from an unknown device (event ${at})` });
    } else if ("user" in ev && ev.user !== user) {
      this.report({
        kind: "malformed",
        dev: ev.dev,
        detail: `${ev.e} names user ${ev.user}, not ${user} (event ${at})`,
      });
    }
  }

  private send(conv: string, user: string, cid: string): SendState {
    const k = key(conv, user, cid);
    let s = this.sends.get(k);
    if (!s) {
      s = { conv, user, cid, started: false, failed: false, ackSeqs: [], seen: new Set() };
      this.sends.set(k, s);
    }
    return s;
  }

  private messageOps(conv: string, seq: number): MessageOps {
    const k = key(conv, seq);
    let ops = this.ops.get(k);
    if (!ops) this.ops.set(k, (ops = newMessageOps()));
    return ops;
  }

  /** Acks: of a send that was started and did not fail; one seq per cid and one cid per seq. */
  private checkAcks(): void {
    for (const s of this.sends.values()) {
      if (s.ackSeqs.length === 0) continue;
      const at = { conv: s.conv, cid: s.cid };
      if (!s.started)
        this.report({ kind: "malformed", ...at, detail: `ack of a send never started by ${s.user}` });
      if (s.failed)
        this.report({ kind: "phantom", ...at, detail: "a send reported failed was acknowledged" });
      if (s.ackSeqs.length > 1) {
        this.report({ kind: "duplicated", ...at, detail: `acknowledged under seqs ${s.ackSeqs.join(", ")}` });
      }
      let bySeq = this.ackedSeqs.get(s.conv);
      if (!bySeq) this.ackedSeqs.set(s.conv, (bySeq = new Map<number, SendState>()));
      for (const seq of s.ackSeqs) {
        const other = bySeq.get(seq);
        if (other && other !== s) {
          this.report({
            kind: "diverged",
            ...at,
            seq,
            detail: `seq also acknowledged for ${other.user}'s ${other.cid}`,
          });
        } else bySeq.set(seq, s);
        this.raiseMax(s.conv, seq);
      }
    }
  }

  private raiseMax(conv: string, seq: number): void {
    if (seq > (this.maxSeq.get(conv) ?? 0)) this.maxSeq.set(conv, seq);
  }

  /** One receive, in history order: where it lands, whether it repeats or goes backwards, and
   * whether it is something that was really sent. */
  private checkRecv(r: Recv, at: number): void {
    const where = { dev: r.dev, conv: r.conv, seq: r.seq, cid: r.cid };
    const user = this.setup!.devices[r.dev];
    if (user === undefined) return; // reported by index()
    if (!Number.isSafeInteger(r.seq) || r.seq < 1) {
      return this.report({
        kind: "malformed",
        ...where,
        detail: `seq is not a positive integer (event ${at})`,
      });
    }
    if (!this.isMember(user, r.conv)) {
      return this.report({ kind: "phantom", ...where, detail: `received by ${user}, not a member` });
    }
    const dc = this.deviceConv(r.dev, r.conv);
    if (dc.seqs.has(r.seq)) {
      this.report({ kind: "duplicated", ...where, detail: `received again (event ${at})` });
    } else if (r.seq < dc.last) {
      this.report({ kind: "reordered", ...where, detail: `received after seq ${dc.last} (event ${at})` });
    }
    dc.seqs.add(r.seq);
    if (!dc.senders.has(r.seq)) dc.senders.set(r.seq, key(r.from, r.cid));
    dc.last = Math.max(dc.last, r.seq);
    this.raiseMax(r.conv, r.seq);

    const msgKey = key(r.conv, r.seq);
    const id = this.identity.get(msgKey);
    if (!id) this.identity.set(msgKey, { from: r.from, cid: r.cid });
    else if (id.from !== r.from || id.cid !== r.cid) {
      this.report({
        kind: "diverged",
        ...where,
        detail: `another device received ${id.from}'s ${id.cid} here`,
      });
    }

    const s = this.sends.get(key(r.conv, r.from, r.cid));
    if (!s?.started)
      return this.report({ kind: "phantom", ...where, detail: `no send of this cid by ${r.from}` });
    s.seen.add(r.seq);
    if (s.failed) return this.report({ kind: "phantom", ...where, detail: "the send was reported failed" });
    if (!receivedBodyAllowed(this.ops.get(msgKey), r.cid, r.body)) {
      this.report({ kind: "phantom", ...where, detail: `body ${JSON.stringify(r.body)} was never written` });
    }
  }

  private deviceConv(dev: DeviceKey, conv: string): DeviceConv {
    const k = key(dev, conv);
    let dc = this.devConvs.get(k);
    if (!dc) this.devConvs.set(k, (dc = { last: 0, seqs: new Set(), senders: new Map() }));
    return dc;
  }

  /** Each cid committed under one seq (the acknowledged one, if any), and what devices received
   * at an acknowledged seq is the message acknowledged there. */
  private checkCommits(): void {
    for (const [conv, bySeq] of this.ackedSeqs) {
      for (const [seq, s] of bySeq) {
        const id = this.identity.get(key(conv, seq));
        if (id && (id.from !== s.user || id.cid !== s.cid)) {
          const detail = `acknowledged here, but devices received ${id.from}'s ${id.cid}`;
          this.report({ kind: "phantom", conv, seq, cid: s.cid, detail });
        }
      }
    }
    for (const s of this.sends.values()) {
      if (!s.started || s.failed || s.seen.size === 0) continue;
      const at = { conv: s.conv, cid: s.cid };
      const seen = [...s.seen].sort((a, b) => a - b);
      if (s.ackSeqs.length === 0) {
        if (seen.length > 1) {
          const detail = `unacknowledged, received as seqs ${seen.join(", ")}`;
          this.report({ kind: "unacked_duplicated", ...at, detail });
        }
        continue;
      }
      // Seen under other seqs too: a duplicate commit; seen only under other seqs: the ack lied.
      const ackSeen = s.ackSeqs.some((a) => s.seen.has(a));
      const acked = s.ackSeqs.join(", ");
      for (const seq of seen) {
        if (s.ackSeqs.includes(seq)) continue;
        const detail = `acknowledged as seq ${acked}, ${ackSeen ? "also" : "but"} received as this seq`;
        this.report({ kind: ackSeen ? "duplicated" : "phantom", ...at, seq, detail });
      }
    }
  }

  /** Every member device holds every seq 1..max, max being the highest seq received or
   * acknowledged: acknowledged ones missing are "lost", other missing ranges "gaps". Walks the
   * sorted seqs, so an absurd max costs nothing. */
  private checkCompleteness(): void {
    for (const [conv, members] of Object.entries(this.setup!.convs)) {
      const max = this.maxSeq.get(conv) ?? 0;
      const acked = this.ackedSeqs.get(conv) ?? new Map<number, SendState>();
      for (const user of members) {
        for (const dev of this.devicesOf.get(user) ?? []) {
          const dc = this.devConvs.get(key(dev, conv));
          const seqs = dc?.seqs ?? new Set<number>();
          for (const [seq, s] of acked) {
            // Received means this message at this seq: another message there (a seq reused
            // after a crash lost the acknowledged one) does not count.
            const got = dc?.senders.get(seq);
            if (got === key(s.user, s.cid)) continue;
            const detail =
              got === undefined
                ? `acknowledged to ${s.user}, never received`
                : `acknowledged to ${s.user}, but this device holds another message at its seq`;
            this.report({ kind: "lost", dev, conv, seq, cid: s.cid, detail });
          }
          const known = [...seqs, ...acked.keys()].sort((a, b) => a - b);
          known.push(max + 1);
          let prev = 0;
          for (const seq of known) {
            if (seq > prev + 1) {
              const range = seq - 1 === prev + 1 ? `${prev + 1}` : `${prev + 1}..${seq - 1}`;
              const detail = `never received seq ${range} (max ${max})`;
              this.report({ kind: "gaps", dev, conv, seq: prev + 1, detail });
            }
            prev = Math.max(prev, seq);
          }
        }
      }
    }
  }
}
