import type BetterSqlite3 from "better-sqlite3";
import type { ConversationId, Message, UserId } from "@parley/protocol";
import type { AppendResult, LogUpdate, NewMessage } from "../../core/ports/store.ts";
import { replyToProblem } from "../store-rules.ts";
import { prepareStatements, toMessage, type Statements } from "./sqlite-statements.ts";
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
// Resends: the unique (cid, from_user) key finds them in SQLite once committed; until then the
// sequencer remembers the sends it numbered.

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

/** Keys kept before those with nothing uncommitted are dropped. */
const TARGETS_MAX = 50_000;
const HEADS_MAX = 200_000;

export class Sequencer {
  private readonly st: Statements;
  private readonly targets = new Map<ConversationId, Target | null>();
  private readonly heads = new Map<string, Head>();
  /** Sends numbered and not yet known committed, by `${from}\n${cid}`, and the keys by batch. */
  private readonly sent = new Map<string, Message>();
  private readonly sentByBatch: Array<{ batch: number; keys: string[] }> = [];
  private readonly inSnapshot: BetterSqlite3.Transaction<(fn: () => unknown) => unknown>;
  private last = 0;
  private committed = 0;

  /** `db`: a read-only connection to the database the applier writes. */
  constructor(db: BetterSqlite3.Database) {
    this.st = prepareStatements(db);
    this.inSnapshot = db.transaction((fn: () => unknown) => fn());
  }

  /** The last batch numbered (0: none yet). */
  get lastBatch(): number {
    return this.last;
  }

  /** Messages numbered and not yet known committed. */
  get uncommitted(): number {
    return this.sent.size;
  }

  /** The last batch known committed. */
  get committedBatch(): number {
    return this.committed;
  }

  /** Numbers `items` as the next batch: the results to acknowledge once `record` (absent when
   * nothing in it is stored: all resends or refusals) is durable. */
  number(items: readonly NewMessage[]): { results: AppendResult[]; record: NumberedBatch | undefined } {
    return this.inSnapshot.deferred(() => this.numberIn(items)) as ReturnType<Sequencer["number"]>;
  }

  /** Everything up to `batch` is committed to SQLite: what it numbered can be read there now. */
  committedThrough(batch: number): void {
    if (batch <= this.committed) return;
    this.committed = batch;
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
    const results = items.map((item): AppendResult => {
      const key = `${item.from}\n${item.cid}`;
      const c = this.target(item.conv);
      if (!c || !this.isMember(c, item.from)) {
        return (
          this.duplicateOf(key, item) ?? { ok: false, code: "E_NOT_FOUND", message: "no such conversation" }
        );
      }
      const seq = c.lastSeq + 1;
      const problem = replyToProblem(item.replyTo, seq);
      if (problem) return this.duplicateOf(key, item) ?? { ok: false, code: "E_INVALID", message: problem };
      const dup = this.duplicateOf(key, item);
      if (dup) return dup;

      c.lastSeq = seq;
      c.batch = batch;
      const msg: Message = {
        conv: c.id,
        seq,
        from: item.from,
        dev: item.dev,
        cid: item.cid,
        type: item.type,
        body: new Uint8Array(item.body),
        ts: item.ts,
      };
      if (item.replyTo !== undefined) msg.replyTo = item.replyTo;
      this.sent.set(key, msg);
      keys.push(key);
      const logs = c.large ? [groupLogKey(c.id)] : c.members;
      const useqs = logs.map((log) => this.nextUseq(log, batch));
      numbered.push({ msg: item, seq, logs, useqs });
      const u = { k: "msg" as const, msg };
      const updates: LogUpdate[] = c.large
        ? [{ log: c.id, useq: useqs[0]!, u }]
        : logs.map((user, i) => ({ user, useq: useqs[i]!, u }));
      return { ok: true, duplicate: false, msg, updates };
    });
    if (numbered.length === 0) return { results, record: undefined };
    this.last = batch;
    this.sentByBatch.push({ batch, keys });
    return { results, record: { batch, messages: numbered } };
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

  private duplicateOf(key: string, item: NewMessage): AppendResult | undefined {
    const mine = this.sent.get(key);
    if (mine) return { ok: true, duplicate: true, msg: mine, updates: [] };
    const row = this.st.messageByCid.get(item.from, item.cid);
    return row && { ok: true, duplicate: true, msg: toMessage(row), updates: [] };
  }
}

/** Drops the entries no uncommitted batch changed. */
function dropSettled<T extends { batch: number }>(map: Map<string, T | null>, committed: number): void {
  for (const [k, v] of map) if (v === null || v.batch <= committed) map.delete(k);
}
