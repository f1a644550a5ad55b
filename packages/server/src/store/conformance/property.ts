import { describe, expect, it } from "vitest";
import fc from "fast-check";
import type { ConversationId, UserId } from "@parley/protocol";
import type { Store } from "../../core/ports/store.ts";
import { addGroup, addUsers, newMessage, readAll } from "./fixtures.ts";

// A model-based property: random batches of sends from several users over several conversations,
// with cids drawn from a small pool so that resends (same sender, same cid; even to another
// conversation) and sends by non-members are frequent. Every result is checked against a model,
// then the invariants of the whole store: gap-free seqs, each (from, cid) stored once, and each
// member's update log gap-free with exactly one msg entry per message, in seq order.

const USERS: UserId[] = ["u0", "u1", "u2", "u3"];
const CONVS: Record<ConversationId, UserId[]> = {
  c0: ["u0", "u1"],
  c1: ["u0", "u1", "u2"],
  c2: ["u2", "u3"],
  c3: ["u1"],
};
const CONV_IDS = Object.keys(CONVS);

const sendArb = fc.record({
  from: fc.constantFrom(...USERS),
  conv: fc.constantFrom(...CONV_IDS),
  cid: fc.integer({ min: 0, max: 11 }).map((n) => `k${n}`),
});
const batchesArb = fc.array(fc.array(sendArb, { minLength: 1, maxLength: 8 }), {
  minLength: 1,
  maxLength: 6,
});

export function propertyCases(open: () => Promise<{ store: Store; cleanup: () => Promise<void> }>): void {
  describe("property", () => {
    it("random interleaved sends and resends keep seqs, idempotency and update logs exact", async () => {
      await fc.assert(
        fc.asyncProperty(batchesArb, async (batches) => {
          const { store, cleanup } = await open();
          try {
            await checkRun(store, batches);
          } finally {
            await store.close();
            await cleanup();
          }
        }),
        { numRuns: 30 },
      );
      // Each run opens a fresh store: a threaded store starts a thread each time.
    }, 120_000);
  });
}

async function checkRun(
  store: Store,
  batches: Array<Array<{ from: UserId; conv: ConversationId; cid: string }>>,
): Promise<void> {
  await addUsers(store, ...USERS);
  for (const [id, members] of Object.entries(CONVS)) await addGroup(store, id, members);

  const stored = new Map<string, { conv: ConversationId; seq: number }>();
  const lastSeq = new Map<ConversationId, number>(CONV_IDS.map((c) => [c, 0]));
  let tick = 0;
  for (const batch of batches) {
    const results = await store.appendMessages(
      batch.map((s) => newMessage(s.conv, s.from, s.cid, { ts: ++tick })),
    );
    expect(results).toHaveLength(batch.length);
    batch.forEach((s, i) => {
      const r = results[i];
      const key = `${s.from}|${s.cid}`;
      const prior = stored.get(key);
      if (prior) {
        expect(r).toMatchObject({
          ok: true,
          duplicate: true,
          msg: { ...prior, from: s.from, cid: s.cid },
          updates: [],
        });
      } else if (!(CONVS[s.conv] ?? []).includes(s.from)) {
        expect(r).toMatchObject({ ok: false, code: "E_NOT_FOUND" });
      } else {
        const seq = (lastSeq.get(s.conv) ?? 0) + 1;
        lastSeq.set(s.conv, seq);
        stored.set(key, { conv: s.conv, seq });
        expect(r).toMatchObject({
          ok: true,
          duplicate: false,
          msg: { conv: s.conv, seq, from: s.from, cid: s.cid },
        });
        expect(r?.ok && r.updates.map((u) => u.user).sort()).toEqual([...(CONVS[s.conv] ?? [])].sort());
      }
    });
  }

  const seen = new Set<string>();
  for (const conv of CONV_IDS) {
    const n = lastSeq.get(conv) ?? 0;
    expect((await store.getConversation(conv))?.lastSeq).toBe(n);
    const history = await store.history(conv, { after: 0, limit: 10_000 });
    expect(history.map((m) => m.seq)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    for (const m of history) {
      const key = `${m.from}|${m.cid}`;
      expect(seen.has(key)).toBe(false);
      seen.add(key);
      expect(stored.get(key)).toEqual({ conv, seq: m.seq });
    }
  }
  expect(seen.size).toBe(stored.size);

  for (const user of USERS) {
    const log = await readAll(store, user);
    expect(log.map((e) => e.useq)).toEqual(Array.from({ length: log.length }, (_, i) => i + 1));
    expect(await store.head(user)).toBe(log.length);
    const mine = CONV_IDS.filter((c) => (CONVS[c] ?? []).includes(user));
    for (const conv of mine) {
      const seqs = log.flatMap((e) => (e.u.k === "msg" && e.u.msg.conv === conv ? [e.u.msg.seq] : []));
      expect(seqs).toEqual(Array.from({ length: lastSeq.get(conv) ?? 0 }, (_, i) => i + 1));
    }
    expect(
      log.filter((e) => e.u.k === "msg").every((e) => e.u.k === "msg" && mine.includes(e.u.msg.conv)),
    ).toBe(true);
  }
}
