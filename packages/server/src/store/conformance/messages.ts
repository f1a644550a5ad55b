import { describe, expect, it } from "vitest";
import type { Message } from "@parley/protocol";
import {
  T0,
  addGroup,
  addUsers,
  bytes,
  expectCode,
  heads,
  newMessage,
  readAll,
  recipients,
  send,
  sendMsg,
} from "./fixtures.ts";
import type { GetStore } from "./fixtures.ts";

// appendMessages, getMessage, history and changeMessage.

export function messageCases(store: GetStore): void {
  describe("appendMessages", () => {
    it("numbers each conversation from 1 without gaps and returns what it stored", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a", "b"]);
      await addGroup(store(), "g2", ["a"]);
      const results = await store().appendMessages([
        newMessage("g1", "a", "c1", { ts: T0 + 1 }),
        newMessage("g2", "a", "c2", { ts: T0 + 2 }),
        newMessage("g1", "b", "c3", { ts: T0 + 3, type: "app/x", body: new Uint8Array([0, 255]) }),
      ]);
      expect(results.map((r) => (r.ok ? [r.msg.conv, r.msg.seq, r.duplicate] : r.code))).toEqual([
        ["g1", 1, false],
        ["g2", 1, false],
        ["g1", 2, false],
      ]);
      const third: Message = {
        conv: "g1",
        seq: 2,
        from: "b",
        dev: "dev-b",
        cid: "c3",
        type: "app/x",
        body: new Uint8Array([0, 255]),
        ts: T0 + 3,
      };
      expect(results[2]).toMatchObject({ ok: true, msg: third });
      expect(await store().getMessage("g1", 2)).toEqual(third);
      expect((await store().getConversation("g1"))?.lastSeq).toBe(2);
      expect((await store().getConversation("g2"))?.lastSeq).toBe(1);
    });

    it("appends one msg update per member, the sender included, with gap-free useqs", async () => {
      await addUsers(store(), "a", "b", "c");
      await addGroup(store(), "g1", ["a", "b"]);
      const r = await send(store(), "g1", "a", "c1");
      expect(recipients(r.updates)).toEqual(["a", "b"]);
      for (const u of r.updates) expect(u).toEqual({ user: u.user, useq: 2, u: { k: "msg", msg: r.msg } });
      await send(store(), "g1", "b", "c2");
      expect((await readAll(store(), "a")).map((e) => [e.useq, e.u.k])).toEqual([
        [1, "conv"],
        [2, "msg"],
        [3, "msg"],
      ]);
      expect(await heads(store(), ["a", "b", "c"])).toEqual([3, 3, 0]);
    });

    it("raises the sender's delivered and read marks to what they sent, and nobody else's", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a", "b"]);
      await send(store(), "g1", "b", "c1");
      await send(store(), "g1", "a", "c2");
      const marks = (await store().getConversation("g1"))?.members.map((m) => [m.user, m.delivered, m.read]);
      expect(marks).toEqual([
        ["a", 2, 2],
        ["b", 1, 1],
      ]);
      const before = await heads(store(), ["a", "b"]);
      await send(store(), "g1", "b", "c3");
      // No receipt entries: only the one msg entry per member.
      expect(await heads(store(), ["a", "b"])).toEqual(before.map((h) => h + 1));
    });

    it("returns the original for a resent (from, cid) and writes nothing", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a", "b"]);
      const first = await send(store(), "g1", "a", "c1", { ts: T0 + 1, body: bytes("first") });
      const [again] = await store().appendMessages([
        newMessage("g1", "a", "c1", { ts: T0 + 9, body: bytes("second") }),
      ]);
      expect(again).toEqual({ ok: true, duplicate: true, msg: first.msg, updates: [] });
      expect((await store().getConversation("g1"))?.lastSeq).toBe(1);
      expect(await heads(store(), ["a", "b"])).toEqual([2, 2]);
      // The same cid from someone else is a different message.
      const other = await send(store(), "g1", "b", "c1");
      expect(other).toMatchObject({ duplicate: false, msg: { seq: 2, from: "b" } });
    });

    it("returns the stored message even when the resend names another conversation", async () => {
      await addUsers(store(), "a");
      await addGroup(store(), "g1", ["a"]);
      await addGroup(store(), "g2", ["a"]);
      const first = await send(store(), "g1", "a", "c1");
      const [again] = await store().appendMessages([newMessage("g2", "a", "c1")]);
      expect(again).toEqual({ ok: true, duplicate: true, msg: first.msg, updates: [] });
      expect((await store().getConversation("g2"))?.lastSeq).toBe(0);
    });

    it("treats a repeated (from, cid) within one batch as a duplicate of the first", async () => {
      await addUsers(store(), "a");
      await addGroup(store(), "g1", ["a"]);
      const [x, y, z] = await store().appendMessages([
        newMessage("g1", "a", "c1", { body: bytes("one") }),
        newMessage("g1", "a", "c1", { body: bytes("two") }),
        newMessage("g1", "a", "c2"),
      ]);
      expect(x).toMatchObject({ ok: true, duplicate: false, msg: { seq: 1, body: bytes("one") } });
      expect(y).toEqual({ ok: true, duplicate: true, msg: x?.ok ? x.msg : undefined, updates: [] });
      expect(z).toMatchObject({ ok: true, duplicate: false, msg: { seq: 2 } });
      expect(await store().head("a")).toBe(3);
    });

    it("refuses only the items of non-members and unknown conversations; the rest commit", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a"]);
      const results = await store().appendMessages([
        newMessage("g1", "a", "c1"),
        newMessage("g1", "b", "c2"),
        newMessage("nope", "a", "c3"),
        newMessage("g1", "ghost", "c4"),
        newMessage("g1", "a", "c5"),
      ]);
      expect(results.map((r) => (r.ok ? r.msg.seq : r.code))).toEqual([
        1,
        "E_NOT_FOUND",
        "E_NOT_FOUND",
        "E_NOT_FOUND",
        2,
      ]);
      expect(results[1]).toMatchObject({ ok: false, message: expect.any(String) as string });
      expect(await store().head("b")).toBe(0);
      // A refused item did not reserve its cid.
      await addGroup(store(), "g2", ["b"]);
      expect(await sendMsg(store(), "g2", "b", "c2")).toMatchObject({ conv: "g2", seq: 1 });
    });

    it("accepts replyTo only for an earlier message of the conversation", async () => {
      await addUsers(store(), "a");
      await addGroup(store(), "g1", ["a"]);
      const results = await store().appendMessages([
        newMessage("g1", "a", "r0", { replyTo: 1 }),
        newMessage("g1", "a", "ok1"),
        newMessage("g1", "a", "r1", { replyTo: 0 }),
        newMessage("g1", "a", "r2", { replyTo: 2 }),
        newMessage("g1", "a", "r3", { replyTo: 1.5 }),
        newMessage("g1", "a", "r4", { replyTo: -1 }),
        newMessage("g1", "a", "ok2", { replyTo: 1 }),
      ]);
      expect(results.map((r) => (r.ok ? r.msg.seq : r.code))).toEqual([
        "E_INVALID",
        1,
        "E_INVALID",
        "E_INVALID",
        "E_INVALID",
        "E_INVALID",
        2,
      ]);
      expect((await store().getMessage("g1", 2))?.replyTo).toBe(1);
      expect((await store().getMessage("g1", 1))?.replyTo).toBeUndefined();
    });

    it("keeps its own copy of bodies, in and out", async () => {
      await addUsers(store(), "a");
      await addGroup(store(), "g1", ["a"]);
      const body = bytes("hello");
      const r = await send(store(), "g1", "a", "c1", { body });
      body[0] = 0;
      r.msg.body[1] = 0;
      const got = await store().getMessage("g1", 1);
      expect(got?.body).toEqual(bytes("hello"));
      got!.body[2] = 0;
      got!.type = "changed";
      expect(await store().getMessage("g1", 1)).toMatchObject({ body: bytes("hello"), type: "text/plain" });
      const [logged] = (await readAll(store(), "a")).filter((e) => e.u.k === "msg");
      if (logged?.u.k === "msg") logged.u.msg.body[0] = 0;
      expect((await store().getMessage("g1", 1))?.body).toEqual(bytes("hello"));
      // Buffer.prototype.slice does not copy: a Buffer body must be copied all the same.
      const buf = Buffer.from("world");
      await send(store(), "g1", "a", "c2", { body: buf });
      buf[0] = 0;
      const second = await store().getMessage("g1", 2);
      expect(second?.body).toEqual(bytes("world"));
      expect(second?.body).not.toBeInstanceOf(Buffer);
    });

    it("accepts an empty batch and an empty body", async () => {
      await addUsers(store(), "a");
      await addGroup(store(), "g1", ["a"]);
      expect(await store().appendMessages([])).toEqual([]);
      expect((await sendMsg(store(), "g1", "a", "c1", { body: new Uint8Array() })).body).toEqual(
        new Uint8Array(),
      );
    });
  });

  describe("getMessage and history", () => {
    it("answers undefined for unknown conversations and out-of-range seqs", async () => {
      await addUsers(store(), "a");
      await addGroup(store(), "g1", ["a"]);
      await sendMsg(store(), "g1", "a", "c1");
      expect(await store().getMessage("nope", 1)).toBeUndefined();
      expect(await store().getMessage("g1", 0)).toBeUndefined();
      expect(await store().getMessage("g1", 2)).toBeUndefined();
      expect(await store().getMessage("g1", -1)).toBeUndefined();
    });

    it("pages backwards from the newest and forwards with after, always ascending", async () => {
      await addUsers(store(), "a");
      await addGroup(store(), "g1", ["a"]);
      for (let i = 1; i <= 10; i++) await sendMsg(store(), "g1", "a", `c${i}`);
      const seqs = async (q: { before?: number; after?: number; limit: number }): Promise<number[]> =>
        (await store().history("g1", q)).map((m) => m.seq);
      expect(await seqs({ limit: 3 })).toEqual([8, 9, 10]);
      expect(await seqs({ limit: 100 })).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      expect(await seqs({ before: 8, limit: 3 })).toEqual([5, 6, 7]);
      expect(await seqs({ before: 3, limit: 5 })).toEqual([1, 2]);
      expect(await seqs({ before: 1, limit: 5 })).toEqual([]);
      expect(await seqs({ after: 0, limit: 3 })).toEqual([1, 2, 3]);
      expect(await seqs({ after: 8, limit: 5 })).toEqual([9, 10]);
      expect(await seqs({ after: 10, limit: 5 })).toEqual([]);
      expect(await seqs({ after: 2, before: 9, limit: 3 })).toEqual([3, 4, 5]);
      expect(await seqs({ after: 2, before: 5, limit: 10 })).toEqual([3, 4]);
      expect(await seqs({ before: 1000, limit: 2 })).toEqual([9, 10]);
      expect(await seqs({ limit: 0 })).toEqual([]);
      expect(await seqs({ limit: -1 })).toEqual([]);
      expect(await seqs({ after: 0, limit: -1 })).toEqual([]);
      expect(await store().history("nope", { limit: 10 })).toEqual([]);
      expect(await store().history("g1", { limit: 1 })).toEqual([await store().getMessage("g1", 10)]);
    });

    it("refuses non-integer bounds", async () => {
      await addUsers(store(), "a");
      await addGroup(store(), "g1", ["a"]);
      await expectCode(store().history("g1", { limit: 1.5 }), "E_INVALID");
      await expectCode(store().history("g1", { before: Number.NaN, limit: 1 }), "E_INVALID");
      await expectCode(store().history("g1", { after: 0.5, limit: 1 }), "E_INVALID");
    });
  });

  describe("changeMessage", () => {
    it("edits: new body, type and editedAt, an edit update for every member", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a", "b"]);
      await sendMsg(store(), "g1", "a", "c1", { replyTo: undefined });
      const r = await store().changeMessage({
        kind: "edit",
        conv: "g1",
        seq: 1,
        type: "text/md",
        body: bytes("v2"),
        at: T0 + 5,
      });
      expect(r.msg).toMatchObject({ seq: 1, type: "text/md", body: bytes("v2"), editedAt: T0 + 5 });
      expect(r.msg.deleted).toBeUndefined();
      expect(await store().getMessage("g1", 1)).toEqual(r.msg);
      expect(recipients(r.updates)).toEqual(["a", "b"]);
      for (const u of r.updates) expect(u).toEqual({ user: u.user, useq: 3, u: { k: "edit", msg: r.msg } });
    });

    it("deletes: body emptied, type kept, reactions dropped; again is a no-op; then edit and react refuse", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a", "b"]);
      await sendMsg(store(), "g1", "a", "c1", { type: "image/png" });
      await store().changeMessage({ kind: "react", conv: "g1", seq: 1, user: "b", emoji: "👍", on: true });
      const r = await store().changeMessage({ kind: "delete", conv: "g1", seq: 1, at: T0 + 5 });
      expect(r.msg).toMatchObject({ seq: 1, type: "image/png", body: new Uint8Array(), deleted: true });
      expect(r.msg.reactions).toBeUndefined();
      expect(await store().getMessage("g1", 1)).toEqual(r.msg);
      expect(recipients(r.updates)).toEqual(["a", "b"]);
      for (const u of r.updates) expect(u.u).toEqual({ k: "del", msg: r.msg });

      const before = await heads(store(), ["a", "b"]);
      expect(await store().changeMessage({ kind: "delete", conv: "g1", seq: 1, at: T0 + 6 })).toEqual({
        msg: r.msg,
        updates: [],
      });
      await expectCode(
        store().changeMessage({ kind: "edit", conv: "g1", seq: 1, type: "t", body: bytes("x"), at: T0 }),
        "E_CONFLICT",
      );
      await expectCode(
        store().changeMessage({ kind: "react", conv: "g1", seq: 1, user: "a", emoji: "x", on: true }),
        "E_CONFLICT",
      );
      expect(await heads(store(), ["a", "b"])).toEqual(before);
      expect(await store().getMessage("g1", 1)).toEqual(r.msg);
    });

    it("toggles reactions, in the order they were added; repeats write nothing", async () => {
      await addUsers(store(), "a", "b", "c");
      await addGroup(store(), "g1", ["a", "b", "c"]);
      await sendMsg(store(), "g1", "a", "c1");
      const react = (user: string, emoji: string, on: boolean) =>
        store().changeMessage({ kind: "react", conv: "g1", seq: 1, user, emoji, on });
      const first = await react("b", "👍", true);
      expect(first.msg.reactions).toEqual({ "👍": ["b"] });
      expect(recipients(first.updates)).toEqual(["a", "b", "c"]);
      for (const u of first.updates)
        expect(u.u).toEqual({ k: "react", msg: first.msg, user: "b", emoji: "👍", on: true });
      await react("c", "❤️", true);
      await react("a", "👍", true);
      expect((await react("b", "👍", true)).updates).toEqual([]);
      expect((await react("c", "👍", false)).updates).toEqual([]);
      expect((await store().getMessage("g1", 1))?.reactions).toEqual({ "👍": ["b", "a"], "❤️": ["c"] });
      const off = await react("b", "👍", false);
      expect(off.msg.reactions).toEqual({ "👍": ["a"], "❤️": ["c"] });
      expect(off.updates[0]?.u).toEqual({ k: "react", msg: off.msg, user: "b", emoji: "👍", on: false });
      await react("a", "👍", false);
      expect((await store().getMessage("g1", 1))?.reactions).toEqual({ "❤️": ["c"] });
      await react("c", "❤️", false);
      expect((await store().getMessage("g1", 1))?.reactions).toBeUndefined();
      // An emoji that is also an Object.prototype property is an ordinary key.
      await react("a", "__proto__", true);
      expect(Object.keys((await store().getMessage("g1", 1))?.reactions ?? {})).toEqual(["__proto__"]);
    });

    it("refuses reactions from non-members and changes to unknown messages, writing nothing", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a"]);
      await sendMsg(store(), "g1", "a", "c1");
      const before = await heads(store(), ["a", "b"]);
      await expectCode(
        store().changeMessage({ kind: "react", conv: "g1", seq: 1, user: "b", emoji: "x", on: true }),
        "E_NOT_FOUND",
      );
      await expectCode(
        store().changeMessage({ kind: "react", conv: "g1", seq: 1, user: "ghost", emoji: "x", on: true }),
        "E_NOT_FOUND",
      );
      await expectCode(store().changeMessage({ kind: "delete", conv: "g1", seq: 2, at: T0 }), "E_NOT_FOUND");
      await expectCode(store().changeMessage({ kind: "delete", conv: "g1", seq: 0, at: T0 }), "E_NOT_FOUND");
      await expectCode(
        store().changeMessage({ kind: "delete", conv: "nope", seq: 1, at: T0 }),
        "E_NOT_FOUND",
      );
      await expectCode(
        store().changeMessage({ kind: "edit", conv: "g1", seq: 9, type: "t", body: bytes("x"), at: T0 }),
        "E_NOT_FOUND",
      );
      expect(await heads(store(), ["a", "b"])).toEqual(before);
      expect((await store().getMessage("g1", 1))?.reactions).toBeUndefined();
    });

    it("sends change updates to current members only", async () => {
      await addUsers(store(), "a", "b");
      await addGroup(store(), "g1", ["a", "b"]);
      await sendMsg(store(), "g1", "a", "c1");
      await store().changeConversation({ kind: "remove", conv: "g1", user: "b" });
      const r = await store().changeMessage({
        kind: "edit",
        conv: "g1",
        seq: 1,
        type: "t",
        body: bytes("x"),
        at: T0,
      });
      expect(recipients(r.updates)).toEqual(["a"]);
    });
  });
}
