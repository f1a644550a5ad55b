// Bad messages, made from valid frames: structurally wrong frames (encoded with the real codecs),
// hand-built encodings (mutate-raw.ts), mutated bytes, random bytes, and transport-level lies
// (TCP length prefixes, WebSocket message types, sizes). Whether each really is bad, and how the
// server must react, is predict.ts's business: a bit flip may well leave a valid frame.

import fc from "fast-check";
import * as A from "@parley/protocol/arbitraries";
import type { ClientFrame } from "@parley/protocol";
import { type Draw, chance, int, oneOf } from "./draw.ts";
import type { Unit } from "./generate.ts";
import { rawJson, rawMsgpack } from "./mutate-raw.ts";
import { tcpLie, wsOdd } from "./mutate-transport.ts";
import { type Transport, bodyFor, concat, encodeFor, jsonText, msgpack, utf8 } from "./wire.ts";

export type BadKind = "structure" | "raw" | "bytes" | "random" | "transport";

type Fresh = () => ClientFrame;

/** A message of the given kind, built from valid frames drawn from `fresh`. */
export function badUnit(kind: BadKind, draw: Draw, transport: Transport, fresh: Fresh, max: number): Unit {
  switch (kind) {
    case "structure":
      return structural(draw, transport, fresh());
    case "raw":
      return transport === "ws-json" ? rawJson(draw, fresh()) : rawMsgpack(draw, transport, fresh());
    case "bytes":
      return mutatedBytes(draw, transport, fresh);
    case "random":
      return randomUnit(draw, transport);
    case "transport":
      return transport === "tcp" ? tcpLie(draw, fresh(), max) : wsOdd(draw, transport, fresh(), max);
  }
}

// ---------------------------------------------------------------- structure

/** Values of the wrong type, or numbers out of any integer field's range. */
export const WEIRD_NUMBER: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(
    -1,
    -0,
    0.5,
    1.5,
    NaN,
    Infinity,
    -Infinity,
    2 ** 53,
    2 ** 53 + 2,
    -(2 ** 53),
    2 ** 64,
    1e308,
    5e-324,
  ),
  fc.constantFrom(2 ** 31, 2 ** 32, -(2 ** 31), 2 ** 53 - 1),
  // msgpack int64/uint64: within 2^53 they decode as numbers (valid), beyond as refused bigints.
  fc.constantFrom(5n, -1n, 2n ** 53n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 64n - 1n),
  fc.double(),
);

export const WEIRD: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(null, true, false, "", "x", 0, [], {}),
  WEIRD_NUMBER,
  fc.string({ maxLength: 8 }),
  fc.integer(),
  fc.uint8Array({ maxLength: 8 }),
  fc.array(fc.oneof(fc.nat(), fc.string({ maxLength: 4 })), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 4 }), fc.nat(), { maxKeys: 2, noNullPrototype: true }),
);

const EXTRA_KEY: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom("x", "__proto__", "constructor", "toString", "valueOf", "$bytes", "t ", "", "ID", "T"),
  A.text(1, 16),
);

const UNKNOWN_T: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constantFrom("welcome", "sent", "push", "synced", "ok", "presence", "error", "bye"),
  },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      "HELLO",
      "Ping",
      " ping",
      "ping ",
      "ping\u0000",
      "",
      "__proto__",
      "constructor",
    ),
  },
  { weight: 2, arbitrary: A.text(0, 64) },
  { weight: 1, arbitrary: fc.string({ minLength: 100, maxLength: 2000 }) },
  { weight: 2, arbitrary: WEIRD },
);

const STRUCTURE_OPS = [
  "missing",
  "extra",
  "wrong-type",
  "number",
  "unknown-t",
  "nest",
  "long-string",
  "long-array",
  "top-level",
  "unicode",
  "bytes-swap",
] as const;

function structural(draw: Draw, transport: Transport, frame: ClientFrame): Unit {
  const op = oneOf(draw, STRUCTURE_OPS);
  const f = frame as unknown as Record<string, unknown>;
  const key = oneOf(draw, Object.keys(f));
  const strings = Object.keys(f).filter((k) => typeof f[k] === "string");
  let value: unknown = f;
  switch (op) {
    case "missing":
      delete f[key];
      break;
    case "extra":
      Object.defineProperty(f, draw(EXTRA_KEY), { value: draw(WEIRD), enumerable: true, writable: true });
      break;
    case "wrong-type":
      f[key] = draw(WEIRD);
      break;
    case "number": {
      const numeric = Object.keys(f).filter((k) => typeof f[k] === "number");
      f[numeric.length > 0 ? oneOf(draw, numeric) : key] = draw(WEIRD_NUMBER);
      break;
    }
    case "unknown-t":
      f.t = draw(UNKNOWN_T);
      break;
    case "nest":
      f[key] = nest(draw, f[key], chance(draw, 85) ? int(draw, 12, 20) : oneOf(draw, [64, 200]));
      break;
    case "long-string":
      f[strings.length > 0 ? oneOf(draw, strings) : "t"] = longString(draw);
      break;
    case "long-array":
      value = longArray(draw);
      break;
    case "top-level":
      value = oneOf<unknown>(draw, [
        [f],
        "hello",
        1,
        null,
        true,
        [],
        {},
        Uint8Array.of(1, 2),
        Object.entries(f),
      ]);
      break;
    case "unicode":
      f[strings.length > 0 ? oneOf(draw, strings) : "t"] =
        oneOf(draw, ["\ud800", "a\udfff", "\udc00\ud800", "\ud83d"]) + draw(A.text(0, 8));
      break;
    case "bytes-swap":
      if (f.body instanceof Uint8Array) f.body = oneOf(draw, ["aGk=", "", "hi"]);
      else f[strings.length > 0 ? oneOf(draw, strings) : "t"] = Uint8Array.of(0x68, 0x69);
      break;
  }
  return { label: `structure:${op}`, ...encodeFor(transport, value) };
}

