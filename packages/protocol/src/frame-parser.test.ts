import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { frame } from "./arbitraries.ts";
import { decodeBinary, encodeFramed } from "./binary-codec.ts";
import { ParleyError } from "./errors.ts";
import { FrameParser } from "./frame-parser.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "./frames.ts";
import type { Frame } from "./frames.ts";
import { parseClientFrame, parseServerFrame } from "./validate.ts";
import { thrownParleyError } from "./test-helpers.ts";

const fromHex = (hex: string) => new Uint8Array(Buffer.from(hex.replace(/\s+/g, ""), "hex"));
const concat = (parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));

const thrown = thrownParleyError;

/** Splits `bytes` at the given cut points (taken modulo its length). */
function split(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let from = 0;
  for (const p of [...points, bytes.length]) {
    chunks.push(bytes.subarray(from, p));
    from = p;
  }
  return chunks;
}

function parseEither(value: unknown): Frame {
  try {
    return parseClientFrame(value);
  } catch {
    return parseServerFrame(value);
  }
}

describe("FrameParser", () => {
  it("returns the bodies of several frames in one chunk, in order", () => {
    const parser = new FrameParser();
    const bodies = parser.push(fromHex("00000001 c0 00000002 a1 61 00000001 01"));
    expect(bodies).toStrictEqual([fromHex("c0"), fromHex("a161"), fromHex("01")]);
    expect(parser.state).toBe("HEADER");
    expect(parser.bufferedBytes).toBe(0);
  });

  it("reassembles frames split at every byte position", () => {
    const stream = fromHex("00000003 a2 68 69 00000001 c3");
    for (let cut = 0; cut <= stream.length; cut++) {
      const parser = new FrameParser();
      const bodies = [...parser.push(stream.subarray(0, cut)), ...parser.push(stream.subarray(cut))];
      expect(bodies).toStrictEqual([fromHex("a26869"), fromHex("c3")]);
    }
  });

  it("reports its state while a frame is incomplete", () => {
    const parser = new FrameParser();
    expect(parser.push(fromHex("0000"))).toStrictEqual([]);
    expect(parser.state).toBe("HEADER");
    expect(parser.bufferedBytes).toBe(2);
    expect(parser.push(fromHex("0003"))).toStrictEqual([]);
    expect(parser.state).toBe("BODY");
    expect(parser.push(fromHex("a2"))).toStrictEqual([]);
    expect(parser.bufferedBytes).toBe(4 + 3);
    expect(parser.push(fromHex("6869"))).toStrictEqual([fromHex("a26869")]);
    expect(parser.bufferedBytes).toBe(0);
  });

  it("returns bodies as plain Uint8Array, also from Node Buffers", () => {
    const parser = new FrameParser();
    const [whole] = parser.push(Buffer.from("00000001c0", "hex"));
    expect(whole!.constructor).toBe(Uint8Array);
    parser.push(Buffer.from("0000000201", "hex"));
    const [joined] = parser.push(Buffer.from("02", "hex"));
    expect(joined!.constructor).toBe(Uint8Array);
  });

  it("refuses an oversized header before any of the body arrives", () => {
    const parser = new FrameParser({ maxFrameBytes: 16 });
    expect(parser.push(fromHex("00000010"))).toHaveLength(0); // exactly the maximum is fine
    expect(parser.push(new Uint8Array(16))).toHaveLength(1);
    const error = thrown(() => parser.push(fromHex("00000011")));
    expect(error.code).toBe("E_FRAME_TOO_LARGE");
    expect(parser.bufferedBytes).toBe(0);
    // Dead from now on.
    expect(thrown(() => parser.push(new Uint8Array(1))).code).toBe("E_FRAME_TOO_LARGE");
    expect(thrown(() => parser.push(new Uint8Array(0))).code).toBe("E_FRAME_TOO_LARGE");
  });

  it("refuses a 4 GiB header with the default maximum", () => {
    const parser = new FrameParser();
    expect(parser.maxFrameBytes).toBe(DEFAULT_MAX_FRAME_BYTES);
    expect(parser.push(fromHex("00 01 00 00"))).toHaveLength(0);
    expect(parser.push(new Uint8Array(DEFAULT_MAX_FRAME_BYTES))).toHaveLength(1);
    expect(parser.push(fromHex("ff ff"))).toHaveLength(0);
    expect(thrown(() => parser.push(fromHex("ff ff"))).code).toBe("E_FRAME_TOO_LARGE");
  });

  it("refuses a zero-length frame", () => {
    const parser = new FrameParser();
    expect(thrown(() => parser.push(fromHex("00000001 c0 00000000"))).code).toBe("E_BAD_FRAME");
    expect(thrown(() => parser.push(fromHex("00000001 c0"))).code).toBe("E_BAD_FRAME");
  });

  it("refuses a bad maximum", () => {
    expect(() => new FrameParser({ maxFrameBytes: 0 })).toThrow(RangeError);
    expect(() => new FrameParser({ maxFrameBytes: 2 ** 32 })).toThrow(RangeError);
    expect(() => new FrameParser({ maxFrameBytes: 1.5 })).toThrow(RangeError);
  });

  it("round-trips any frames through any chunking", () => {
    fc.assert(
      fc.property(
        fc.array(frame(), { minLength: 1, maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        (frames, cuts) => {
          const parser = new FrameParser();
          const stream = concat(frames.map(encodeFramed));
          const bodies = split(stream, cuts).flatMap((chunk) => parser.push(chunk));
          expect(bodies.map((b) => parseEither(decodeBinary(b)))).toStrictEqual(frames);
          expect(parser.bufferedBytes).toBe(0);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("throws only ParleyError on arbitrary streams, and never holds more than max + 4 bytes", () => {
    const max = 64;
    // Small headers often, so that bodies complete as well as overflow.
    const header = fc.integer({ min: 0, max: max + 8 }).map((n) => fromHex(n.toString(16).padStart(8, "0")));
    const piece = fc.oneof(fc.uint8Array({ maxLength: 80 }), header);
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 30 }), (chunks) => {
        const parser = new FrameParser({ maxFrameBytes: max });
        for (const chunk of chunks) {
          try {
            for (const body of parser.push(chunk)) {
              expect(body.length).toBeGreaterThan(0);
              expect(body.length).toBeLessThanOrEqual(max);
            }
          } catch (error) {
            expect(error).toBeInstanceOf(ParleyError);
            expect(["E_FRAME_TOO_LARGE", "E_BAD_FRAME"]).toContain((error as ParleyError).code);
          }
          expect(parser.bufferedBytes).toBeLessThanOrEqual(max + 4);
        }
      }),
      { numRuns: 500 },
    );
  });

  it("does not copy a frame that lies within one chunk", () => {
    const stream = fromHex("00000002 a1 61");
    const [body] = new FrameParser().push(stream);
    expect(body!.buffer).toBe(stream.buffer);
  });
});
