import { describe, expect, it } from "vitest";
import {
  T0,
  addGroup,
  addUsers,
  bytes,
  expectCode,
  heads,
  readAll,
  recipients,
  sendMsg,
} from "./fixtures.ts";
import type { GetStore } from "./fixtures.ts";

// Receipts, the update log (readUpdates, head) and close.

export function syncCases(store: GetStore): void {
  describe("setReceipt", () => {
    it("raises delivered, capped at lastSeq, and fans a receipt out to every member", async () => {
      await addUsers(store(), "a", "b", "c");
      await addGroup(store(), "g1", ["a", "b"]);
      for (let i = 1; i <= 3; i++) await sendMsg(store(), "g1", "a", `c${i}`);
      const ups = await store().setReceipt("g1", "b", "delivered", 2);
      expect(recipients(ups)).toEqual(["a", "b"]);
      for (const u of ups)
        expect(u).toEqual({
          user: u.user,
          useq: 5,
          u: { k: "receipt", conv: "g1", user: "b", kind: "delivered", seq: 2 },
        });
      expect((await store().getConversation("g1"))?.members[1]).toEqual({
        user: "b",
        role: "member",
        delivered: 2,
        read: 0,
      });

      const capped = await store().setReceipt("g1", "b", "delivered", 99);
      expect(capped[0]?.u).toEqual({ k: "receipt", conv: "g1", user: "b", kind: "delivered", seq: 3 });
      expect((await store().getConversation("g1"))?.members[1]).toMatchObject({ delivered: 3, read: 0 });
    });

    it("writes nothing when the mark does not rise", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a", "b"]);
      for (let i = 1; i <= 3; i++) await sendMsg(store(), "g1", "a", `c${i}`);
      await store().setReceipt("g1", "b", "delivered", 3);
      const before = await heads(store(), ["a", "b"]);
      expect(await store().setReceipt("g1", "b", "delivered", 2)).toEqual([]);
      expect(await store().setReceipt("g1", "b", "delivered", 3)).toEqual([]);
      expect(await store().setReceipt("g1", "b", "delivered", 50)).toEqual([]);
      expect(await store().setReceipt("g1", "b", "read", 0)).toEqual([]);
      expect(await heads(store(), ["a", "b"])).toEqual(before);
    });

    it("read raises delivered too; delivered never raises read", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a", "b"]);
      for (let i = 1; i <= 5; i++) await sendMsg(store(), "g1", "a", `c${i}`);
      const ups = await store().setReceipt("g1", "b", "read", 3);
      expect(ups[0]?.u).toEqual({ k: "receipt", conv: "g1", user: "b", kind: "read", seq: 3 });
      expect((await store().getConversation("g1"))?.members[1]).toMatchObject({ delivered: 3, read: 3 });
      expect(await store().setReceipt("g1", "b", "delivered", 2)).toEqual([]);
      await store().setReceipt("g1", "b", "delivered", 5);
      expect((await store().getConversation("g1"))?.members[1]).toMatchObject({ delivered: 5, read: 3 });
      await store().setReceipt("g1", "b", "read", 4);
      expect((await store().getConversation("g1"))?.members[1]).toMatchObject({ delivered: 5, read: 4 });
    });

    it("refuses non-members, unknown conversations and bad input", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a"]);
      await sendMsg(store(), "g1", "a", "c1");
      await expectCode(store().setReceipt("g1", "b", "read", 1), "E_NOT_FOUND");
      await expectCode(store().setReceipt("nope", "a", "read", 1), "E_NOT_FOUND");
      await expectCode(store().setReceipt("g1", "a", "read", 0.5), "E_INVALID");
      await expectCode(store().setReceipt("g1", "a", "seen" as "read", 1), "E_INVALID");
      expect(await heads(store(), ["a", "b"])).toEqual([2, 0]);
    });
  });

  describe("readUpdates and head", () => {
    it("pages through the log after a cursor, ascending, at most limit entries", async () => {
      await addUsers(store(), "a");
      await addGroup(store(), "g1", ["a"]);
      for (let i = 1; i <= 6; i++) await sendMsg(store(), "g1", "a", `c${i}`);
      expect(await store().head("a")).toBe(7);
      const useqs = async (after: number, limit: number): Promise<number[]> =>
        (await store().readUpdates("a", after, limit)).map((e) => e.useq);
      expect(await useqs(0, 3)).toEqual([1, 2, 3]);
      expect(await useqs(3, 3)).toEqual([4, 5, 6]);
      expect(await useqs(6, 3)).toEqual([7]);
      expect(await useqs(7, 3)).toEqual([]);
      expect(await useqs(100, 3)).toEqual([]);
      expect(await useqs(2, 0)).toEqual([]);
      expect(await useqs(2, -1)).toEqual([]);
      expect(await store().readUpdates("nobody", 0, 10)).toEqual([]);
      await expectCode(store().readUpdates("a", 0.5, 10), "E_INVALID");
      await expectCode(store().readUpdates("a", 0, Number.POSITIVE_INFINITY), "E_INVALID");
    });

    it("shows messages in their current state, with the change each entry recorded", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a", "b"]);
      await sendMsg(store(), "g1", "a", "c1");
      await store().changeMessage({ kind: "react", conv: "g1", seq: 1, user: "b", emoji: "👍", on: true });
      await store().changeMessage({
        kind: "edit",
        conv: "g1",
        seq: 1,
        type: "t2",
        body: bytes("v2"),
        at: T0 + 7,
      });
      await store().setReceipt("g1", "b", "read", 1);
      const current = await store().getMessage("g1", 1);
      expect(current).toMatchObject({
        type: "t2",
        body: bytes("v2"),
        editedAt: T0 + 7,
        reactions: { "👍": ["b"] },
      });
      const log = await readAll(store(), "b");
      expect(log.slice(1)).toEqual([
        { useq: 2, u: { k: "msg", msg: current } },
        { useq: 3, u: { k: "react", msg: current, user: "b", emoji: "👍", on: true } },
        { useq: 4, u: { k: "edit", msg: current } },
        { useq: 5, u: { k: "receipt", conv: "g1", user: "b", kind: "read", seq: 1 } },
      ]);
      await store().changeMessage({ kind: "delete", conv: "g1", seq: 1, at: T0 + 8 });
      const deleted = await store().getMessage("g1", 1);
      const after = await readAll(store(), "a");
      expect(after[1]).toEqual({ useq: 2, u: { k: "msg", msg: deleted } });
      expect(after.at(-1)).toEqual({ useq: 6, u: { k: "del", msg: deleted } });
    });

    it("matches the updates the writes returned", async () => {
      await addUsers(store(), "a", "b");
      const created = await addGroup(store(), "g1", ["a", "b"]);
      const [sent] = await store().appendMessages([
        { conv: "g1", from: "a", dev: "d", cid: "c1", type: "t", body: bytes("x"), ts: T0 },
      ]);
      const renamed = await store().changeConversation({ kind: "rename", conv: "g1", name: "n" });
      const receipt = await store().setReceipt("g1", "b", "delivered", 1);
      const left = await store().changeConversation({ kind: "remove", conv: "g1", user: "b" });
      const returned = [
        ...created,
        ...(sent?.ok ? sent.updates : []),
        ...renamed.updates,
        ...receipt,
        ...left.updates,
      ];
      for (const user of ["a", "b"]) {
        const mine = returned.filter((u) => u.user === user).map(({ useq, u }) => ({ useq, u }));
        expect(await readAll(store(), user)).toEqual(mine);
      }
    });
  });

  describe("close", () => {
    it("rejects every call after close", async () => {
      await addUsers(store(), "a");
      await store().close();
      await expect(store().getUser("a")).rejects.toThrow();
      await expect(
        store().createUser({ id: "b", name: "b", passwordHash: "h", createdAt: T0 }),
      ).rejects.toThrow();
      await expect(store().appendMessages([])).rejects.toThrow();
      await expect(store().readUpdates("a", 0, 1)).rejects.toThrow();
      // Closing again is harmless.
      await store().close();
    });
  });
}
