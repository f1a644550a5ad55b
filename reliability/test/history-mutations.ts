import type fc from "fast-check";
import type { ViolationKind } from "../src/chaos/checker.ts";
import type { ChaosEvent, FinalMessage } from "../src/chaos/events.ts";
import { bodyOf } from "../src/chaos/events.ts";
import type { Scenario } from "./history-model.ts";
import { scenarioArb, scenarios } from "./history-model.ts";

// One-fault mutations of a correct history (history-model.ts), each with the single violation
// kind the checker must then report, and nothing else.

type Final = Extract<ChaosEvent, { e: "final" }>;

export interface Mutation {
  name: string;
  /** The histories to mutate (some mutations need a kind of step often). */
  scenarios: fc.Arbitrary<Scenario>;
  /** The mutated history and the one violation kind it must produce; undefined if the history
   * has nothing to mutate this way. `a` and `b` pick the target. */
  apply(
    h: ChaosEvent[],
    a: number,
    b: number,
  ): { history: ChaosEvent[]; expected: ViolationKind } | undefined;
}

type Recv = Extract<ChaosEvent, { e: "recv" }>;

function indexes(h: ChaosEvent[], pred: (e: ChaosEvent) => boolean): number[] {
  return h.flatMap((e, i) => (pred(e) ? [i] : []));
}

/** Every message of every final, as [event index, conversation, position]. */
function finalMessages(h: ChaosEvent[], pred: (m: FinalMessage, conv: string) => boolean) {
  const out: Array<[number, string, number]> = [];
  h.forEach((e, i) => {
    if (e.e !== "final") return;
    for (const [conv, list] of Object.entries(e.messages))
      list.forEach((m, p) => pred(m, conv) && out.push([i, conv, p]));
  });
  return out;
}

const acked = (h: ChaosEvent[], e: ChaosEvent["e"]) =>
  new Set(h.flatMap((x) => (x.e === e && "seq" in x ? [`${x.conv} ${x.seq}`] : [])));

/** Replaces one final message (a fresh copy of the history). */
function changeFinal(
  h: ChaosEvent[],
  [i, conv, p]: [number, string, number],
  f: (m: FinalMessage) => FinalMessage,
) {
  const history = structuredClone(h);
  const final = history[i] as Final;
  final.messages[conv]![p] = f(final.messages[conv]![p]!);
  return history;
}

const pick = <T>(list: T[], n: number): T | undefined =>
  list.length === 0 ? undefined : list[n % list.length];

