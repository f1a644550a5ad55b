import type { Message } from "@parley/protocol";
import type { AppendResult, LogUpdate, NewMessage } from "../../core/ports/store.ts";

// How ThreadedSqliteStore hands a batch of sends to its writer thread and gets the results back.
// postMessage copies what it is given with the structured clone algorithm, which walks every
// object: a batch of 1,500 sends went over as 1,500 objects with a Uint8Array each, and came back
// as 1,500 results holding a message, its body copied once more, and one update per member,
// all of it rebuilt object by object on the far side (about 6 us per message between the two
// threads, plus the garbage; docs/benchmarks.md, sixth session). Here a batch travels as a few
// flat arrays: the strings, the numbers in typed arrays, the bodies concatenated in one buffer
// that is moved, not copied. A result the main thread can rebuild from what it sent (a message
// stored now, with its updates) comes back as its seq and the (user, useq) pairs of its
// updates; any other result (a resend, a refusal) comes back whole. unpackResults gives the same
// AppendResult[] as SqliteStore.appendMessages; the store conformance suite runs through it.

/** The writer thread's method for a packed batch: packed in, packed out. */
export const APPEND_PACKED = "appendPacked";

/** Fields per message in PackedBatch.strings. */
const STRINGS_PER_MESSAGE = 5;

export interface PackedBatch {
  /** conv, from, dev, cid, type of each message, in order. */
  strings: string[];
  ts: Float64Array;
  /** NaN: no replyTo. */
  replyTo: Float64Array;
  /** Every body, one after the other; message i's body ends at bodyEnds[i]. */
  bodies: Uint8Array;
  bodyEnds: Uint32Array;
}

/** How a result travels: REBUILT ones as numbers only, WHOLE ones as the AppendResult itself. */
const WHOLE = 0;
/** A message stored now whose updates are entries of members' own logs ("msg", same message). */
const TO_USERS = 1;
/** A message stored now whose one update is an entry of its large group's log. */
const TO_GROUP_LOG = 2;

export interface PackedResults {
  /** Per message: WHOLE, TO_USERS or TO_GROUP_LOG. */
  shape: Uint8Array;
  /** Per message: the seq it was stored at (0 for WHOLE). */
  seq: Float64Array;
  /** Per message: how many of `users`/`useqs` are its updates (0 for WHOLE). */
  updateCounts: Uint32Array;
  /** The users of every TO_USERS result's updates, in order ("" for a TO_GROUP_LOG result). */
  users: string[];
  useqs: Float64Array;
  /** The WHOLE results, by index in the batch. */
  whole: Array<[number, AppendResult]>;
}

/** The batch as it travels; `transfer` lists the buffer to move with it. */
export function packBatch(batch: readonly NewMessage[]): { packed: PackedBatch; transfer: ArrayBuffer[] } {
  const n = batch.length;
  const strings = new Array<string>(n * STRINGS_PER_MESSAGE);
  const ts = new Float64Array(n);
  const replyTo = new Float64Array(n);
  const bodyEnds = new Uint32Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const m = batch[i]!;
    const s = i * STRINGS_PER_MESSAGE;
    strings[s] = m.conv;
    strings[s + 1] = m.from;
    strings[s + 2] = m.dev;
    strings[s + 3] = m.cid;
    strings[s + 4] = m.type;
    ts[i] = m.ts;
    replyTo[i] = m.replyTo ?? Number.NaN;
    total += m.body.byteLength;
    bodyEnds[i] = total;
  }
  const bodies = new Uint8Array(total);
  for (let i = 0; i < n; i++) bodies.set(batch[i]!.body, i === 0 ? 0 : bodyEnds[i - 1]!);
  return { packed: { strings, ts, replyTo, bodies, bodyEnds }, transfer: [bodies.buffer] };
}

/** The writer thread's side: the batch again (bodies are views of the one buffer). */
export function unpackBatch(p: PackedBatch): NewMessage[] {
  const n = p.ts.length;
  const batch = new Array<NewMessage>(n);
  for (let i = 0; i < n; i++) {
    const s = i * STRINGS_PER_MESSAGE;
    const start = i === 0 ? 0 : p.bodyEnds[i - 1]!;
    const m: NewMessage = {
      conv: p.strings[s]!,
      from: p.strings[s + 1]!,
      dev: p.strings[s + 2]!,
      cid: p.strings[s + 3]!,
      type: p.strings[s + 4]!,
      body: p.bodies.subarray(start, p.bodyEnds[i]),
      ts: p.ts[i]!,
    };
    if (!Number.isNaN(p.replyTo[i])) m.replyTo = p.replyTo[i]!;
    batch[i] = m;
  }
  return batch;
}

