// Encodings the codecs never produce, written by hand around a valid frame: msgpack with ext
// types, the unused byte 0xc1, non-string keys, invalid UTF-8, lying lengths, deep nesting,
// duplicate keys and every integer form; JSON with duplicate keys, comments, NaN, odd numbers,
// deep nesting, bad escapes and bad $bytes.

import { encodeJson } from "@parley/protocol";
import type { ClientFrame, Frame } from "@parley/protocol";
import { type Draw, chance, int, oneOf } from "./draw.ts";
import type { Unit } from "./generate.ts";
import {
  type Transport,
  arrayHeader,
  bodyFor,
  concat,
  msgpack,
  rawMap,
  rawStr,
  utf8,
  withRawEntry,
} from "./wire.ts";

const MSGPACK_OPS = [
  "ext",
  "c1",
  "trailing",
  "key-type",
  "bad-utf8",
  "length-lie",
  "deep",
  "dup-key",
  "int-forms",
  "proto",
] as const;

const EXT_VALUES: readonly number[][] = [
  [0xd4, 0x01, 0x00],
  [0xd5, 0x02, 0x00, 0x00],
  [0xd6, 0xff, 0x00, 0x00, 0x00, 0x00], // timestamp 32
  [0xd7, 0xff, 0, 0, 0, 0, 0, 0, 0, 0],
  [0xc7, 0x01, 0x05, 0xaa],
  [0xc8, 0x00, 0x01, 0x05, 0xaa],
  [0xc9, 0x00, 0x00, 0x00, 0x01, 0x05, 0xaa],
];

const BAD_UTF8: readonly number[][] = [
  [0xff],
  [0xc0, 0x80],
  [0xed, 0xa0, 0x80],
  [0xf4, 0x90, 0x80, 0x80],
  [0xe2, 0x82],
  [0x80],
];

// Headers announcing more than follows.
const LYING_LENGTHS: readonly number[][] = [
  [0xdb, 0xff, 0xff, 0xff, 0xff, 0x61],
  [0xdd, 0xff, 0xff, 0xff, 0xff],
  [0xdf, 0xff, 0xff, 0xff, 0xff],
  [0xc6, 0xff, 0xff, 0xff, 0xff, 0x00],
  [0xdc, 0xff, 0xff],
  [0xde, 0x00, 0x10],
  [0xa5, 0x61],
];

/** A frame without `key`, and `key` (or another) to give a raw value. */
function split(draw: Draw, frame: ClientFrame): { rest: Record<string, unknown>; key: string } {
  const rest = { ...(frame as unknown as Record<string, unknown>) };
  const key = oneOf(draw, Object.keys(rest));
  delete rest[key];
  return { rest, key };
}

const bytes = (list: readonly number[]): Uint8Array => Uint8Array.from(list);
const key = (name: string): Uint8Array => rawStr(utf8(name));