/** One mutation of each kind the brief names, plus undoing an acknowledged edit or delete. */
export const MUTATIONS: Mutation[] = [
  {
    scenarios: scenarioArb,
    name: "drop a receive of an acknowledged message",
    apply(h, a) {
      const ackedSeqs = acked(h, "ack");
      const i = pick(
        indexes(h, (e) => e.e === "recv" && ackedSeqs.has(`${e.conv} ${e.seq}`)),
        a,
      );
      return i === undefined ? undefined : { history: h.filter((_, j) => j !== i), expected: "lost" };
    },
  },
  {
    scenarios: scenarioArb,
    name: "duplicate a receive",
    apply(h, a) {
      const i = pick(
        indexes(h, (e) => e.e === "recv"),
        a,
      );
      if (i === undefined) return undefined;
      return { history: [...h.slice(0, i + 1), { ...h[i]! }, ...h.slice(i + 1)], expected: "duplicated" };
    },
  },
  {
    scenarios: scenarioArb,
    name: "swap two receives of one device and conversation",
    apply(h, a, b) {
      const groups = new Map<string, number[]>();
      for (const i of indexes(h, (e) => e.e === "recv")) {
        const r = h[i] as Recv;
        groups.set(`${r.dev} ${r.conv}`, [...(groups.get(`${r.dev} ${r.conv}`) ?? []), i]);
      }
      const group = pick(
        [...groups.values()].filter((g) => g.length >= 2),
        a,
      );
      if (!group) return undefined;
      const x = b % group.length;
      const y = (x + 1 + (Math.floor(b / group.length) % (group.length - 1))) % group.length;
      const history = [...h];
      [history[group[x]!], history[group[y]!]] = [history[group[y]!]!, history[group[x]!]!];
      return { history, expected: "reordered" };
    },
  },
  {
    scenarios: scenarioArb,
    name: "change the body of a receive",
    apply(h, a) {
      const i = pick(
        indexes(h, (e) => e.e === "recv"),
        a,
      );
      if (i === undefined) return undefined;
      const history = [...h];
      history[i] = { ...(h[i] as Recv), body: "x:corrupt" };
      return { history, expected: "phantom" };
    },
  },
  {
    scenarios: scenarioArb,
    name: "change the body of a final message",
    apply(h, a) {
      const target = pick(
        finalMessages(h, (m) => !m.deleted),
        a,
      );
      if (!target) return undefined;
      const history = changeFinal(h, target, (m) => ({ ...m, body: "x:corrupt" }));
      const seq = (h[target[0]] as Final).messages[target[1]]![target[2]]!.seq;
      return {
        history,
        expected: acked(h, "edit-ack").has(`${target[1]} ${seq}`) ? "edit_missing" : "phantom",
      };
    },
  },
  {
    scenarios: scenarioArb,
    name: "undo an acknowledged edit on one device",
    apply(h, a) {
      const edited = acked(h, "edit-ack");
      const target = pick(
        finalMessages(h, (m, conv) => !m.deleted && edited.has(`${conv} ${m.seq}`)),
        a,
      );
      if (!target) return undefined;
      return {
        history: changeFinal(h, target, (m) => ({ ...m, body: bodyOf(m.cid) })),
        expected: "edit_missing",
      };
    },
  },
  {
    // Two acknowledged edits of one message are rare in the default mix.
    scenarios: scenarios({ send: 2, edit: 8, delete: 0 }),
    name: "show an acknowledged edit that a later acknowledged edit superseded",
    apply(h, a) {
      const starts = new Map<string, number>();
      const acks: Array<{ msg: string; body: string; start: number; ack: number }> = [];
      h.forEach((e, i) => {
        if (e.e === "edit" && !starts.has(`${e.conv} ${e.seq} ${e.body}`)) {
          starts.set(`${e.conv} ${e.seq} ${e.body}`, i);
        }
        if (e.e !== "edit-ack") return;
        const start = starts.get(`${e.conv} ${e.seq} ${e.body}`)!;
        acks.push({ msg: `${e.conv} ${e.seq}`, body: e.body, start, ack: i });
      });
      // X is superseded when an acknowledged Y started only after X was acknowledged.
      const superseded = new Map<string, string>();
      for (const x of acks) {
        if (acks.some((y) => y.msg === x.msg && y.start > x.ack)) superseded.set(x.msg, x.body);
      }
      const target = pick(
        finalMessages(h, (m, conv) => !m.deleted && superseded.has(`${conv} ${m.seq}`)),
        a,
      );
      if (!target) return undefined;
      const seq = (h[target[0]] as Final).messages[target[1]]![target[2]]!.seq;
      const body = superseded.get(`${target[1]} ${seq}`)!;
      return { history: changeFinal(h, target, (m) => ({ ...m, body })), expected: "edit_missing" };
    },
  },
  {
    scenarios: scenarioArb,
    name: "undo an acknowledged delete on one device",
    apply(h, a) {
      const deleted = acked(h, "delete-ack");
      const target = pick(
        finalMessages(h, (m, conv) => deleted.has(`${conv} ${m.seq}`)),
        a,
      );
      if (!target) return undefined;
      const history = changeFinal(h, target, (m) => ({ ...m, deleted: false, body: bodyOf(m.cid) }));
      return { history, expected: "delete_missing" };
    },
  },
  {
    scenarios: scenarioArb,
    name: "drop a final",
    apply(h, a) {
      const i = pick(
        indexes(h, (e) => e.e === "final"),
        a,
      );
      return i === undefined ? undefined : { history: h.filter((_, j) => j !== i), expected: "no_final" };
    },
  },
  {
    scenarios: scenarioArb,
    name: "lower one device's read mark",
    apply(h, a) {
      const targets = h.flatMap((e, i) =>
        e.e === "final"
          ? Object.entries(e.reads).flatMap(([conv, mark]) => (mark > 0 ? [[i, conv] as const] : []))
          : [],
      );
      const target = pick(targets, a);
      if (!target) return undefined;
      const history = structuredClone(h);
      (history[target[0]] as Final).reads[target[1]]!--;
      return { history, expected: "read_diverged" };
    },
  },
];
