import fc from "fast-check";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { CheckResult, ViolationKind } from "../src/chaos/checker.ts";
import { check, formatViolation, readHistory, summaryLine, VIOLATION_KINDS } from "../src/chaos/checker.ts";
import type { ChaosEvent, FinalMessage } from "../src/chaos/events.ts";
import { bodyOf, editBodyOf } from "../src/chaos/events.ts";
import { MUTATIONS } from "./history-mutations.ts";
import { scenarioArb, simulate } from "./history-model.ts";

// Device "alice/1" belongs to user "u_alice"; a cid "alice/1#3" was sent by u_alice.
const userOf = (devOrCid: string): string => `u_${devOrCid.split("/")[0]}`;

type Final = Extract<ChaosEvent, { e: "final" }>;

/** Writes a history by hand. finals() derives each device's final list from what it received. */
class History {
  readonly events: ChaosEvent[] = [];
  private t = 0;
  private readonly received = new Map<string, FinalMessage[]>();

  constructor(
    readonly convs: Record<string, string[]> = { c1: ["u_alice", "u_bob"] },
    readonly devices: string[] = ["alice/1", "alice/2", "bob/1"],
  ) {
    this.add({
      e: "setup",
      t: 0,
      seed: 7,
      convs,
      devices: Object.fromEntries(devices.map((d) => [d, userOf(d)])),
    });
  }

  add(ev: ChaosEvent): this {
    this.events.push(ev);
    return this;
  }

  send(dev: string, cid: string, conv = "c1"): this {
    return this.add({ e: "send", t: ++this.t, dev, user: userOf(dev), conv, cid });
  }

  ack(dev: string, cid: string, seq: number, conv = "c1"): this {
    return this.add({ e: "ack", t: ++this.t, dev, user: userOf(dev), conv, cid, seq });
  }

  /** send + ack */
  sent(dev: string, cid: string, seq: number, conv = "c1"): this {
    return this.send(dev, cid, conv).ack(dev, cid, seq, conv);
  }

  recv(dev: string, seq: number, cid: string, opts: { conv?: string; body?: string } = {}): this {
    const conv = opts.conv ?? "c1";
    const body = opts.body ?? bodyOf(cid);
    const list = this.received.get(`${dev} ${conv}`) ?? [];
    list.push({ seq, from: userOf(cid), cid, body, deleted: false });
    this.received.set(`${dev} ${conv}`, list);
    return this.add({ e: "recv", t: ++this.t, dev, conv, seq, from: userOf(cid), cid, body });
  }

  /** Every member device receives it. */
  recvAll(seq: number, cid: string, conv = "c1"): this {
    for (const dev of this.devices)
      if (this.convs[conv]!.includes(userOf(dev))) this.recv(dev, seq, cid, { conv });
    return this;
  }

  final(
    dev: string,
    change: (m: FinalMessage) => FinalMessage = (m) => m,
    reads: Record<string, number> = {},
  ): this {
    const messages: Record<string, FinalMessage[]> = {};
    for (const [conv, members] of Object.entries(this.convs)) {
      if (!members.includes(userOf(dev))) continue;
      const bySeq = new Map((this.received.get(`${dev} ${conv}`) ?? []).map((m) => [m.seq, m]));
      messages[conv] = [...bySeq.values()].map((m) => change({ ...m })).sort((a, b) => a.seq - b.seq);
    }
    const ev: Final = { e: "final", t: ++this.t, dev, user: userOf(dev), reads, messages };
    return this.add(ev);
  }

  /** A final for every device, each message passed through `change`. */
  finals(
    change?: (m: FinalMessage, dev: string) => FinalMessage,
    reads?: (dev: string) => Record<string, number>,
  ) {
    for (const dev of this.devices) this.final(dev, change && ((m) => change(m, dev)), reads?.(dev));
    return this;
  }
}

/** alice/1 and bob/1 each send one acknowledged message; all three devices receive both. */
function twoMessages(): History {
  return new History()
    .sent("alice/1", "alice/1#1", 1)
    .recvAll(1, "alice/1#1")
    .sent("bob/1", "bob/1#1", 2)
    .recvAll(2, "bob/1#1");
}

