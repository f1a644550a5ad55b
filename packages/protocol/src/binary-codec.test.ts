import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { clientFrames, frame, serverFrames } from "./arbitraries.ts";
import { decodeBinary, encodeBinary, encodeFramed, lengthPrefixed } from "./binary-codec.ts";
import { ParleyError } from "./errors.ts";
import type { Frame } from "./frames.ts";
import { MAX_NESTING, plainValueEnd } from "./msgpack-check.ts";
import { parseClientFrame, parseServerFrame } from "./validate.ts";

const fromHex = (hex: string) => new Uint8Array(Buffer.from(hex.replace(/\s+/g, ""), "hex"));

function expectBadFrame(fn: () => unknown): ParleyError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ParleyError);
    expect((error as ParleyError).code).toBe("E_BAD_FRAME");
    return error as ParleyError;
  }
  throw new Error("expected E_BAD_FRAME, nothing was thrown");
}

/** Anything decodeBinary and parse*Frame may throw. */
function onlyParleyErrors(fn: () => unknown): void {
  try {
    fn();
  } catch (error) {
    if (!(error instanceof ParleyError)) throw error;
    expect(["E_BAD_FRAME", "E_UNKNOWN_FRAME"]).toContain(error.code);
  }
}

describe("binary codec round trip", () => {
  for (const [t, arb] of Object.entries(clientFrames)) {
    it(`client ${t}`, () => {
      fc.assert(
        fc.property(arb, (f) => {
          expect(parseClientFrame(decodeBinary(encodeBinary(f)))).toStrictEqual(f);
        }),
      );
    });
  }
  for (const [t, arb] of Object.entries(serverFrames)) {
    it(`server ${t}`, () => {
      fc.assert(
        fc.property(arb, (f) => {
          expect(parseServerFrame(decodeBinary(encodeBinary(f)))).toStrictEqual(f);
        }),
      );
    });
  }

  it("framed encoding is the length then the body", () => {
    fc.assert(
      fc.property(frame(), (f) => {
        const body = encodeBinary(f);
        const framed = encodeFramed(f);
        expect(new DataView(framed.buffer, framed.byteOffset, framed.byteLength).getUint32(0)).toBe(
          body.length,
        );
        expect(framed.subarray(4)).toStrictEqual(body);
        expect(lengthPrefixed(body)).toStrictEqual(framed);
      }),
    );
  });

  it("framed encodings kept together are never overwritten by later ones (they share slabs)", () => {
    fc.assert(
      fc.property(fc.array(frame(), { minLength: 1, maxLength: 200 }), (frames) => {
        const kept = frames.map((f) => encodeFramed(f));
        // Enough further frames to fill and replace the slab the kept ones were cut from.
        for (let i = 0; i < 2000; i++) encodeFramed({ t: "typing", conv: `c${i}` });
        kept.forEach((bytes, i) => expect(bytes).toStrictEqual(lengthPrefixed(encodeBinary(frames[i]!))));
      }),
      { numRuns: 30 },
    );
  });
});

