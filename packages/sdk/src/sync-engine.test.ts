import fc from "fast-check";
import type { Conversation, LoggedUpdate, Update } from "@parley/protocol";
import { describe, expect, it } from "vitest";
import { MemoryLocalStore } from "./local-store.ts";
import type { SyncEvent } from "./sync-engine.ts";
import { SyncEngine } from "./sync-engine.ts";
import { message as msg } from "./store/local-store-conformance.ts";

function conversation(id: string): Conversation {
  return {
    id,
    kind: "group",
    name: id,
    createdAt: 1,
    lastSeq: 0,
    members: [
      { user: "u_a", role: "owner", delivered: 0, read: 0 },
      { user: "u_b", role: "member", delivered: 0, read: 0 },
    ],
  };
}

/** An engine over a memory store, recording what it emits and asks for. */
function harness(pipeline?: number) {
  const store = new MemoryLocalStore();
  const events: SyncEvent[] = [];
  const syncs: number[] = [];
  let caughtUp = 0;
  const engine = new SyncEngine(
    store,
    {
      emit: (e) => events.push(e),
      requestSync: (cursor) => syncs.push(cursor),
      caughtUp: () => caughtUp++,
    },
    pipeline === undefined ? {} : { pipeline },
  );
  return { store, engine, events, syncs, caughtUpCount: () => caughtUp };
}

const m = (conv: string, seq: number): Update => ({ k: "msg", msg: msg(conv, seq) });

/** Log entries from..to, each a message of c1 with seq = useq. */
function page(from: number, to: number): LoggedUpdate[] {
  const out: LoggedUpdate[] = [];
  for (let useq = from; useq <= to; useq++) out.push({ useq, u: m("c1", useq) });
  return out;
}

