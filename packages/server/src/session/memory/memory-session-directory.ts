import type { UserId } from "@parley/protocol";
import type { SessionDirectory, SessionEntry } from "../../core/ports/session-directory.ts";

// MemorySessionDirectory: the SessionDirectory of a single process, a map from user to their
// connections. O(1) per add/remove/isOnline; sessions() is O(connections of that user).

export class MemorySessionDirectory implements SessionDirectory {
  /** user -> conn -> entry. A user with no connection has no key. */
  /** A user's one entry, or a Map by conn once they have several connections (a Map per idle
   * connection costs a few hundred bytes). */
  private readonly byUser = new Map<UserId, SessionEntry | Map<string, SessionEntry>>();
  private count = 0;

  /** Registering the same (user, conn) again replaces the entry and is not "came online". */
  add(entry: SessionEntry): boolean {
    const copy = { ...entry };
    const current = this.byUser.get(entry.user);
    if (!current) {
      this.byUser.set(entry.user, copy);
      this.count++;
      return true;
    }
    if (current instanceof Map) {
      if (!current.has(entry.conn)) this.count++;
      current.set(entry.conn, copy);
    } else if (current.conn === entry.conn) {
      this.byUser.set(entry.user, copy);
    } else {
      this.byUser.set(
        entry.user,
        new Map([
          [current.conn, current],
          [entry.conn, copy],
        ]),
      );
      this.count++;
    }
    return false;
  }

  /** Matches on (user, conn). Removing an unknown entry is a no-op that returns false. */
  remove(entry: SessionEntry): boolean {
    const current = this.byUser.get(entry.user);
    if (!current) return false;
    if (!(current instanceof Map)) {
      if (current.conn !== entry.conn) return false;
      this.byUser.delete(entry.user);
      this.count--;
      return true;
    }
    if (!current.delete(entry.conn)) return false;
    this.count--;
    if (current.size > 0) return false;
    this.byUser.delete(entry.user);
    return true;
  }

  isOnline(user: UserId): boolean {
    return this.byUser.has(user);
  }

  sessions(user: UserId): SessionEntry[] {
    const current = this.byUser.get(user);
    if (!current) return [];
    if (!(current instanceof Map)) return [{ ...current }];
    return [...current.values()].map((e) => ({ ...e }));
  }

  size(): number {
    return this.count;
  }
}