/** The violation kinds found, with their numbers; also checks counts agree with the list. */
function kinds(r: CheckResult): Partial<Record<ViolationKind, number>> {
  const out: Partial<Record<ViolationKind, number>> = {};
  for (const v of r.violations) out[v.kind] = (out[v.kind] ?? 0) + 1;
  for (const kind of VIOLATION_KINDS) expect(r.counts[kind]).toBe(out[kind] ?? 0);
  expect(r.ok).toBe(r.violations.length === 0);
  return out;
}

const withBody =
  (body: string, deleted = false) =>
  (m: FinalMessage) => ({ ...m, body, deleted });
const forDevice = (dev: string, f: (m: FinalMessage) => FinalMessage) => (m: FinalMessage, d: string) =>
  d === dev ? f(m) : m;
const onSeq = (seq: number, f: (m: FinalMessage) => FinalMessage) => (m: FinalMessage) =>
  m.seq === seq ? f(m) : m;

describe("check: correct histories", () => {
  it("accepts a clean history and counts it", () => {
    const r = check(twoMessages().finals().events);
    expect(r.violations).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.counts).toMatchObject({ ops: 2, sends: 2, acked: 2, unacked: 0, delivered: 6, finals: 3 });
    for (const kind of VIOLATION_KINDS) expect(r.counts[kind]).toBe(0);
  });

  it("requires the sending device to receive its own message", () => {
    const h = new History()
      .sent("alice/1", "alice/1#1", 1)
      .recv("alice/2", 1, "alice/1#1")
      .recv("bob/1", 1, "alice/1#1");
    const r = check(h.finals().events);
    expect(kinds(r)).toEqual({ lost: 1 });
    expect(r.violations[0]).toMatchObject({
      kind: "lost",
      dev: "alice/1",
      conv: "c1",
      seq: 1,
      cid: "alice/1#1",
    });
  });

  it("counts unacknowledged sends, delivered or not, without a violation", () => {
    const h = twoMessages().send("alice/2", "alice/2#1").recvAll(3, "alice/2#1").send("bob/1", "bob/1#2");
    const r = check(h.finals().events);
    expect(r.violations).toEqual([]);
    expect(r.counts).toMatchObject({ sends: 4, acked: 2, unacked: 2, unacked_delivered: 1, lost: 0 });
  });

  it("accepts a receive that already shows the message edited or deleted (log entries show the current state)", () => {
    const h = new History()
      .sent("alice/1", "alice/1#1", 1)
      .sent("alice/1", "alice/1#2", 2)
      .add({ e: "edit", t: 1, dev: "alice/2", conv: "c1", seq: 1, body: editBodyOf("alice/1#1", 1) })
      .add({ e: "delete", t: 1, dev: "alice/1", conv: "c1", seq: 2 })
      .add({ e: "delete-ack", t: 1, dev: "alice/1", conv: "c1", seq: 2 });
    for (const dev of h.devices) {
      h.recv(dev, 1, "alice/1#1", { body: editBodyOf("alice/1#1", 1) }).recv(dev, 2, "alice/1#2", {
        body: "",
      });
    }
    const r = check(h.finals((m) => (m.seq === 2 ? { ...m, deleted: true } : m)).events);
    expect(r.violations).toEqual([]);
  });

  it("accepts a send-failed that never appears, and counts it", () => {
    const h = twoMessages().send("alice/1", "alice/1#2").add({
      e: "send-failed",
      t: 1,
      dev: "alice/1",
      conv: "c1",
      cid: "alice/1#2",
      code: "E_FORBIDDEN",
    });
    const r = check(h.finals().events);
    expect(r.violations).toEqual([]);
    expect(r.counts).toMatchObject({ sends: 3, send_failed: 1, unacked: 0 });
  });
});