describe("SyncEngine", () => {
  it("applies in-order pushes and advances the cursor", () => {
    const h = harness();
    h.engine.start(0);
    expect(h.caughtUpCount()).toBe(1);
    h.engine.onPush(1, m("c1", 1));
    h.engine.onPush(2, m("c1", 2));
    expect(h.engine.cursor).toBe(2);
    expect(h.events.map((e) => e.type)).toEqual(["message", "message"]);
    expect(h.store.messages("c1").map((x) => x.seq)).toEqual([1, 2]);
    expect(h.syncs).toEqual([]);
  });

  it("ignores pushes at or below the cursor", () => {
    const h = harness();
    h.engine.start(0);
    h.engine.onPush(1, m("c1", 1));
    h.engine.onPush(1, m("c1", 1));
    expect(h.events).toHaveLength(1);
    expect(h.engine.stats.duplicatePushes).toBe(1);
  });

  it("buffers pushes after a gap, asks for ONE sync, then drains", () => {
    const h = harness();
    h.engine.start(0);
    h.engine.onPush(1, m("c1", 1));
    h.engine.onPush(3, m("c1", 3));
    h.engine.onPush(4, m("c1", 4));
    h.engine.onPush(5, m("c1", 5));
    expect(h.syncs).toEqual([1]);
    expect(h.engine.cursor).toBe(1);
    h.engine.onSynced([{ useq: 2, u: m("c1", 2) }], false, 2);
    expect(h.engine.cursor).toBe(5);
    expect(h.events.map((e) => (e.type === "message" ? e.msg.seq : -1))).toEqual([1, 2, 3, 4, 5]);
    expect(h.syncs).toEqual([1]);
  });

  it("syncs on start when behind, pages while `more`, and reports caught up once", () => {
    const h = harness();
    h.engine.start(3);
    expect(h.syncs).toEqual([0]);
    expect(h.caughtUpCount()).toBe(0);
    h.engine.onSynced(
      [
        { useq: 1, u: m("c1", 1) },
        { useq: 2, u: m("c1", 2) },
      ],
      true,
      3,
    );
    expect(h.syncs).toEqual([0, 2]);
    h.engine.onSynced([{ useq: 3, u: m("c1", 3) }], false, 3);
    expect(h.caughtUpCount()).toBe(1);
    expect(h.engine.cursor).toBe(3);
  });

  it("keeps `pipeline` pages outstanding while far behind, sliding on as replies arrive", () => {
    const h = harness(3);
    h.engine.start(9, 2);
    expect(h.syncs).toEqual([0, 2, 4]);
    h.engine.onSynced(page(1, 2), true, 9);
    expect(h.syncs).toEqual([0, 2, 4, 6]);
    h.engine.onSynced(page(3, 4), true, 9);
    expect(h.syncs).toEqual([0, 2, 4, 6, 8]);
    h.engine.onSynced(page(5, 6), true, 9);
    h.engine.onSynced(page(7, 8), true, 9);
    expect(h.syncs).toEqual([0, 2, 4, 6, 8]); // nothing asked beyond the head
    expect(h.caughtUpCount()).toBe(0);
    h.engine.onSynced(page(9, 9), false, 9);
    expect(h.engine.cursor).toBe(9);
    expect(h.caughtUpCount()).toBe(1);
  });

  it("after a page cut short, fills the hole and goes on one page at a time", () => {
    const h = harness(3);
    h.engine.start(12, 4);
    expect(h.syncs).toEqual([0, 4, 8]);
    h.engine.onSynced(page(1, 2), true, 12); // the server trimmed the page to its byte budget
    h.engine.onSynced(page(5, 8), true, 12); // beyond the hole: buffered
    expect(h.engine.cursor).toBe(2);
    expect(h.syncs).toEqual([0, 4, 8]);
    h.engine.onSynced(page(9, 12), false, 12);
    expect(h.syncs).toEqual([0, 4, 8, 2]); // the round is over: a new one from the cursor only
    h.engine.onSynced(page(3, 3), true, 12);
    expect(h.syncs).toEqual([0, 4, 8, 2, 3]);
    h.engine.onSynced(page(4, 4), true, 12); // fills the hole: the buffered pages apply
    expect(h.engine.cursor).toBe(12);
    expect(h.syncs).toEqual([0, 4, 8, 2, 3, 12]); // the server said `more` when it read the page
    h.engine.onSynced([], false, 12);
    expect(h.caughtUpCount()).toBe(1);
  });

  it("a refused sync pauses syncing until resume(), which goes on from the cursor", () => {
    const h = harness(2);
    h.engine.start(6, 2);
    expect(h.syncs).toEqual([0, 2]);
    h.engine.onSyncFailed();
    h.engine.onSynced(page(3, 4), true, 6); // beyond the refused page: buffered, no new request
    h.engine.onPush(7, m("c1", 7));
    expect(h.syncs).toEqual([0, 2]);
    h.engine.resume();
    expect(h.syncs).toEqual([0, 2, 0, 2]);
    h.engine.onSynced(page(1, 2), true, 7);
    expect(h.engine.cursor).toBe(4);
    h.engine.onSynced(page(3, 4), true, 7);
    expect(h.syncs).toEqual([0, 2, 0, 2, 4]);
    h.engine.onSynced(page(5, 7), false, 7);
    expect(h.engine.cursor).toBe(7);
    expect(h.caughtUpCount()).toBe(1);
  });

  it("deduplicates messages by (conversation, seq) even under new useqs", () => {
    const h = harness();
    h.engine.start(0);
    h.engine.onPush(1, m("c1", 1));
    h.engine.onPush(2, m("c1", 1));
    h.engine.onPush(3, m("c1", 2));
    expect(h.events.map((e) => (e.type === "message" ? e.msg.seq : -1))).toEqual([1, 2]);
    expect(h.engine.stats.duplicateMessages).toBe(1);
    expect(h.engine.cursor).toBe(3);
  });

  it("restarts from 0 when the server's head is below the cursor (log reset)", () => {
    const h = harness();
    h.store.setCursor(10);
    h.engine.start(2);
    expect(h.engine.stats.resets).toBe(1);
    expect(h.syncs).toEqual([0]);
  });

  it("does not spin on a server that returns nothing new", () => {
    const h = harness();
    h.engine.start(5);
    for (let i = 0; i < 10 && h.syncs.length > h.caughtUpCount() + i; i++) h.engine.onSynced([], false, 5);
    expect(h.syncs.length).toBeLessThanOrEqual(4);
    expect(h.caughtUpCount()).toBe(1);
  });

  it("applies edits, deletes, reactions, receipts, conversations and left", () => {
    const h = harness();
    h.engine.start(0);
    const edited = { ...msg("c1", 1, "new"), editedAt: 5 };
    const updates: Update[] = [
      { k: "conv", conv: conversation("c1") },
      m("c1", 1),
      { k: "edit", msg: edited },
      { k: "react", msg: { ...edited, reactions: { "👍": ["u_b"] } }, user: "u_b", emoji: "👍", on: true },
      { k: "receipt", conv: "c1", user: "u_b", kind: "read", seq: 1 },
      { k: "del", msg: { ...edited, body: new Uint8Array(), deleted: true } },
      { k: "left", conv: "c1" },
    ];
    updates.forEach((u, i) => h.engine.onPush(i + 1, u));
    expect(h.events.map((e) => e.type)).toEqual([
      "conversation",
      "message",
      "edit",
      "reaction",
      "receipt",
      "delete",
      "left",
    ]);
    expect(h.store.getConversation("c1")).toBeUndefined();
    expect(h.store.received("c1")).toBe(1);
  });

  it("raises member marks on a receipt", () => {
    const h = harness();
    h.engine.start(0);
    h.engine.onPush(1, { k: "conv", conv: conversation("c1") });
    h.engine.onPush(2, { k: "receipt", conv: "c1", user: "u_b", kind: "read", seq: 4 });
    h.engine.onPush(3, { k: "receipt", conv: "c1", user: "u_b", kind: "delivered", seq: 2 });
    const b = h.store.getConversation("c1")?.members.find((x) => x.user === "u_b");
    expect(b).toMatchObject({ delivered: 4, read: 4 });
  });

  it("tracks what to acknowledge: cumulative cursor and delivered seq per conversation", () => {
    const h = harness();
    h.engine.start(0);
    expect(h.engine.takeAck()).toBeUndefined();
    h.engine.onPush(1, m("c1", 1));
    h.engine.onPush(2, m("c2", 7));
    h.engine.onPush(3, m("c1", 2));
    expect(h.engine.pendingAck()).toBe(3);
    const ack = h.engine.takeAck();
    expect(ack).toEqual({
      cursor: 3,
      convs: [
        { conv: "c1", seq: 2 },
        { conv: "c2", seq: 7 },
      ],
    });
    expect(h.engine.takeAck()).toBeUndefined();
    h.engine.restoreAck(ack!);
    expect(h.engine.takeAck()).toEqual(ack);
  });
});

