import fc from "fast-check";
import { Unpackr } from "msgpackr";
import { describe, expect, it } from "vitest";
import { encodeBinary } from "@parley/protocol";
import type { ServerFrame } from "@parley/protocol";
import { serverFrame, serverFrames } from "@parley/protocol/arbitraries";
import { skim } from "./skim.ts";

// skim must read a `sent` and a message `push` exactly as a full decode would, and decline every
// other frame (the load client then decodes it in full). On bytes that are not a frame it
// declines or agrees with msgpackr, and never throws.

const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: "number" });

describe("skim", () => {
  it("reads every sent frame of the user's own log: id, and useq when there is one", () => {
    fc.assert(
      fc.property(serverFrames.sent, (f) => {
        if (f.t !== "sent") return;
        const s = skim(encodeBinary(f));
        if (f.log !== undefined) expect(s).toBeUndefined();
        else
          expect(s).toStrictEqual(
            f.useq === undefined ? { t: "sent", id: f.id } : { t: "sent", id: f.id, useq: f.useq },
          );
      }),
      { numRuns: 500 },
    );
  });

  it("reads every message push of the user's own log: useq and body; declines other updates", () => {
    fc.assert(
      fc.property(serverFrames.push, (f) => {
        if (f.t !== "push") return;
        const s = skim(encodeBinary(f));
        if (f.log !== undefined || f.u.k !== "msg") {
          expect(s).toBeUndefined();
          return;
        }
        expect(s).toMatchObject({ t: "push", useq: f.useq, u: { k: "msg" } });
        expect(Uint8Array.from(s!.t === "push" ? s!.u.msg.body : [])).toStrictEqual(f.u.msg.body);
      }),
      { numRuns: 500 },
    );
  });

  it("declines every other frame", () => {
    fc.assert(
      fc.property(serverFrame(), (f: ServerFrame) => {
        if (f.t !== "sent" && f.t !== "push") expect(skim(encodeBinary(f))).toBeUndefined();
      }),
      { numRuns: 500 },
    );
  });

  it("on damaged frames and arbitrary bytes, declines or agrees with msgpackr, and never throws", () => {
    const frames = fc.oneof(serverFrames.sent, serverFrames.push).map((f) => encodeBinary(f));
    const damaged = fc.oneof(
      fc.tuple(frames, fc.nat(), fc.nat({ max: 255 })).map(([b, i, v]) => {
        const c = Uint8Array.from(b);
        c[i % c.length] = v;
        return c;
      }),
      fc.tuple(frames, fc.nat()).map(([b, n]) => b.subarray(0, n % b.length)),
      fc.uint8Array({ maxLength: 64 }),
      fc.uint8Array({ maxLength: 64 }).map((tail) => Uint8Array.of(0x81, 0xa1, 0x74, ...tail)),
    );
    fc.assert(
      fc.property(damaged, (bytes) => {
        const s = skim(bytes);
        if (s === undefined) return;
        const full = unpackr.unpack(bytes) as Record<string, unknown>;
        if (s.t === "sent") expect(full).toMatchObject(s);
        else {
          expect(full).toMatchObject({ t: "push", useq: s.useq, u: { k: "msg" } });
          const body = (full.u as { msg: { body: Uint8Array } }).msg.body;
          expect(Uint8Array.from(body)).toStrictEqual(Uint8Array.from(s.u.msg.body));
        }
      }),
      { numRuns: 5000 },
    );
  });

  it("declines a map whose key is not a string, as msgpackr refuses it", () => {
    // { t: "sent", id: 0, seq: 0, [68]: 1 } (fast-check found a frame like this).
    const bytes = Uint8Array.of(0x84, 0xa1, 0x74, 0xa4, 0x73, 0x65, 0x6e, 0x74, 0xa2, 0x69, 0x64, 0);
    const tail = [0xa3, 0x73, 0x65, 0x71, 0, 0x91, 0x44, 1];
    expect(() => {
      unpackr.unpack(Uint8Array.of(...bytes, ...tail));
    }).toThrow();
    expect(skim(Uint8Array.of(...bytes, ...tail))).toBeUndefined();
    // The same with a string key is read.
    expect(skim(Uint8Array.of(...bytes, 0xa3, 0x73, 0x65, 0x71, 0, 0xa1, 0x44, 1))).toStrictEqual({
      t: "sent",
      id: 0,
    });
  });

  it("declines values nested deeper than any frame instead of recursing without bound", () => {
    // { t: "sent", id: 1, x: [[[[...]]]] } nested 10,000 deep.
    const deep = new Uint8Array(10_000).fill(0x91);
    const bytes = Uint8Array.of(
      0x83,
      0xa1,
      0x74,
      0xa4,
      0x73,
      0x65,
      0x6e,
      0x74,
      0xa2,
      0x69,
      0x64,
      1,
      0xa1,
      0x78,
      ...deep,
      0xc0,
    );
    expect(skim(bytes)).toBeUndefined();
  });
});
