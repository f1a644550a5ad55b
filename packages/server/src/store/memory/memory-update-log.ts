import type { ConversationId, LoggedUpdate, Update, UserId } from "@parley/protocol";
import type { UserUpdate } from "../../core/ports/store.ts";
import { copyMessage, deepFreeze } from "./memory-state.ts";
import type { StoredMessage } from "./memory-state.ts";

// The per-user update logs of MemoryStore. useq is the position in the user's log, from 1,
// gap-free. Message entries point at the message, so reading them shows its current state; the
// others keep the payload they were written with.

/** An entry that names a message: its Update is built from the message's state when read. */
type MessageEntry =
  | { k: "msg" | "edit" | "del"; conv: ConversationId; seq: number }
  | { k: "react"; conv: ConversationId; seq: number; user: UserId; emoji: string; on: boolean };

type StoredEntry = MessageEntry | { k: "payload"; u: Readonly<Update> };

export class MemoryUpdateLog {
  private readonly logs = new Map<UserId, StoredEntry[]>();

  /** `messageAt` finds the stored message an entry names. */
  constructor(private readonly messageAt: (conv: ConversationId, seq: number) => StoredMessage | undefined) {}

  /** Appends `u` to each user's log, in order; the returned updates share `u`. A message update
   * is kept as a reference to the message; any other as one frozen copy shared by every log, so a
   * large group costs one copy, not one per member. */
  append(users: Iterable<UserId>, u: Update): UserUpdate[] {
    let entry: StoredEntry;
    switch (u.k) {
      case "msg":
      case "edit":
      case "del":
        entry = { k: u.k, conv: u.msg.conv, seq: u.msg.seq };
        break;
      case "react":
        entry = { k: "react", conv: u.msg.conv, seq: u.msg.seq, user: u.user, emoji: u.emoji, on: u.on };
        break;
      default:
        entry = { k: "payload", u: deepFreeze(structuredClone(u)) };
    }
    return [...users].map((user) => ({ user, useq: this.push(user, entry), u }));
  }

  /** Entries after `after` (exclusive), at most `limit`, as fresh copies. O(entries returned). */
  read(user: UserId, after: number, limit: number): LoggedUpdate[] {
    const log = this.logs.get(user) ?? [];
    const from = Math.max(0, after);
    return log
      .slice(from, from + Math.max(0, limit))
      .map((e, i) => ({ useq: from + i + 1, u: this.materialize(e) }));
  }

  head(user: UserId): number {
    return this.logs.get(user)?.length ?? 0;
  }

  private push(user: UserId, entry: StoredEntry): number {
    let log = this.logs.get(user);
    if (!log) {
      log = [];
      this.logs.set(user, log);
    }
    log.push(entry);
    return log.length;
  }

  private materialize(e: StoredEntry): Update {
    if (e.k === "payload") return structuredClone(e.u);
    const m = this.messageAt(e.conv, e.seq);
    if (!m) throw new Error(`update log points at a missing message ${e.conv}#${e.seq}`);
    const msg = copyMessage(m);
    return e.k === "react" ? { k: "react", msg, user: e.user, emoji: e.emoji, on: e.on } : { k: e.k, msg };
  }
}
