import { describe, expect, it } from "vitest";
import type { NewConversation } from "../../core/ports/store.ts";
import {
  addGroup,
  addUsers,
  bytes,
  expectCode,
  heads,
  readAll,
  recipients,
  send,
  sendMsg,
} from "./fixtures.ts";
import type { GetStore } from "./fixtures.ts";

// Large groups (read diffusion): once a group is made large, its messages, edits, deletes,
// reactions and membership changes are entries of the group's own log, one per change instead
// of one per member; members' own logs only say where that log starts for them.

export function largeGroupCases(store: GetStore): void {
  /** Users a, b, c in group g1 with one message (written to every member), then made large. */
  async function largeGroup(): Promise<void> {
    await addUsers(store(), "a", "b", "c", "d");
    await addGroup(store(), "g1", ["a", "b", "c"]);
    await sendMsg(store(), "g1", "a", "before");
    await store().changeConversation({ kind: "large", conv: "g1" });
  }

  const log = (after = 0) => store().readConversationLog("g1", after, 1000);

  /** The direct conversation d1 of users a and b. */
  const directAB: NewConversation = {
    id: "d1",
    kind: "direct",
    name: "",
    createdAt: 1,
    directKey: "a:b",
    members: [
      { user: "a", role: "member" },
      { user: "b", role: "member" },
    ],
  };

  describe("large groups", () => {
    it("becoming large tells every member, in their own log, where the group's log starts", async () => {
      await addUsers(store(), "a", "b", "c");
      await addGroup(store(), "g1", ["a", "b", "c"]);
      await sendMsg(store(), "g1", "a", "before");
      const r = await store().changeConversation({ kind: "large", conv: "g1" });
      expect(r.conv).toMatchObject({ id: "g1", large: true, logHead: 0, lastSeq: 1, memberCount: 3 });
      // Its state lists only the owner (and admins): it stays small however large the group.
      expect(r.conv.members.map((m) => m.user)).toEqual(["a"]);
      expect(recipients(r.updates)).toEqual(["a", "b", "c"]);
      // Each member's entry lists that member too (its own marks), as a reply to it would.
      for (const u of r.updates) {
        const own = { user: u.user!, role: "member", delivered: 0, read: 0 };
        const conv = u.user === "a" ? r.conv : { ...r.conv, members: [...r.conv.members, own] };
        expect(u).toEqual({ user: u.user, useq: 3, u: { k: "conv", conv } });
      }
      expect(await store().getConversation("g1")).toEqual(r.conv);
      expect(await store().largeConversations("b")).toEqual([{ conv: "g1", head: 0 }]);
      // Already large: nothing changes, nothing is written.
      expect(await store().changeConversation({ kind: "large", conv: "g1" })).toEqual({
        conv: r.conv,
        updates: [],
      });
      expect(await heads(store(), ["a", "b", "c"])).toEqual([3, 3, 3]);
    });

    it("a group created large never writes its whole member list to anyone's log", async () => {
      await addUsers(store(), "a", "b", "c");
      const r = await store().createConversation({
        id: "g1",
        kind: "group",
        name: "big from the start",
        createdAt: 1,
        members: [
          { user: "a", role: "owner" },
          { user: "b", role: "member" },
          { user: "c", role: "admin" },
        ],
        large: true,
      });
      expect(r.conv).toMatchObject({ large: true, logHead: 0, memberCount: 3 });
      expect(r.conv.members.map((m) => m.user)).toEqual(["a", "c"]);
      expect(recipients(r.updates)).toEqual(["a", "b", "c"]);
      const listedIn = (user: string) =>
        r.updates.flatMap((u) =>
          u.user === user && u.u.k === "conv" ? [u.u.conv.members.map((m) => m.user)] : [],
        );
      expect(listedIn("a")).toEqual([["a", "c"]]);
      expect(listedIn("b")).toEqual([["a", "c", "b"]]);
      expect(listedIn("c")).toEqual([["a", "c"]]);
      expect(await store().largeConversations("b")).toEqual([{ conv: "g1", head: 0 }]);
      await sendMsg(store(), "g1", "b", "first");
      expect((await log()).map((e) => e.u.k)).toEqual(["msg"]);
      expect(await heads(store(), ["a", "b", "c"])).toEqual([1, 1, 1]);
      // Only a group can be large.
      await expectCode(store().createConversation({ ...directAB, large: true }), "E_INVALID");
      expect(await store().getConversation("d1")).toBeUndefined();
    });

    it("refuses to make a direct conversation or an unknown one large", async () => {
      await addUsers(store(), "a", "b");
      await store().createConversation(directAB);
      await expectCode(store().changeConversation({ kind: "large", conv: "d1" }), "E_INVALID");
      await expectCode(store().changeConversation({ kind: "large", conv: "nope" }), "E_NOT_FOUND");
      expect((await store().getConversation("d1"))?.large).toBeUndefined();
      expect(await store().largeConversations("a")).toEqual([]);
    });

    it("appends one entry per message to the group's log and none to the members' logs", async () => {
      await largeGroup();
      const before = await heads(store(), ["a", "b", "c"]);
      const r1 = await send(store(), "g1", "b", "m2");
      const r2 = await send(store(), "g1", "c", "m3");
      expect(r1.updates).toEqual([{ log: "g1", useq: 1, u: { k: "msg", msg: r1.msg } }]);
      expect(r2.updates).toEqual([{ log: "g1", useq: 2, u: { k: "msg", msg: r2.msg } }]);
      expect([r1.msg.seq, r2.msg.seq]).toEqual([2, 3]);
      expect(await heads(store(), ["a", "b", "c"])).toEqual(before);
      expect(await log()).toEqual([
        { useq: 1, u: { k: "msg", msg: r1.msg } },
        { useq: 2, u: { k: "msg", msg: r2.msg } },
      ]);
      expect(await log(1)).toEqual([{ useq: 2, u: { k: "msg", msg: r2.msg } }]);
      expect(await store().readConversationLog("g1", 0, 1)).toHaveLength(1);
      expect(await store().largeConversations("a")).toEqual([{ conv: "g1", head: 2 }]);
      expect(await store().conversationLogHead("g1")).toBe(2);
      expect((await store().getConversation("g1"))?.logHead).toBe(2);
      expect((await store().listConversations("a"))[0]).toMatchObject({ id: "g1", large: true, logHead: 2 });
      // A resend is still answered with the original, writing nothing.
      const again = await send(store(), "g1", "b", "m2");
      expect(again).toMatchObject({ duplicate: true, updates: [] });
      expect(await log()).toHaveLength(2);
    });

    it("refuses a sender who is not a member, in a batch with members' sends", async () => {
      await largeGroup();
      const results = await store().appendMessages([
        { conv: "g1", from: "a", dev: "x", cid: "ok1", type: "t", body: bytes("1"), ts: 5 },
        { conv: "g1", from: "d", dev: "x", cid: "no", type: "t", body: bytes("2"), ts: 5 },
        { conv: "g1", from: "b", dev: "x", cid: "ok2", type: "t", body: bytes("3"), ts: 5 },
      ]);
      expect(results.map((r) => r.ok)).toEqual([true, false, true]);
      expect(results[1]).toMatchObject({ code: "E_NOT_FOUND" });
      expect((await log()).map((e) => e.useq)).toEqual([1, 2]);
    });

    it("edits, deletes and reactions are one entry each, read in the message's current state", async () => {
      await largeGroup();
      const m = await sendMsg(store(), "g1", "b", "m2");
      const before = await heads(store(), ["a", "b", "c"]);
      const edit = await store().changeMessage({
        kind: "edit",
        conv: "g1",
        seq: m.seq,
        type: "text/plain",
        body: bytes("edited"),
        at: 9,
      });
      expect(edit.updates).toEqual([{ log: "g1", useq: 2, u: { k: "edit", msg: edit.msg } }]);
      const react = await store().changeMessage({
        kind: "react",
        conv: "g1",
        seq: m.seq,
        user: "c",
        emoji: "👍",
        on: true,
      });
      expect(recipients(react.updates)).toEqual(["log:g1"]);
      const del = await store().changeMessage({ kind: "delete", conv: "g1", seq: m.seq, at: 10 });
      expect(del.updates).toEqual([{ log: "g1", useq: 4, u: { k: "del", msg: del.msg } }]);
      expect(await heads(store(), ["a", "b", "c"])).toEqual(before);
      // Every entry shows the message as it is now: deleted.
      const entries = await log();
      expect(entries.map((e) => e.u.k)).toEqual(["msg", "edit", "react", "del"]);
      for (const e of entries) expect("msg" in e.u && e.u.msg).toEqual(del.msg);
    });

    it("a receipt goes to the reader's own log only, and still moves the member's marks", async () => {
      await largeGroup();
      await sendMsg(store(), "g1", "a", "m2");
      const ups = await store().setReceipt("g1", "b", "read", 2);
      expect(recipients(ups)).toEqual(["b"]);
      expect(ups[0]?.u).toEqual({ k: "receipt", conv: "g1", user: "b", kind: "read", seq: 2 });
      expect(await store().getMember("g1", "b")).toEqual({
        user: "b",
        role: "member",
        delivered: 2,
        read: 2,
      });
      expect(await heads(store(), ["a", "b", "c"])).toEqual([3, 4, 3]);
      expect(await log()).toHaveLength(1);
    });

    it("membership changes go to the group's log as deltas; joiners and leavers hear in their own", async () => {
      await largeGroup();
      await sendMsg(store(), "g1", "a", "m2");
      const before = await heads(store(), ["a", "b", "c"]);

      const added = await store().changeConversation({ kind: "add", conv: "g1", users: ["d"] });
      expect(recipients(added.updates)).toEqual(["d", "log:g1"]);
      const inLog = added.updates.find((u) => u.log === "g1");
      const toD = added.updates.find((u) => u.user === "d");
      // The group's log carries only the change; d gets the whole state, and starts following
      // the log after the group's entry for the change.
      expect(inLog).toEqual({
        log: "g1",
        useq: 2,
        u: {
          k: "members",
          conv: "g1",
          name: "group g1",
          set: [{ user: "d", role: "member", delivered: 0, read: 0 }],
          removed: [],
          count: 4,
        },
      });
      expect(toD?.u).toMatchObject({ k: "conv", conv: { large: true, logHead: 2, memberCount: 4 } });
      // d's own entry lists the owner and d (d's marks), not every member.
      expect(toD?.u.k === "conv" && toD.u.conv.members.map((m) => m.user)).toEqual(["a", "d"]);
      expect(added.conv.members.map((m) => m.user)).toEqual(["a"]);
      expect(toD?.u.k === "conv" && { ...toD.u.conv, members: added.conv.members }).toEqual(added.conv);
      expect(await readAll(store(), "d")).toEqual([{ useq: 1, u: toD?.u }]);
      expect(await store().largeConversations("d")).toEqual([{ conv: "g1", head: 2 }]);

      const renamed = await store().changeConversation({ kind: "rename", conv: "g1", name: "Big" });
      expect(renamed.updates).toEqual([
        { log: "g1", useq: 3, u: { k: "members", conv: "g1", name: "Big", set: [], removed: [], count: 4 } },
      ]);
      expect(renamed.conv).toMatchObject({ name: "Big", logHead: 3 });

      const promoted = await store().changeConversation({
        kind: "role",
        conv: "g1",
        user: "b",
        role: "admin",
      });
      expect(promoted.updates.map((u) => u.u)).toEqual([
        {
          k: "members",
          conv: "g1",
          name: "Big",
          set: [{ user: "b", role: "admin", delivered: 0, read: 0 }],
          removed: [],
          count: 4,
        },
      ]);
      expect(promoted.conv.members.map((m) => m.user)).toEqual(["a", "b"]);

      // The owner leaves; the heir's new role travels with the removal.
      const removed = await store().changeConversation({ kind: "remove", conv: "g1", user: "a", heir: "b" });
      expect(recipients(removed.updates)).toEqual(["a", "log:g1"]);
      expect(removed.updates.find((u) => u.user === "a")?.u).toEqual({ k: "left", conv: "g1" });
      expect(removed.updates.find((u) => u.log === "g1")?.u).toEqual({
        k: "members",
        conv: "g1",
        name: "Big",
        set: [{ user: "b", role: "owner", delivered: 0, read: 0 }],
        removed: ["a"],
        count: 3,
      });
      expect(removed.conv).toMatchObject({ memberCount: 3, members: [{ user: "b", role: "owner" }] });
      expect(await store().largeConversations("a")).toEqual([]);
      expect(await heads(store(), ["a", "b", "c"])).toEqual([before[0]! + 1, before[1], before[2]]);
      // Read back, the log holds the same entries.
      expect((await log()).map((e) => e.u.k)).toEqual(["msg", "members", "members", "members", "members"]);
      expect((await log(4))[0]?.u).toEqual(removed.updates.find((u) => u.log === "g1")?.u);
    });

    it("a large group's state lists its owner and admins, and the asking member in listConversations", async () => {
      await largeGroup();
      await store().changeConversation({ kind: "role", conv: "g1", user: "c", role: "admin" });
      const listed = (c: { members: Array<{ user: string }> } | undefined) => c?.members.map((m) => m.user);
      expect(listed(await store().getConversation("g1"))).toEqual(["a", "c"]);
      expect((await store().getConversation("g1"))?.memberCount).toBe(3);
      // Listed for b: the owner and admins in join order, then b itself with its own marks.
      await sendMsg(store(), "g1", "a", "m2");
      await store().setReceipt("g1", "b", "read", 2);
      const [forB] = await store().listConversations("b");
      expect(forB).toMatchObject({ id: "g1", memberCount: 3, large: true });
      expect(forB?.members).toEqual([
        { user: "a", role: "owner", delivered: 2, read: 2 },
        { user: "c", role: "admin", delivered: 0, read: 0 },
        { user: "b", role: "member", delivered: 2, read: 2 },
      ]);
      expect(listed((await store().listConversations("c"))[0])).toEqual(["a", "c"]);
      // Demoted, c is a plain member again: no longer listed for others.
      await store().changeConversation({ kind: "role", conv: "g1", user: "c", role: "member" });
      expect(listed(await store().getConversation("g1"))).toEqual(["a"]);
      expect(listed((await store().listConversations("a"))[0])).toEqual(["a"]);
    });

    it("pages through members by user id, and finds the longest-standing one", async () => {
      await addUsers(store(), "u3", "u1", "u4", "u2", "x");
      await addGroup(store(), "g2", ["u3", "u1", "u4", "u2"]);
      const page = (after: string | undefined, limit: number) =>
        store()
          .listMembers("g2", after, limit)
          .then((ms) => ms.map((m) => m.user));
      expect(await page(undefined, 10)).toEqual(["u1", "u2", "u3", "u4"]);
      expect(await page(undefined, 2)).toEqual(["u1", "u2"]);
      expect(await page("u2", 2)).toEqual(["u3", "u4"]);
      expect(await page("u4", 2)).toEqual([]);
      // A cursor that is not a member (it left, say) still pages on from where it sorts.
      expect(await page("u25", 10)).toEqual(["u3", "u4"]);
      expect(await page(undefined, 0)).toEqual([]);
      expect(await store().listMembers("nope", undefined, 10)).toEqual([]);
      expect((await store().listMembers("g2", "u3", 1))[0]).toEqual({
        user: "u4",
        role: "member",
        delivered: 0,
        read: 0,
      });

      expect(await store().getMember("g2", "u3")).toEqual({
        user: "u3",
        role: "owner",
        delivered: 0,
        read: 0,
      });
      expect(await store().getMember("g2", "x")).toBeUndefined();
      expect(await store().getMember("nope", "u3")).toBeUndefined();

      // Join order, not id order: u3 joined first, then u1.
      expect(await store().eldestMember("g2", "x")).toBe("u3");
      expect(await store().eldestMember("g2", "u3")).toBe("u1");
      await store().changeConversation({ kind: "remove", conv: "g2", user: "u1" });
      await store().changeConversation({ kind: "add", conv: "g2", users: ["u1"] });
      expect(await store().eldestMember("g2", "u3")).toBe("u4");
      expect(await store().eldestMember("nope", "u3")).toBeUndefined();
      await addGroup(store(), "g3", ["x"]);
      expect(await store().eldestMember("g3", "x")).toBeUndefined();
    });

    it("a conversation that is not large has no log to read", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a", "b"]);
      await sendMsg(store(), "g1", "a", "m1");
      expect(await store().readConversationLog("g1", 0, 10)).toEqual([]);
      expect(await store().readConversationLog("nope", 0, 10)).toEqual([]);
      expect(await store().conversationLogHead("g1")).toBe(0);
      expect(await store().largeConversations("a")).toEqual([]);
    });

    it("refuses user ids that would name a group's log", async () => {
      await expectCode(
        store().createUser({ id: "#g1", name: "sneaky", passwordHash: "h", createdAt: 1 }),
        "E_INVALID",
      );
      expect(await store().findUserByName("sneaky")).toBeUndefined();
    });
  });
}
