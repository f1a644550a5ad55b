import { DeliveryCheck } from "./delivery-check.ts";
import type { ChaosEvent, DeviceKey } from "./events.ts";
import { checkFinals, checkReads } from "./final-check.ts";

export { readHistory, parseEvent } from "./history-reader.ts";

// The chaos run's verdict: reads the whole history (events.ts) and lists every violation of the
// delivery guarantees (DESIGN.md, "Delivery"). Membership is static, so every device of every
// member must end with every message of the conversation, once, in seq order, in the same state.
//
// The history interleaves events from several client processes as they reach the orchestrator,
// so the order of events of DIFFERENT processes is only approximate. The checker therefore never
// relies on it: order is used only among the events of one device (recv order) and among one
// user's edits of one message (one process hosts all of a user's devices). Existence checks
// ("was this cid ever sent?") look at the whole history.
//
// Parts: delivery-check.ts (index, acks, the receive stream, completeness), final-check.ts (the
// "final" states and read marks), message-state.ts (what edits and deletes allow). Cost: one
// pass to index, one over the receives, a sort of each device's seqs per conversation for the
// gap ranges: O(n log n) in the history size.

export const VIOLATION_KINDS = [
  /** An acknowledged message never reached a member device (one per device and message). */
  "lost",
  /** A device received one (conv, seq) twice, or an acknowledged cid was committed under a
   * second seq, or a final message list holds one seq twice. */
  "duplicated",
  /** A device received a conversation's seqs out of increasing order. */
  "reordered",
  /** A device's received seqs miss a range of 1..max that is not an acknowledged message (those
   * are "lost"); one per missing range. */
  "gaps",
  /** Something that was never sent: an unknown or failed cid, a body nobody wrote, a message
   * received by a non-member, an ack whose seq no device received for that cid. */
  "phantom",
  /** Two devices disagree on what (conv, seq) is, or on its final state where both are allowed. */
  "diverged",
  /** A send never acknowledged was committed under more than one seq. */
  "unacked_duplicated",
  /** A user's devices end with different read marks, or below the highest read issued. */
  "read_diverged",
  /** A message with an acknowledged edit ends with a body that cannot be the last edit. */
  "edit_missing",
  /** A message whose delete was acknowledged is not deleted, or is deleted with a body. */
  "delete_missing",
  /** A seq the device received is missing from its final message list. */
  "vanished",
  /** A device reported no "final" event: the run did not quiesce. */
  "no_final",
  /** The history itself is inconsistent (no setup, unknown device or conversation, ...). */
  "malformed",
] as const;

export type ViolationKind = (typeof VIOLATION_KINDS)[number];

export interface Violation {
  kind: ViolationKind;
  dev?: DeviceKey;
  conv?: string;
  seq?: number;
  cid?: string;
  detail: string;
}

export interface ActivityCounts {
  /** sends + edits + deletes + reads started. */
  ops: number;
  sends: number;
  /** Sends with at least one ack. */
  acked: number;
  /** Sends neither acknowledged nor failed (not a violation). */
  unacked: number;
  /** Of those, the ones some device received. */
  unacked_delivered: number;
  send_failed: number;
  /** recv events. */
  delivered: number;
  edits: number;
  deletes: number;
  reads: number;
  finals: number;
  faults: number;
}

/** Activity counts, and the number of violations of each kind. */
export type Counts = ActivityCounts & Record<ViolationKind, number>;

export interface CheckResult {
  counts: Counts;
  /** Every violation, in the order found: per-event ones in history order, then the end state. */
  violations: Violation[];
  ok: boolean;
}

/** Checks a whole history. Pure; accepts the events in the order they were recorded. */
export function check(events: Iterable<ChaosEvent>): CheckResult {
  const h = new DeliveryCheck(emptyCounts());
  h.run(events);
  if (h.setup) {
    checkFinals(h);
    checkReads(h);
  }
  const counts = h.counts;
  for (const s of h.sends.values()) {
    if (!s.started) continue;
    if (s.ackSeqs.length > 0) counts.acked++;
    else if (!s.failed) {
      counts.unacked++;
      if (s.seen.size > 0) counts.unacked_delivered++;
    }
  }
  counts.ops = counts.sends + counts.edits + counts.deletes + counts.reads;
  return { counts, violations: h.violations, ok: h.violations.length === 0 };
}

/** The run's one-line JSON summary: the orchestrator's `extra` (seed, duration_s, restarts, ...),
 * then ok, every count and the number of violations. */
export function summaryLine(result: CheckResult, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ ...extra, ok: result.ok, ...result.counts, violations: result.violations.length });
}

/** One human-readable line per violation. */
export function formatViolation(v: Violation): string {
  const where = [
    v.dev !== undefined ? `dev=${v.dev}` : "",
    v.conv !== undefined ? `conv=${v.conv}` : "",
    v.seq !== undefined ? `seq=${v.seq}` : "",
    v.cid !== undefined ? `cid=${v.cid}` : "",
  ].filter((s) => s !== "");
  return `${v.kind}${where.length > 0 ? ` [${where.join(" ")}]` : ""}: ${v.detail}`;
}

function emptyCounts(): Counts {
  const counts = {
    ops: 0,
    sends: 0,
    acked: 0,
    unacked: 0,
    unacked_delivered: 0,
    send_failed: 0,
    delivered: 0,
    edits: 0,
    deletes: 0,
    reads: 0,
    finals: 0,
    faults: 0,
  } as Counts;
  for (const kind of VIOLATION_KINDS) counts[kind] = 0;
  return counts;
}
