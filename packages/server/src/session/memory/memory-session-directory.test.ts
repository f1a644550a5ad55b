import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { SessionEntry } from "../../core/ports/session-directory.ts";
import { runSessionDirectoryConformance } from "../session-directory-conformance.ts";
import { MemorySessionDirectory } from "./memory-session-directory.ts";

runSessionDirectoryConformance("MemorySessionDirectory", () => new MemorySessionDirectory());

describe("MemorySessionDirectory (one entry per user until a second connection)", () => {
  it("agrees with a map of maps over random adds and removes", () => {
    const op = fc.record({
      add: fc.boolean(),
      user: fc.constantFrom("a", "b", "c"),
      conn: fc.constantFrom("1", "2", "3"),
      since: fc.nat(100),
    });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const dir = new MemorySessionDirectory();
        const model = new Map<string, Map<string, SessionEntry>>();
        for (const { add, user, conn, since } of ops) {
          const entry: SessionEntry = { user, device: `d${conn}`, conn, since };
          const conns = model.get(user);
          if (add) {
            expect(dir.add(entry)).toBe(!conns);
            model.set(user, (conns ?? new Map<string, SessionEntry>()).set(conn, entry));
          } else {
            const had = conns?.delete(conn) ?? false;
            const wentOffline = had && conns!.size === 0;
            if (wentOffline) model.delete(user);
            expect(dir.remove(entry)).toBe(wentOffline);
          }
          for (const u of ["a", "b", "c"]) {
            expect(dir.isOnline(u)).toBe(model.has(u));
            const sort = (l: SessionEntry[]) => [...l].sort((x, y) => x.conn.localeCompare(y.conn));
            expect(sort(dir.sessions(u))).toEqual(sort([...(model.get(u)?.values() ?? [])]));
          }
          expect(dir.size()).toBe([...model.values()].reduce((n, m) => n + m.size, 0));
        }
      }),
    );
  });
});