describe("check: each violation", () => {
  it("lost: a member device never receives an acknowledged message", () => {
    const h = new History()
      .sent("alice/1", "alice/1#1", 1)
      .recvAll(1, "alice/1#1")
      .sent("bob/1", "bob/1#1", 2)
      .recv("alice/1", 2, "bob/1#1")
      .recv("bob/1", 2, "bob/1#1");
    const r = check(h.finals().events);
    expect(kinds(r)).toEqual({ lost: 1 });
    expect(r.violations[0]).toMatchObject({ dev: "alice/2", seq: 2, cid: "bob/1#1" });
  });

  it("lost: once per member device when nobody receives it", () => {
    const h = twoMessages().sent("bob/1", "bob/1#2", 3);
    expect(kinds(check(h.finals().events))).toEqual({ lost: 3 });
  });

  it("duplicated: one device receives the same seq twice", () => {
    const h = twoMessages().recv("alice/2", 2, "bob/1#1");
    const r = check(h.finals().events);
    expect(kinds(r)).toEqual({ duplicated: 1 });
    expect(r.violations[0]).toMatchObject({ dev: "alice/2", seq: 2 });
  });

  it("duplicated: an acknowledged cid is also committed under a second seq", () => {
    const h = new History().sent("alice/1", "alice/1#1", 1).recvAll(1, "alice/1#1").recvAll(2, "alice/1#1");
    const r = check(h.finals().events);
    expect(kinds(r)).toEqual({ duplicated: 1 });
    expect(r.violations[0]).toMatchObject({ seq: 2, cid: "alice/1#1" });
  });

  it("duplicated: one cid acknowledged under two seqs", () => {
    const h = new History()
      .sent("alice/1", "alice/1#1", 1)
      .ack("alice/1", "alice/1#1", 2)
      .recvAll(1, "alice/1#1")
      .recvAll(2, "alice/1#1");
    expect(kinds(check(h.finals().events))).toEqual({ duplicated: 1 });
  });

  it("duplicated: a final list holds one seq twice", () => {
    const h = twoMessages().finals();
    const final = h.events.at(-1) as Final;
    final.messages.c1!.push(final.messages.c1![1]!);
    expect(kinds(check(h.events))).toEqual({ duplicated: 1 });
  });

  it("reordered: a device receives a lower seq after a higher one", () => {
    const h = new History()
      .sent("alice/1", "alice/1#1", 1)
      .sent("bob/1", "bob/1#1", 2)
      .recv("alice/1", 1, "alice/1#1")
      .recv("alice/1", 2, "bob/1#1")
      .recv("bob/1", 1, "alice/1#1")
      .recv("bob/1", 2, "bob/1#1")
      .recv("alice/2", 2, "bob/1#1")
      .recv("alice/2", 1, "alice/1#1");
    const r = check(h.finals().events);
    expect(kinds(r)).toEqual({ reordered: 1 });
    expect(r.violations[0]).toMatchObject({ dev: "alice/2", seq: 1 });
  });

  it("gaps: a device misses an unacknowledged message others received", () => {
    const h = twoMessages()
      .send("alice/1", "alice/1#2")
      .recv("alice/1", 3, "alice/1#2")
      .recv("alice/2", 3, "alice/1#2");
    const r = check(h.finals().events);
    expect(kinds(r)).toEqual({ gaps: 1 });
    expect(r.violations[0]).toMatchObject({ kind: "gaps", dev: "bob/1", conv: "c1", seq: 3 });
  });

  it("gaps: a seq no device received, below an acknowledged one, once per device", () => {
    const h = twoMessages().sent("alice/1", "alice/1#2", 4).recvAll(4, "alice/1#2");
    const r = check(h.finals().events);
    expect(kinds(r)).toEqual({ gaps: 3 });
    expect(r.violations.map((v) => v.seq)).toEqual([3, 3, 3]);
  });

  it("gaps: one violation per missing range, even for an absurd seq", () => {
    const h = new History().send("alice/1", "alice/1#1").recvAll(1_000_000_000, "alice/1#1");
    const r = check(h.finals().events);
    expect(kinds(r)).toEqual({ gaps: 3 });
    expect(r.violations[0]!.detail).toContain("1..999999999");
  });

  it("phantom: a message nobody sent", () => {
    const h = twoMessages().recvAll(3, "bob/1#9");
    const r = check(h.finals().events);
    expect(kinds(r)).toEqual({ phantom: 3 });
    expect(r.violations[0]).toMatchObject({ cid: "bob/1#9", seq: 3 });
  });

  it("phantom: a body that was never written", () => {
    const h = new History()
      .sent("alice/1", "alice/1#1", 1)
      .recv("alice/1", 1, "alice/1#1")
      .recv("alice/2", 1, "alice/1#1", { body: "m:alice/1#2" })
      .recv("bob/1", 1, "alice/1#1");
    const r = check(h.finals((m) => ({ ...m, body: bodyOf(m.cid) })).events);
    expect(kinds(r)).toEqual({ phantom: 1 });
    expect(r.violations[0]).toMatchObject({ dev: "alice/2" });
  });

  it("phantom: a send reported failed is received", () => {
    const h = twoMessages()
      .send("bob/1", "bob/1#2")
      .add({ e: "send-failed", t: 1, dev: "bob/1", conv: "c1", cid: "bob/1#2", code: "E_TOO_LARGE" })
      .recvAll(3, "bob/1#2");
    expect(kinds(check(h.finals().events))).toEqual({ phantom: 3 });
  });

  it("phantom: an ack whose seq no device received for that cid (and the acked seq is lost)", () => {
    const h = twoMessages().sent("alice/1", "alice/1#2", 3).recvAll(4, "alice/1#2");
    const r = check(h.finals().events);
    expect(kinds(r)).toEqual({ phantom: 1, lost: 3 });
    expect(r.violations.find((v) => v.kind === "phantom")).toMatchObject({ cid: "alice/1#2", seq: 4 });
  });

  it("phantom: a message received by a device whose user is not a member", () => {
    const h = new History({ c1: ["u_alice", "u_bob"], c2: ["u_alice"] })
      .sent("alice/1", "alice/1#1", 1, "c2")
      .recvAll(1, "alice/1#1", "c2")
      .recv("bob/1", 1, "alice/1#1", { conv: "c2" });
    const r = check(h.finals().events);
    expect(kinds(r)).toEqual({ phantom: 1 });
    expect(r.violations[0]).toMatchObject({ dev: "bob/1", conv: "c2" });
  });

  it("phantom: a final message deleted without a delete, or showing a body nobody wrote", () => {
    const deleted = twoMessages().finals(forDevice("bob/1", onSeq(1, withBody("", true))));
    expect(kinds(check(deleted.events))).toEqual({ phantom: 1 });
    const rewritten = twoMessages().finals(forDevice("bob/1", onSeq(2, withBody("e1:bob/1#1"))));
    expect(kinds(check(rewritten.events))).toEqual({ phantom: 1 });
  });

  it("diverged: two devices receive different messages at one seq (the receive and the final list)", () => {
    const h = new History()
      .sent("alice/1", "alice/1#1", 1)
      .send("bob/1", "bob/1#1")
      .recv("alice/1", 1, "alice/1#1")
      .recv("alice/2", 1, "alice/1#1")
      .recv("bob/1", 1, "bob/1#1");
    const r = check(h.finals().events);
    // bob/1 also lost alice's acknowledged message: another one sits at its seq.
    expect(kinds(r)).toEqual({ diverged: 2, lost: 1 });
    expect(r.violations.every((v) => v.dev === "bob/1")).toBe(true);
  });

  it("diverged: an unacknowledged delete reaches some devices only", () => {
    const h = twoMessages().add({ e: "delete", t: 1, dev: "alice/2", conv: "c1", seq: 1 });
    const r = check(
      h.finals((m, dev) => (dev.startsWith("alice") && m.seq === 1 ? withBody("", true)(m) : m)).events,
    );
    expect(kinds(r)).toEqual({ diverged: 1 });
    expect(r.violations[0]).toMatchObject({ conv: "c1", seq: 1 });
  });

  it("diverged: an unacknowledged edit reaches some devices only", () => {
    const body = editBodyOf("alice/1#1", 1);
    const h = twoMessages().add({ e: "edit", t: 1, dev: "alice/1", conv: "c1", seq: 1, body });
    expect(kinds(check(h.finals(forDevice("bob/1", onSeq(1, withBody(body)))).events))).toEqual({
      diverged: 1,
    });
  });

  it("unacked_duplicated: an unacknowledged send committed under two seqs", () => {
    const h = twoMessages().send("bob/1", "bob/1#2").recvAll(3, "bob/1#2").recvAll(4, "bob/1#2");
    const r = check(h.finals().events);
    expect(kinds(r)).toEqual({ unacked_duplicated: 1 });
    expect(r.violations[0]).toMatchObject({ cid: "bob/1#2" });
    expect(r.counts.unacked).toBe(1);
  });

  it("read_diverged: a user's devices end with different read marks", () => {
    const h = twoMessages().add({ e: "read", t: 1, dev: "alice/1", user: "u_alice", conv: "c1", seq: 2 });
    const r = check(h.finals(undefined, (dev) => ({ c1: dev === "alice/2" ? 1 : 2 })).events);
    expect(kinds(r)).toEqual({ read_diverged: 1 });
    expect(r.violations[0]!.detail).toContain("alice/2=1");
  });

  it("read_diverged: every device of the user below the highest read issued", () => {
    const h = twoMessages()
      .add({ e: "read", t: 1, dev: "alice/1", user: "u_alice", conv: "c1", seq: 2 })
      .add({ e: "read", t: 1, dev: "alice/2", user: "u_alice", conv: "c1", seq: 1 });
    expect(kinds(check(h.finals(undefined, () => ({ c1: 1 })).events))).toEqual({ read_diverged: 1 });
    const fine = twoMessages().add({ e: "read", t: 1, dev: "alice/1", user: "u_alice", conv: "c1", seq: 1 });
    expect(check(fine.finals(undefined, (dev) => ({ c1: dev.startsWith("alice") ? 2 : 0 })).events).ok).toBe(
      true,
    );
  });

  it("read_diverged: with no read issued, any mark the devices agree on passes; disagreement does not", () => {
    expect(check(twoMessages().finals(undefined, () => ({ c1: 1 })).events).ok).toBe(true);
    const r = check(twoMessages().finals(undefined, (dev) => ({ c1: dev === "alice/1" ? 1 : 0 })).events);
    expect(kinds(r)).toEqual({ read_diverged: 1 });
  });

  it("edit_missing: a device still shows the original after an acknowledged edit", () => {
    const body = editBodyOf("alice/1#1", 1);
    const h = twoMessages()
      .add({ e: "edit", t: 1, dev: "alice/1", conv: "c1", seq: 1, body })
      .add({ e: "edit-ack", t: 1, dev: "alice/1", conv: "c1", seq: 1, body });
    const r = check(h.finals((m, dev) => (m.seq === 1 && dev !== "bob/1" ? { ...m, body } : m)).events);
    expect(kinds(r)).toEqual({ edit_missing: 1 });
    expect(r.violations[0]).toMatchObject({ dev: "bob/1", seq: 1 });
  });

  it("edit_missing: a device shows an edit superseded by a later acknowledged one", () => {
    const [e1, e2] = [editBodyOf("alice/1#1", 1), editBodyOf("alice/1#1", 2)];
    const h = twoMessages()
      .add({ e: "edit", t: 1, dev: "alice/1", conv: "c1", seq: 1, body: e1 })
      .add({ e: "edit-ack", t: 1, dev: "alice/1", conv: "c1", seq: 1, body: e1 })
      .add({ e: "edit", t: 1, dev: "alice/2", conv: "c1", seq: 1, body: e2 })
      .add({ e: "edit-ack", t: 1, dev: "alice/2", conv: "c1", seq: 1, body: e2 });
    const r = check(
      h.finals((m, dev) => (m.seq === 1 ? { ...m, body: dev === "bob/1" ? e1 : e2 } : m)).events,
    );
    expect(kinds(r)).toEqual({ edit_missing: 1 });
  });

  it("edit: a later started unacknowledged edit, or either of two overlapping acknowledged edits, may win", () => {
    const [e1, e2] = [editBodyOf("alice/1#1", 1), editBodyOf("alice/1#1", 2)];
    const later = twoMessages()
      .add({ e: "edit", t: 1, dev: "alice/1", conv: "c1", seq: 1, body: e1 })
      .add({ e: "edit-ack", t: 1, dev: "alice/1", conv: "c1", seq: 1, body: e1 })
      .add({ e: "edit", t: 1, dev: "alice/2", conv: "c1", seq: 1, body: e2 });
    expect(check(later.finals(onSeq(1, withBody(e2))).events).ok).toBe(true);
    const overlapping = twoMessages()
      .add({ e: "edit", t: 1, dev: "alice/1", conv: "c1", seq: 1, body: e1 })
      .add({ e: "edit", t: 1, dev: "alice/2", conv: "c1", seq: 1, body: e2 })
      .add({ e: "edit-ack", t: 1, dev: "alice/1", conv: "c1", seq: 1, body: e1 })
      .add({ e: "edit-ack", t: 1, dev: "alice/2", conv: "c1", seq: 1, body: e2 });
    expect(check(overlapping.finals(onSeq(1, withBody(e1))).events).ok).toBe(true);
    // ...but not the original once an edit is acknowledged.
    expect(kinds(check(overlapping.finals().events))).toEqual({ edit_missing: 3 });
  });

  it("delete_missing: an acknowledged delete that a device does not show", () => {
    const h = twoMessages()
      .add({ e: "delete", t: 1, dev: "bob/1", conv: "c1", seq: 2 })
      .add({ e: "delete-ack", t: 1, dev: "bob/1", conv: "c1", seq: 2 });
    const r = check(
      h.finals((m, dev) => (m.seq === 2 && dev !== "alice/2" ? withBody("", true)(m) : m)).events,
    );
    expect(kinds(r)).toEqual({ delete_missing: 1 });
    expect(r.violations[0]).toMatchObject({ dev: "alice/2", seq: 2 });
  });

  it("delete_missing: a deleted message that keeps its body", () => {
    const h = twoMessages()
      .add({ e: "delete", t: 1, dev: "bob/1", conv: "c1", seq: 2 })
      .add({ e: "delete-ack", t: 1, dev: "bob/1", conv: "c1", seq: 2 });
    const r = check(
      h.finals((m, dev) => (m.seq === 2 ? { ...m, deleted: true, body: dev === "bob/1" ? m.body : "" } : m))
        .events,
    );
    expect(kinds(r)).toEqual({ delete_missing: 1 });
  });

  it("delete: an unacknowledged delete may be applied everywhere or nowhere", () => {
    const h = () => twoMessages().add({ e: "delete", t: 1, dev: "bob/1", conv: "c1", seq: 2 });
    expect(check(h().finals(onSeq(2, withBody("", true))).events).ok).toBe(true);
    expect(check(h().finals().events).ok).toBe(true);
  });

  it("vanished: a received message missing from the device's final list", () => {
    const h = twoMessages().finals();
    const final = h.events.find((e): e is Final => e.e === "final" && e.dev === "alice/2")!;
    final.messages.c1 = final.messages.c1!.filter((m) => m.seq !== 1);
    const r = check(h.events);
    expect(kinds(r)).toEqual({ vanished: 1 });
    expect(r.violations[0]).toMatchObject({ dev: "alice/2", seq: 1 });
  });

  it("no_final: a device that did not report its final state", () => {
    const h = twoMessages().final("alice/1").final("bob/1");
    const r = check(h.events);
    expect(kinds(r)).toEqual({ no_final: 1 });
    expect(r.violations[0]).toMatchObject({ dev: "alice/2" });
  });

  it("malformed: no setup, an unknown device, a user that does not own the device", () => {
    const noSetup = twoMessages().finals().events.slice(1);
    expect(kinds(check(noSetup))).toEqual({ malformed: 1 });
    const unknown = twoMessages()
      .finals()
      .add({ e: "read", t: 1, dev: "carol/1", user: "u_carol", conv: "c1", seq: 1 });
    expect(kinds(check(unknown.events))).toEqual({ malformed: 1 });
    const wrongUser = twoMessages().finals();
    wrongUser.events.push({ e: "read", t: 1, dev: "bob/1", user: "u_alice", conv: "c1", seq: 1 });
    const r = check(wrongUser.events);
    expect(r.counts.malformed).toBe(1);
  });
});

