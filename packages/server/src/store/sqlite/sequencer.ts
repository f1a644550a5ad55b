import type BetterSqlite3 from "better-sqlite3";
import type { ConversationId, UserId } from "@parley/protocol";
import type { AppendResult, LogUpdate, NewMessage } from "../../core/ports/store.ts";
import { messageAt, replyToProblem } from "../store-rules.ts";
import { Numbers, prepareStatements, storedByCid, toMessage, type Statements } from "./sqlite-statements.ts";
import { groupLogKey } from "./sqlite-update-log.ts";
import type { NumberedBatch, NumberedMessage } from "./numbered-log.ts";

// The sequencer: gives each send its seq and the useqs of its log entries without writing to
// SQLite, so that a send can be acknowledged once its numbered batch is in the commit log
// (architecture.md, "Acknowledging ahead of SQLite"); the applier writes it to SQLite later.
//
// It counts from what SQLite had committed when it first needed a key (a read-only connection)
// plus what it has numbered since. That is right only while nothing else numbers: every other
// write goes through the applier behind every batch already numbered and commits, and then the
// sequencer forgets all it counted (forget()). A key is never dropped while a batch that
// changed it may still be uncommitted, since the connection would read it stale.
//
// Resends: the unique (cid, from_num) key finds them in SQLite once committed; until then the
// sequencer remembers which sends it numbered, not what they held (their bodies would be held
// twice until the commit): a resend of one of those is answered from SQLite once it is committed
// (`resends`, fillResends). That is rare: a client resends when an ack was lost.

/** A conversation as the sequencer counts it. */
interface Target {
  id: ConversationId;
  large: boolean;
  lastSeq: number;
  /** Members of a small conversation; of a large group, the senders found to be members. */
  members: UserId[];
  memberSet: Set<UserId>;
  /** The last batch that numbered a message here (0: none since it was read). */
  batch: number;
}

interface Head {
  useq: number;
  batch: number;
}

/** Stands for a resend's result until fillResends. */
const PLACEHOLDER: AppendResult = {
  ok: false,
  code: "E_NOT_FOUND",
  message: "a resend, answered after the commit",
};

/** Keys kept before those with nothing uncommitted are dropped. */
const TARGETS_MAX = 50_000;
const HEADS_MAX = 200_000;

export class Sequencer {
  private readonly st: Statements;
  /** The senders' numbers, for the resend key (committed rows only: this connection reads). */
  private readonly userNums: Numbers;
  private readonly targets = new Map<ConversationId, Target | null>();
  private readonly heads = new Map<string, Head>();
  /** Sends numbered and not yet known committed, by `${from}\n${cid}`, and the keys by batch. */
  private readonly sent = new Set<string>();
  private readonly sentByBatch: Array<{ batch: number; keys: string[] }> = [];
  /** Batches numbered and not yet applied (the applier's backlog), with their body bytes. */
  private readonly unapplied: Array<{ batch: number; bytes: number }> = [];
  private unappliedBytes = 0;
  private readonly inSnapshot: BetterSqlite3.Transaction<(fn: () => unknown) => unknown>;
  private last = 0;
  private committed = 0;

  /** `db`: a read-only connection to the database the applier writes. */
  constructor(db: BetterSqlite3.Database) {
    this.st = prepareStatements(db);
    this.userNums = new Numbers(this.st.userNum);
    this.inSnapshot = db.transaction((fn: () => unknown) => fn());
  }

  /** The last batch numbered (0: none yet). */
  get lastBatch(): number {
    return this.last;
  }

  /** Messages numbered and not yet known committed, and the body bytes of those not yet applied
   * either (held in memory on their way to SQLite). */
  get uncommitted(): { messages: number; unappliedBytes: number } {
    return { messages: this.sent.size, unappliedBytes: this.unappliedBytes };
  }

  /** The applier has applied every batch up to `batch` (not committed yet). */
  appliedThrough(batch: number): void {
    while (this.unapplied.length > 0 && this.unapplied[0]!.batch <= batch) {
      this.unappliedBytes -= this.unapplied.shift()!.bytes;
    }
  }

  /** The last batch known committed. */
  get committedBatch(): number {
    return this.committed;
  }

  /** Numbers `items` as the next batch: the results to acknowledge once `record` (absent when
   * nothing in it is stored: all resends or refusals) is durable. `resends` lists the items that
   * resend a send not yet committed: their results are placeholders until fillResends, which
   * must wait until this batch is committed. */
  number(items: readonly NewMessage[]): {
    results: AppendResult[];
    record: NumberedBatch | undefined;
    resends: number[];
  } {
    return this.inSnapshot.deferred(() => this.numberIn(items)) as ReturnType<Sequencer["number"]>;
  }