// ---------------------------------------------------------------- the property

/** A server's update log: a few conversations, some joined late (first seq > 1). */
const logArb = fc
  .record({
    starts: fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 3 }),
    picks: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 9 })), { minLength: 1, maxLength: 60 }),
  })
  .map(({ starts, picks }) => {
    const next = starts.map((s) => s);
    const log: Update[] = [];
    for (const [which, kind] of picks) {
      const c = which % starts.length;
      const conv = `c${c}`;
      const last = (next[c] ?? 1) - 1;
      if (kind === 0) log.push({ k: "conv", conv: conversation(conv) });
      else if (kind === 1 && last >= (starts[c] ?? 1))
        log.push({ k: "edit", msg: msg(conv, last, "edited") });
      else if (kind === 2) log.push({ k: "receipt", conv, user: "u_b", kind: "delivered", seq: last });
      else {
        log.push(m(conv, next[c] ?? 1));
        next[c] = (next[c] ?? 1) + 1;
      }
    }
    return log;
  });

type Action =
  | { a: "grow"; n: number; live: boolean }
  | { a: "push"; i: number }
  | { a: "dup" }
  | { a: "sync"; limit: number }
  | { a: "fail" }
  | { a: "resume" }
  | { a: "reconnect"; unknownHead: boolean };