describe("binary decoding", () => {
  it("returns bytes as plain Uint8Array copies, also from a Node Buffer", () => {
    const encoded = encodeBinary({
      t: "send",
      id: 1,
      conv: "c",
      cid: "m",
      type: "x",
      body: new Uint8Array([1, 2, 3]),
    });
    const input = Buffer.from(encoded);
    const decoded = decodeBinary(input) as { body: Uint8Array };
    expect(decoded.body.constructor).toBe(Uint8Array);
    expect(decoded.body).toStrictEqual(new Uint8Array([1, 2, 3]));
    input.fill(0);
    expect(decoded.body).toStrictEqual(new Uint8Array([1, 2, 3]));
  });

  it("omits undefined optional fields, as JSON does", () => {
    const decoded = decodeBinary(encodeBinary({ t: "sync", id: 1, cursor: 0, limit: undefined }));
    expect(decoded).toStrictEqual({ t: "sync", id: 1, cursor: 0 });
  });

  it("returns plain objects", () => {
    const decoded = decodeBinary(encodeBinary({ t: "ping", n: 1 }));
    expect(Object.getPrototypeOf(decoded)).toBe(Object.prototype);
  });

  it("encodes into a fresh plain Uint8Array", () => {
    const a = encodeBinary({ t: "ping", n: 1 });
    const b = encodeBinary({ t: "ping", n: 2 });
    expect(a.constructor).toBe(Uint8Array);
    expect(a.byteOffset).toBe(0);
    expect(a.buffer.byteLength).toBe(a.length);
    expect(a).not.toStrictEqual(b);
  });

  it("keeps integers up to 2^53 - 1 exact, whatever their msgpack width", () => {
    for (const n of [
      0,
      1,
      127,
      128,
      255,
      256,
      65535,
      65536,
      2 ** 32 - 1,
      2 ** 32,
      2 ** 40 + 1,
      Number.MAX_SAFE_INTEGER,
    ]) {
      expect(decodeBinary(encodeBinary({ t: "ping", n }))).toStrictEqual({ t: "ping", n });
    }
    // uint64 and int64 as other encoders write them: {"n": 2^53 - 1}
    expect(decodeBinary(fromHex("81 a1 6e cf 00 1f ff ff ff ff ff ff"))).toStrictEqual({
      n: Number.MAX_SAFE_INTEGER,
    });
    expect(decodeBinary(fromHex("81 a1 6e d3 00 1f ff ff ff ff ff ff"))).toStrictEqual({
      n: Number.MAX_SAFE_INTEGER,
    });
    expect(decodeBinary(fromHex("81 a1 6e cf 00 00 01 8b cf e5 68 00"))).toStrictEqual({
      n: 1_700_000_000_000,
    });
  });

  it("refuses 64-bit integers beyond 2^53", () => {
    expectBadFrame(() => decodeBinary(fromHex("81 a1 6e cf 00 20 00 00 00 00 00 01")));
    expectBadFrame(() => decodeBinary(fromHex("81 a1 6e cf ff ff ff ff ff ff ff ff")));
    expectBadFrame(() => decodeBinary(fromHex("81 a1 6e d3 80 00 00 00 00 00 00 00")));
  });

  it.each([
    ["empty input", ""],
    ["truncated map", "82 a1 74"],
    ["truncated string", "81 a1 74 a4 70 69"],
    ["truncated length", "81 a1 74 d9"],
    ["trailing bytes", "80 00"],
    ["reserved byte 0xc1", "c1"],
    ["fixext (msgpackr undefined)", "d4 00 00"],
    ["timestamp extension", "d6 ff 00 00 00 00"],
    ["msgpackr record definition", "d4 72 40"],
    ["msgpackr structured-clone pointer", "d6 70 00 00 00 01"],
    ["ext 8", "c7 01 65 00"],
    ["integer map key", "81 01 02"],
    ["nil map key", "81 c0 02"],
    ["__proto__ key", "81 a9 5f 5f 70 72 6f 74 6f 5f 5f 80"],
    ["array claiming more items than bytes", "dd ff ff ff ff 00"],
    ["map claiming more items than bytes", "df ff ff ff ff a1 74 00"],
    ["str32 longer than the input", "db ff ff ff ff 61"],
  ])("refuses %s", (_name, hex) => {
    expectBadFrame(() => decodeBinary(fromHex(hex)));
  });

  it(`accepts nesting up to ${MAX_NESTING} and refuses deeper`, () => {
    const nested = (depth: number) => fromHex("91".repeat(depth - 1) + "90");
    expect(() => decodeBinary(nested(MAX_NESTING))).not.toThrow();
    expectBadFrame(() => decodeBinary(nested(MAX_NESTING + 1)));
    // Deep enough to overflow a recursive decoder's stack.
    expectBadFrame(() => decodeBinary(fromHex("91".repeat(200_000) + "c0")));
  });

  it("plainValueEnd finds where a value at an offset ends, and refuses what the check refuses", () => {
    // nil, then { t: [1, "ab"] }, then a trailing byte.
    const bytes = fromHex("c0 81 a1 74 92 01 a2 61 62 ff");
    expect(plainValueEnd(bytes, 0)).toBe(1);
    expect(plainValueEnd(bytes, 1)).toBe(9);
    expect(plainValueEnd(bytes.subarray(0, 9), 1)).toBe(9);
    expectBadFrame(() => plainValueEnd(bytes.subarray(0, 8), 1)); // truncated
    expectBadFrame(() => plainValueEnd(fromHex("00 81 01 02"), 1)); // integer map key
    expectBadFrame(() => plainValueEnd(fromHex("00 d4 00 00"), 1)); // ext
  });

  it("refuses values that are not bytes", () => {
    expectBadFrame(() => decodeBinary("82a174" as unknown as Uint8Array));
  });

  it("throws only ParleyError on arbitrary bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        onlyParleyErrors(() => parseClientFrame(decodeBinary(bytes)));
        onlyParleyErrors(() => parseServerFrame(decodeBinary(bytes)));
      }),
      { numRuns: 500 },
    );
  });

  it("throws only ParleyError on corrupted valid frames", () => {
    const corruption = fc.record({
      at: fc.nat(),
      op: fc.constantFrom("set", "insert", "delete", "truncate"),
      byte: fc.integer({ min: 0, max: 255 }),
    });
    fc.assert(
      fc.property(frame(), fc.array(corruption, { minLength: 1, maxLength: 4 }), (f, edits) => {
        const bytes = Array.from(encodeBinary(f));
        for (const { at, op, byte } of edits) {
          const i = at % (bytes.length + 1);
          if (op === "set") bytes[Math.min(i, bytes.length - 1)] = byte;
          else if (op === "insert") bytes.splice(i, 0, byte);
          else if (op === "delete") bytes.splice(i, 1);
          else bytes.length = i;
        }
        const input = new Uint8Array(bytes);
        onlyParleyErrors(() => parseClientFrame(decodeBinary(input)));
        onlyParleyErrors(() => parseServerFrame(decodeBinary(input)));
      }),
      { numRuns: 500 },
    );
  });

  it("decodes any msgpack-encodable plain value to the same value, or refuses it cleanly", () => {
    const value = fc.letrec((tie) => ({
      node: fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        fc.constant(null),
        fc.boolean(),
        fc.maxSafeInteger(),
        fc.double({ noNaN: true, noDefaultInfinity: true }).filter((d) => !Object.is(d, -0)),
        fc.string(),
        fc.uint8Array({ maxLength: 16 }),
        fc.array(tie("node"), { maxLength: 4 }),
        fc.dictionary(
          fc.string().filter((k) => k !== "__proto__"),
          tie("node"),
          { maxKeys: 4, noNullPrototype: true },
        ),
      ),
    })).node;
    fc.assert(
      fc.property(value, (v) => {
        expect(decodeBinary(encodeBinary(v as unknown as Frame))).toStrictEqual(v);
      }),
    );
  });
});
