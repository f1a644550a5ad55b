// The binary encoding: one frame is one plain MessagePack map (no msgpackr extensions, so any
// MessagePack library can speak it). A WebSocket binary message carries one body; TCP carries
// bodies behind a 4-byte big-endian length (frame-parser.ts reads that stream).

import { Packr, Unpackr } from "msgpackr";
import type { Options } from "msgpackr";
import { ParleyError } from "./errors.ts";
import type { Frame } from "./frames.ts";
import { checkPlainMsgpack } from "./msgpack-check.ts";
import { hotPack } from "./hot-frames.ts";

// Options msgpackr accepts but its typings omit.
interface CodecOptions extends Omit<Options, "int64AsType"> {
  int64AsType: "auto";
  skipValues: unknown[];
}

const options: CodecOptions = {
  useRecords: false,
  mapsAsObjects: true,
  // fixmap for small maps: the smallest standard encoding, and the one docs/protocol.md shows.
  variableMapSize: true,
  // Optional fields left undefined are omitted, as JSON.stringify does.
  skipValues: [undefined],
  structuredClone: false,
  moreTypes: false,
  // uint64/int64 from other encoders: numbers when within +-2^53, otherwise bigint (then refused).
  int64AsType: "auto",
};
const packr = new Packr(options as unknown as Options);
const unpackr = new Unpackr(options as unknown as Options);

/** The general encoder, without the hand-written path for the hot frames: for the tests that
 * compare the two. */
export function packGeneral(frame: Frame): Uint8Array {
  return packr.pack(frame);
}

/** Encodes a frame as a MessagePack body (what a WebSocket binary message carries). Returns a
 * fresh Uint8Array owned by the caller. Integers beyond 32 bits are written as float64. */
export function encodeBinary(frame: Frame): Uint8Array {
  const packed = hotPack(frame) ?? packr.pack(frame);
  // Copy out of msgpackr's shared arena, so a retained frame does not pin it.
  const out = new Uint8Array(packed.length);
  out.set(packed);
  return out;
}

/** Encodes a frame for TCP: 4-byte unsigned big-endian body length, then the body. The result
 * is the caller's to keep, but it is a view into a memory slab shared with other frames: never
 * transfer (postMessage) its buffer. */
export function encodeFramed(frame: Frame): Uint8Array {
  const packed = hotPack(frame) ?? packr.pack(frame);
  const length = packed.length;
  const out = slabBytes(4 + length);
  out[0] = length >>> 24;
  out[1] = (length >>> 16) & 0xff;
  out[2] = (length >>> 8) & 0xff;
  out[3] = length & 0xff;
  out.set(packed, 4);
  return out;
}

// Small frames are cut from shared slabs, as Node's Buffer pool does: a new ArrayBuffer per
// frame costs an allocation of its own memory and GC bookkeeping for each. A slab is never
// reused once full, so a frame's bytes are never overwritten; a frame still held keeps its slab
// (16 KiB) alive.
const SLAB_BYTES = 16 * 1024;
let slab = new Uint8Array(SLAB_BYTES);
let slabUsed = 0;

function slabBytes(n: number): Uint8Array {
  if (n > SLAB_BYTES / 8) return new Uint8Array(n);
  if (slabUsed + n > SLAB_BYTES) {
    slab = new Uint8Array(SLAB_BYTES);
    slabUsed = 0;
  }
  const out = slab.subarray(slabUsed, slabUsed + n);
  slabUsed = (slabUsed + n + 7) & ~7; // keep the next frame 8-byte aligned
  return out;
}

/** Prefixes an already encoded body with its length, for TCP: lets a server encode a frame once
 * with encodeBinary and send it on both transports. */
export function lengthPrefixed(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

/** Decodes one MessagePack body into plain data: objects, arrays, strings, numbers, booleans,
 * null, and Uint8Array (a plain Uint8Array, copied, on every platform). Does not validate the
 * frame's shape (see validate.ts). Throws only ParleyError("E_BAD_FRAME"). */
export function decodeBinary(bytes: Uint8Array): unknown {
  if (!(bytes instanceof Uint8Array)) throw new ParleyError("E_BAD_FRAME", "msgpack: not bytes");
  checkPlainMsgpack(bytes);
  let value: unknown;
  try {
    value = unpackr.unpack(bytes);
  } catch (cause) {
    throw new ParleyError("E_BAD_FRAME", "msgpack: undecodable", { cause });
  }
  return normalise(value);
}

// checkPlainMsgpack bounds the nesting, so this recursion is bounded too.
function normalise(value: unknown): unknown {
  if (typeof value !== "object" || value === null) {
    if (typeof value === "bigint") throw new ParleyError("E_BAD_FRAME", "msgpack: integer beyond 2^53");
    return value;
  }
  // On Node msgpackr returns bin as a Buffer view into the input: copy into a plain Uint8Array.
  if (value instanceof Uint8Array) return new Uint8Array(value);
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = normalise(value[i]);
    return value;
  }
  const record = value as Record<string, unknown>;
  // for-in, not Object.keys(): no array per object (a sync page decodes thousands). msgpackr makes
  // plain objects, so there are no inherited enumerable keys to skip.
  for (const key in record) {
    const item = record[key];
    if (typeof item === "object" || typeof item === "bigint") record[key] = normalise(item);
  }
  return record;
}