describe("readHistory", () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });
  const write = (text: string): string => {
    dir ??= mkdtempSync(join(tmpdir(), "parley-checker-"));
    const path = join(dir, "history.jsonl");
    writeFileSync(path, text);
    return path;
  };

  it("reads JSON lines, skipping blank lines, into the events the checker accepts", () => {
    const events = twoMessages().finals().events;
    const path = write(`${events.map((e) => JSON.stringify(e)).join("\n")}\n\n`);
    const read = readHistory(path);
    expect(read).toEqual(events);
    expect(check(read).ok).toBe(true);
  });

  it.each([
    ["not JSON", '{"e":"end","t":1', /not JSON/],
    ["not an object", "[1,2]", /not a JSON object/],
    ["an unknown event", '{"e":"boom","t":1}', /unknown event "boom"/],
    [
      "a field of the wrong type",
      '{"e":"recv","t":1,"dev":"a/1","conv":"c1","seq":"1","from":"u","cid":"x","body":""}',
      /"seq"/,
    ],
    [
      "a bad final message",
      '{"e":"final","t":1,"dev":"a/1","user":"u","reads":{},"messages":{"c1":[{"seq":1}]}}',
      /messages\.c1\[0\]/,
    ],
    ["bad setup members", '{"e":"setup","t":1,"seed":1,"convs":{"c1":"u"},"devices":{}}', /convs\.c1/],
  ])("names the line of %s", (_name, bad, message) => {
    const path = write(`{"e":"end","t":1}\n\n${bad}\n{"e":"end","t":2}\n`);
    expect(() => readHistory(path)).toThrow(`${path}:3:`);
    expect(() => readHistory(path)).toThrow(message);
  });
});

