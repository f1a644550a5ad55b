import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import fc from "fast-check";
import { describe, it, expect, beforeEach } from "vitest";
import { encodeJson } from "@parley/protocol";
import type { ErrorFrame, Message, PushFrame, SendFrame, SentFrame, ServerFrame } from "@parley/protocol";
import { ManualClock } from "../clock/manual-clock.ts";
import { MemoryStore } from "../store/memory/memory-store.ts";
import type { Principal } from "./api.ts";
import type { Core } from "./core.ts";
import { newTestCore } from "../../test/test-core.ts";
import type { CoreOptions } from "./options.ts";
import type { Store } from "./ports/store.ts";
import { TestConnection } from "./testing/test-connection.ts";

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
/** V8's full collection, for tests of what stays reachable. */
setFlagsFromString("--expose-gc");
const collectGarbage = runInNewContext("gc") as () => void;
const isPush = (f: ServerFrame): f is PushFrame => f.t === "push";
const isError = (f: ServerFrame): f is ErrorFrame => f.t === "error";
const pushedMessages = (c: TestConnection): Message[] =>
  c.frames.filter(isPush).flatMap((f) => (f.u.k === "msg" ? [f.u.msg] : []));

interface Account {
  p: Principal;
  token: string;
}

describe("Core", () => {
  let clock: ManualClock;
  let core: Core;

  /** A Core on in-memory adapters and the test's ManualClock. */
  function makeCore(store: Store = new MemoryStore(), options: Partial<CoreOptions> = {}): Core {
    return newTestCore({ store, clock, options });
  }

  async function account(name: string): Promise<Account> {
    await core.register(name, "password-" + name);
    const login = await core.login(name, "password-" + name, "test");
    return { p: await core.authenticate(login.token), token: login.token };
  }

  async function connect(a: Account, versions = [1]): Promise<TestConnection> {
    const c = new TestConnection(core);
    c.receive({ t: "hello", versions, token: a.token });
    await c.waitFor((f) => f.t === "welcome");
    return c;
  }

  beforeEach(() => {
    clock = new ManualClock(1_700_000_000_000);
    core = makeCore();
  });

  describe("accounts", () => {
    it("registers, logs in and authenticates; each login is a device", async () => {
      const a = await account("alice");
      const second = await core.login("alice", "password-alice", "phone");
      expect(second.device).not.toBe(a.p.device);
      const devices = await core.listDevices(a.p);
      expect(devices.map((d) => d.current).sort()).toEqual([false, true]);
    });

    it("refuses bad names, short passwords, taken names and wrong passwords", async () => {
      await expect(core.register("", "password1")).rejects.toMatchObject({ code: "E_INVALID" });
      await expect(core.register("a b", "password1")).rejects.toMatchObject({ code: "E_INVALID" });
      await expect(core.register("bob", "short")).rejects.toMatchObject({ code: "E_INVALID" });
      await core.register("bob", "password1");
      await expect(core.register("BOB", "password2")).rejects.toMatchObject({ code: "E_CONFLICT" });
      await expect(core.login("bob", "wrong-password", "x")).rejects.toMatchObject({
        code: "E_BAD_CREDENTIALS",
      });
      await expect(core.login("nobody", "password1", "x")).rejects.toMatchObject({
        code: "E_BAD_CREDENTIALS",
      });
      await expect(core.authenticate("forged")).rejects.toMatchObject({ code: "E_TOKEN_INVALID" });
    });

    it("names users by id, leaving unknown ids out; refuses 0, 101 or malformed ids", async () => {
      const a = await account("alice");
      const b = await core.register("bob", "password-bob");
      expect(await core.getUsers(a.p, ["u_nobody", b.id, a.p.user, b.id])).toEqual([
        { id: b.id, name: "bob" },
        { id: a.p.user, name: "alice" },
      ]);
      const refused = [[], Array.from({ length: 101 }, () => b.id), [""], ["x".repeat(65)], [5]];
      for (const ids of refused) {
        await expect(core.getUsers(a.p, ids as string[])).rejects.toMatchObject({ code: "E_INVALID" });
      }
    });

    it("expires tokens and revokes devices, closing their connections", async () => {
      const a = await account("alice");
      const conn = await connect(a);
      await core.revokeDevice(a.p, a.p.device);
      expect(conn.closedWith?.code).toBe(4101);
      await expect(core.authenticate(a.token)).rejects.toMatchObject({ code: "E_TOKEN_INVALID" });
      const b = await core.login("alice", "password-alice", "x");
      clock.advance(core.options.tokenTtlMs + 1);
      await expect(core.authenticate(b.token)).rejects.toMatchObject({ code: "E_TOKEN_INVALID" });
    });
  });

  describe("sessions", () => {
    it("refuses any frame before hello with E_NOT_AUTHENTICATED and closes 4100", async () => {
      const c = new TestConnection(core);
      c.receive({ t: "ping", n: 1 });
      const err = await c.waitFor(isError);
      expect(err.code).toBe("E_NOT_AUTHENTICATED");
      expect(c.closedWith?.code).toBe(4100);
    });

    it("refuses a bad token (4101) and an unknown version (4102)", async () => {
      const c1 = new TestConnection(core);
      c1.receive({ t: "hello", versions: [1], token: "nope" });
      expect((await c1.waitFor(isError)).code).toBe("E_TOKEN_INVALID");
      expect(c1.closedWith?.code).toBe(4101);
      const a = await account("alice");
      const c2 = new TestConnection(core);
      c2.receive({ t: "hello", versions: [99], token: a.token });
      expect((await c2.waitFor(isError)).code).toBe("E_UNSUPPORTED_VERSION");
      expect(c2.closedWith?.code).toBe(4102);
    });

    it("closes a connection that does not say hello in time", () => {
      const c = new TestConnection(core);
      clock.advance(core.options.helloTimeoutMs + 1);
      expect(c.frames.find(isError)?.code).toBe("E_TIMEOUT");
      expect(c.closedWith?.code).toBe(4003);
    });

    it("lets go of the hello timer once the session is ready (memory per idle connection)", async () => {
      const a = await account("alice");
      const handles: Array<WeakRef<object>> = [];
      const setTimeout = clock.setTimeout.bind(clock);
      clock.setTimeout = (fn, ms) => {
        const handle = setTimeout(fn, ms);
        handles.push(new WeakRef(handle));
        return handle;
      };
      const c = new TestConnection(core);
      const helloTimer = handles[0];
      expect(helloTimer).toBeDefined();
      c.receive({ t: "hello", versions: [1], token: a.token });
      await c.waitFor((f) => f.t === "welcome");
      // A WeakRef's target is kept until the current job ends: collect in a later one.
      await new Promise((resolve) => setImmediate(resolve));
      collectGarbage();
      expect(helloTimer!.deref()).toBeUndefined();
      expect(c.closedWith).toBeUndefined();
    });

    it("pings a silent connection and closes it after 2.5 heartbeats", async () => {
      const c = await connect(await account("alice"));
      clock.advance(core.options.heartbeatMs * 1.2);
      expect(c.frames.some((f) => f.t === "ping")).toBe(true);
      clock.advance(core.options.heartbeatMs * 2);
      expect(c.closedWith?.code).toBe(4002);
    });

    it("rate-limits requests with a retryable error carrying retryAfterMs", async () => {
      const c = await connect(await account("alice"));
      const n = core.options.frameBurst + 5;
      for (let i = 0; i < n; i++) c.receive({ t: "sync", id: i, cursor: 0 });
      const err = await c.waitFor(isError);
      expect(err.code).toBe("E_RATE_LIMITED");
      expect(err.retry).toBe(true);
      expect(err.retryAfterMs).toBeGreaterThan(0);
      expect(c.closedWith).toBeUndefined();
    });

    it("refuses requests beyond a bounded per-connection queue with E_OVERLOADED", async () => {
      // A store whose history reads wait until the test opens the gate: requests pile up.
      let open!: () => void;
      const gate = new Promise<void>((r) => (open = r));
      class SlowHistoryStore extends MemoryStore {
        override async history(...args: Parameters<MemoryStore["history"]>): Promise<Message[]> {
          await gate;
          return super.history(...args);
        }
      }
      core = makeCore(new SlowHistoryStore(), { frameBurst: 100, framesPerSecond: 100 });
      const a = await account("alice");
      const b = await account("bob");
      const conv = await core.createDirect(a.p, b.p.user);
      const c = await connect(a);
      // Each second the rate limit admits another burst; none of them completes.
      let id = 0;
      for (let second = 0; second < 3; second++) {
        for (let i = 0; i < 100; i++) c.receive({ t: "history", id: id++, conv: conv.id });
        clock.advance(1000);
      }
      await new Promise((r) => setTimeout(r, 20));
      const refused = c.frames.filter(isError);
      expect(refused).toHaveLength(200);
      for (const e of refused) {
        expect(e).toMatchObject({ code: "E_OVERLOADED", retry: true });
        expect(e.retryAfterMs).toBeGreaterThan(0);
      }
      open();
      await c.waitFor(() => c.frames.filter((f) => f.t === "history").length === 100);
      expect(c.closedWith).toBeUndefined();
    });

    it("holds concurrent hellos of one user to maxConnectionsPerUser", async () => {
      core = makeCore(new MemoryStore(), { maxConnectionsPerUser: 2 });
      const a = await account("alice");
      const conns = [0, 1, 2, 3].map(() => new TestConnection(core));
      for (const c of conns) c.receive({ t: "hello", versions: [1], token: a.token });
      await Promise.all(conns.map((c) => c.waitFor((f) => f.t === "welcome" || f.t === "error")));
      const welcomed = conns.filter((c) => c.frames.some((f) => f.t === "welcome"));
      expect(welcomed).toHaveLength(2);
      for (const c of conns.filter((x) => !welcomed.includes(x))) {
        expect(c.frames.find(isError)?.code).toBe("E_RATE_LIMITED");
        expect(c.closedWith?.code).toBe(4004);
      }
      // A closed connection frees its place.
      welcomed[0]!.close(4000, "bye");
      await connect(a);
    });
  });

  describe("messaging", () => {
    it("delivers a direct message to both users' devices, acks with seq after commit", async () => {
      const a = await account("alice");
      const b = await account("bob");
      const conv = await core.createDirect(a.p, b.p.user);
      expect((await core.createDirect(b.p, a.p.user)).id).toBe(conv.id);
      const ca = await connect(a);
      const cb = await connect(b);
      ca.receive({ t: "send", id: 1, conv: conv.id, cid: "m1", type: "text/plain", body: text("hi") });
      const sent = await ca.reply(1);
      expect(sent).toMatchObject({ t: "sent", seq: 1, cid: "m1" });
      await cb.waitFor((f) => isPush(f) && f.u.k === "msg");
      expect(pushedMessages(cb).map((m) => new TextDecoder().decode(m.body))).toEqual(["hi"]);
      // The sender's own devices see it too (their other devices must).
      await ca.waitFor((f) => isPush(f) && f.u.k === "msg");
    });

    describe("protocol version 2: the sender gets `sent` in place of its own message's push", () => {
      const answers = (c: TestConnection, id: number): ServerFrame[] =>
        c.frames.filter((f) => "id" in f && f.id === id);
      const msgPushes = (c: TestConnection): PushFrame[] =>
        c.frames.filter(isPush).filter((f) => f.u.k === "msg");
      const send = (id: number, conv: string, cid: string) =>
        ({ t: "send", id, conv, cid, type: "text/plain", body: text(cid) }) as const;

      it("answers with the entry's useq where the push would be; nobody else's frames change", async () => {
        const a = await account("alice");
        const b = await account("bob");
        const phone = await core.login("alice", "password-alice", "phone");
        const conv = await core.createDirect(a.p, b.p.user);
        const ca = await connect(a, [1, 2]);
        expect(ca.frames[0]).toMatchObject({ t: "welcome", version: 2, head: 1 });
        const cPhone = await connect({ p: await core.authenticate(phone.token), token: phone.token });
        expect(cPhone.frames[0]).toMatchObject({ t: "welcome", version: 1 });
        const cb = await connect(b, [2]);
        expect(await ca.request(send(1, conv.id, "m1"))).toEqual({
          t: "sent",
          id: 1,
          conv: conv.id,
          cid: "m1",
          seq: 1,
          ts: clock.now(),
          useq: 2,
        });
        expect(await ca.request(send(2, conv.id, "m2"))).toMatchObject({ t: "sent", seq: 2, useq: 3 });
        // Sends are answered in order: once the second is, anything more for the first is here.
        expect(answers(ca, 1)).toHaveLength(1);
        expect(msgPushes(ca)).toEqual([]);
        // The recipient and the sender's other (version 1) device get the pushes as ever.
        for (const c of [cb, cPhone]) {
          await c.waitFor((f) => isPush(f) && f.u.k === "msg" && f.u.msg.cid === "m2");
          expect(msgPushes(c).map((f) => f.u.k === "msg" && f.u.msg.cid)).toEqual(["m1", "m2"]);
        }
        // A version 1 device that sends gets its push, then `sent` without a useq; the version 2
        // device gets the push of that message, which it did not send.
        expect(await cPhone.request(send(1, conv.id, "p1"))).toEqual({
          t: "sent",
          id: 1,
          conv: conv.id,
          cid: "p1",
          seq: 3,
          ts: clock.now(),
        });
        expect(msgPushes(cPhone).at(-1)).toMatchObject({ useq: 4, u: { msg: { cid: "p1" } } });
        await ca.waitFor((f) => isPush(f) && f.u.k === "msg" && f.u.msg.cid === "p1");
        // Its log has no hole: what it was pushed and answered covers useq 1 to 4.
        const useqs = ca.frames.flatMap((f) => (isPush(f) || (f.t === "sent" && f.useq) ? [f.useq] : []));
        expect(useqs).toEqual([2, 3, 4]);
      });

      it("answers a resend of a committed cid with a plain `sent`, as there is no new entry", async () => {
        const a = await account("alice");
        const b = await account("bob");
        const conv = await core.createDirect(a.p, b.p.user);
        const ca = await connect(a, [2]);
        expect(await ca.request(send(1, conv.id, "m1"))).toMatchObject({ t: "sent", seq: 1, useq: 2 });
        const again = await ca.request(send(2, conv.id, "m1"));
        expect(again).toMatchObject({ t: "sent", seq: 1, cid: "m1" });
        expect(again).not.toHaveProperty("useq");
      });

      it("answers two sends of one cid in flight at once exactly once each, one with the useq", async () => {
        const a = await account("alice");
        const b = await account("bob");
        const conv = await core.createDirect(a.p, b.p.user);
        const ca = await connect(a, [2]);
        ca.receive(send(1, conv.id, "dup"));
        ca.receive(send(2, conv.id, "dup"));
        const [first, second] = [await ca.reply(1), await ca.reply(2)];
        expect(first).toMatchObject({ t: "sent", id: 1, seq: 1, useq: 2 });
        expect(second).toMatchObject({ t: "sent", id: 2, seq: 1 });
        expect(second).not.toHaveProperty("useq");
        expect(answers(ca, 1)).toHaveLength(1);
        expect(answers(ca, 2)).toHaveLength(1);
      });

      it("pushes what was stored when a resend of the cid on another connection changed it", async () => {
        const a = await account("alice");
        const b = await account("bob");
        const conv = await core.createDirect(a.p, b.p.user);
        // Two connections of one device, as when a client reconnects before the server has seen
        // the old connection go; the second resends the cid, with a body the client changed.
        const [c1, c2] = [await connect(a, [2]), await connect(a, [2])];
        c1.receive(send(1, conv.id, "m1"));
        c2.receive({ ...send(1, conv.id, "m1"), body: text("changed") });
        expect(await c1.reply(1)).toMatchObject({ t: "sent", seq: 1, useq: 2 });
        const answer = await c2.reply(1);
        expect(answer).toMatchObject({ t: "sent", seq: 1 });
        expect(answer).not.toHaveProperty("useq");
        expect(msgPushes(c2).map((f) => f.u.k === "msg" && new TextDecoder().decode(f.u.msg.body))).toEqual([
          "m1",
        ]);
      });

      it("answers every send once, and gives each connection every entry once, in order", async () => {
        // Two connections of one device (a reconnect the server has not seen end), pipelined sends
        // of a few cids (so resends and duplicates in flight), some to a conversation that does
        // not exist, and another user's messages.
        type Step = { k: "send"; conn: 0 | 1; cid: string; ok: boolean } | { k: "bob" } | { k: "tick" };
        const step = fc.oneof(
          fc.record({
            k: fc.constant("send" as const),
            conn: fc.constantFrom(0 as const, 1 as const),
            cid: fc.constantFrom("a", "b", "c", "d", "e"),
            ok: fc.boolean(),
          }),
          fc.constant({ k: "bob" as const }),
          fc.constant({ k: "tick" as const }),
        );
        await fc.assert(
          fc.asyncProperty(fc.array(step, { maxLength: 30 }), async (steps: Step[]) => {
            core = makeCore();
            const a = await account("alice");
            const b = await account("bob");
            const conv = await core.createDirect(a.p, b.p.user);
            const conns = [await connect(a, [2]), await connect(a, [1, 2])];
            const asked: Array<Map<number, { cid: string; ok: boolean }>> = [new Map(), new Map()];
            let bobs = 0;
            for (const s of steps) {
              if (s.k === "send") {
                const id = asked[s.conn]!.size + 1;
                asked[s.conn]!.set(id, { cid: s.cid, ok: s.ok });
                conns[s.conn]!.receive(send(id, s.ok ? conv.id : "c_nowhere", s.cid));
              } else if (s.k === "bob") {
                await core.send(b.p, { conv: conv.id, cid: `bob${++bobs}`, type: "t", body: text("b") });
              } else await new Promise((resolve) => setTimeout(resolve, 0));
            }
            for (const [n, c] of conns.entries()) for (const id of asked[n]!.keys()) await c.reply(id);
            const page = await conns[0]!.request({ t: "sync", id: 10_000, cursor: 0 });
            if (page.t !== "synced") throw new Error(`sync answered ${page.t}`);
            const entries = page.updates;
            const byCid = new Map(
              entries.flatMap((e) =>
                e.u.k === "msg" && e.u.msg.from === a.p.user ? [[e.u.msg.cid, e.u.msg]] : [],
              ),
            );
            for (const [n, c] of conns.entries()) {
              const head = (c.frames[0] as { head: number }).head;
              // Each request once: `sent` with the seq its cid was stored under, or an error for
              // a conversation that does not exist.
              for (const [id, { cid, ok }] of asked[n]!) {
                const replies = answers(c, id);
                expect(replies).toHaveLength(1);
                if (ok) expect(replies[0]).toMatchObject({ t: "sent", cid, seq: byCid.get(cid)!.seq });
                else expect(replies[0]).toMatchObject({ t: "error" });
              }
              // Every entry after the welcome's head once, in order: pushed, or `sent` in its place
              // for a message this connection sent (the same cid, the same content).
              const got = c.frames.flatMap((f) =>
                isPush(f) ? [f.useq] : f.t === "sent" && f.useq !== undefined ? [f.useq] : [],
              );
              expect(got).toEqual(entries.filter((e) => e.useq > head).map((e) => e.useq));
              for (const f of c.frames) {
                if (f.t !== "sent" || f.useq === undefined) continue;
                const entry = entries[f.useq - 1]!;
                expect(entry.u).toMatchObject({ k: "msg", msg: { cid: f.cid, seq: f.seq, dev: a.p.device } });
                expect(asked[n]!.get(f.id)).toMatchObject({ cid: f.cid, ok: true });
              }
            }
          }),
          { numRuns: 60 },
        );
      }, 60_000);

      it("forgets a refused send: the same cid, sent again where it may go, gets its useq", async () => {
        const a = await account("alice");
        const b = await account("bob");
        const conv = await core.createDirect(a.p, b.p.user);
        const ca = await connect(a, [2]);
        expect(await ca.request(send(1, "c_nowhere", "m1"))).toMatchObject({
          t: "error",
          code: "E_NOT_FOUND",
        });
        expect(await ca.request(send(2, conv.id, "m1"))).toMatchObject({ t: "sent", id: 2, seq: 1, useq: 2 });
        // The same cid in another conversation is refused, and answered once.
        const other = await core.createDirect(a.p, (await account("carol")).p.user);
        expect(await ca.request(send(3, other.id, "m1"))).toMatchObject({ t: "error", code: "E_INVALID" });
        expect(answers(ca, 3)).toHaveLength(1);
      });
    });

    it("answers a send frame with bad fields with an error to its id, and stores nothing", async () => {
      const a = await account("alice");
      const b = await account("bob");
      const conv = await core.createDirect(a.p, b.p.user);
      const ca = await connect(a);
      const good = { t: "send", conv: conv.id, cid: "ok", type: "text/plain", body: text("x") } as const;
      const bad: Array<[Record<string, unknown>, string]> = [
        [{ cid: "" }, "E_INVALID"],
        [{ cid: "c".repeat(65) }, "E_INVALID"],
        [{ type: "" }, "E_INVALID"],
        [{ body: "x" }, "E_INVALID"],
        [{ replyTo: 0 }, "E_INVALID"],
        [{ conv: 7 }, "E_NOT_FOUND"],
      ];
      for (const [i, [change, code]] of bad.entries()) {
        const frame = { ...good, id: 10 + i, cid: `bad${i}`, ...change } as unknown as SendFrame;
        expect(await ca.request(frame)).toMatchObject({ t: "error", id: 10 + i, code });
      }
      expect(await ca.request({ ...good, id: 99 })).toMatchObject({ t: "sent", id: 99, seq: 1 });
      expect((await core.history(a.p, conv.id, {})).messages.map((m) => m.cid)).toStrictEqual(["ok"]);
    });

    it("is idempotent by client id", async () => {
      const a = await account("alice");
      const b = await account("bob");
      const conv = await core.createDirect(a.p, b.p.user);
      const first = await core.send(a.p, { conv: conv.id, cid: "x", type: "text/plain", body: text("1") });
      const again = await core.send(a.p, { conv: conv.id, cid: "x", type: "text/plain", body: text("1") });
      expect(again).toMatchObject({ seq: first.seq, duplicate: true });
      expect((await core.history(a.p, conv.id, {})).messages).toHaveLength(1);
    });

    it("keeps outsiders out: no read, no send, no existence", async () => {
      const a = await account("alice");
      const b = await account("bob");
      const eve = await account("eve");
      const conv = await core.createDirect(a.p, b.p.user);
      await core.send(a.p, { conv: conv.id, cid: "1", type: "text/plain", body: text("secret") });
      const ce = await connect(eve);
      for (const call of [
        () => core.getConversation(eve.p, conv.id),
        () => core.history(eve.p, conv.id, {}),
        () => core.send(eve.p, { conv: conv.id, cid: "e", type: "text/plain", body: text("x") }),
        () => core.getConversation(eve.p, "c_doesnotexist"),
      ]) {
        await expect(call()).rejects.toMatchObject({ code: "E_NOT_FOUND" });
      }
      ce.receive({ t: "sync", id: 1, cursor: 0 });
      const synced = await ce.reply(1);
      expect(synced).toMatchObject({ t: "synced", updates: [] });
      expect(await core.listConversations(eve.p)).toEqual([]);
      expect(pushedMessages(ce)).toEqual([]);
    });

    it("syncs an offline device from its cursor, in order", async () => {
      const a = await account("alice");
      const b = await account("bob");
      const conv = await core.createDirect(a.p, b.p.user);
      for (let i = 0; i < 30; i++) {
        await core.send(a.p, { conv: conv.id, cid: `c${i}`, type: "text/plain", body: text(String(i)) });
      }
      const cb = await connect(b);
      const welcome = cb.frames.find((f) => f.t === "welcome");
      expect(welcome && "head" in welcome ? welcome.head : -1).toBe(31); // conv + 30 messages
      cb.receive({ t: "sync", id: 7, cursor: 1, limit: 10 });
      const page = await cb.reply(7);
      if (page.t !== "synced") throw new Error("expected synced");
      expect(page.more).toBe(true);
      expect(page.updates.map((u) => u.useq)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
      expect(page.updates.map((u) => (u.u.k === "msg" ? u.u.msg.seq : 0))).toEqual([
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
      ]);
    });

    it("keeps sync and history replies within the byte budget, at least one entry each", async () => {
      core = makeCore(new MemoryStore(), { replyBudgetBytes: 2000 });
      const a = await account("alice");
      const b = await account("bob");
      const conv = await core.createDirect(a.p, b.p.user);
      for (let i = 0; i < 6; i++) {
        await core.send(a.p, {
          conv: conv.id,
          cid: `b${i}`,
          type: "bin",
          body: new Uint8Array(i === 5 ? 5000 : 700),
        });
      }
      const cb = await connect(b);
      const synced = await cb.request({ t: "sync", id: 1, cursor: 1 });
      if (synced.t !== "synced") throw new Error("expected synced");
      expect(synced.updates.map((u) => u.useq)).toEqual([2, 3]);
      expect(synced.more).toBe(true);
      const huge = await cb.request({ t: "sync", id: 2, cursor: 6 });
      expect(huge.t === "synced" && huge.updates.map((u) => u.useq)).toEqual([7]);
      const page = await cb.request({ t: "history", id: 3, conv: conv.id, before: 5 });
      expect(page.t === "history" && page.messages.map((m) => m.seq)).toEqual([3, 4]);
      expect(page.t === "history" && page.more).toBe(true);
      const both = await cb.request({ t: "history", id: 4, conv: conv.id, before: 5, after: 1 });
      expect(both).toMatchObject({ t: "error", code: "E_INVALID" });
    });

    it("counts a conversation's members against the sync byte budget", async () => {
      core = makeCore(new MemoryStore(), { replyBudgetBytes: 20_000 });
      const a = await account("alice");
      const others = [];
      for (let i = 0; i < 100; i++) others.push((await core.register(`member${i}`, "password")).id);
      const g = await core.createGroup(a.p, "big", others);
      for (let i = 0; i < 10; i++) await core.renameGroup(a.p, g.id, `big ${i}`);
      const c = await connect(a);
      const synced = await c.request({ t: "sync", id: 1, cursor: 0 });
      if (synced.t !== "synced") throw new Error("expected synced");
      // Eleven snapshots of a 101-member group are far beyond 20 kB: the page stops early.
      expect(synced.more).toBe(true);
      expect(synced.updates.length).toBeGreaterThan(0);
      expect(encodeJson(synced).length).toBeLessThanOrEqual(20_000);
    });

    it("edits, deletes and reactions follow the rules and reach every member", async () => {
      const a = await account("alice");
      const b = await account("bob");
      const conv = await core.createDirect(a.p, b.p.user);
      const m = await core.send(a.p, { conv: conv.id, cid: "1", type: "text/plain", body: text("helo") });
      const cb = await connect(b);
      cb.receive({ t: "edit", id: 1, conv: conv.id, seq: m.seq, type: "text/plain", body: text("nope") });
      expect(await cb.reply(1)).toMatchObject({ t: "error", code: "E_FORBIDDEN" });
      const ca = await connect(a);
      ca.receive({ t: "edit", id: 2, conv: conv.id, seq: m.seq, type: "text/plain", body: text("hello") });
      expect(await ca.reply(2)).toMatchObject({ t: "ok" });
      cb.receive({ t: "react", id: 3, conv: conv.id, seq: m.seq, emoji: "+1", on: true });
      expect(await cb.reply(3)).toMatchObject({ t: "ok" });
      cb.receive({ t: "delete", id: 4, conv: conv.id, seq: m.seq });
      expect(await cb.reply(4)).toMatchObject({ t: "error", code: "E_FORBIDDEN" });
      ca.receive({ t: "delete", id: 5, conv: conv.id, seq: m.seq });
      expect(await ca.reply(5)).toMatchObject({ t: "ok" });
      await cb.waitFor((f) => isPush(f) && f.u.k === "del");
      const kinds = cb.frames.filter(isPush).map((f) => f.u.k);
      expect(kinds).toEqual(["edit", "react", "del"]);
      const [msg] = (await core.history(b.p, conv.id, {})).messages;
      expect(msg?.deleted).toBe(true);
      expect(msg?.body.byteLength).toBe(0);
    });

    it("read receipts reach the sender's devices and the reader's other devices", async () => {
      const a = await account("alice");
      const b = await account("bob");
      const b2login = await core.login("bob", "password-bob", "tablet");
      const conv = await core.createDirect(a.p, b.p.user);
      const m = await core.send(a.p, { conv: conv.id, cid: "1", type: "text/plain", body: text("hi") });
      const ca = await connect(a);
      const cb2 = await connect({ p: await core.authenticate(b2login.token), token: b2login.token });
      const cb = await connect(b);
      cb.receive({ t: "receipt", id: 1, conv: conv.id, kind: "read", seq: m.seq });
      expect(await cb.reply(1)).toMatchObject({ t: "ok" });
      for (const c of [ca, cb2]) {
        const f = await c.waitFor((x) => isPush(x) && x.u.k === "receipt");
        expect(isPush(f) && f.u).toMatchObject({ k: "receipt", user: b.p.user, kind: "read", seq: 1 });
      }
    });
  });

  describe("groups", () => {
    it("enforces roles on rename, add, remove and role changes", async () => {
      const [o, m1, m2, m3] = await Promise.all(["owner", "m1", "m2", "m3"].map((n) => account(n)));
      const g = await core.createGroup(o!.p, "team", [m1!.p.user, m2!.p.user]);
      await expect(core.renameGroup(m1!.p, g.id, "x")).rejects.toMatchObject({ code: "E_FORBIDDEN" });
      await expect(core.addMembers(m1!.p, g.id, [m3!.p.user])).rejects.toMatchObject({ code: "E_FORBIDDEN" });
      await core.setRole(o!.p, g.id, m1!.p.user, "admin");
      // Deleting another's message: a group admin may, a plain member may not.
      const byOwner = await core.send(o!.p, { conv: g.id, cid: "o1", type: "t", body: text("x") });
      const byM2 = await core.send(m2!.p, { conv: g.id, cid: "m1", type: "t", body: text("y") });
      await expect(core.messaging.delete(m2!.p, g.id, byOwner.seq)).rejects.toMatchObject({
        code: "E_FORBIDDEN",
      });
      await core.messaging.delete(m1!.p, g.id, byM2.seq);
      expect((await core.history(o!.p, g.id, {})).messages.map((m) => m.deleted)).toEqual([undefined, true]);
      await core.renameGroup(m1!.p, g.id, "team2");
      await core.addMembers(m1!.p, g.id, [m3!.p.user]);
      await expect(core.removeMember(m2!.p, g.id, m3!.p.user)).rejects.toMatchObject({ code: "E_FORBIDDEN" });
      await core.removeMember(m1!.p, g.id, m3!.p.user);
      await expect(
        core.send(m3!.p, { conv: g.id, cid: "z", type: "t", body: text("") }),
      ).rejects.toMatchObject({
        code: "E_NOT_FOUND",
      });
      await expect(core.history(m3!.p, g.id, {})).rejects.toMatchObject({ code: "E_NOT_FOUND" });
      // The owner leaves: the admin inherits ownership.
      await core.removeMember(o!.p, g.id, o!.p.user);
      const after = await core.getConversation(m1!.p, g.id);
      expect(after.members.find((m) => m.user === m1!.p.user)?.role).toBe("owner");
      expect(after.name).toBe("team2");
    });
  });

  describe("large groups", () => {
    const groupPushes = (c: TestConnection, conv: string): PushFrame[] =>
      c.frames.filter((f): f is PushFrame => isPush(f) && f.log === conv);

    it("a group reaching the threshold becomes large: messages are pushed from its own log", async () => {
      core = makeCore(new MemoryStore(), { largeGroupMembers: 3 });
      const [o, m1, m2, m3] = await Promise.all(["owner", "m1", "m2", "m3"].map((n) => account(n)));
      const g = await core.createGroup(o!.p, "team", [m1!.p.user]);
      expect(g.large).toBeUndefined();
      const c1 = await connect(m1!);
      const grown = await core.addMembers(o!.p, g.id, [m2!.p.user]);
      expect(grown).toMatchObject({ large: true, logHead: 0 });
      // m1 hears of it in their own log, and from then on follows the group's log.
      const announced = await c1.waitFor(
        (f) => isPush(f) && f.log === undefined && f.u.k === "conv" && f.u.conv.large === true,
      );
      expect(announced).toMatchObject({ u: { conv: { id: g.id, logHead: 0 } } });
      const sent = await core.send(o!.p, { conv: g.id, cid: "1", type: "t", body: text("hi") });
      await c1.waitFor((f) => isPush(f) && f.log === g.id);
      expect(groupPushes(c1, g.id)).toEqual([
        { t: "push", log: g.id, useq: 1, u: { k: "msg", msg: expect.objectContaining({ seq: sent.seq }) } },
      ]);
      // A member connecting later is told the log's head in welcome and can page through it.
      const c2 = await connect(m2!);
      expect(c2.frames[0]).toMatchObject({ t: "welcome", logs: [{ conv: g.id, head: 1 }] });
      const page = await c2.request({ t: "sync", id: 1, cursor: 0, log: g.id });
      expect(page).toMatchObject({ t: "synced", log: g.id, head: 1, more: false, updates: [{ useq: 1 }] });
      // Pushes reach it too; a non-member can neither read the log nor hear its pushes.
      const c3 = await connect(m3!);
      expect(c3.frames[0]).not.toHaveProperty("logs");
      expect(await c3.request({ t: "sync", id: 2, cursor: 0, log: g.id })).toMatchObject({
        t: "error",
        code: "E_NOT_FOUND",
      });
      await core.send(o!.p, { conv: g.id, cid: "2", type: "t", body: text("again") });
      await c2.waitFor((f) => isPush(f) && f.log === g.id);
      await c1.waitFor((f) => isPush(f) && f.log === g.id && f.useq === 2);
      expect(groupPushes(c3, g.id)).toEqual([]);
    });

    it("answers a version 2 send to a large group once, in place of its log's push or after it", async () => {
      core = makeCore(new MemoryStore(), { largeGroupMembers: 2 });
      const [o, m1] = await Promise.all(["owner", "m1"].map((n) => account(n)));
      const g = await core.createGroup(o!.p, "team", [m1!.p.user]);
      expect(g.large).toBe(true);
      const co = await connect(o!, [1, 2]);
      const c1 = await connect(m1!, [1, 2]);
      for (let id = 1; id <= 5; id++)
        co.receive({ t: "send", id, conv: g.id, cid: `g${id}`, type: "t", body: text("x") });
      await c1.waitFor((f) => isPush(f) && f.log === g.id && f.useq === 5);
      for (let id = 1; id <= 5; id++) {
        await co.reply(id);
        const answers = co.frames.filter((f) => "id" in f && f.id === id);
        expect(answers).toEqual([expect.objectContaining({ t: "sent", cid: `g${id}` })]);
        // Either it stands for the log's entry, or that entry is pushed: never both, never neither.
        const pushed = groupPushes(co, g.id).filter((f) => f.u.k === "msg" && f.u.msg.cid === `g${id}`);
        const sent = answers[0] as SentFrame;
        if (sent.useq !== undefined) {
          expect(sent).toMatchObject({ log: g.id, useq: id });
          expect(pushed).toEqual([]);
        } else {
          await co.waitFor((f) => isPush(f) && f.log === g.id && f.useq === id);
        }
      }
      expect(groupPushes(c1, g.id).map((f) => f.useq)).toEqual([1, 2, 3, 4, 5]);
    });

    it("refuses sends while the fan-out queue is over maxFanOutBacklog", async () => {
      core = makeCore(new MemoryStore(), { maxFanOutBacklog: 3 });
      const a = await account("alice");
      const b = await account("bob");
      const conv = await core.createDirect(a.p, b.p.user);
      const sent: string[] = [];
      for (let i = 0; i < 3; i++) core.fanOut(() => sent.push(`push ${i}`));
      await expect(
        core.send(a.p, { conv: conv.id, cid: "1", type: "t", body: text("x") }),
      ).rejects.toMatchObject({ code: "E_OVERLOADED" });
      // Once the queue has gone out, sends are admitted again.
      await new Promise((resolve) => setImmediate(resolve));
      expect(sent).toEqual(["push 0", "push 1", "push 2"]);
      await expect(
        core.send(a.p, { conv: conv.id, cid: "2", type: "t", body: text("x") }),
      ).resolves.toMatchObject({ seq: 1 });
    });

    it("checks roles and membership in a large group member by member, its state listing only some", async () => {
      core = makeCore(new MemoryStore(), { largeGroupMembers: 3 });
      const [o, m1, m2, m3, out] = await Promise.all(
        ["owner", "m1", "m2", "m3", "outsider"].map((n) => account(n)),
      );
      const g = await core.createGroup(o!.p, "team", [m1!.p.user, m2!.p.user]);
      const users = (c: { members: Array<{ user: string }> }) => c.members.map((m) => m.user);
      expect(g).toMatchObject({ large: true, memberCount: 3 });
      expect(users(g)).toEqual([o!.p.user]);
      expect(users(await core.getConversation(m1!.p, g.id))).toEqual([o!.p.user, m1!.p.user]);
      // Created large: m1's log never held the whole list, only the owner and m1.
      const c1 = await connect(m1!);
      const page = await c1.request({ t: "sync", id: 1, cursor: 0 });
      expect(page).toMatchObject({ t: "synced", updates: [{ useq: 1, u: { k: "conv" } }] });
      const first = page.t === "synced" ? page.updates[0]?.u : undefined;
      expect(first?.k === "conv" && users(first.conv)).toEqual([o!.p.user, m1!.p.user]);
      await expect(core.getConversation(out!.p, g.id)).rejects.toMatchObject({ code: "E_NOT_FOUND" });
      await expect(core.listMembers(out!.p, g.id, undefined, 10)).rejects.toMatchObject({
        code: "E_NOT_FOUND",
      });
      await expect(core.listMembers(m1!.p, g.id, undefined, 0)).rejects.toMatchObject({ code: "E_INVALID" });
      expect((await core.listMembers(m1!.p, g.id, undefined, 10)).map((m) => m.user)).toEqual(
        [o!.p.user, m1!.p.user, m2!.p.user].sort(),
      );
      // Plain members are not listed, yet found: a plain member may not add or remove.
      await expect(core.addMembers(m1!.p, g.id, [m3!.p.user])).rejects.toMatchObject({ code: "E_FORBIDDEN" });
      await expect(core.removeMember(m1!.p, g.id, m2!.p.user)).rejects.toMatchObject({ code: "E_FORBIDDEN" });
      // Adding a member again is a no-op; a new one counts.
      expect(await core.addMembers(o!.p, g.id, [m1!.p.user])).toMatchObject({ memberCount: 3 });
      expect(await core.addMembers(o!.p, g.id, [m3!.p.user, m1!.p.user])).toMatchObject({ memberCount: 4 });
      await expect(core.setRole(o!.p, g.id, out!.p.user, "admin")).rejects.toMatchObject({
        code: "E_NOT_FOUND",
      });
      expect(users(await core.setRole(o!.p, g.id, m2!.p.user, "admin"))).toEqual([o!.p.user, m2!.p.user]);
      await core.removeMember(m2!.p, g.id, m3!.p.user);
      await expect(core.getConversation(m3!.p, g.id)).rejects.toMatchObject({ code: "E_NOT_FOUND" });
      // Presence: m1 and m2 share only the large group, which does not list m1 to m2.
      expect(await core.presence.visible(m2!.p, [m1!.p.user, out!.p.user, m3!.p.user])).toEqual([m1!.p.user]);
      // With no admin left, the owner's heir is the longest-standing member, not the first listed.
      await core.setRole(o!.p, g.id, m2!.p.user, "member");
      await core.removeMember(o!.p, g.id, o!.p.user);
      const after = await core.getConversation(m2!.p, g.id);
      expect(after.members.map((m) => [m.user, m.role])).toEqual([
        [m1!.p.user, "owner"],
        [m2!.p.user, "member"],
      ]);
    });

    it("typing in a large group reaches the other online members once, not the typist", async () => {
      core = makeCore(new MemoryStore(), { largeGroupMembers: 3 });
      const [o, m1, m2, out] = await Promise.all(["owner", "m1", "m2", "outsider"].map((n) => account(n)));
      const g = await core.createGroup(o!.p, "team", [m1!.p.user, m2!.p.user]);
      expect(g.large).toBe(true);
      const co = await connect(o!);
      const c1 = await connect(m1!);
      const c2 = await connect(m2!);
      const cx = await connect(out!);
      const isTyping = (f: ServerFrame): boolean => f.t === "typing";
      co.receive({ t: "typing", conv: g.id });
      for (const c of [c1, c2]) {
        expect(await c.waitFor(isTyping)).toEqual({ t: "typing", conv: g.id, user: o!.p.user });
      }
      // An outsider's typing goes nowhere.
      cx.receive({ t: "typing", conv: g.id });
      await core.send(o!.p, { conv: g.id, cid: "1", type: "t", body: text("x") });
      await c1.waitFor((f) => isPush(f) && f.log === g.id);
      expect(co.frames.filter(isTyping)).toEqual([]);
      expect(c1.frames.filter(isTyping)).toHaveLength(1);
      expect(cx.frames.filter(isTyping)).toEqual([]);
    });

    it("a member removed while their hello reads the list of large groups does not follow it", async () => {
      // The list is read before the removal commits and returned after it: stale.
      let gate: (() => void) | undefined;
      let listed: (() => void) | undefined;
      const listedOnce = new Promise<void>((resolve) => (listed = resolve));
      class SlowListStore extends MemoryStore {
        override async largeConversations(user: string) {
          const list = await super.largeConversations(user);
          if (gate === undefined && list.length > 0) {
            const opened = new Promise<void>((resolve) => (gate = resolve));
            listed?.();
            await opened;
          }
          return list;
        }
      }
      core = makeCore(new SlowListStore(), { largeGroupMembers: 3 });
      const [o, m1, m2] = await Promise.all(["owner", "m1", "m2"].map((n) => account(n)));
      const g = await core.createGroup(o!.p, "team", [m1!.p.user, m2!.p.user]);
      const c2 = new TestConnection(core);
      c2.receive({ t: "hello", versions: [1], token: m2!.token });
      await listedOnce;
      await core.removeMember(o!.p, g.id, m2!.p.user);
      gate!();
      await c2.waitFor((f) => f.t === "welcome");
      await c2.waitFor((f) => isPush(f) && f.u.k === "left");
      const c1 = await connect(m1!);
      await core.send(o!.p, { conv: g.id, cid: "1", type: "t", body: text("not for m2") });
      await c1.waitFor((f) => isPush(f) && f.log === g.id && f.u.k === "msg");
      expect(c2.frames.filter((f) => isPush(f) && f.log === g.id)).toEqual([]);
    });

    it("joining starts following, leaving stops; receipts reach only the reader's devices", async () => {
      core = makeCore(new MemoryStore(), { largeGroupMembers: 2 });
      const [o, m1, m2] = await Promise.all(["owner", "m1", "m2"].map((n) => account(n)));
      const g = await core.createGroup(o!.p, "team", [m1!.p.user]);
      expect(g.large).toBe(true);
      const co = await connect(o!);
      const c2 = await connect(m2!);
      await core.addMembers(o!.p, g.id, [m2!.p.user]);
      const joined = await c2.waitFor((f) => isPush(f) && f.u.k === "conv");
      // The joiner starts after the group's own entry for the change.
      expect(joined).toMatchObject({ u: { conv: { large: true, logHead: 1 } } });
      await core.send(o!.p, { conv: g.id, cid: "1", type: "t", body: text("hi") });
      await c2.waitFor((f) => isPush(f) && f.log === g.id && f.u.k === "msg");
      const c1 = await connect(m1!);
      c1.receive({ t: "receipt", id: 1, conv: g.id, kind: "read", seq: 1 });
      expect(await c1.reply(1)).toMatchObject({ t: "ok" });
      await c1.waitFor((f) => isPush(f) && f.u.k === "receipt");
      // The owner's devices are not told (N members x N receipts is what large groups avoid).
      expect(co.frames.filter((f) => isPush(f) && f.u.k === "receipt")).toEqual([]);
      await core.removeMember(o!.p, g.id, m2!.p.user);
      await c2.waitFor((f) => isPush(f) && f.u.k === "left");
      const before = groupPushes(c2, g.id).length;
      await core.send(o!.p, { conv: g.id, cid: "2", type: "t", body: text("gone") });
      await c1.waitFor((f) => isPush(f) && f.log === g.id && f.u.k === "msg" && f.u.msg.seq === 2);
      expect(groupPushes(c2, g.id)).toHaveLength(before);
    });
  });

  it("an owner's leave is one write: if it fails, the group keeps its one owner", async () => {
    class FailingRemoveStore extends MemoryStore {
      override changeConversation(change: Parameters<MemoryStore["changeConversation"]>[0]) {
        if (change.kind === "remove") return Promise.reject(new Error("disk full"));
        return super.changeConversation(change);
      }
    }
    core = makeCore(new FailingRemoveStore());
    const o = await account("owner");
    const m = await account("member");
    const g = await core.createGroup(o.p, "team", [m.p.user]);
    await expect(core.removeMember(o.p, g.id, o.p.user)).rejects.toThrow("disk full");
    const after = await core.getConversation(o.p, g.id);
    expect(after.members.map((x) => [x.user, x.role])).toEqual([
      [o.p.user, "owner"],
      [m.p.user, "member"],
    ]);
  });

  describe("ephemeral signals", () => {
    it("relays typing to other members only, throttled", async () => {
      const a = await account("alice");
      const b = await account("bob");
      const eve = await account("eve");
      const conv = await core.createDirect(a.p, b.p.user);
      const [ca, cb, ce] = [await connect(a), await connect(b), await connect(eve)];
      ca.receive({ t: "typing", conv: conv.id });
      ca.receive({ t: "typing", conv: conv.id });
      await cb.waitFor((f) => f.t === "typing");
      ce.receive({ t: "typing", conv: conv.id });
      await new Promise((r) => setTimeout(r, 20));
      expect(cb.frames.filter((f) => f.t === "typing")).toHaveLength(1);
      expect(ca.frames.filter((f) => f.t === "typing")).toHaveLength(0);
    });

    it("throttles presence: a flapping connection costs watchers one change per interval", async () => {
      const a = await account("alice");
      const b = await account("bob");
      await core.createDirect(a.p, b.p.user);
      const ca = await connect(a);
      ca.receive({ t: "watch", users: [b.p.user] });
      await ca.waitFor((f) => f.t === "presence");
      const presence = (): boolean[] => ca.frames.flatMap((f) => (f.t === "presence" ? [f.online] : []));
      (await connect(b)).close(4000, "flap"); // online, published at once
      for (let i = 0; i < 5; i++) (await connect(b)).close(4000, "flap");
      expect(presence()).toEqual([false, true]);
      clock.advance(core.options.presenceThrottleMs);
      expect(presence()).toEqual([false, true, false]); // the state at the end of the interval
      await connect(b);
      await connect(b);
      clock.advance(core.options.presenceThrottleMs);
      expect(presence()).toEqual([false, true, false, true]);
    });

    it("does not follow a presence change with the older state read for watch", async () => {
      // listDevices (lastSeen of a user never seen online) waits until the test opens the gate.
      let open!: () => void;
      const gate = new Promise<void>((r) => (open = r));
      let gated = false;
      class SlowDevicesStore extends MemoryStore {
        override async listDevices(...args: Parameters<MemoryStore["listDevices"]>) {
          if (gated) await gate;
          return super.listDevices(...args);
        }
      }
      core = makeCore(new SlowDevicesStore());
      const a = await account("alice");
      const b = await account("bob");
      await core.createDirect(a.p, b.p.user);
      const ca = await connect(a);
      gated = true;
      ca.receive({ t: "watch", users: [b.p.user] });
      await new Promise((r) => setTimeout(r, 10));
      await connect(b); // published to watchers while the watch still reads bob's last state
      open();
      await new Promise((r) => setTimeout(r, 10));
      const seen = ca.frames.flatMap((f) => (f.t === "presence" && f.user === b.p.user ? [f.online] : []));
      expect(seen.at(-1)).toBe(true);
    });

    it("shows presence only to users who share a conversation", async () => {
      const a = await account("alice");
      const b = await account("bob");
      const eve = await account("eve");
      await core.createDirect(a.p, b.p.user);
      const ca = await connect(a);
      ca.receive({ t: "watch", users: [b.p.user, eve.p.user] });
      const first = await ca.waitFor((f) => f.t === "presence");
      expect(first).toMatchObject({ user: b.p.user, online: false });
      const cb = await connect(b);
      await ca.waitFor((f) => f.t === "presence" && f.online);
      cb.close(4000, "bye");
      clock.advance(core.options.presenceThrottleMs);
      await ca.waitFor((f) => f.t === "presence" && !f.online && f.lastSeen > 0 && f !== first);
      await connect(eve);
      expect(ca.frames.filter((f) => f.t === "presence" && f.user === eve.p.user)).toEqual([]);
    });
  });

  it("shutdown commits accepted sends, then says bye 4000", async () => {
    const a = await account("alice");
    const b = await account("bob");
    const conv = await core.createDirect(a.p, b.p.user);
    const ca = await connect(a);
    for (let i = 0; i < 50; i++) {
      ca.receive({
        t: "send",
        id: i,
        conv: conv.id,
        cid: `s${i}`,
        type: "text/plain",
        body: text(String(i)),
      });
    }
    await core.shutdown();
    expect(ca.frames.filter((f) => f.t === "sent")).toHaveLength(50);
    expect(ca.closedWith?.code).toBe(4000);
    // A REST send that reaches the core only now is refused as draining, not as an internal error.
    await expect(
      core.send(a.p, { conv: conv.id, cid: "late", type: "text/plain", body: text("x") }),
    ).rejects.toMatchObject({ code: "E_SHUTTING_DOWN", retry: true });
  });

  it("shutdown lets a request that is reading the store finish before closing the store", async () => {
    class SlowReads extends MemoryStore {
      release: (() => void) | undefined;
      reading = false;
      closedWhileReading = false;
      override async readUpdates(user: string, after: number, limit: number) {
        this.reading = true;
        await new Promise<void>((resolve) => (this.release = resolve));
        this.reading = false;
        return super.readUpdates(user, after, limit);
      }
      override close(): Promise<void> {
        if (this.reading) this.closedWhileReading = true;
        return super.close();
      }
    }
    const store = new SlowReads();
    core = makeCore(store);
    const a = await account("alice");
    const ca = await connect(a);
    ca.receive({ t: "sync", id: 1, cursor: 0 });
    for (let i = 0; i < 100 && !store.release; i++) await new Promise((r) => setImmediate(r));
    expect(store.release).toBeDefined();
    // A request still queued behind it is dropped, not started against a closing store.
    ca.receive({ t: "sync", id: 2, cursor: 0 });
    const stopped = core.shutdown();
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(ca.closedWith?.code).toBe(4000);
    store.release!();
    await stopped;
    expect(store.closedWhileReading).toBe(false);
    expect(ca.frames.filter(isError)).toEqual([]);
  });
});
