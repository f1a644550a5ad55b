import type { Frame, Message, PushFrame, SendFrame, SentFrame } from "./frames.ts";

// The three frames every chat message travels in (a client's `send`, the server's `sent` reply
// and the recipient's `push`), written as MessagePack by hand. msgpackr's general encoder walks
// each object with for-in, checks every value against its skip list and dispatches on its type;
// for these frames that was about half of the server's encoding time and an eighth of its main
// thread under load (docs/benchmarks.md, tenth session). Here the fields are written in a fixed
// order with their keys' bytes prepared once, in exactly the bytes msgpackr writes for the same
// frame with the same key order (hot-frames.test.ts checks that on arbitrary frames, and that any
// frame decodes to what it was): the smallest MessagePack form of each value, integers beyond 32
// bits as float64, undefined fields left out.
//
// Anything unusual goes to msgpackr instead (hotPack returns undefined): a string that is not
// ASCII, a message with reactions, any other update or frame, a frame whose bytes might not fit
// the scratch buffer. Every field of these frame types must be written here: a field added to
// Message, SendFrame, SentFrame or PushFrame (and to arbitraries.ts) fails the tests until it is.

const SCRATCH_BYTES = 64 * 1024;
const out = new Uint8Array(SCRATCH_BYTES);
const view = new DataView(out.buffer);
let at = 0;

/** The frame as MessagePack, or undefined if it is not one this writer handles. The bytes are a
 * view of a buffer the next call overwrites: copy them out before calling again. */
export function hotPack(frame: Frame): Uint8Array | undefined {
  // Frames are typed, but encodeBinary is also given any value (its tests do): every field read
  // here is checked, and a value of another shape goes to msgpackr.
  if (typeof frame !== "object" || frame === null) return undefined;
  at = 0;
  let ok: boolean;
  switch (frame.t) {
    case "push":
      ok = push(frame);
      break;
    case "sent":
      ok = sent(frame);
      break;
    case "send":
      ok = send(frame);
      break;
    default:
      return undefined;
  }
  return ok ? out.subarray(0, at) : undefined;
}

/** The bytes of a key (or of any short ASCII string): fixstr header and characters. */
function key(s: string): Uint8Array {
  const b = new Uint8Array(1 + s.length);
  b[0] = 0xa0 | s.length;
  for (let i = 0; i < s.length; i++) b[i + 1] = s.charCodeAt(i);
  return b;
}

const K = {
  t: key("t"),
  push: key("push"),
  sent: key("sent"),
  send: key("send"),
  useq: key("useq"),
  u: key("u"),
  log: key("log"),
  k: key("k"),
  msg: key("msg"),
  edit: key("edit"),
  del: key("del"),
  id: key("id"),
  conv: key("conv"),
  seq: key("seq"),
  from: key("from"),
  dev: key("dev"),
  cid: key("cid"),
  type: key("type"),
  body: key("body"),
  ts: key("ts"),
  replyTo: key("replyTo"),
  editedAt: key("editedAt"),
  deleted: key("deleted"),
};

/** Room for the fixed parts of any of these frames (keys, headers, numbers). */
const FIXED_BYTES = 256;

function push(f: PushFrame): boolean {
  const u = f.u;
  if (typeof u !== "object" || u === null || (u.k !== "msg" && u.k !== "edit" && u.k !== "del")) return false;
  const m = u.msg;
  if (typeof m !== "object" || m === null || m.reactions !== undefined || !(m.body instanceof Uint8Array)) {
    return false;
  }
  if (!fits(m.body.byteLength, m.conv, m.from, m.dev, m.cid, m.type, f.log)) return false;
  map(f.log === undefined ? 3 : 4);
  raw(K.t);
  raw(K.push);
  raw(K.useq);
  if (!num(f.useq)) return false;
  raw(K.u);
  map(2);
  raw(K.k);
  raw(u.k === "msg" ? K.msg : u.k === "edit" ? K.edit : K.del);
  raw(K.msg);
  if (!message(m)) return false;
  if (f.log !== undefined) {
    raw(K.log);
    if (!str(f.log)) return false;
  }
  return true;
}

function message(m: Message): boolean {
  map(
    8 +
      (m.replyTo !== undefined ? 1 : 0) +
      (m.editedAt !== undefined ? 1 : 0) +
      (m.deleted !== undefined ? 1 : 0),
  );
  raw(K.conv);
  if (!str(m.conv)) return false;
  raw(K.seq);
  if (!num(m.seq)) return false;
  raw(K.from);
  if (!str(m.from)) return false;
  raw(K.dev);
  if (!str(m.dev)) return false;
  raw(K.cid);
  if (!str(m.cid)) return false;
  raw(K.type);
  if (!str(m.type)) return false;
  raw(K.body);
  bin(m.body);
  raw(K.ts);
  if (!num(m.ts)) return false;
  if (m.replyTo !== undefined) {
    raw(K.replyTo);
    if (!num(m.replyTo)) return false;
  }
  if (m.editedAt !== undefined) {
    raw(K.editedAt);
    if (!num(m.editedAt)) return false;
  }
  if (m.deleted !== undefined) {
    if (typeof m.deleted !== "boolean") return false;
    raw(K.deleted);
    out[at++] = m.deleted ? 0xc3 : 0xc2;
  }
  return true;
}