export function rawMsgpack(draw: Draw, transport: Transport, frame: ClientFrame): Unit {
  const op = oneOf(draw, MSGPACK_OPS);
  const { rest, key: k } = split(draw, frame);
  const whole = frame as unknown as Record<string, unknown>;
  let body: Uint8Array;
  switch (op) {
    case "ext":
      body = chance(draw, 80)
        ? withRawEntry(rest, key(k), bytes(oneOf(draw, EXT_VALUES)))
        : bytes(oneOf(draw, EXT_VALUES));
      break;
    case "c1":
      body = chance(draw, 70)
        ? withRawEntry(rest, key(k), bytes([0xc1]))
        : withRawEntry(whole, bytes([0xc1]), bytes([0x01]));
      break;
    case "trailing":
      body = concat([msgpack(frame), chance(draw, 50) ? bytes([int(draw, 0, 255)]) : msgpack(frame)]);
      break;
    case "key-type": {
      const keys = [[0x01], [0xc0], [0xc4, 0x01, 0x74], [0x90], [0x80], [0xca, 0, 0, 0, 0], [0xff]];
      body = withRawEntry(whole, bytes(oneOf(draw, keys)), bytes([0x01]));
      break;
    }
    case "bad-utf8": {
      const bad = rawStr(bytes(oneOf(draw, BAD_UTF8)));
      body = chance(draw, 70) ? withRawEntry(rest, key(k), bad) : withRawEntry(whole, bad, bytes([0x01]));
      break;
    }
    case "length-lie":
      body = withRawEntry(rest, key(k), bytes(oneOf(draw, LYING_LENGTHS)));
      break;
    case "deep": {
      // The frame's map is level 1: n arrays inside it make n + 1 levels (16 allowed).
      const n = chance(draw, 80) ? int(draw, 13, 18) : oneOf(draw, [1000, 30000]);
      const deep = concat([...Array<Uint8Array>(n).fill(arrayHeader(1)), bytes([0xc0])]);
      body = chance(draw, 80) ? withRawEntry(rest, key(k), deep) : deep;
      break;
    }
    case "dup-key": {
      // msgpack decoders keep the last of duplicate keys: the duplicate first leaves the frame
      // valid, last replaces the value.
      const value = msgpack(
        k === "t" ? oneOf(draw, ["ping", "pong", "send", "welcome", 7]) : oneOf(draw, [1, "x", null]),
      );
      const entries = Object.entries(whole).map(([name, v]) => [key(name), msgpack(v)] as const);
      body = chance(draw, 50) ? rawMap([...entries, [key(k), value]]) : rawMap([[key(k), value], ...entries]);
      break;
    }
    case "int-forms":
      body = intForm(draw, whole);
      break;
    case "proto":
      body = withRawEntry(whole, key("__proto__"), msgpack({ t: "ping" }));
      break;
  }
  return { label: `raw:${op}`, ...bodyFor(transport, body) };
}

/** An integer field (or a ping's n) written in another msgpack family: uint64, int64, uint32,
 * int8, float32, float64, or a non-integral float64. Integral ones within 2^53 are valid. */
function intForm(draw: Draw, frame: Record<string, unknown>): Uint8Array {
  const numeric = Object.keys(frame).filter((k) => typeof frame[k] === "number");
  const target = numeric.length > 0 ? frame : { t: "ping", n: int(draw, 0, 100) };
  const k = oneOf(
    draw,
    Object.keys(target).filter((name) => typeof target[name] === "number"),
  );
  const v = target[k] as number;
  const rest = { ...target };
  delete rest[k];
  const out = new DataView(new ArrayBuffer(9));
  let form: Uint8Array;
  switch (int(draw, 0, 6)) {
    case 0:
      out.setUint8(0, 0xcf);
      out.setBigUint64(1, BigInt(v));
      form = new Uint8Array(out.buffer);
      break;
    case 1:
      out.setUint8(0, 0xd3);
      out.setBigInt64(1, BigInt(v));
      form = new Uint8Array(out.buffer);
      break;
    case 2:
      out.setUint8(0, 0xce);
      out.setUint32(1, v >>> 0);
      form = new Uint8Array(out.buffer, 0, 5);
      break;
    case 3:
      form = bytes([0xd0, v & 0xff]);
      break;
    case 4:
      out.setUint8(0, 0xca);
      out.setFloat32(1, v);
      form = new Uint8Array(out.buffer, 0, 5);
      break;
    case 5:
      out.setUint8(0, 0xcb);
      out.setFloat64(1, v);
      form = new Uint8Array(out.buffer);
      break;
    default:
      out.setUint8(0, 0xcb);
      out.setFloat64(1, v + 0.5);
      form = new Uint8Array(out.buffer);
  }
  return withRawEntry(rest, key(k), form);
}

// ---------------------------------------------------------------- JSON

const JSON_OPS = [
  "dup-key",
  "bom",
  "comment",
  "trailing-comma",
  "literal",
  "number-forms",
  "deep",
  "bad-escape",
  "lone-surrogate",
  "control-char",
  "bytes",
  "whitespace",
  "top-level",
  "trailing-garbage",
  "proto",
  "single-quote",
  "unclosed",
] as const;

const MARK = "\u0000raw";

