import type { UserId } from "@parley/protocol";
import type { SessionDirectory, SessionEntry } from "../../core/ports/session-directory.ts";

// MemorySessionDirectory: the SessionDirectory of a single process, a map from user to their
// connections. O(1) per add/remove/isOnline; sessions() is O(connections of that user).

export class MemorySessionDirectory implements SessionDirectory {
  /** user -> conn -> entry. A user with no connection has no key. */
  private readonly byUser = new Map<UserId, Map<string, SessionEntry>>();
  private count = 0;

  /** Registering the same (user, conn) again replaces the entry and is not "came online". */
  add(entry: SessionEntry): boolean {
    let conns = this.byUser.get(entry.user);
    const cameOnline = !conns;
    if (!conns) {
      conns = new Map();
      this.byUser.set(entry.user, conns);
    }
    if (!conns.has(entry.conn)) this.count++;
    conns.set(entry.conn, { ...entry });
    return cameOnline;
  }

  /** Matches on (user, conn). Removing an unknown entry is a no-op that returns false. */
  remove(entry: SessionEntry): boolean {
    const conns = this.byUser.get(entry.user);
    if (!conns?.delete(entry.conn)) return false;
    this.count--;
    if (conns.size > 0) return false;
    this.byUser.delete(entry.user);
    return true;
  }

  isOnline(user: UserId): boolean {
    return this.byUser.has(user);
  }

  sessions(user: UserId): SessionEntry[] {
    return [...(this.byUser.get(user)?.values() ?? [])].map((e) => ({ ...e }));
  }

  size(): number {
    return this.count;
  }
}