function sent(f: SentFrame): boolean {
  if (!fits(0, f.conv, f.cid, f.log)) return false;
  map(6 + (f.useq === undefined ? 0 : 1) + (f.log === undefined ? 0 : 1));
  raw(K.t);
  raw(K.sent);
  raw(K.id);
  if (!num(f.id)) return false;
  raw(K.conv);
  if (!str(f.conv)) return false;
  raw(K.cid);
  if (!str(f.cid)) return false;
  raw(K.seq);
  if (!num(f.seq)) return false;
  raw(K.ts);
  if (!num(f.ts)) return false;
  if (f.useq !== undefined) {
    raw(K.useq);
    if (!num(f.useq)) return false;
  }
  if (f.log !== undefined) {
    raw(K.log);
    if (!str(f.log)) return false;
  }
  return true;
}

function send(f: SendFrame): boolean {
  if (!(f.body instanceof Uint8Array) || !fits(f.body.byteLength, f.conv, f.cid, f.type)) return false;
  map(f.replyTo === undefined ? 6 : 7);
  raw(K.t);
  raw(K.send);
  raw(K.id);
  if (!num(f.id)) return false;
  raw(K.conv);
  if (!str(f.conv)) return false;
  raw(K.cid);
  if (!str(f.cid)) return false;
  raw(K.type);
  if (!str(f.type)) return false;
  raw(K.body);
  bin(f.body);
  if (f.replyTo !== undefined) {
    raw(K.replyTo);
    if (!num(f.replyTo)) return false;
  }
  return true;
}

/** Whether a frame with this body and these ASCII strings surely fits the scratch buffer. Larger
 * frames (a body near the 64 KiB limit) are rare, and go to msgpackr. */
function fits(bodyBytes: number, ...strings: Array<string | undefined>): boolean {
  let n = FIXED_BYTES + bodyBytes;
  for (const s of strings) if (typeof s === "string") n += s.length + 5;
  return n <= SCRATCH_BYTES;
}

function raw(bytes: Uint8Array): void {
  // A loop: for a few bytes, TypedArray.set costs more than the copy.
  for (let i = 0; i < bytes.length; i++) out[at++] = bytes[i]!;
}

function map(n: number): void {
  out[at++] = 0x80 | n;
}

/** A string, if it is one and ASCII (false otherwise, with part of it written). */
function str(s: string): boolean {
  if (typeof s !== "string") return false;
  const n = s.length;
  if (n < 0x20) out[at++] = 0xa0 | n;
  else if (n < 0x100) {
    out[at++] = 0xd9;
    out[at++] = n;
  } else if (n < 0x10000) {
    out[at++] = 0xda;
    out[at++] = n >> 8;
    out[at++] = n & 0xff;
  } else {
    out[at++] = 0xdb;
    view.setUint32(at, n);
    at += 4;
  }
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) return false;
    out[at++] = c;
  }
  return true;
}

function bin(b: Uint8Array): void {
  const n = b.byteLength;
  if (n < 0x100) {
    out[at++] = 0xc4;
    out[at++] = n;
  } else if (n < 0x10000) {
    out[at++] = 0xc5;
    out[at++] = n >> 8;
    out[at++] = n & 0xff;
  } else {
    out[at++] = 0xc6;
    view.setUint32(at, n);
    at += 4;
  }
  out.set(b, at);
  at += n;
}

/** A number (false if it is not one) as msgpackr writes it: integers of 32 bits or less in their smallest form, anything
 * else as float64. */
function num(v: number): boolean {
  if (typeof v !== "number") return false;
  if (v >>> 0 === v) {
    if (v < 0x80) out[at++] = v;
    else if (v < 0x100) {
      out[at++] = 0xcc;
      out[at++] = v;
    } else if (v < 0x10000) {
      out[at++] = 0xcd;
      out[at++] = v >> 8;
      out[at++] = v & 0xff;
    } else {
      out[at++] = 0xce;
      view.setUint32(at, v);
      at += 4;
    }
  } else if (v >> 0 === v) {
    if (v >= -0x20) out[at++] = 0x100 + v;
    else if (v >= -0x80) {
      out[at++] = 0xd0;
      out[at++] = v + 0x100;
    } else if (v >= -0x8000) {
      out[at++] = 0xd1;
      view.setInt16(at, v);
      at += 2;
    } else {
      out[at++] = 0xd2;
      view.setInt32(at, v);
      at += 4;
    }
  } else {
    out[at++] = 0xcb;
    view.setFloat64(at, v);
    at += 8;
  }
  return true;
}