function nest(draw: Draw, inner: unknown, depth: number): unknown {
  let value = inner;
  for (let i = 0; i < depth; i++) value = chance(draw, 50) ? [value] : { a: value };
  return value;
}

/** Around the documented bounds, in code points (an astral character is 2 UTF-16 units). */
function longString(draw: Draw): string {
  const unit = oneOf(draw, ["a", "é", "😀", "\u0000", "\u200b", "\uffff"]);
  return unit.repeat(oneOf(draw, [32, 33, 64, 65, 128, 129, 256, 257, 512, 513, 1024, 1025, 20000]));
}

/** Arrays at and beyond their bounds (hello.versions 1-16, watch.users and ack.convs 0-1000). */
function longArray(draw: Draw): unknown {
  const n = oneOf(draw, [0, 16, 17, 1000, 1001]);
  switch (int(draw, 0, 3)) {
    case 0:
      return { t: "hello", versions: Array<number>(n).fill(1), token: "x" };
    case 1:
      return { t: "watch", users: Array.from({ length: n }, (_, i) => `u${i % 7}`) };
    case 2:
      return { t: "ack", convs: Array.from({ length: n }, (_, i) => ({ conv: `c${i % 5}`, seq: i })) };
    default:
      return {
        t: "ack",
        convs: [oneOf<unknown>(draw, [{ conv: "c" }, { conv: "c", seq: 1, x: 1 }, null, "c", []])],
      };
  }
}

// ---------------------------------------------------------------- bytes

const INTERESTING = [
  0x00, 0x01, 0x7f, 0x80, 0xff, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xca, 0xcb, 0xcf, 0xd3, 0xd4, 0xd9, 0xdb, 0xdc,
  0xdd, 0xde, 0xdf, 0x90, 0x9f, 0x8f, 0xa0, 0xbf, 0x22, 0x5c, 0x7b, 0x7d, 0x5b, 0x5d, 0x3a, 0x2c,
];

const BYTE_OPS = [
  "bitflip",
  "byteset",
  "truncate",
  "extend",
  "insert",
  "delete",
  "duplicate",
  "splice",
  "swap",
] as const;

/** One mutation of `bytes` (never empty input). */
export function mutate(
  draw: Draw,
  bytes: Uint8Array,
  other: () => Uint8Array,
): { op: string; bytes: Uint8Array } {
  const op = oneOf(draw, BYTE_OPS);
  const out = new Uint8Array(bytes);
  const at = (): number => int(draw, 0, Math.max(0, out.length - 1));
  const some = (max: number): Uint8Array => draw(fc.uint8Array({ minLength: 1, maxLength: max }));
  switch (op) {
    case "bitflip":
      for (let i = int(draw, 1, 8); i > 0; i--) out[at()]! ^= 1 << int(draw, 0, 7);
      return { op, bytes: out };
    case "byteset":
      for (let i = int(draw, 1, 3); i > 0; i--) out[at()] = oneOf(draw, INTERESTING);
      return { op, bytes: out };
    case "truncate":
      return { op, bytes: out.subarray(0, at()) };
    case "extend":
      return { op, bytes: concat([out, some(16)]) };
    case "insert": {
      const p = at();
      return { op, bytes: concat([out.subarray(0, p), some(8), out.subarray(p)]) };
    }
    case "delete": {
      const p = at();
      return { op, bytes: concat([out.subarray(0, p), out.subarray(p + int(draw, 1, 8))]) };
    }
    case "duplicate": {
      const p = at();
      const q = Math.min(out.length, p + int(draw, 1, 16));
      return { op, bytes: concat([out.subarray(0, q), out.subarray(p, q), out.subarray(q)]) };
    }
    case "splice": {
      const b = other();
      return {
        op,
        bytes: concat([out.subarray(0, at()), b.subarray(int(draw, 0, Math.max(0, b.length - 1)))]),
      };
    }
    case "swap": {
      const p = at();
      const q = at();
      [out[p], out[q]] = [out[q]!, out[p]!];
      return { op, bytes: out };
    }
  }
}

function mutatedBytes(draw: Draw, transport: Transport, fresh: Fresh): Unit {
  const natural = (f: ClientFrame): Uint8Array => (transport === "ws-json" ? utf8(jsonText(f)) : msgpack(f));
  if (transport === "tcp" && chance(draw, 30)) {
    // The whole framed message, length prefix included.
    const framed = encodeFor("tcp", fresh()).bytes;
    const m = mutate(draw, framed, () => encodeFor("tcp", fresh()).bytes);
    return { label: `bytes:stream-${m.op}`, bytes: m.bytes, text: false };
  }
  const m = mutate(draw, natural(fresh()), () => natural(fresh()));
  return { label: `bytes:${m.op}`, ...bodyFor(transport, m.bytes) };
}

// ---------------------------------------------------------------- random

function randomUnit(draw: Draw, transport: Transport): Unit {
  const max = chance(draw, 90) ? 64 : 2048;
  const bytes = draw(fc.uint8Array({ maxLength: max }));
  if (transport === "tcp") {
    if (chance(draw, 50)) return { label: "random:stream", bytes, text: false };
    return { label: "random:body", ...bodyFor("tcp", bytes) };
  }
  if (transport === "ws-json" && chance(draw, 50)) {
    return {
      label: "random:text",
      bytes: utf8(draw(fc.string({ unit: "grapheme", maxLength: max }))),
      text: true,
    };
  }
  return { label: "random:bytes", bytes, text: transport === "ws-json" };
}
