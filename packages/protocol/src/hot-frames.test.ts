import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { clientFrames, frame, message, serverFrames } from "./arbitraries.ts";
import { decodeBinary, packGeneral } from "./binary-codec.ts";
import type { Frame, Message, PushFrame } from "./frames.ts";
import { hotPack } from "./hot-frames.ts";

// hotPack must write exactly msgpackr's bytes for the frames it takes (the arbitraries build
// each frame with its keys in declaration order, which is the order hotPack writes), decline
// everything else, and take the common case, or it would be dead code.

const copy = (b: Uint8Array | undefined) => (b === undefined ? undefined : Uint8Array.from(b));

describe("hotPack", () => {
  for (const [name, arb] of [
    ["push", serverFrames.push],
    ["sent", serverFrames.sent],
    ["send", clientFrames.send],
  ] as const) {
    it(`writes msgpackr's bytes for every ${name} frame it takes`, () => {
      fc.assert(
        fc.property(arb as fc.Arbitrary<Frame>, (f) => {
          const hot = copy(hotPack(f));
          if (hot !== undefined) expect(hot).toStrictEqual(Uint8Array.from(packGeneral(f)));
        }),
        { numRuns: 500 },
      );
    });
  }

  it("declines every other frame", () => {
    fc.assert(
      fc.property(frame(), (f) => {
        if (f.t !== "push" && f.t !== "sent" && f.t !== "send") expect(hotPack(f)).toBeUndefined();
      }),
    );
  });

  const ascii = (m: Message): Message => ({
    ...m,
    conv: "c_1",
    from: "u_2",
    dev: "d_3",
    cid: `cid-${m.seq}`,
    type: "text/plain",
  });

  it("takes every ASCII message push without reactions, in the order a server builds it", () => {
    fc.assert(
      fc.property(
        message(),
        fc.constantFrom("msg", "edit", "del"),
        fc.option(fc.constant("c_9")),
        (m, k, log) => {
          const { reactions: _, ...plain } = ascii(m);
          const f: PushFrame = { t: "push", useq: m.seq, u: { k, msg: plain }, ...(log ? { log } : {}) };
          const hot = copy(hotPack(f));
          expect(hot).toBeDefined();
          expect(hot).toStrictEqual(Uint8Array.from(packGeneral(f)));
          expect(decodeBinary(hot!)).toStrictEqual(f);
        },
      ),
    );
  });

  it("takes sent and send frames of ASCII ids, and numbers of every size and sign", () => {
    const numbers = fc.oneof(
      fc.integer({ min: -(2 ** 31), max: 2 ** 32 }),
      fc.constantFrom(0, 127, 128, 255, 256, 65535, 65536, -32, -33, -128, -129, -32768, -32769),
      fc.double({ noNaN: true }),
      fc.maxSafeInteger(),
    );
    fc.assert(
      fc.property(numbers, numbers, fc.uint8Array({ maxLength: 70_000 }), (a, b, body) => {
        for (const f of [
          { t: "sent", id: a, conv: "c_1", cid: "x".repeat(300), seq: b, ts: a },
          { t: "sent", id: a, conv: "c_1", cid: "x", seq: b, ts: a, useq: b },
          { t: "sent", id: a, conv: "c_1", cid: "x", seq: b, ts: a, useq: a, log: "c_1" },
          { t: "send", id: a, conv: "c_1", cid: "y", type: "t".repeat(40), body, replyTo: b },
        ] as Frame[]) {
          const hot = copy(hotPack(f));
          // Only a body too large for the scratch buffer goes to msgpackr.
          if (body.byteLength < 60_000 || f.t === "sent") expect(hot).toBeDefined();
          if (hot) expect(hot).toStrictEqual(Uint8Array.from(packGeneral(f)));
        }
      }),
      { numRuns: 200 },
    );
  });

  it("leaves non-ASCII strings and reactions to msgpackr", () => {
    const m: Message = {
      conv: "c_1",
      seq: 1,
      from: "u_1",
      dev: "d_1",
      cid: "a",
      type: "text/plain",
      body: new Uint8Array(3),
      ts: 5,
    };
    expect(hotPack({ t: "push", useq: 1, u: { k: "msg", msg: m } })).toBeDefined();
    expect(hotPack({ t: "push", useq: 1, u: { k: "msg", msg: { ...m, cid: "é" } } })).toBeUndefined();
    expect(hotPack({ t: "push", useq: 1, u: { k: "msg", msg: { ...m, reactions: {} } } })).toBeUndefined();
    expect(hotPack({ t: "push", useq: 1, u: { k: "react", msg: m, user: "u", emoji: "x", on: true } })).toBe(
      undefined,
    );
    expect(hotPack({ t: "sent", id: 1, conv: "c_😀", cid: "a", seq: 1, ts: 1 })).toBeUndefined();
  });
});
