import type { Conversation, Message } from "@parley/protocol";
import { describe, expect, it } from "vitest";
import type { LocalStore, PendingSend } from "../local-store.ts";

// The shared conformance suite every LocalStore runs (memory-store.test.ts, file-store.test.ts).
// `open` returns a fresh, empty store that caches at most 3 messages per conversation.

export function message(conv: string, seq: number, text = `${conv}#${seq}`): Message {
  return {
    conv,
    seq,
    from: "u_a",
    dev: "d_a",
    cid: `${conv}-${seq}`,
    type: "text/plain",
    body: new TextEncoder().encode(text),
    ts: 1000 + seq,
  };
}

export function conversation(id: string, name = id): Conversation {
  return { id, kind: "group", name, createdAt: 1, lastSeq: 0, members: [] };
}

export function pending(cid: string, text = cid): PendingSend {
  return { cid, conv: "c1", type: "text/plain", body: new TextEncoder().encode(text), createdAt: 5 };
}

export function describeLocalStore(name: string, open: () => Promise<LocalStore>): void {
  describe(`LocalStore conformance: ${name}`, () => {
    it("starts empty", async () => {
      const s = await open();
      expect(s.meta()).toBeUndefined();
      expect(s.cursor()).toBe(0);
      expect(s.received("c1")).toBe(0);
      expect(s.messages("c1")).toEqual([]);
      expect(s.conversations()).toEqual([]);
      expect(s.outbox()).toEqual([]);
      await s.close();
    });

    it("keeps the cursor, received marks and meta", async () => {
      const s = await open();
      s.setMeta({ user: "u_a", server: "http://x" });
      s.setCursor(7);
      s.setReceived("c1", 4);
      await s.flush();
      expect(s.meta()).toEqual({ user: "u_a", server: "http://x" });
      expect(s.cursor()).toBe(7);
      expect(s.received("c1")).toBe(4);
      await s.close();
    });

    it("returns messages in seq order, by range, and evicts the oldest beyond its size", async () => {
      const s = await open();
      for (const seq of [2, 1, 3]) s.putMessage(message("c1", seq));
      expect(s.messages("c1").map((m) => m.seq)).toEqual([1, 2, 3]);
      expect(s.messages("c1", { before: 3 }).map((m) => m.seq)).toEqual([1, 2]);
      expect(s.messages("c1", { after: 1, limit: 1 }).map((m) => m.seq)).toEqual([2]);
      expect(s.messages("c1", { limit: 2 }).map((m) => m.seq)).toEqual([2, 3]);
      s.putMessage(message("c1", 2, "edited"));
      expect(new TextDecoder().decode(s.getMessage("c1", 2)?.body)).toBe("edited");
      s.putMessage(message("c1", 4));
      expect(s.messages("c1").map((m) => m.seq)).toEqual([2, 3, 4]);
      expect(s.getMessage("c1", 1)).toBeUndefined();
      await s.close();
    });

    it("keeps the cursors of followed group logs; leaving a group forgets its cursor", async () => {
      const s = await open();
      expect(s.logCursor("g1")).toBeUndefined();
      s.setLogCursor("g1", 0);
      s.setLogCursor("g2", 5);
      s.setLogCursor("g1", 3);
      await s.flush();
      expect(s.logCursor("g1")).toBe(3);
      expect(s.logCursors().sort()).toEqual([
        ["g1", 3],
        ["g2", 5],
      ]);
      s.putConversation(conversation("g2"));
      s.removeConversation("g2");
      expect(s.logCursor("g2")).toBeUndefined();
      expect(s.logCursors()).toEqual([["g1", 3]]);
      s.clear();
      expect(s.logCursors()).toEqual([]);
      await s.close();
    });

    it("keeps conversations and forgets one that was left, with its messages", async () => {
      const s = await open();
      s.putConversation(conversation("c1"));
      s.putConversation(conversation("c2"));
      s.putConversation(conversation("c1", "renamed"));
      s.putMessage(message("c1", 1));
      s.setReceived("c1", 1);
      expect(s.getConversation("c1")?.name).toBe("renamed");
      s.removeConversation("c1");
      expect(s.conversations().map((c) => c.id)).toEqual(["c2"]);
      expect(s.messages("c1")).toEqual([]);
      expect(s.received("c1")).toBe(1);
      await s.close();
    });

    it("keeps the outbox in insertion order", async () => {
      const s = await open();
      s.putOutbox(pending("a"));
      s.putOutbox(pending("b"));
      s.putOutbox(pending("c"));
      s.removeOutbox("b");
      s.removeOutbox("missing");
      expect(s.outbox().map((p) => p.cid)).toEqual(["a", "c"]);
      expect(s.outbox()[0]?.body).toEqual(new TextEncoder().encode("a"));
      await s.close();
    });

    it("clear() forgets everything", async () => {
      const s = await open();
      s.setMeta({ user: "u_a", server: "http://x" });
      s.setCursor(3);
      s.putOutbox(pending("a"));
      s.putConversation(conversation("c1"));
      s.clear();
      expect(s.meta()).toBeUndefined();
      expect(s.cursor()).toBe(0);
      expect(s.outbox()).toEqual([]);
      expect(s.conversations()).toEqual([]);
      await s.close();
    });
  });
}
