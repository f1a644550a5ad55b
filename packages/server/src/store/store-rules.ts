// The errors alone: the writer threads load this, and the whole package takes them a second.
import { ParleyError } from "@parley/protocol/errors";
import type { ConversationId, Message, ReceiptKind, UserId } from "@parley/protocol";
import type { NewMessage } from "../core/ports/store.ts";

// Rules every Store implementation applies the same way, so that MemoryStore and the database
// stores cannot drift apart on them. Pure functions, no I/O.

/** Rejects E_INVALID unless `n` is a safe integer (seqs, cursors, limits coming from callers). */
export function requireInteger(n: unknown, what: string): asserts n is number {
  if (!Number.isSafeInteger(n)) throw new ParleyError("E_INVALID", `${what} must be an integer`);
}

/** Why `replyTo` is refused for a message about to get `seq`, or undefined if it is fine: it must
 * name an earlier message of the same conversation, 1..seq-1. */
/** The message `item` becomes when stored at `seq` in `conv`, with `body` (a copy or a view, as
 * the caller needs). */
export function messageAt(item: NewMessage, conv: ConversationId, seq: number, body: Uint8Array): Message {
  const msg: Message = {
    conv,
    seq,
    from: item.from,
    dev: item.dev,
    cid: item.cid,
    type: item.type,
    body,
    ts: item.ts,
  };
  if (item.replyTo !== undefined) msg.replyTo = item.replyTo;
  return msg;
}

export function replyToProblem(replyTo: number | undefined, seq: number): string | undefined {
  if (replyTo === undefined) return undefined;
  if (!Number.isSafeInteger(replyTo) || replyTo < 1 || replyTo >= seq) {
    return `replyTo must be a seq between 1 and ${seq - 1}`;
  }
  return undefined;
}

export interface ReceiptMarks {
  delivered: number;
  read: number;
}

/** The marks after a `kind` receipt up to `seq`, or undefined when neither rises. The mark is
 * capped at `lastSeq`; read raises delivered too, so delivered >= read always holds. `seq` in the
 * result is the new value of the `kind` mark. */
export function raiseReceipt(
  marks: ReceiptMarks,
  kind: ReceiptKind,
  seq: number,
  lastSeq: number,
): (ReceiptMarks & { seq: number }) | undefined {
  const to = Math.min(seq, lastSeq);
  if (kind === "read") {
    if (to <= marks.read) return undefined;
    return { delivered: Math.max(marks.delivered, to), read: to, seq: to };
  }
  if (to <= marks.delivered) return undefined;
  return { delivered: to, read: marks.read, seq: to };
}

export function requireReceiptKind(kind: unknown): asserts kind is ReceiptKind {
  if (kind !== "delivered" && kind !== "read")
    throw new ParleyError("E_INVALID", "kind must be delivered or read");
}

/** Message.reactions from (emoji, user) pairs in the order they were added: emoji keys in order of
 * their oldest surviving reaction. Undefined when there is none. Built with fromEntries so that an
 * emoji such as "__proto__" is an ordinary key. */
export function reactionsRecord(
  pairs: Iterable<readonly [emoji: string, user: UserId]>,
): Record<string, UserId[]> | undefined {
  const byEmoji = new Map<string, UserId[]>();
  for (const [emoji, user] of pairs) {
    const users = byEmoji.get(emoji);
    if (users) users.push(user);
    else byEmoji.set(emoji, [user]);
  }
  return byEmoji.size === 0 ? undefined : Object.fromEntries(byEmoji);
}

/** Order of listConversations: most recent activity first, then by id (code-unit order, which is
 * byte order for the ASCII ids the core generates). */
export function compareActivity(
  a: { lastActivity: number; id: string },
  b: { lastActivity: number; id: string },
): number {
  return b.lastActivity - a.lastActivity || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** User ids are opaque, but never start with "#": that prefix names a large group's log. */
export function requireUserId(id: string): void {
  if (typeof id !== "string" || id.length === 0 || id.startsWith("#"))
    throw new ParleyError("E_INVALID", "a user id is a non-empty string not starting with #");
}

/** Orders strings as SQLite orders TEXT (BINARY collation: by their UTF-8 bytes, which is the
 * order of their code points; `<` on JS strings compares UTF-16 units, which differs above
 * U+FFFF). */
export function compareText(a: string, b: string): number {
  if (a === b) return 0;
  const x = a[Symbol.iterator]();
  const y = b[Symbol.iterator]();
  for (;;) {
    const p = x.next();
    const q = y.next();
    if (p.done || q.done) return p.done ? (q.done ? 0 : -1) : 1;
    const d = p.value.codePointAt(0)! - q.value.codePointAt(0)!;
    if (d !== 0) return d;
  }
}
