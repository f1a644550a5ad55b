// What the direct load client reads of the two frames every message brings it, `sent` and a
// message `push`, taken straight from the MessagePack bytes: it needs their numbers and a push's
// body, not their strings, and msgpackr building every id and cid as a string (and every frame
// as objects) was about a tenth of the load client's CPU at direct-max (docs/benchmarks.md,
// eighteenth session). A CPU this process does not use is one the server gets: on this machine
// they share two cores.
//
// Anything else (another frame, a push of a large group's log, a value this does not expect)
// gives undefined, and the caller decodes the frame in full. The fields it does not read are
// stepped over with the protocol's own walk of plain MessagePack (plainValueEnd); the load
// client trusts its server, so this checks no more of the frame's shape than that.

import { plainValueEnd } from "@parley/protocol";

/** A `sent`, skimmed: its request id, and its useq when it stands for the push of that entry. */
export interface SkimmedSent {
  t: "sent";
  id: number;
  useq?: number;
}

/** A message `push` of the user's own log, skimmed. `body` is a view into the frame's bytes:
 * read it before they are reused (on TCP, the next read), never keep it. */
export interface SkimmedPush {
  t: "push";
  useq: number;
  u: { k: "msg"; msg: { body: Uint8Array } };
}

export type Skimmed = SkimmedSent | SkimmedPush;

// Keys and values compared as bytes: a fixstr header, then ASCII.
const T = key("t");
const ID = key("id");
const USEQ = key("useq");
const U = key("u");
const K = key("k");
const MSG = key("msg");
const BODY = key("body");
const LOG = key("log");
const SENT = key("sent");
const PUSH = key("push");

function key(s: string): Uint8Array {
  return Uint8Array.from([0xa0 | s.length, ...Array.from(s, (c) => c.charCodeAt(0))]);
}

let b: Uint8Array = new Uint8Array(0);
let pos = 0;
/** Set once the bytes leave what this reads: the caller decodes in full. */
let bad = false;

/** The frame's numbers (and a push's body), or undefined: decode it in full. */
export function skim(bytes: Uint8Array): Skimmed | undefined {
  b = bytes;
  pos = 0;
  bad = false;
  const frame = frameOf();
  b = EMPTY; // keeps no reference to the caller's bytes
  return frame;
}

const EMPTY = new Uint8Array(0);

function frameOf(): Skimmed | undefined {
  const n = mapHeader();
  let t: "sent" | "push" | undefined;
  let id: number | undefined;
  let useq: number | undefined;
  let body: Uint8Array | undefined;
  for (let i = 0; i < n && !bad; i++) {
    if (at(T)) {
      if (at(SENT)) t = "sent";
      else if (at(PUSH)) t = "push";
      else return undefined;
    } else if (at(ID)) id = num();
    else if (at(USEQ)) useq = num();
    else if (at(U)) {
      body = update();
      if (body === undefined) return undefined;
    } else if (at(LOG)) {
      return undefined; // a large group's log: not what the load client counts
    } else skipEntry();
  }
  if (bad || pos !== b.length) return undefined;
  if (t === "sent" && id !== undefined && body === undefined)
    return useq === undefined ? { t, id } : { t, id, useq };
  if (t === "push" && useq !== undefined && body !== undefined && id === undefined)
    return { t, useq, u: { k: "msg", msg: { body } } };
  return undefined;
}

/** A push's `u`: the body of a "msg" update, else undefined. */
function update(): Uint8Array | undefined {
  const n = mapHeader();
  let isMsg = false;
  let body: Uint8Array | undefined;
  for (let i = 0; i < n && !bad; i++) {
    if (at(K)) {
      if (!at(MSG)) return undefined;
      isMsg = true;
    } else if (at(MSG)) {
      const fields = mapHeader();
      for (let j = 0; j < fields && !bad; j++) {
        if (at(BODY)) body = bin();
        else skipEntry();
      }
    } else return undefined;
  }
  return isMsg && !bad ? body : undefined;
}

/** Whether the bytes at pos are `bytes`; if so, steps over them. */
function at(bytes: Uint8Array): boolean {
  if (pos + bytes.length > b.length) return false;
  for (let i = 0; i < bytes.length; i++) if (b[pos + i] !== bytes[i]) return false;
  pos += bytes.length;
  return true;
}

function mapHeader(): number {
  const token = b[pos];
  if (token !== undefined && token >= 0x80 && token <= 0x8f) {
    pos++;
    return token & 0x0f;
  }
  bad = true;
  return 0;
}

function need(n: number): boolean {
  if (pos + n <= b.length) return true;
  bad = true;
  return false;
}

function be(width: number): number {
  let v = 0;
  for (let i = 0; i < width; i++) v = v * 256 + b[pos + i]!;
  pos += width;
  return v;
}

/** A number as the server writes them: fixint, uint 8-32 or float64. */
function num(): number | undefined {
  if (!need(1)) return undefined;
  const token = b[pos++]!;
  if (token <= 0x7f) return token;
  const width = token === 0xcc ? 1 : token === 0xcd ? 2 : token === 0xce ? 4 : token === 0xcb ? 8 : 0;
  if (width === 0 || !need(width)) {
    bad = true;
    return undefined;
  }
  if (token !== 0xcb) return be(width);
  const v = new DataView(b.buffer, b.byteOffset + pos, 8).getFloat64(0);
  pos += 8;
  return v;
}

function bin(): Uint8Array | undefined {
  if (!need(1)) return undefined;
  const token = b[pos++]!;
  const width = token === 0xc4 ? 1 : token === 0xc5 ? 2 : token === 0xc6 ? 4 : 0;
  if (width === 0 || !need(width)) {
    bad = true;
    return undefined;
  }
  const n = be(width);
  if (!need(n)) return undefined;
  pos += n;
  return b.subarray(pos - n, pos);
}

/** Steps over one map entry: a string key (as msgpackr, which refuses any other as an object's
 * key) and its value, each a plain MessagePack value as the protocol's own check judges it. */
function skipEntry(): void {
  const token = b[pos];
  const isString =
    token !== undefined && ((token >= 0xa0 && token <= 0xbf) || (token >= 0xd9 && token <= 0xdb));
  if (!isString) {
    bad = true;
    return;
  }
  try {
    pos = plainValueEnd(b, plainValueEnd(b, pos));
  } catch {
    bad = true; // truncated, ext types, non-string keys below, nested too deep
  }
}