/** The writer thread's side: `results` of appending `batch`, as they travel back. */
export function packResults(batch: readonly NewMessage[], results: readonly AppendResult[]): PackedResults {
  const n = results.length;
  const shape = new Uint8Array(n);
  const seq = new Float64Array(n);
  const updateCounts = new Uint32Array(n);
  const users: string[] = [];
  const useqs: number[] = [];
  const whole: Array<[number, AppendResult]> = [];
  for (let i = 0; i < n; i++) {
    const r = results[i]!;
    const s = r.ok && !r.duplicate ? rebuildable(batch[i]!, r.msg, r.updates) : WHOLE;
    shape[i] = s;
    if (s === WHOLE) {
      whole.push([i, r]);
      continue;
    }
    const { msg, updates } = r as Extract<AppendResult, { duplicate: false }>;
    seq[i] = msg.seq;
    updateCounts[i] = updates.length;
    for (const u of updates) {
      users.push(u.user ?? "");
      useqs.push(u.useq);
    }
  }
  return { shape, seq, updateCounts, users, useqs: Float64Array.from(useqs), whole };
}

/** The main thread's side: the same AppendResult[] as the writer's SqliteStore returned, rebuilt
 * from the batch that was sent. A rebuilt message's body is the sent body (see plainBytes). */
export function unpackResults(batch: readonly NewMessage[], p: PackedResults): AppendResult[] {
  const n = p.shape.length;
  if (n !== batch.length) throw new Error(`writer answered ${n} results for a batch of ${batch.length}`);
  const results = new Array<AppendResult>(n);
  for (const [i, r] of p.whole) results[i] = r;
  let k = 0;
  for (let i = 0; i < n; i++) {
    const s = p.shape[i]!;
    if (s === WHOLE) continue;
    const item = batch[i]!;
    const msg: Message = {
      conv: item.conv,
      seq: p.seq[i]!,
      from: item.from,
      dev: item.dev,
      cid: item.cid,
      type: item.type,
      body: plainBytes(item.body),
      ts: item.ts,
    };
    if (item.replyTo !== undefined) msg.replyTo = item.replyTo;
    const u = { k: "msg" as const, msg };
    const count = p.updateCounts[i]!;
    const updates = new Array<LogUpdate>(count);
    for (let j = 0; j < count; j++, k++) {
      updates[j] =
        s === TO_USERS
          ? { user: p.users[k]!, useq: p.useqs[k]!, u }
          : { log: item.conv, useq: p.useqs[k]!, u };
    }
    results[i] = { ok: true, duplicate: false, msg, updates };
  }
  return results;
}

/** The sent body itself when it is a plain Uint8Array (what the codecs decode), so nothing is
 * allocated; a copy of anything else (a Buffer), so a message's body is always a plain
 * Uint8Array, as the writer's own copy was. Not a new view of `body.buffer`: reading `buffer`
 * makes V8 move a small typed array's bytes off its heap, an allocation per message. */
function plainBytes(body: Uint8Array): Uint8Array {
  return Object.getPrototypeOf(body) === Uint8Array.prototype ? body : new Uint8Array(body);
}

/** Whether the main thread can rebuild this fresh result from the message it sent: the stored
 * message is the one sent (plus its seq) and every update is a "msg" entry of that message, all
 * to users' logs or all (one) to the conversation's own log. Anything else travels whole. */
function rebuildable(item: NewMessage, msg: Message, updates: readonly LogUpdate[]): number {
  if (
    msg.conv !== item.conv ||
    msg.from !== item.from ||
    msg.dev !== item.dev ||
    msg.cid !== item.cid ||
    msg.type !== item.type ||
    msg.ts !== item.ts ||
    msg.replyTo !== item.replyTo ||
    msg.body.byteLength !== item.body.byteLength ||
    msg.editedAt !== undefined ||
    msg.deleted !== undefined ||
    msg.reactions !== undefined
  ) {
    return WHOLE;
  }
  let shape = WHOLE;
  for (const up of updates) {
    if (up.u.k !== "msg" || up.u.msg !== msg) return WHOLE;
    const s = up.user !== undefined ? TO_USERS : up.log === item.conv ? TO_GROUP_LOG : WHOLE;
    if (s === WHOLE || (shape !== WHOLE && s !== shape)) return WHOLE;
    shape = s;
  }
  if (shape === TO_GROUP_LOG && updates.length !== 1) return WHOLE;
  // A message with no update at all (no member's log to write) is rare: send it whole.
  return shape;
}
