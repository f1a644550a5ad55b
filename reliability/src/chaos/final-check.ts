import type { DeliveryCheck } from "./delivery-check.ts";
import { key, SEP } from "./delivery-check.ts";
import type { DeviceKey, FinalMessage } from "./events.ts";
import { judgeFinalState } from "./message-state.ts";

// The checker's second part: what each device shows after the quiet phase ("final" events):
// every device reported one (no_final), still holds what it received (vanished), shows each
// message in a state its edits and deletes allow (edit_missing, delete_missing, phantom), all
// devices agree (diverged), and each user's devices agree on a read mark no lower than the
// highest read issued (read_diverged).

/** One message's final state across devices: the first device's, and whether any differs. */
interface Agreement {
  state: string;
  allValid: boolean;
  differs: boolean;
}

const DELETED = `${SEP}deleted`;

/** Checks every device's final messages; needs DeliveryCheck.run() done with a setup. */
export function checkFinals(h: DeliveryCheck): void {
  const setup = h.setup!;
  const agreement = new Map<string, Agreement>();
  for (const [dev, user] of Object.entries(setup.devices)) {
    const final = h.finals.get(dev);
    if (!final) {
      h.report({ kind: "no_final", dev, detail: "no final event: the device did not quiesce" });
      continue;
    }
    if (final.user !== user) h.report({ kind: "malformed", dev, detail: `final names user ${final.user}` });
    for (const [conv, messages] of Object.entries(final.messages)) {
      checkFinalConv(h, dev, conv, messages, agreement);
    }
    for (const conv of Object.keys(setup.convs)) {
      const received = h.devConvs.get(key(dev, conv))?.seqs;
      if (!received || received.size === 0) continue;
      const shown = new Set((final.messages[conv] ?? []).map((m) => m.seq));
      for (const seq of received) {
        if (!shown.has(seq))
          h.report({ kind: "vanished", dev, conv, seq, detail: "received, but not in the final list" });
      }
    }
  }
  // A disagreement already explained by an invalid state on some device is not reported twice.
  for (const [k, a] of agreement) {
    if (!a.allValid || !a.differs) continue;
    const [conv, seq] = k.split(SEP) as [string, string];
    h.report({
      kind: "diverged",
      conv,
      seq: Number(seq),
      detail: "devices end with different states of the message",
    });
  }
}

function checkFinalConv(
  h: DeliveryCheck,
  dev: DeviceKey,
  conv: string,
  messages: FinalMessage[],
  agreement: Map<string, Agreement>,
): void {
  const member = h.isMember(h.setup!.devices[dev], conv);
  const listed = new Set<number>();
  for (const m of messages) {
    const where = { dev, conv, seq: m.seq, cid: m.cid };
    if (!member) {
      h.report({
        kind: "phantom",
        ...where,
        detail: "a final message in a conversation the user is no member of",
      });
      continue;
    }
    if (listed.has(m.seq)) {
      h.report({ kind: "duplicated", ...where, detail: "listed twice in the final messages" });
      continue;
    }
    listed.add(m.seq);
    const k = key(conv, m.seq);
    const acked = h.ackedSeqs.get(conv)?.get(m.seq);
    const id = h.identity.get(k) ?? (acked && { from: acked.user, cid: acked.cid });
    if (id && (id.from !== m.from || id.cid !== m.cid)) {
      const detail = `the final list shows ${m.from}'s ${m.cid}; received ${id.from}'s ${id.cid}`;
      h.report({ kind: "diverged", ...where, detail });
      continue;
    }
    const s = h.sends.get(key(conv, m.from, m.cid));
    if (!id && (!s?.started || s.failed)) {
      h.report({ kind: "phantom", ...where, detail: "a final message nobody sent" });
      continue;
    }
    const verdict = judgeFinalState(h.ops.get(k), m);
    if (!verdict.ok) h.report({ kind: verdict.kind, ...where, detail: verdict.detail });
    const state = m.deleted ? DELETED : m.body;
    const prev = agreement.get(k);
    if (!prev) agreement.set(k, { state, allValid: verdict.ok, differs: false });
    else {
      prev.allValid &&= verdict.ok;
      prev.differs ||= prev.state !== state;
    }
  }
}

/** Per user and conversation: every device's final read mark is the same, and no lower than the
 * highest read any of them issued (with none issued, any value they agree on). Devices without a
 * final are left out (they are "no_final"). */
export function checkReads(h: DeliveryCheck): void {
  for (const [conv, members] of Object.entries(h.setup!.convs)) {
    for (const user of members) {
      const issued = h.readMax.get(key(user, conv)) ?? 0;
      const marks: string[] = [];
      let low = false;
      let differ = false;
      let first: number | undefined;
      for (const dev of h.devicesOf.get(user) ?? []) {
        const final = h.finals.get(dev);
        if (!final) continue;
        const mark = final.reads[conv] ?? 0;
        marks.push(`${dev}=${mark}`);
        low ||= mark < issued;
        differ ||= first !== undefined && first !== mark;
        first ??= mark;
      }
      if (low || differ) {
        const detail = `${user}: read marks ${marks.join(" ")}; highest read issued ${issued}`;
        h.report({ kind: "read_diverged", conv, detail });
      }
    }
  }
}
