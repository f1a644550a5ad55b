import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Message } from "@parley/protocol";
import type { AppendResult, LogUpdate, NewMessage } from "../../core/ports/store.ts";
import { packBatch, packResults, unpackBatch, unpackResults } from "./append-wire.ts";
import { arbitraryNewMessage } from "../testing/arbitraries.ts";

// The packed form must give back exactly what it was given: the batch on the writer's side, and
// on the main thread the AppendResult[] the writer's SqliteStore returned, whatever their shape.
// Each test sends it through structuredClone with the same transfer list as postMessage.

const newMessage = arbitraryNewMessage;

/** What SqliteStore.appendMessages stores for `item` at `seq`: a message with its own body. */
function stored(item: NewMessage, seq: number): Message {
  const msg: Message = { ...item, seq, body: new Uint8Array(item.body) };
  delete (msg as Partial<NewMessage>).replyTo;
  if (item.replyTo !== undefined) msg.replyTo = item.replyTo;
  return msg;
}

type Outcome =
  | { kind: "users"; seq: number; users: Array<{ user: string; useq: number }> }
  | { kind: "group"; seq: number; useq: number }
  | { kind: "duplicate"; seq: number }
  | { kind: "refused" }
  | { kind: "odd"; seq: number };

const outcome: fc.Arbitrary<Outcome> = fc.oneof(
  fc.record({
    kind: fc.constant("users" as const),
    seq: fc.integer({ min: 1, max: 2 ** 40 }),
    users: fc.array(
      fc.record({
        user: fc.string({ minLength: 1, unit: "grapheme" }),
        useq: fc.integer({ min: 1, max: 2 ** 40 }),
      }),
      { minLength: 1, maxLength: 4 },
    ),
  }),
  fc.record({
    kind: fc.constant("group" as const),
    seq: fc.integer({ min: 1, max: 2 ** 40 }),
    useq: fc.integer({ min: 1, max: 2 ** 40 }),
  }),
  fc.record({ kind: fc.constant("duplicate" as const), seq: fc.integer({ min: 1, max: 2 ** 40 }) }),
  fc.record({ kind: fc.constant("refused" as const) }),
  fc.record({ kind: fc.constant("odd" as const), seq: fc.integer({ min: 1, max: 2 ** 40 }) }),
);

function result(item: NewMessage, o: Outcome): AppendResult {
  switch (o.kind) {
    case "users": {
      const msg = stored(item, o.seq);
      const u = { k: "msg" as const, msg };
      return {
        ok: true,
        duplicate: false,
        msg,
        updates: o.users.map(({ user, useq }) => ({ user, useq, u })),
      };
    }
    case "group": {
      const msg = stored(item, o.seq);
      return {
        ok: true,
        duplicate: false,
        msg,
        updates: [{ log: item.conv, useq: o.useq, u: { k: "msg", msg } }],
      };
    }
    case "duplicate":
      // The message stored first: another body and time than this resend's.
      return { ok: true, duplicate: true, msg: { ...stored(item, o.seq), ts: item.ts + 1 }, updates: [] };
    case "refused":
      return { ok: false, code: "E_NOT_FOUND", message: "no such conversation" };
    case "odd": {
      // Fresh, but not the plain shape the main thread can rebuild: an update of another kind.
      const msg = stored(item, o.seq);
      const updates: LogUpdate[] = [{ user: item.from, useq: 1, u: { k: "left", conv: item.conv } }];
      return { ok: true, duplicate: false, msg, updates };
    }
  }
}

/** A message as sent, from user "a" in conversation "c". */
function sent(extra: Partial<NewMessage> = {}): NewMessage {
  return { conv: "c", from: "a", dev: "d", cid: "x", type: "t", body: new Uint8Array([1]), ts: 5, ...extra };
}

/** Moves `value` as postMessage would (structured clone, `transfer` moved). */
function travel<T>(value: T, transfer: ArrayBuffer[] = []): T {
  return structuredClone(value, { transfer });
}

describe("append-wire", () => {
  it("a batch arrives as it was sent, bodies included", () => {
    fc.assert(
      fc.property(fc.array(newMessage, { maxLength: 30 }), (batch) => {
        const { packed, transfer } = packBatch(batch);
        const arrived = unpackBatch(travel(packed, transfer));
        expect(arrived).toStrictEqual(batch.map((m) => ({ ...m, body: new Uint8Array(m.body) })));
      }),
    );
  });

  it("results come back equal to the writer's, whatever their shape", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(newMessage, outcome), { maxLength: 30 }), (cases) => {
        const batch = cases.map(([m]) => m);
        const { packed, transfer } = packBatch(batch);
        const onWriter = unpackBatch(travel(packed, transfer));
        const results = cases.map(([, o], i) => result(onWriter[i]!, o));
        const back = unpackResults(batch, travel(packResults(onWriter, results)));
        expect(back).toStrictEqual(results);
      }),
    );
  });

  it("sends a plain fresh result as numbers, anything else whole", () => {
    const item = sent();
    const results = [
      result(item, {
        kind: "users",
        seq: 7,
        users: [
          { user: "a", useq: 3 },
          { user: "b", useq: 9 },
        ],
      }),
      result(item, { kind: "group", seq: 8, useq: 4 }),
      result(item, { kind: "duplicate", seq: 2 }),
      result(item, { kind: "refused" }),
      result(item, { kind: "odd", seq: 10 }),
    ];
    const packed = packResults([item, item, item, item, item], results);
    expect(packed.whole.map(([i]) => i)).toStrictEqual([2, 3, 4]);
    expect([...packed.seq]).toStrictEqual([7, 8, 0, 0, 0]);
    expect(packed.users).toStrictEqual(["a", "b", ""]);
    expect([...packed.useqs]).toStrictEqual([3, 9, 4]);
  });

  it("a stored message that differs from the one sent travels whole", () => {
    const item = sent();
    const msg = { ...stored(item, 1), ts: 6 };
    const u = { k: "msg" as const, msg };
    const r: AppendResult = { ok: true, duplicate: false, msg, updates: [{ user: "a", useq: 1, u }] };
    const packed = packResults([item], [r]);
    expect(packed.whole).toHaveLength(1);
    expect(unpackResults([item], travel(packed))).toStrictEqual([r]);
  });

  it("a rebuilt message's body is the plain Uint8Array sent, or a plain copy of a Buffer", () => {
    const plain = sent({ body: new Uint8Array([1, 2]) });
    const buffer: NewMessage = { ...plain, cid: "y", body: Buffer.from([3, 4]) };
    const fresh = (item: NewMessage) =>
      result(item, { kind: "users", seq: 1, users: [{ user: "a", useq: 1 }] });
    const [a, b] = unpackResults(
      [plain, buffer],
      travel(packResults([plain, buffer], [fresh(plain), fresh(buffer)])),
    );
    expect(a!.ok && a!.msg.body).toBe(plain.body);
    expect(b!.ok && Object.getPrototypeOf(b!.msg.body)).toBe(Uint8Array.prototype);
    expect(b!.ok && b!.msg.body).toStrictEqual(new Uint8Array([3, 4]));
  });

  it("refuses an answer for another number of messages", () => {
    const item = sent({ body: new Uint8Array(0) });
    const packed = packResults([item], [{ ok: false, code: "E_INVALID", message: "no" }]);
    expect(() => unpackResults([item, item], packed)).toThrow(/1 results for a batch of 2/);
  });
});
