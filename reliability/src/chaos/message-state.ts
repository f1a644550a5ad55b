import type { FinalMessage } from "./events.ts";
import { bodyOf } from "./events.ts";

// Which states of one message its edits and deletes allow. Pure.
//
// An edit or delete takes effect at some moment between its start and its acknowledgement; one
// never acknowledged took effect at some moment after its start, or never (the SDK resends
// unanswered requests on every reconnect, so "later" is unbounded). The history order used here
// is that of ONE user's events (edits and deletes are of one's own messages, and one process
// hosts all of a user's devices), which is real time.

/** A message's edits, by body: first start and last acknowledgement as history indexes (-1:
 * none); and whether a delete was started / acknowledged. */
export interface MessageOps {
  edits: Map<string, { start: number; ack: number }>;
  deleteStarted: boolean;
  deleteAcked: boolean;
}

export function newMessageOps(): MessageOps {
  return { edits: new Map(), deleteStarted: false, deleteAcked: false };
}

/** The bodies a message may end with. An edit Y can be the last applied unless some acknowledged
 * edit X started only after Y was acknowledged (X then took effect after Y). The original body
 * remains possible only while no edit is acknowledged. `acked`: some edit was acknowledged. */
export function allowedBodies(
  ops: MessageOps | undefined,
  original: string,
): { bodies: Set<string>; acked: boolean } {
  const bodies = new Set<string>();
  // The two latest starts among acknowledged edits: the constraint on Y excludes Y itself.
  let top: [string, number] | undefined;
  let second = -1;
  for (const [body, e] of ops?.edits ?? []) {
    if (e.ack < 0) continue;
    if (!top || e.start > top[1]) {
      if (top) second = top[1];
      top = [body, e.start];
    } else second = Math.max(second, e.start);
  }
  if (!top) bodies.add(original);
  for (const [body, e] of ops?.edits ?? []) {
    const latestOtherStart = top === undefined ? -1 : body === top[0] ? second : top[1];
    const ack = e.ack < 0 ? Infinity : e.ack;
    if (latestOtherStart < ack) bodies.add(body);
  }
  return { bodies, acked: top !== undefined };
}

/** Whether a receive may show `body`. The update log serves a message's current state, so a
 * device that receives it late may already see one of its edits, or "" once a delete started. */
export function receivedBodyAllowed(ops: MessageOps | undefined, cid: string, body: string): boolean {
  if (body === bodyOf(cid)) return true;
  if (!ops) return false;
  return ops.edits.has(body) || (body === "" && (ops.deleteStarted || ops.deleteAcked));
}

export type FinalVerdict =
  { ok: true } | { ok: false; kind: "phantom" | "delete_missing" | "edit_missing"; detail: string };

/** Judges one device's final state of one message on its own (agreement between devices is the
 * caller's). */
export function judgeFinalState(ops: MessageOps | undefined, m: FinalMessage): FinalVerdict {
  if (m.deleted) {
    if (!ops?.deleteStarted && !ops?.deleteAcked) {
      return { ok: false, kind: "phantom", detail: "deleted, but no delete was started" };
    }
    if (m.body !== "") {
      return {
        ok: false,
        kind: "delete_missing",
        detail: `deleted, but the body is ${JSON.stringify(m.body)}`,
      };
    }
    return { ok: true };
  }
  if (ops?.deleteAcked) {
    return {
      ok: false,
      kind: "delete_missing",
      detail: "the delete was acknowledged; the message is not deleted",
    };
  }
  const allowed = allowedBodies(ops, bodyOf(m.cid));
  if (allowed.bodies.has(m.body)) return { ok: true };
  const list = [...allowed.bodies].map((b) => JSON.stringify(b)).join(", ");
  return {
    ok: false,
    // With no acknowledged edit every body ever written is allowed: anything else is invented.
    kind: allowed.acked ? "edit_missing" : "phantom",
    detail: `final body ${JSON.stringify(m.body)}; allowed: ${list}`,
  };
}