const actionArb: fc.Arbitrary<Action> = fc.oneof(
  fc.record({ a: fc.constant("grow" as const), n: fc.integer({ min: 1, max: 6 }), live: fc.boolean() }),
  fc.record({ a: fc.constant("push" as const), i: fc.nat() }),
  fc.record({ a: fc.constant("dup" as const) }),
  fc.record({ a: fc.constant("sync" as const), limit: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ a: fc.constant("fail" as const) }),
  fc.record({ a: fc.constant("resume" as const) }),
  fc.record({ a: fc.constant("reconnect" as const), unknownHead: fc.boolean() }),
);

/** How the client syncs: requests outstanding at once, and the `limit` of each. */
const pipelineArb = fc.record({
  pipeline: fc.integer({ min: 1, max: 4 }),
  pageSize: fc.integer({ min: 1, max: 6 }),
});

function describeUpdate(e: SyncEvent | Update): string {
  if ("k" in e) {
    switch (e.k) {
      case "msg":
        return `message ${e.msg.conv}/${e.msg.seq}`;
      case "edit":
        return `edit ${e.msg.conv}/${e.msg.seq}`;
      case "receipt":
        return `receipt ${e.conv}/${e.seq}`;
      case "conv":
        return `conversation ${e.conv.id}`;
      default:
        return e.k;
    }
  }
  switch (e.type) {
    case "message":
      return `message ${e.msg.conv}/${e.msg.seq}`;
    case "edit":
      return `edit ${e.msg.conv}/${e.msg.seq}`;
    case "receipt":
      return `receipt ${e.event.conv}/${e.event.seq}`;
    case "conversation":
      return `conversation ${e.conv.id}`;
    default:
      return e.type;
  }
}

