// Turning generated values into the bytes of one message: the real codecs (encodeBinary,
// lengthPrefixed, encodeJson) for anything they can encode, plus the few constructions they
// refuse to make (JSON with NaN or bigints, msgpack with invalid UTF-8, duplicate keys, bogus
// lengths), built by hand here.

import { encodeBinary, encodeJson, lengthPrefixed } from "@parley/protocol";
import type { Frame } from "@parley/protocol";

export type Transport = "tcp" | "ws-binary" | "ws-json";

export const TRANSPORTS: readonly Transport[] = ["tcp", "ws-binary", "ws-json"];

/** One message as the fuzzer sends it: TCP bytes (length prefix included, possibly a lie), or a
 * WebSocket message with its type. */
export interface Encoded {
  bytes: Uint8Array;
  /** WebSocket only: a text message (else binary). */
  text: boolean;
}

const encoder = new TextEncoder();

export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** A value the codecs may not have a type for, encoded as msgpack with the real encoder.
 * Throws what msgpackr throws (e.g. a bigint beyond 64 bits). */
export function msgpack(value: unknown): Uint8Array {
  return encodeBinary(value as Frame);
}

const MARK = "\u0000fuzz:";

/** JSON text of `value`: encodeJson for a frame it can encode, else JSON.stringify with bytes as
 * {"$bytes"} and numbers JSON cannot hold written as the text JSON.parse would see (NaN, 1e999,
 * -0, bigints as their digits). */
export function jsonText(value: unknown): string {
  let odd = false;
  const text = JSON.stringify(value, function (this: unknown, key: string, v: unknown) {
    const raw = (this as Record<string, unknown>)[key];
    if (raw instanceof Uint8Array) return { $bytes: Buffer.from(raw).toString("base64") };
    if (typeof v === "bigint") return ((odd = true), `${MARK}${v.toString()}`);
    if (typeof v === "number" && (!Number.isFinite(v) || Object.is(v, -0))) {
      odd = true;
      return `${MARK}${Number.isNaN(v) ? "NaN" : Object.is(v, -0) ? "-0" : v > 0 ? "1e999" : "-1e999"}`;
    }
    return v;
  });
  if (text === undefined) return "undefined";
  if (!odd) return value !== null && typeof value === "object" ? encodeJson(value as Frame) : text;
  return text.replace(/"\\u0000fuzz:([^"]*)"/g, "$1");
}

/** Encodes `value` natively for `transport`. Throws when msgpackr cannot encode it. */
export function encodeFor(transport: Transport, value: unknown): Encoded {
  if (transport === "ws-json") return { bytes: utf8(jsonText(value)), text: true };
  const body = msgpack(value);
  return transport === "tcp" ? { bytes: lengthPrefixed(body), text: false } : { bytes: body, text: false };
}

/** Wraps a body already encoded for the transport's natural message type. */
export function bodyFor(transport: Transport, body: Uint8Array): Encoded {
  if (transport === "tcp") return { bytes: lengthPrefixed(body), text: false };
  return { bytes: body, text: transport === "ws-json" };
}

/** A TCP length prefix claiming `length` bytes, followed by `body`. */
export function prefixed(length: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, length >>> 0);
  out.set(body, 4);
  return out;
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// ---------------------------------------------------------------- hand-built msgpack

/** The smallest header of a str/array/map family: fix form, then 8 (str only), 16, 32 bits. */
function header(
  fix: number,
  fixMax: number,
  c8: number | undefined,
  c16: number,
  c32: number,
  length: number,
): Uint8Array {
  if (length <= fixMax) return Uint8Array.of(fix | length);
  if (c8 !== undefined && length < 0x100) return Uint8Array.of(c8, length);
  if (length < 0x10000) return Uint8Array.of(c16, length >> 8, length & 0xff);
  const out = new Uint8Array(5);
  out[0] = c32;
  new DataView(out.buffer).setUint32(1, length >>> 0);
  return out;
}

/** A msgpack str header announcing `length` bytes (which need not follow). */
export function strHeader(length: number): Uint8Array {
  return header(0xa0, 31, 0xd9, 0xda, 0xdb, length);
}

/** A msgpack str holding exactly these bytes (valid UTF-8 or not). */
export function rawStr(bytes: Uint8Array): Uint8Array {
  return concat([strHeader(bytes.length), bytes]);
}

export function mapHeader(count: number): Uint8Array {
  return header(0x80, 15, undefined, 0xde, 0xdf, count);
}

export function arrayHeader(count: number): Uint8Array {
  return header(0x90, 15, undefined, 0xdc, 0xdd, count);
}

/** A msgpack map from already encoded keys and values, in this order (duplicates allowed). */
export function rawMap(entries: ReadonlyArray<readonly [Uint8Array, Uint8Array]>): Uint8Array {
  return concat([mapHeader(entries.length), ...entries.flatMap(([k, v]) => [k, v])]);
}

/** The map of `frame` with `key` (a str, or any encoded key) set to the encoded `value`, written
 * after the frame's own entries. */
export function withRawEntry(frame: Record<string, unknown>, key: Uint8Array, value: Uint8Array): Uint8Array {
  const entries = Object.entries(frame).map(([k, v]) => [rawStr(utf8(k)), msgpack(v)] as const);
  return rawMap([...entries, [key, value]]);
}