describe("summaryLine and formatViolation", () => {
  it("puts extra, ok, every count and the violation total on one JSON line", () => {
    const r = check(twoMessages().sent("bob/1", "bob/1#2", 3).finals().events);
    const line = summaryLine(r, { restarts: 2, duration_s: 12.5, seed: 42 });
    expect(line).not.toContain("\n");
    const summary = JSON.parse(line) as Record<string, unknown>;
    expect(summary).toMatchObject({ restarts: 2, duration_s: 12.5, seed: 42, ok: false, ops: 3, acked: 3 });
    expect(summary).toMatchObject({
      delivered: 6,
      lost: 3,
      duplicated: 0,
      reordered: 0,
      phantom: 0,
      violations: 3,
    });
    for (const key of Object.keys(r.counts))
      expect(summary[key]).toBe(r.counts[key as keyof CheckResult["counts"]]);
  });

  it("formats a violation with where it happened", () => {
    expect(
      formatViolation({ kind: "lost", dev: "bob/1", conv: "c1", seq: 3, detail: "never received" }),
    ).toBe("lost [dev=bob/1 conv=c1 seq=3]: never received");
    expect(formatViolation({ kind: "malformed", detail: "no setup" })).toBe("malformed: no setup");
  });
});

describe("check: properties", () => {
  it("finds nothing in a correct history", () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        const history = simulate(s);
        const r = check(history);
        expect(r.violations).toEqual([]);
        expect(r.counts.delivered).toBe(history.filter((e) => e.e === "recv").length);
        expect(r.counts.finals).toBe(s.devicesPerUser.reduce((a, b) => a + b, 0));
      }),
      { numRuns: 200 },
    );
  });

  for (const mutation of MUTATIONS) {
    it(`catches one mutation: ${mutation.name}`, () => {
      fc.assert(
        fc.property(mutation.scenarios, fc.nat(), fc.nat(), (s, a, b) => {
          const mutated = mutation.apply(simulate(s), a, b);
          fc.pre(mutated !== undefined);
          const r = check(mutated.history);
          expect(Object.keys(kinds(r))).toEqual([mutated.expected]);
        }),
        { numRuns: 100 },
      );
    });
  }
});

describe("check: size", () => {
  /** 8 devices of 4 users in one conversation; each message is send + ack + 8 receives. */
  function bigHistory(messages: number): ChaosEvent[] {
    const devices = ["a", "b", "c", "d"].flatMap((u) => [`${u}/1`, `${u}/2`]);
    const h = new History({ c1: ["u_a", "u_b", "u_c", "u_d"] }, devices);
    for (let seq = 1; seq <= messages; seq++) {
      const cid = `${devices[seq % devices.length]!}#${seq}`;
      h.sent(devices[seq % devices.length]!, cid, seq).recvAll(seq, cid);
    }
    return h.finals().events;
  }

  it("checks a history of 100k events", () => {
    const history = bigHistory(10_000);
    expect(history.length).toBeGreaterThanOrEqual(100_000);
    const r = check(history);
    expect(r.violations).toEqual([]);
    expect(r.counts).toMatchObject({ sends: 10_000, acked: 10_000, delivered: 80_000 });
    const dropped = history.filter((e) => !(e.e === "recv" && e.dev === "c/2" && e.seq === 5_000));
    expect(kinds(check(dropped))).toEqual({ lost: 1 });
  });
});