describe("SyncEngine and large groups", () => {
  const large = (id: string, logHead: number): Conversation => ({
    ...conversation(id),
    large: true,
    logHead,
  });

  it("the user's log starts following a large group at its logHead, once, and stops on left", () => {
    const store = new MemoryLocalStore();
    const follows: string[] = [];
    const engine = new SyncEngine(store, {
      emit: () => {},
      requestSync: () => {},
      caughtUp: () => {},
      follow: (c) => follows.push(`+${c}`),
      unfollow: (c) => follows.push(`-${c}`),
    });
    engine.start(0);
    engine.onPush(1, { k: "conv", conv: conversation("g1") });
    expect(store.logCursor("g1")).toBeUndefined();
    engine.onPush(2, { k: "conv", conv: large("g1", 7) });
    expect(store.logCursor("g1")).toBe(7);
    store.setLogCursor("g1", 9);
    // A later state of the group (a rename, say) does not move the cursor back.
    engine.onPush(3, { k: "conv", conv: large("g1", 8) });
    expect(store.logCursor("g1")).toBe(9);
    engine.onPush(4, { k: "left", conv: "g1" });
    expect(store.logCursor("g1")).toBeUndefined();
    // Re-joined: followed again from where the new entry says.
    engine.onPush(5, { k: "conv", conv: large("g1", 12) });
    expect(store.logCursor("g1")).toBe(12);
    expect(follows).toEqual(["+g1", "-g1", "+g1"]);
    expect(store.cursor()).toBe(5);
  });

  it("merges a large group's membership change into the conversation it knows", () => {
    const store = new MemoryLocalStore();
    const events: SyncEvent[] = [];
    const engine = new SyncEngine(
      store,
      { emit: (e) => events.push(e), requestSync: () => {}, caughtUp: () => {} },
      { log: "g1" },
    );
    store.putConversation(large("g1", 0));
    store.setLogCursor("g1", 0);
    engine.start(0);
    const member = (user: string, role: "owner" | "admin" | "member" = "member") => ({
      user,
      role,
      delivered: 0,
      read: 0,
    });
    engine.onPush(1, { k: "members", conv: "g1", name: "Big", set: [member("u_c")], removed: [] });
    engine.onPush(2, {
      k: "members",
      conv: "g1",
      name: "Big",
      set: [member("u_b", "owner")],
      removed: ["u_a"],
    });
    expect(store.getConversation("g1")).toMatchObject({
      name: "Big",
      large: true,
      members: [member("u_b", "owner"), member("u_c")],
    });
    expect(events.map((e) => e.type)).toEqual(["conversation", "conversation"]);
    // A change for a conversation this device does not hold is skipped, cursor still moving.
    engine.onPush(3, { k: "members", conv: "g9", name: "x", set: [], removed: [] });
    expect(store.getConversation("g9")).toBeUndefined();
    expect(store.logCursor("g1")).toBe(3);
  });

  it("keeps a large group's list to its owner, admins and the user, and takes the count", () => {
    const store = new MemoryLocalStore();
    const engine = new SyncEngine(
      store,
      { emit: () => {}, requestSync: () => {}, caughtUp: () => {} },
      { log: "g1" },
    );
    const member = (user: string, role: "owner" | "admin" | "member" = "member", read = 0) => ({
      user,
      role,
      delivered: read,
      read,
    });
    // As the server lists it: the owner, then this user (u_me) with its marks.
    store.putConversation({
      ...large("g1", 0),
      memberCount: 600,
      members: [member("u_o", "owner"), member("u_me", "member", 4)],
    });
    store.setLogCursor("g1", 0);
    engine.start(0);
    // A plain member joins: counted, not listed.
    engine.onPush(1, {
      k: "members",
      conv: "g1",
      name: "Big",
      set: [member("u_new")],
      removed: [],
      count: 601,
    });
    expect(store.getConversation("g1")).toMatchObject({
      memberCount: 601,
      members: [member("u_o", "owner"), member("u_me", "member", 4)],
    });
    // Promoted, a member is listed; a listed member's new record replaces its old one.
    engine.onPush(2, {
      k: "members",
      conv: "g1",
      name: "Big",
      set: [member("u_new", "admin")],
      removed: [],
      count: 601,
    });
    engine.onPush(3, {
      k: "members",
      conv: "g1",
      name: "Big",
      set: [member("u_me", "admin", 4)],
      removed: ["u_x"],
      count: 600,
    });
    expect(store.getConversation("g1")).toMatchObject({
      memberCount: 600,
      members: [member("u_o", "owner"), member("u_me", "admin", 4), member("u_new", "admin")],
    });
    engine.onPush(4, { k: "members", conv: "g1", name: "Big", set: [], removed: ["u_new"], count: 599 });
    expect(store.getConversation("g1")?.members.map((m) => m.user)).toEqual(["u_o", "u_me"]);
    expect(store.getConversation("g1")?.memberCount).toBe(599);
  });

  it("a group log's engine moves the group's cursor only and acknowledges no delivery", () => {
    const store = new MemoryLocalStore();
    const events: SyncEvent[] = [];
    const syncs: number[] = [];
    store.setLogCursor("g1", 3);
    const engine = new SyncEngine(
      store,
      { emit: (e) => events.push(e), requestSync: (c) => syncs.push(c), caughtUp: () => {} },
      { log: "g1" },
    );
    // An unknown head (not in welcome, or followed from now): ask once from the cursor.
    engine.start(undefined, 10);
    expect(syncs).toEqual([3]);
    engine.onSynced([{ useq: 4, u: m("g1", 20) }], false, 4);
    engine.onPush(5, m("g1", 21));
    expect(store.logCursor("g1")).toBe(5);
    expect(store.cursor()).toBe(0);
    expect(events.map((e) => e.type)).toEqual(["message", "message"]);
    expect(engine.takeAck()).toBeUndefined();
    // The group's own membership entries do not make it follow anything.
    engine.onPush(6, { k: "conv", conv: large("g2", 0) });
    expect(store.logCursor("g2")).toBeUndefined();
  });
});

