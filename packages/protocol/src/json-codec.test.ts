import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { clientFrames, serverFrames } from "./arbitraries.ts";
import { ParleyError } from "./errors.ts";
import type { Frame } from "./frames.ts";
import { decodeJson, encodeJson } from "./json-codec.ts";
import { MAX_NESTING } from "./msgpack-check.ts";
import { parseClientFrame, parseServerFrame } from "./validate.ts";

function expectBadFrame(fn: () => unknown): void {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ParleyError);
    expect((error as ParleyError).code).toBe("E_BAD_FRAME");
    return;
  }
  throw new Error("expected E_BAD_FRAME, nothing was thrown");
}

describe("JSON codec round trip", () => {
  for (const [t, arb] of Object.entries(clientFrames)) {
    it(`client ${t}`, () => {
      fc.assert(
        fc.property(arb, (f) => {
          expect(parseClientFrame(decodeJson(encodeJson(f)))).toStrictEqual(f);
        }),
      );
    });
  }
  for (const [t, arb] of Object.entries(serverFrames)) {
    it(`server ${t}`, () => {
      fc.assert(
        fc.property(arb, (f) => {
          expect(parseServerFrame(decodeJson(encodeJson(f)))).toStrictEqual(f);
        }),
      );
    });
  }
});

describe("JSON codec", () => {
  it("carries bytes in any field as {$bytes: base64}", () => {
    const frame = { t: "x", a: [new Uint8Array([1, 2, 3])], b: { c: new Uint8Array(0) } } as unknown as Frame;
    const json = encodeJson(frame);
    expect(json).toBe('{"t":"x","a":[{"$bytes":"AQID"}],"b":{"c":{"$bytes":""}}}');
    expect(decodeJson(json)).toStrictEqual(frame);
  });

  it("encodes a Node Buffer as bytes too, not as Buffer.toJSON", () => {
    const frame = { t: "send", id: 1, conv: "c", cid: "m", type: "x", body: Buffer.from([1, 2]) } as Frame;
    expect(encodeJson(frame)).toContain('"body":{"$bytes":"AQI="}');
  });

  it("omits undefined optional fields", () => {
    expect(encodeJson({ t: "sync", id: 1, cursor: 0, limit: undefined })).toBe(
      '{"t":"sync","id":1,"cursor":0}',
    );
  });

  it("leaves objects that only look like bytes alone", () => {
    expect(decodeJson('{"$bytes":1}')).toStrictEqual({ $bytes: 1 });
    expect(decodeJson('{"$bytes":"AA==","x":1}')).toStrictEqual({ $bytes: "AA==", x: 1 });
  });

  it.each([
    ["invalid JSON", "{"],
    ["empty text", ""],
    ["invalid base64", '{"body":{"$bytes":"!!"}}'],
    ["non-canonical base64", '{"body":{"$bytes":"Zh=="}}'],
    ["a __proto__ key", '{"t":"ping","__proto__":{"n":1}}'],
  ])("refuses %s", (_name, text) => {
    expectBadFrame(() => decodeJson(text));
  });

  it(`accepts nesting up to ${MAX_NESTING} and refuses deeper`, () => {
    const nested = (depth: number) => "[".repeat(depth) + "]".repeat(depth);
    expect(() => decodeJson(nested(MAX_NESTING))).not.toThrow();
    expectBadFrame(() => decodeJson(nested(MAX_NESTING + 1)));
    expectBadFrame(() => decodeJson(nested(100_000)));
    // A bytes object is a value, not a level of nesting, as bin is in msgpack.
    expect(() =>
      decodeJson("[".repeat(MAX_NESTING) + '{"$bytes":""}' + "]".repeat(MAX_NESTING)),
    ).not.toThrow();
  });

  it("refuses non-text input", () => {
    expectBadFrame(() => decodeJson(new Uint8Array(1) as unknown as string));
  });

  it("throws only ParleyError on arbitrary text and JSON values", () => {
    const input = fc.oneof(fc.string({ unit: "binary", maxLength: 64 }), fc.json({ maxDepth: 20 }));
    fc.assert(
      fc.property(input, (text) => {
        for (const parse of [parseClientFrame, parseServerFrame]) {
          try {
            parse(decodeJson(text));
          } catch (error) {
            if (!(error instanceof ParleyError)) throw error;
          }
        }
      }),
      { numRuns: 500 },
    );
  });
});
