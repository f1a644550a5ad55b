// A structural pass over MessagePack bytes before msgpackr sees them. Parley's wire format is
// plain MessagePack: msgpackr would otherwise decode its own extensions from untrusted input
// (records, structured-clone pointers, Error/RegExp/Set/Date, bundled strings) and recurse as
// deep as the input nests. One iterative pass, linear in the input, no allocation per item.

import { ParleyError } from "./errors.ts";

/** Deepest nesting of arrays and maps a frame may have (a frame itself is depth 1). Every frame
 * of protocol v1 fits in 7; the rest is headroom. */
export const MAX_NESTING = 16;

const PROTO_KEY = [0x5f, 0x5f, 0x70, 0x72, 0x6f, 0x74, 0x6f, 0x5f, 0x5f]; // "__proto__"

// Scratch stacks, reused: the check is synchronous and never re-entered. remaining[d] is the
// number of values still expected in the container open at depth d (a map counts its keys and
// its values); depth 0 is a virtual array holding the one top-level value.
const REMAINING = new Float64Array(MAX_NESTING + 1);
const IS_MAP = new Uint8Array(MAX_NESTING + 1);

// For tokens 0xc0..0xdf. LENGTH_WIDTH: bytes of the count that follows (bin/str 8-32, array and
// map 16/32), else 0. FIXED_SIZE: payload bytes of the other tokens; -1 for 0xc1 (never used)
// and the ext family (0xc7-0xc9, 0xd4-0xd8), which plain msgpack does not use.
// Row c0: nil, (c1), false, true, bin 8/16/32, ext 8/16/32, float 32/64, uint 8/16/32/64.
// Row d0: int 8/16/32/64, fixext 1/2/4/8/16, str 8/16/32, array 16/32, map 16/32.
// prettier-ignore
const LENGTH_WIDTH = new Int8Array([
  0, 0, 0, 0, 1, 2, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 2, 4, 2, 4,
]);
// prettier-ignore
const FIXED_SIZE = new Int8Array([
  0, -1, 0, 0, 0, 0, 0, -1, -1, -1, 4, 8, 1, 2, 4, 8,
  1, 2, 4, 8, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0,
]);

function bad(reason: string): ParleyError {
  return new ParleyError("E_BAD_FRAME", `msgpack: ${reason}`);
}

function isStringToken(token: number): boolean {
  return (token >= 0xa0 && token <= 0xbf) || token === 0xd9 || token === 0xda || token === 0xdb;
}

function isProtoKey(bytes: Uint8Array, start: number, length: number): boolean {
  if (length !== PROTO_KEY.length) return false;
  for (let i = 0; i < length; i++) if (bytes[start + i] !== PROTO_KEY[i]) return false;
  return true;
}

/** Throws ParleyError("E_BAD_FRAME") unless `bytes` is exactly one plain MessagePack value: nil,
 * booleans, integers, floats, str, bin, arrays, and maps whose keys are str other than
 * "__proto__", nested at most MAX_NESTING deep, with no ext types and no trailing bytes. */
export function checkPlainMsgpack(bytes: Uint8Array): void {
  if (plainValueEnd(bytes, 0) !== bytes.length) throw bad("trailing bytes after the value");
}

/** Where the one plain MessagePack value that starts at `start` ends (as checkPlainMsgpack
 * judges it, bytes after it allowed). Throws ParleyError("E_BAD_FRAME") as checkPlainMsgpack. */
export function plainValueEnd(bytes: Uint8Array, start: number): number {
  const end = bytes.length;
  const remaining = REMAINING;
  const isMap = IS_MAP;
  remaining[0] = 1;
  isMap[0] = 0;
  let depth = 0;
  let pos = start;

  while (depth >= 0) {
    if (pos >= end) throw bad("truncated");
    const left = remaining[depth]!;
    const isKey = isMap[depth] === 1 && left % 2 === 0;
    remaining[depth] = left - 1;
    const token = bytes[pos++]!;
    if (isKey && !isStringToken(token)) throw bad("map key is not a string");

    let skip = 0; // payload bytes after the header
    let children = -1; // >= 0: the token opens a container with this many values
    let map = false;
    if (token <= 0x7f || token >= 0xe0) {
      // positive / negative fixint
    } else if (token <= 0x8f) {
      children = (token & 0x0f) * 2;
      map = true;
    } else if (token <= 0x9f) {
      children = token & 0x0f;
    } else if (token <= 0xbf) {
      skip = token & 0x1f;
    } else {
      const width = LENGTH_WIDTH[token - 0xc0]!;
      if (width > 0) {
        // bin, str, array 16/32, map 16/32: a big-endian count follows the token
        if (pos + width > end) throw bad("truncated");
        let count = 0;
        for (let i = 0; i < width; i++) count = count * 256 + bytes[pos + i]!;
        pos += width;
        if (token >= 0xdc) {
          map = token >= 0xde;
          children = map ? count * 2 : count;
        } else {
          skip = count;
        }
      } else {
        skip = FIXED_SIZE[token - 0xc0]!;
        if (skip < 0) throw bad(token === 0xc1 ? "reserved byte 0xc1" : "extension types are not allowed");
      }
    }

    if (skip > 0) {
      if (pos + skip > end) throw bad("truncated");
      if (isKey && isProtoKey(bytes, pos, skip)) throw bad('map key "__proto__" is not allowed');
      pos += skip;
    }
    if (children >= 0) {
      if (depth === MAX_NESTING) throw bad(`nested deeper than ${MAX_NESTING}`);
      if (children > 0) {
        // Every value takes at least one byte: a count the input cannot hold is refused now.
        if (children > end - pos) throw bad("truncated");
        depth++;
        remaining[depth] = children;
        isMap[depth] = map ? 1 : 0;
      }
    }
    while (depth >= 0 && remaining[depth] === 0) depth--;
  }
  return pos;
}
