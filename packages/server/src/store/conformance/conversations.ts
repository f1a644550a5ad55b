import { describe, expect, it } from "vitest";
import type { Conversation } from "@parley/protocol";
import type { NewConversation } from "../../core/ports/store.ts";
import { T0, addGroup, addUsers, expectCode, heads, readAll, recipients, sendMsg } from "./fixtures.ts";
import type { GetStore } from "./fixtures.ts";

// Conversations and membership, and the "conv"/"left" updates they append.

function direct(id: string, a: string, b: string, createdAt = T0): NewConversation {
  return {
    id,
    kind: "direct",
    name: "",
    createdAt,
    directKey: [a, b].sort().join(":"),
    members: [
      { user: a, role: "member" },
      { user: b, role: "member" },
    ],
  };
}

export function conversationCases(store: GetStore): void {
  describe("createConversation", () => {
    it("creates a group with its members in the given order and one conv update each", async () => {
      await addUsers(store(), "a", "b", "c");
      const r = await store().createConversation({
        id: "g1",
        kind: "group",
        name: "Team",
        createdAt: T0,
        members: [
          { user: "c", role: "owner" },
          { user: "a", role: "admin" },
          { user: "b", role: "member" },
        ],
      });
      const expected: Conversation = {
        id: "g1",
        kind: "group",
        name: "Team",
        createdAt: T0,
        lastSeq: 0,
        members: [
          { user: "c", role: "owner", delivered: 0, read: 0 },
          { user: "a", role: "admin", delivered: 0, read: 0 },
          { user: "b", role: "member", delivered: 0, read: 0 },
        ],
      };
      expect(r.created).toBe(true);
      expect(r.conv).toEqual(expected);
      expect(await store().getConversation("g1")).toEqual(expected);
      expect(r.updates).toHaveLength(3);
      expect(recipients(r.updates)).toEqual(["a", "b", "c"]);
      for (const u of r.updates)
        expect(u).toEqual({ user: u.user, useq: 1, u: { k: "conv", conv: expected } });
      expect(await readAll(store(), "a")).toEqual([{ useq: 1, u: { k: "conv", conv: expected } }]);
      expect(await store().getRole("g1", "c")).toBe("owner");
      expect(await store().getRole("g1", "a")).toBe("admin");
      expect(await store().getRole("g1", "b")).toBe("member");
    });

    it("returns the existing direct conversation for a known directKey and writes nothing", async () => {
      await addUsers(store(), "a", "b");
      const first = await store().createConversation(direct("d1", "a", "b"));
      expect(first.created).toBe(true);
      expect(first.conv.kind).toBe("direct");
      const again = await store().createConversation(direct("d2", "b", "a", T0 + 50));
      expect(again).toEqual({ conv: first.conv, created: false, updates: [] });
      expect(await store().getConversation("d2")).toBeUndefined();
      expect(await heads(store(), ["a", "b"])).toEqual([1, 1]);
      expect(await store().listConversations("a")).toHaveLength(1);
    });

    it("refuses bad input and writes nothing: taken id, unknown user, duplicate member, no member", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a"]);
      const base = { kind: "group" as const, name: "x", createdAt: T0 };
      await expectCode(
        store().createConversation({ ...base, id: "g1", members: [{ user: "b", role: "owner" }] }),
        "E_CONFLICT",
      );
      await expectCode(
        store().createConversation({
          ...base,
          id: "g2",
          members: [
            { user: "b", role: "owner" },
            { user: "ghost", role: "member" },
          ],
        }),
        "E_NOT_FOUND",
      );
      await expectCode(
        store().createConversation({
          ...base,
          id: "g2",
          members: [
            { user: "b", role: "owner" },
            { user: "b", role: "member" },
          ],
        }),
        "E_INVALID",
      );
      await expectCode(store().createConversation({ ...base, id: "g2", members: [] }), "E_INVALID");
      expect(await store().getConversation("g2")).toBeUndefined();
      expect(await heads(store(), ["a", "b"])).toEqual([1, 0]);
    });

    it("answers undefined for unknown conversations and non-members", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a"]);
      expect(await store().getConversation("nope")).toBeUndefined();
      expect(await store().getRole("nope", "a")).toBeUndefined();
      expect(await store().getRole("g1", "b")).toBeUndefined();
      expect(await store().getRole("g1", "ghost")).toBeUndefined();
    });

    it("returns copies: mutating a returned conversation does not change the store", async () => {
      await addUsers(store(), "a");
      await addGroup(store(), "g1", ["a"]);
      const c = await store().getConversation("g1");
      c!.name = "x";
      c!.members[0]!.role = "member";
      c!.members.push({ user: "z", role: "owner", delivered: 0, read: 0 });
      const [logged] = await readAll(store(), "a");
      if (logged?.u.k === "conv") logged.u.conv.members.length = 0;
      expect(await store().getConversation("g1")).toMatchObject({
        name: "group g1",
        members: [{ user: "a", role: "owner" }],
      });
      expect((await readAll(store(), "a"))[0]).toMatchObject({
        u: { k: "conv", conv: { members: [{ user: "a" }] } },
      });
    });
  });

  describe("listConversations", () => {
    it("lists the user's conversations, most recently active first", async () => {
      await addUsers(store(), "a", "b", "c");
      await addGroup(store(), "g1", ["a", "b"], T0 + 1);
      await addGroup(store(), "g2", ["a"], T0 + 2);
      await addGroup(store(), "g3", ["b", "c"], T0 + 3);
      await store().createConversation(direct("d1", "a", "c", T0 + 4));
      const ids = async (u: string): Promise<string[]> =>
        (await store().listConversations(u)).map((c) => c.id);
      expect(await ids("a")).toEqual(["d1", "g2", "g1"]);
      await sendMsg(store(), "g1", "b", "m1", { ts: T0 + 10 });
      expect(await ids("a")).toEqual(["g1", "d1", "g2"]);
      expect(await ids("b")).toEqual(["g1", "g3"]);
      expect(await ids("nobody")).toEqual([]);
      const [g1] = await store().listConversations("a");
      expect(g1).toEqual(await store().getConversation("g1"));
    });
  });

  describe("changeConversation", () => {
    it("renames and sends the new state to every member", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a", "b"]);
      const r = await store().changeConversation({ kind: "rename", conv: "g1", name: "New" });
      expect(r.conv.name).toBe("New");
      expect(await store().getConversation("g1")).toEqual(r.conv);
      expect(recipients(r.updates)).toEqual(["a", "b"]);
      for (const u of r.updates) expect(u).toEqual({ user: u.user, useq: 2, u: { k: "conv", conv: r.conv } });
      // The same name again changes nothing and writes nothing.
      expect(await store().changeConversation({ kind: "rename", conv: "g1", name: "New" })).toEqual({
        conv: r.conv,
        updates: [],
      });
      expect(await heads(store(), ["a", "b"])).toEqual([2, 2]);
    });

    it("adds users at the end as plain members; current members are skipped", async () => {
      await addUsers(store(), "a", "b", "c", "d");
      await addGroup(store(), "g1", ["a", "b"]);
      await sendMsg(store(), "g1", "a", "m1");
      const r = await store().changeConversation({ kind: "add", conv: "g1", users: ["c", "b", "d", "c"] });
      expect(r.conv.members.map((m) => [m.user, m.role])).toEqual([
        ["a", "owner"],
        ["b", "member"],
        ["c", "member"],
        ["d", "member"],
      ]);
      expect(r.conv.lastSeq).toBe(1);
      expect(recipients(r.updates)).toEqual(["a", "b", "c", "d"]);
      for (const u of r.updates) expect(u.u).toEqual({ k: "conv", conv: r.conv });
      expect(await store().getRole("g1", "d")).toBe("member");
      expect((await store().listConversations("c")).map((c) => c.id)).toEqual(["g1"]);
      // Nothing to add: nothing changes, nothing is written.
      const before = await heads(store(), ["a", "b", "c", "d"]);
      const same = await store().changeConversation({ kind: "add", conv: "g1", users: ["a", "c"] });
      expect(same.updates).toEqual([]);
      expect(same.conv).toEqual(r.conv);
      expect(await heads(store(), ["a", "b", "c", "d"])).toEqual(before);
    });

    it("refuses to add unknown users or to an unknown conversation, writing nothing", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a"]);
      await expectCode(
        store().changeConversation({ kind: "add", conv: "g1", users: ["b", "ghost"] }),
        "E_NOT_FOUND",
      );
      expect(await store().getRole("g1", "b")).toBeUndefined();
      await expectCode(
        store().changeConversation({ kind: "add", conv: "nope", users: ["b"] }),
        "E_NOT_FOUND",
      );
      await expectCode(
        store().changeConversation({ kind: "rename", conv: "nope", name: "x" }),
        "E_NOT_FOUND",
      );
      expect(await heads(store(), ["a", "b"])).toEqual([1, 0]);
    });

    it("removes a member: a left update for them, the new state for the others", async () => {
      await addUsers(store(), "a", "b", "c");
      await addGroup(store(), "g1", ["a", "b", "c"]);
      const r = await store().changeConversation({ kind: "remove", conv: "g1", user: "b" });
      expect(r.conv.members.map((m) => m.user)).toEqual(["a", "c"]);
      expect(r.updates.find((u) => u.user === "b")).toEqual({
        user: "b",
        useq: 2,
        u: { k: "left", conv: "g1" },
      });
      expect(r.updates.filter((u) => u.user !== "b").map((u) => [u.user, u.u])).toEqual([
        ["a", { k: "conv", conv: r.conv }],
        ["c", { k: "conv", conv: r.conv }],
      ]);
      expect(await store().getRole("g1", "b")).toBeUndefined();
      expect(await store().listConversations("b")).toEqual([]);
      // A removed member can no longer send, and gets nothing more.
      const [refused] = await store().appendMessages([
        { conv: "g1", from: "b", dev: "x", cid: "late", type: "t", body: new Uint8Array(), ts: T0 },
      ]);
      expect(refused).toMatchObject({ ok: false, code: "E_NOT_FOUND" });
      await sendMsg(store(), "g1", "a", "m1");
      expect(await store().head("b")).toBe(2);
      expect(await heads(store(), ["a", "c"])).toEqual([3, 3]);
    });

    it("removes a member and makes the heir owner in one change", async () => {
      await addUsers(store(), "a", "b", "c");
      await addGroup(store(), "g1", ["a", "b", "c"]);
      const r = await store().changeConversation({ kind: "remove", conv: "g1", user: "a", heir: "c" });
      expect(r.conv.members.map((m) => [m.user, m.role])).toEqual([
        ["b", "member"],
        ["c", "owner"],
      ]);
      expect(r.updates.map((u) => [u.user, u.u.k])).toEqual([
        ["b", "conv"],
        ["c", "conv"],
        ["a", "left"],
      ]);
      expect(await store().getRole("g1", "c")).toBe("owner");
      // An heir who is not a member (or is the one leaving) refuses the whole change.
      await expectCode(
        store().changeConversation({ kind: "remove", conv: "g1", user: "c", heir: "a" }),
        "E_NOT_FOUND",
      );
      await expectCode(
        store().changeConversation({ kind: "remove", conv: "g1", user: "c", heir: "c" }),
        "E_NOT_FOUND",
      );
      expect(await store().getRole("g1", "c")).toBe("owner");
      expect(await heads(store(), ["a", "b", "c"])).toEqual([2, 2, 2]);
    });

    it("refuses to remove a non-member, writing nothing", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a"]);
      await expectCode(store().changeConversation({ kind: "remove", conv: "g1", user: "b" }), "E_NOT_FOUND");
      await expectCode(
        store().changeConversation({ kind: "remove", conv: "g1", user: "ghost" }),
        "E_NOT_FOUND",
      );
      await expectCode(
        store().changeConversation({ kind: "remove", conv: "nope", user: "a" }),
        "E_NOT_FOUND",
      );
      expect(await heads(store(), ["a", "b"])).toEqual([1, 0]);
    });

    it("a re-added member comes back at the end with fresh receipts", async () => {
      await addUsers(store(), "a", "b", "c");
      await addGroup(store(), "g1", ["a", "b", "c"]);
      await sendMsg(store(), "g1", "a", "m1");
      await store().setReceipt("g1", "b", "read", 1);
      await store().changeConversation({ kind: "remove", conv: "g1", user: "b" });
      const r = await store().changeConversation({ kind: "add", conv: "g1", users: ["b"] });
      expect(r.conv.members).toEqual([
        { user: "a", role: "owner", delivered: 1, read: 1 }, // a sent m1
        { user: "c", role: "member", delivered: 0, read: 0 },
        { user: "b", role: "member", delivered: 0, read: 0 },
      ]);
    });

    it("changes a member's role; refuses a non-member", async () => {
      await addUsers(store(), "a", "b", "c");
      await addGroup(store(), "g1", ["a", "b"]);
      const r = await store().changeConversation({ kind: "role", conv: "g1", user: "b", role: "admin" });
      expect(r.conv.members.find((m) => m.user === "b")?.role).toBe("admin");
      expect(await store().getRole("g1", "b")).toBe("admin");
      expect(recipients(r.updates)).toEqual(["a", "b"]);
      const same = await store().changeConversation({ kind: "role", conv: "g1", user: "b", role: "admin" });
      expect(same).toEqual({ conv: r.conv, updates: [] });
      await expectCode(
        store().changeConversation({ kind: "role", conv: "g1", user: "c", role: "admin" }),
        "E_NOT_FOUND",
      );
      await expectCode(
        store().changeConversation({ kind: "role", conv: "nope", user: "b", role: "admin" }),
        "E_NOT_FOUND",
      );
    });

    it("keeps each conv update as the state at the time it was written", async () => {
      await addUsers(store(), "a");
      await addGroup(store(), "g1", ["a"]);
      await store().changeConversation({ kind: "rename", conv: "g1", name: "one" });
      await store().changeConversation({ kind: "rename", conv: "g1", name: "two" });
      const names = (await readAll(store(), "a")).map((e) => (e.u.k === "conv" ? e.u.conv.name : e.u.k));
      expect(names).toEqual(["group g1", "one", "two"]);
    });
  });
}
