import type {
  Conversation,
  ConversationId,
  LoggedUpdate,
  Member,
  Message,
  ReceiptKind,
  Update,
  UserId,
} from "@parley/protocol";
import type { ConversationLogUpdate, UserUpdate } from "../../core/ports/store.ts";
import { Numbers, toMessage, updateRow } from "./sqlite-statements.ts";
import type { Statements, UpdateRow } from "./sqlite-statements.ts";

// The per-user update logs of SqliteStore (tables updates, logs and snapshots). useq is the user's
// highest useq + 1 at append time (entries are never deleted): gap-free per user because every
// append runs inside the caller's write transaction. The head is looked up once per user, then
// counted here across transactions until SqliteStore calls forget(): no per-entry head row to
// rewrite (that was a second write per member and message), and no lookup per batch. How each kind is stored is in sqlite-schema.ts; append() and
// materialize() below are the two directions of that mapping.

/** The key of a large group's log in the updates table (user ids never start with '#'). */
export function groupLogKey(conv: ConversationId): string {
  return `#${conv}`;
}

export class SqliteUpdateLog {
  /** Heads of the users appended to, kept from one write transaction to the next (every append
   * goes through here): one lookup per user until forget(). */
  private readonly heads = new Map<UserId, number>();
  /** The logs' numbers (table logs), given to a log at its first entry. */
  private readonly logNums: Numbers;

  /** `convNums`: the conversations' numbers, which entries name them by (the store's). */
  constructor(
    private readonly st: Statements,
    private readonly convNums: Numbers,
  ) {
    this.logNums = new Numbers(st.logNum, st.insertLog);
  }

  /** Drops the counted heads and the logs' numbers: a transaction rolled back (what it counted
   * or numbered was not written), or another connection wrote to the file, or there are too
   * many to keep. */
  forget(): void {
    this.heads.clear();
    this.logNums.clear();
  }

  /** How many heads are kept. */
  get size(): number {
    return this.heads.size;
  }

  /** Appends `u` to a large group's log. Must run inside a write transaction. */
  appendToGroup(conv: ConversationId, u: Update): ConversationLogUpdate[] {
    return this.append([groupLogKey(conv)], u).map(({ useq }) => ({ log: conv, useq, u }));
  }

  /** Appends `u` to each user's log, in order. Must run inside a write transaction. */
  append(users: readonly UserId[], u: Update): UserUpdate[] {
    let conv: ConversationId;
    let seq: number | null = null;
    let data: string | null = null;
    let snapshot: number | bigint | null = null;
    /** The kind column's value (its CHECK predates "members", see below). */
    let kind: string = u.k;
    switch (u.k) {
      case "msg":
      case "edit":
      case "del":
      case "react":
        ({ conv, seq } = u.msg);
        if (u.k === "react") data = JSON.stringify({ user: u.user, emoji: u.emoji, on: u.on });
        break;
      case "receipt":
        conv = u.conv;
        data = JSON.stringify({ user: u.user, kind: u.kind, seq: u.seq });
        break;
      case "conv":
        conv = u.conv.id;
        // One snapshot shared by every member's entry.
        snapshot = this.st.insertSnapshot.run(JSON.stringify(u.conv)).lastInsertRowid;
        break;
      case "left":
        conv = u.conv;
        break;
      case "members":
        // Kept as a "conv" row with the change in data instead of a snapshot: the kind column's
        // CHECK cannot change without rebuilding the largest table.
        conv = u.conv;
        kind = "conv";
        data = JSON.stringify({ name: u.name, set: u.set, removed: u.removed, count: u.count });
        break;
    }
    const convNum = this.convNums.of(conv);
    return users.map((user) => {
      const useq = (this.heads.get(user) ?? this.head(user)) + 1;
      this.heads.set(user, useq);
      this.st.insertUpdate.run(this.logNums.of(user), useq, kind, convNum, seq, snapshot, data);
      return { user, useq, u };
    });
  }

  /** Writes a "msg" entry numbered elsewhere (the sequencer): `useq` must be the log's head + 1.
   * Must run inside a write transaction. */
  appendNumbered(user: string, useq: number, conv: ConversationId, seq: number): void {
    this.st.insertUpdate.run(this.logNums.of(user), useq, "msg", this.convNums.of(conv), seq, null, null);
    if (this.heads.has(user)) this.heads.set(user, useq);
  }

  /** Entries after `after` (exclusive), at most `limit` (> 0), message entries in the message's
   * current state. A range scan of the (log_num, useq) key joined with one key lookup per message
   * entry, in one statement: cost follows the entries returned, not the history. */
  read(user: UserId, after: number, limit: number): LoggedUpdate[] {
    return this.st.readUpdates.all(user, after, limit).map((t) => {
      const r = updateRow(t);
      return { useq: r.useq, u: this.materialize(r) };
    });
  }

  head(user: UserId): number {
    return this.st.head.get(user) ?? 0;
  }

  private materialize(r: UpdateRow): Update {
    switch (r.kind) {
      case "msg":
      case "edit":
      case "del":
        return { k: r.kind, msg: this.message(r) };
      case "react": {
        const d = JSON.parse(r.data ?? "{}") as { user: UserId; emoji: string; on: boolean };
        return { k: "react", msg: this.message(r), user: d.user, emoji: d.emoji, on: d.on };
      }
      case "receipt": {
        const d = JSON.parse(r.data ?? "{}") as { user: UserId; kind: ReceiptKind; seq: number };
        return { k: "receipt", conv: r.conv_id, user: d.user, kind: d.kind, seq: d.seq };
      }
      case "conv": {
        if (r.data === null)
          return { k: "conv", conv: JSON.parse(r.snapshot_data ?? "null") as Conversation };
        const d = JSON.parse(r.data) as { name: string; set: Member[]; removed: UserId[]; count?: number };
        const u: Update = { k: "members", conv: r.conv_id, name: d.name, set: d.set, removed: d.removed };
        if (d.count !== undefined) u.count = d.count;
        return u;
      }
      case "left":
        return { k: "left", conv: r.conv_id };
    }
  }

  private message(r: UpdateRow): Message {
    if (r.m_seq === null || r.m_reactions === null) {
      throw new Error(`update ${r.useq} points at a missing message ${r.conv_id}#${String(r.seq)}`);
    }
    return toMessage({
      conv_id: r.conv_id,
      seq: r.m_seq,
      from_user: r.m_from_user,
      from_dev: r.m_from_dev,
      cid: r.m_cid,
      type: r.m_type,
      body: r.m_body,
      ts: r.m_ts,
      reply_to: r.m_reply_to,
      edited_at: r.m_edited_at,
      deleted_at: r.m_deleted_at,
      reactions: r.m_reactions,
    });
  }
}