  /** Answers number()'s `resends` from SQLite, once everything numbered is committed. */
  fillResends(items: readonly NewMessage[], results: AppendResult[], resends: readonly number[]): void {
    for (const i of resends) {
      const item = items[i]!;
      const row = storedByCid(this.st, this.userNums, item.from, item.cid);
      if (!row)
        throw new Error(`sequencer: ${item.from}'s message ${item.cid} is not in SQLite after its commit`);
      results[i] = { ok: true, duplicate: true, msg: toMessage(row), updates: [] };
    }
  }

  /** Everything up to `batch` is committed to SQLite: what it numbered can be read there now. */
  committedThrough(batch: number): void {
    if (batch <= this.committed) return;
    this.committed = batch;
    this.appliedThrough(batch);
    while (this.sentByBatch.length > 0 && this.sentByBatch[0]!.batch <= batch) {
      for (const k of this.sentByBatch.shift()!.keys) this.sent.delete(k);
    }
    if (this.targets.size > TARGETS_MAX) dropSettled(this.targets, batch);
    if (this.heads.size > HEADS_MAX) dropSettled(this.heads, batch);
  }

  /** Forgets every count: another write changed what they were read from. Only once every
   * numbered batch is committed (committedThrough(lastBatch)). */
  forget(): void {
    if (this.committed < this.last) {
      throw new Error(`sequencer: forget() with batches ${this.committed + 1}..${this.last} uncommitted`);
    }
    this.targets.clear();
    this.heads.clear();
  }

  private numberIn(items: readonly NewMessage[]): ReturnType<Sequencer["number"]> {
    const batch = this.last + 1;
    const numbered: NumberedMessage[] = [];
    const keys: string[] = [];
    let bytes = 0;
    const resends: number[] = [];
    const duplicateOf = (key: string, item: NewMessage, i: number): AppendResult | undefined => {
      if (this.sent.has(key)) {
        resends.push(i);
        return PLACEHOLDER;
      }
      const row = storedByCid(this.st, this.userNums, item.from, item.cid);
      return row && { ok: true, duplicate: true, msg: toMessage(row), updates: [] };
    };
    const results = items.map((item, i): AppendResult => {
      const key = `${item.from}\n${item.cid}`;
      const c = this.target(item.conv);
      if (!c || !this.isMember(c, item.from)) {
        return (
          duplicateOf(key, item, i) ?? { ok: false, code: "E_NOT_FOUND", message: "no such conversation" }
        );
      }
      const seq = c.lastSeq + 1;
      const problem = replyToProblem(item.replyTo, seq);
      if (problem) return duplicateOf(key, item, i) ?? { ok: false, code: "E_INVALID", message: problem };
      const dup = duplicateOf(key, item, i);
      if (dup) return dup;

      c.lastSeq = seq;
      c.batch = batch;
      // A view of the body: the result goes back packed (seq and useqs), and nothing here keeps it.
      const msg = messageAt(item, c.id, seq, item.body);
      this.sent.add(key);
      keys.push(key);
      bytes += item.body.byteLength;
      const logs = c.large ? [groupLogKey(c.id)] : c.members;
      const useqs = logs.map((log) => this.nextUseq(log, batch));
      numbered.push({ msg: item, seq, logs, useqs });
      const u = { k: "msg" as const, msg };
      const updates: LogUpdate[] = c.large
        ? [{ log: c.id, useq: useqs[0]!, u }]
        : logs.map((user, i) => ({ user, useq: useqs[i]!, u }));
      return { ok: true, duplicate: false, msg, updates };
    });
    if (numbered.length === 0) return { results, record: undefined, resends };
    this.last = batch;
    this.sentByBatch.push({ batch, keys });
    this.unapplied.push({ batch, bytes });
    this.unappliedBytes += bytes;
    return { results, record: { batch, messages: numbered }, resends };
  }

  private target(id: ConversationId): Target | null {
    let c = this.targets.get(id);
    if (c === undefined) {
      const row = this.st.convById.get(id);
      if (row) {
        const large = row.large === 1;
        const members = large ? [] : this.st.memberUserIds.all(id);
        c = { id, large, lastSeq: row.last_seq, members, memberSet: new Set(members), batch: 0 };
      } else c = null;
      this.targets.set(id, c);
    }
    return c;
  }

  /** A large group's members are looked up one sender at a time (its messages go to its own log). */
  private isMember(c: Target, user: UserId): boolean {
    if (c.memberSet.has(user)) return true;
    if (!c.large || !this.st.member.get(c.id, user)) return false;
    c.memberSet.add(user);
    return true;
  }

  private nextUseq(log: string, batch: number): number {
    let h = this.heads.get(log);
    if (h === undefined) {
      h = { useq: this.st.head.get(log) ?? 0, batch };
      this.heads.set(log, h);
    }
    h.batch = batch;
    return ++h.useq;
  }
}

/** Drops the entries no uncommitted batch changed. */
function dropSettled<T extends { batch: number }>(map: Map<string, T | null>, committed: number): void {
  for (const [k, v] of map) if (v === null || v.batch <= committed) map.delete(k);
}