describe("SyncEngine property", () => {
  it("under drops, duplicates, reordering, short pages, refusals and reconnects, every update is applied once, in order", () => {
    fc.assert(
      fc.property(
        logArb,
        fc.array(actionArb, { maxLength: 80 }),
        pipelineArb,
        // The user's log, or a large group's (its cursor is the store's logCursor; a reconnect
        // may not know its head).
        fc.boolean(),
        (log, actions, { pipeline, pageSize }, groupLog) => {
          const store = new MemoryLocalStore();
          // The cursor may only step by one (or restart at 0, which never happens here).
          const cursors: number[] = [];
          if (groupLog) {
            store.setLogCursor("g", 0);
            const setLogCursor = store.setLogCursor.bind(store);
            store.setLogCursor = (conv: string, n: number) => {
              expect([conv, n]).toEqual(["g", (store.logCursor("g") ?? 0) + 1]);
              cursors.push(n);
              setLogCursor(conv, n);
            };
          } else {
            const setCursor = store.setCursor.bind(store);
            store.setCursor = (n: number) => {
              expect(n).toBe(store.cursor() + 1);
              cursors.push(n);
              setCursor(n);
            };
          }
          const events: SyncEvent[] = [];
          // Outstanding requests, answered in the order sent (as a connection does).
          let outstanding: number[] = [];
          const engine = new SyncEngine(
            store,
            {
              emit: (e) => events.push(e),
              requestSync: (cursor) => {
                // At most `pipeline` syncs in flight, not one per push.
                expect(outstanding.length).toBeLessThan(pipeline);
                outstanding.push(cursor);
              },
              caughtUp: () => {},
            },
            groupLog ? { pipeline, log: "g" } : { pipeline },
          );
          let head = 0;
          let lastPushed: LoggedUpdate | undefined;
          const entry = (useq: number): LoggedUpdate => ({ useq, u: log[useq - 1]! });
          // The server answers with at most the request's limit, fewer when it trims the page.
          const answer = (limit: number): void => {
            const from = outstanding.shift();
            if (from === undefined) return;
            const to = Math.min(head, from + Math.min(limit, pageSize));
            const updates: LoggedUpdate[] = [];
            for (let useq = from + 1; useq <= to; useq++) updates.push(entry(useq));
            engine.onSynced(updates, to < head, head);
          };
          engine.start(head, pageSize);
          for (const act of actions) {
            switch (act.a) {
              case "grow": {
                const before = head;
                head = Math.min(log.length, head + act.n);
                if (act.live) {
                  for (let useq = before + 1; useq <= head; useq++) {
                    lastPushed = entry(useq);
                    engine.onPush(useq, lastPushed.u);
                  }
                }
                break;
              }
              case "push":
                if (head > 0) {
                  lastPushed = entry((act.i % head) + 1); // any already-committed entry, any order
                  engine.onPush(lastPushed.useq, lastPushed.u);
                }
                break;
              case "dup":
                if (lastPushed) engine.onPush(lastPushed.useq, lastPushed.u);
                break;
              case "sync":
                answer(act.limit);
                break;
              case "fail": // a retryable refusal of the oldest outstanding request
                if (outstanding.shift() !== undefined) engine.onSyncFailed();
                break;
              case "resume": // the refusal's retry-after has passed
                engine.resume();
                break;
              case "reconnect":
                engine.stop();
                outstanding = [];
                engine.start(groupLog && act.unknownHead ? undefined : head, pageSize);
                break;
            }
          }
          // Finally the whole log is committed, its last entry pushed, and any refusal's
          // retry-after passes: the same connection catches up...
          head = log.length;
          engine.resume();
          if (head > 0) engine.onPush(head, log[head - 1]!);
          for (let i = 0; outstanding.length > 0 && i < 1000; i++) answer(7);
          expect(engine.cursor).toBe(log.length);
          // ...and so does a fresh one.
          engine.stop();
          outstanding = [];
          engine.start(head, pageSize);
          for (let i = 0; outstanding.length > 0 && i < 1000; i++) answer(7);

          expect(engine.cursor).toBe(log.length);
          expect(engine.caughtUp).toBe(true);
          expect(cursors).toEqual(log.map((_, i) => i + 1));
          // Every update's effect reached the application exactly once, in log order...
          expect(events.map(describeUpdate)).toEqual(log.map(describeUpdate));
          // ...so messages are seen once each, in strictly increasing seq per conversation.
          const lastSeq = new Map<string, number>();
          for (const e of events) {
            if (e.type !== "message") continue;
            expect(e.msg.seq).toBeGreaterThan(lastSeq.get(e.msg.conv) ?? 0);
            lastSeq.set(e.msg.conv, e.msg.seq);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