/** The JSON of `frame` with `k` set to the raw JSON text `raw` (appended when absent). */
function withRaw(frame: Record<string, unknown>, k: string, raw: string): string {
  return encodeJson({ ...frame, [k]: MARK } as unknown as Frame).replace(JSON.stringify(MARK), raw);
}

export function rawJson(draw: Draw, frame: ClientFrame): Unit {
  const op = oneOf(draw, JSON_OPS);
  const f = frame as unknown as Record<string, unknown>;
  const text = encodeJson(frame);
  const k = oneOf(draw, Object.keys(f));
  const numeric = Object.keys(f).filter((name) => typeof f[name] === "number");
  let out: string;
  switch (op) {
    case "dup-key":
      out = chance(draw, 50)
        ? `{${JSON.stringify(k)}:${JSON.stringify(oneOf(draw, ["pong", 1, null]))},` + text.slice(1)
        : text.slice(0, -1) +
          `,${JSON.stringify(k)}:${JSON.stringify(oneOf(draw, ["pong", "ping", 1, null]))}}`;
      break;
    case "bom":
      out = "\ufeff" + text;
      break;
    case "comment":
      out = text.slice(0, -1) + "/*x*/}";
      break;
    case "trailing-comma":
      out = text.slice(0, -1) + ",}";
      break;
    case "literal":
      out = withRaw(
        f,
        k,
        oneOf(draw, ["NaN", "Infinity", "-Infinity", "undefined", ".5", "01", "+1", "0x10", "1.", "--1"]),
      );
      break;
    case "number-forms":
      out = withRaw(
        f,
        numeric.length > 0 ? oneOf(draw, numeric) : k,
        oneOf(draw, [
          "1e2",
          "1.0",
          "100e-2",
          "-0",
          "1E+1",
          "0.1e1",
          "9007199254740993",
          "1e400",
          "-1e400",
          "1e-400",
          "0.5",
        ]),
      );
      break;
    case "deep": {
      const n = chance(draw, 80) ? int(draw, 13, 18) : oneOf(draw, [1000, 30000]);
      out = withRaw(f, k, "[".repeat(n) + "]".repeat(n));
      break;
    }
    case "bad-escape":
      out = withRaw(f, k, oneOf(draw, ['"\\x41"', '"\\u12"', '"\\"', '"\\q"', '"\\u{41}"']));
      break;
    case "lone-surrogate":
      out = withRaw(f, k, oneOf(draw, ['"\\ud800"', '"a\\udfff"', '"\\udc00\\ud800"']));
      break;
    case "control-char":
      out = withRaw(f, k, oneOf(draw, ['"a\u0001b"', '"\n"', '"\t"']));
      break;
    case "bytes":
      out = withRaw(
        f,
        "body" in f ? "body" : k,
        oneOf(draw, [
          '{"$bytes":"%%%"}',
          '{"$bytes":"aGk"}',
          '{"$bytes":"aGl="}',
          '{"$bytes":"aGk=","x":1}',
          '{"$bytes":1}',
          '{"$bytes":""}',
          '{"$bytes":"aG k="}',
          '{"$bytes":"a"}',
          '{"$bytes":"aGk=="}',
          '{"$bytes":"-_8="}',
        ]),
      );
      break;
    case "whitespace":
      out = " \n\t" + text.replaceAll(",", " ,\r\n ").replaceAll(":", " : ") + "\n ";
      break;
    case "top-level":
      out = oneOf(draw, ["null", "1", '"hello"', "[]", `[${text}]`, "true", "", " "]);
      break;
    case "trailing-garbage":
      out = text + oneOf(draw, [" x", text, "\u0000", "}", ","]);
      break;
    case "proto":
      out = `{"__proto__":{"t":"ping"},` + text.slice(1);
      break;
    case "single-quote":
      out = text.replaceAll('"', "'");
      break;
    case "unclosed":
      out = text.slice(0, int(draw, 0, text.length - 1));
      break;
  }
  return { label: `json:${op}`, bytes: utf8(out), text: true };
}
