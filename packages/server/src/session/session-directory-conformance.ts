import { beforeEach, describe, expect, it } from "vitest";
import type { SessionDirectory, SessionEntry } from "../core/ports/session-directory.ts";

// The SessionDirectory conformance suite: every implementation runs these tests. `open` returns
// a fresh, empty directory.

function entry(user: string, device: string, conn: string, since = 1): SessionEntry {
  return { user, device, conn, since };
}

const byConn = (a: SessionEntry, b: SessionEntry) => (a.conn < b.conn ? -1 : a.conn > b.conn ? 1 : 0);

export function runSessionDirectoryConformance(name: string, open: () => SessionDirectory): void {
  describe(`SessionDirectory conformance: ${name}`, () => {
    let dir: SessionDirectory;

    beforeEach(() => {
      dir = open();
    });

    it("starts empty", () => {
      expect(dir.size()).toBe(0);
      expect(dir.isOnline("u1")).toBe(false);
      expect(dir.sessions("u1")).toEqual([]);
    });

    it("says when a user comes online and goes offline, across several connections", () => {
      expect(dir.add(entry("u1", "d1", "c1"))).toBe(true);
      expect(dir.add(entry("u1", "d2", "c2"))).toBe(false);
      expect(dir.add(entry("u1", "d1", "c3"))).toBe(false);
      expect(dir.isOnline("u1")).toBe(true);
      expect(dir.size()).toBe(3);
      expect(dir.remove(entry("u1", "d1", "c1"))).toBe(false);
      expect(dir.remove(entry("u1", "d2", "c2"))).toBe(false);
      expect(dir.isOnline("u1")).toBe(true);
      expect(dir.remove(entry("u1", "d1", "c3"))).toBe(true);
      expect(dir.isOnline("u1")).toBe(false);
      expect(dir.size()).toBe(0);
      expect(dir.add(entry("u1", "d1", "c4"))).toBe(true);
    });

    it("lists a user's sessions and keeps users apart", () => {
      dir.add(entry("u1", "d1", "c1", 10));
      dir.add(entry("u2", "d9", "c2", 11));
      dir.add(entry("u1", "d2", "c3", 12));
      expect(dir.sessions("u1").sort(byConn)).toEqual([
        entry("u1", "d1", "c1", 10),
        entry("u1", "d2", "c3", 12),
      ]);
      expect(dir.sessions("u2")).toEqual([entry("u2", "d9", "c2", 11)]);
      expect(dir.size()).toBe(3);
      dir.remove(entry("u1", "d1", "c1", 10));
      expect(dir.sessions("u1")).toEqual([entry("u1", "d2", "c3", 12)]);
      expect(dir.isOnline("u2")).toBe(true);
    });

    it("ignores removal of a connection it does not hold", () => {
      dir.add(entry("u1", "d1", "c1"));
      expect(dir.remove(entry("u1", "d1", "nope"))).toBe(false);
      expect(dir.remove(entry("u2", "d1", "c1"))).toBe(false);
      expect(dir.remove(entry("u3", "d3", "c3"))).toBe(false);
      expect(dir.size()).toBe(1);
      expect(dir.isOnline("u1")).toBe(true);
      expect(dir.remove(entry("u1", "d1", "c1"))).toBe(true);
      expect(dir.remove(entry("u1", "d1", "c1"))).toBe(false);
      expect(dir.size()).toBe(0);
    });

    it("counts a connection added twice once", () => {
      expect(dir.add(entry("u1", "d1", "c1"))).toBe(true);
      expect(dir.add(entry("u1", "d1", "c1"))).toBe(false);
      expect(dir.size()).toBe(1);
      expect(dir.sessions("u1")).toHaveLength(1);
      expect(dir.remove(entry("u1", "d1", "c1"))).toBe(true);
      expect(dir.size()).toBe(0);
    });

    it("returns copies", () => {
      dir.add(entry("u1", "d1", "c1"));
      const [s] = dir.sessions("u1");
      s!.device = "changed";
      expect(dir.sessions("u1")).toEqual([entry("u1", "d1", "c1")]);
    });
  });
}
