import fc from "fast-check";
import type { ClientFrame, LoggedUpdate, Message, ServerFrame, Update, WelcomeFrame } from "@parley/protocol";
import { describe, expect, it } from "vitest";
import { ParleyClient, newCid } from "./client.ts";
import { ClientError } from "./client-error.ts";
import { ManualTimers } from "./manual-timers.ts";
import { BaseTransport } from "./transport/transport.ts";

// The client's connection logic against a scripted server: frames in, frames out, time moved by
// hand. The real server is exercised in test/*.test.ts.

class ScriptedTransport extends BaseTransport {
  readonly sent: ClientFrame[] = [];
  open = false;
  get bufferedAmount(): number {
    return 0;
  }
  connect(): Promise<void> {
    this.open = true;
    return Promise.resolve();
  }
  send(frame: ClientFrame): void {
    if (this.open) this.sent.push(frame);
  }
  close(): void {
    this.drop(1000);
  }
  /** A frame from the server. */
  serve(frame: ServerFrame): void {
    this.deliver(frame);
  }
  drop(code: number): void {
    this.open = false;
    this.closed(code, "dropped");
  }
  of<T extends ClientFrame["t"]>(t: T): Array<Extract<ClientFrame, { t: T }>> {
    return this.sent.filter((f): f is Extract<ClientFrame, { t: T }> => f.t === t);
  }
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

function setup(options: { ackEvery?: number; syncLimit?: number; syncPipeline?: number } = {}) {
  const timers = new ManualTimers();
  const transports: ScriptedTransport[] = [];
  const client = new ParleyClient({
    url: "http://server.test",
    token: "tok",
    user: "u_me",
    device: "d_me",
    timers,
    transport: () => {
      const t = new ScriptedTransport();
      transports.push(t);
      return t;
    },
    ...options,
  });
  const errors: Error[] = [];
  client.on("error", (e) => errors.push(e));
  const last = (): ScriptedTransport => transports[transports.length - 1]!;
  return { client, timers, transports, last, errors };
}

function welcome(head: number, heartbeatMs = 30_000): WelcomeFrame {
  return {
    t: "welcome",
    version: 1,
    user: "u_me",
    device: "d_me",
    heartbeatMs,
    maxFrameBytes: 65536,
    serverTime: 0,
    head,
  };
}

function msg(seq: number, conv = "c1"): Message {
  return {
    conv,
    seq,
    from: "u_other",
    dev: "d_other",
    cid: `x${seq}`,
    type: "text/plain",
    body: new Uint8Array([65]),
    ts: seq,
  };
}

const update = (useq: number, u: Update = { k: "msg", msg: msg(useq) }): LoggedUpdate => ({ useq, u });

describe("ParleyClient connection logic", () => {
  it("says hello, syncs from its cursor, then reports connected", async () => {
    const h = setup();
    const connected = h.client.connect();
    await settle();
    expect(h.last().sent[0]).toMatchObject({ t: "hello", versions: [1, 2], token: "tok" });
    h.last().serve(welcome(2));
    const [sync] = h.last().of("sync");
    expect(sync).toMatchObject({ cursor: 0 });
    expect(h.client.state).toBe("connecting");
    h.last().serve({ t: "synced", id: sync!.id, updates: [update(1), update(2)], more: false, head: 2 });
    await connected;
    expect(h.client.state).toBe("ready");
    expect(h.client.cursor).toBe(2);
  });

  it("acknowledges lazily: after ackDelayMs, or at once after ackEvery updates", async () => {
    const h = setup({ ackEvery: 5 });
    const connected = h.client.connect();
    await settle();
    h.last().serve(welcome(0));
    await connected;
    h.last().serve({ t: "push", useq: 1, u: { k: "msg", msg: msg(1) } });
    h.last().serve({ t: "push", useq: 2, u: { k: "msg", msg: msg(2) } });
    await settle();
    expect(h.last().of("ack")).toEqual([]);
    h.timers.advance(250);
    await settle();
    expect(h.last().of("ack")).toEqual([{ t: "ack", cursor: 2, convs: [{ conv: "c1", seq: 2 }] }]);
    for (let useq = 3; useq <= 7; useq++)
      h.last().serve({ t: "push", useq, u: { k: "msg", msg: msg(useq) } });
    await settle();
    expect(h.last().of("ack")).toHaveLength(2);
    expect(h.last().of("ack")[1]).toMatchObject({ cursor: 7 });
  });

  it("never puts more delivery receipts in one ack than the protocol allows (1000)", async () => {
    const h = setup({ ackEvery: 5000 });
    const connected = h.client.connect();
    await settle();
    h.last().serve(welcome(0));
    await connected;
    for (let useq = 1; useq <= 1001; useq++)
      h.last().serve({ t: "push", useq, u: { k: "msg", msg: msg(1, `c${useq}`) } });
    h.timers.advance(250);
    await settle();
    const acks = h.last().of("ack");
    expect(acks.length).toBeGreaterThan(0);
    for (const ack of acks) expect(ack.convs?.length ?? 0).toBeLessThanOrEqual(1000);
    expect(new Set(acks.flatMap((a) => (a.convs ?? []).map((c) => c.conv))).size).toBe(1001);
    expect(Math.max(...acks.map((a) => a.cursor ?? 0))).toBe(1001);
  });

  it("coalesces read receipts per conversation", async () => {
    const h = setup();
    const connected = h.client.connect();
    await settle();
    h.last().serve(welcome(0));
    await connected;
    h.client.markRead("c1", 3);
    h.client.markRead("c1", 9);
    h.client.markRead("c1", 4);
    h.client.markRead("c2", 1);
    expect(h.last().of("receipt")).toEqual([]);
    h.timers.advance(250);
    expect(
      h
        .last()
        .of("receipt")
        .map((r) => [r.conv, r.kind, r.seq]),
    ).toEqual([
      ["c1", "read", 9],
      ["c2", "read", 1],
    ]);
  });

  it("answers pings, pings when idle, and reconnects when the server goes silent", async () => {
    const h = setup();
    const connected = h.client.connect();
    await settle();
    h.last().serve(welcome(0, 1000));
    await connected;
    h.last().serve({ t: "ping", n: 4 });
    expect(h.last().of("pong")).toEqual([{ t: "pong", n: 4 }]);
    h.timers.advance(1000);
    expect(h.last().of("ping")).toHaveLength(1);
    const disconnected: number[] = [];
    h.client.on("disconnected", (e) => disconnected.push(e.code));
    h.timers.advance(1500);
    expect(disconnected).toEqual([4002]);
    expect(h.transports).toHaveLength(1);
    h.timers.advance(200); // backoff: at most the 200 ms base on the first attempt
    await settle();
    expect(h.transports).toHaveLength(2);
    expect(h.last().sent[0]?.t).toBe("hello");
  });

  it("resends pending sends after the reconnect's sync, with the same cid", async () => {
    const h = setup();
    const connected = h.client.connect();
    await settle();
    h.last().serve(welcome(0));
    await connected;
    const result = h.client.send("c1", "hi");
    await settle();
    const [first] = h.last().of("send");
    h.last().drop(1006);
    h.timers.advance(200);
    await settle();
    h.last().serve(welcome(1));
    const t = h.last();
    expect(t.sent.map((f) => f.t)).toEqual(["hello", "sync"]); // nothing is sent before the sync
    t.serve({ t: "synced", id: t.of("sync")[0]!.id, updates: [update(1)], more: false, head: 1 });
    const [again] = t.of("send");
    expect(again?.cid).toBe(first?.cid);
    t.serve({ t: "sent", id: again!.id, conv: "c1", cid: again!.cid, seq: 1, ts: 5 });
    await expect(result).resolves.toMatchObject({ seq: 1, ts: 5 });
  });

  it("builds its own message from the send when `sent` carries a useq (protocol version 2)", async () => {
    const h = setup();
    const connected = h.client.connect();
    await settle();
    h.last().serve(welcome(0));
    await connected;
    const messages: Message[] = [];
    h.client.on("message", (m) => messages.push(m));
    const result = h.client.send("c1", "hi", { replyTo: 4 });
    await settle();
    const [send] = h.last().of("send");
    h.last().serve({ t: "push", useq: 1, u: { k: "msg", msg: msg(6) } });
    h.last().serve({ t: "sent", id: send!.id, conv: "c1", cid: send!.cid, seq: 7, ts: 70, useq: 2 });
    await expect(result).resolves.toEqual({ conv: "c1", cid: send!.cid, seq: 7, ts: 70 });
    expect(messages.map((m) => m.seq)).toEqual([6, 7]);
    expect(messages[1]).toEqual({
      conv: "c1",
      seq: 7,
      from: "u_me",
      dev: "d_me",
      cid: send!.cid,
      type: "text/plain",
      body: send!.body,
      ts: 70,
      replyTo: 4,
    });
    expect(h.client.cursor).toBe(2);
    // A `sent` with a useq for a request that is not ours builds nothing: the entry is synced.
    const syncs = h.last().of("sync").length;
    h.last().serve({ t: "sent", id: 999, conv: "c1", cid: "other", seq: 8, ts: 80, useq: 3 });
    await settle();
    expect(messages.map((m) => m.seq)).toEqual([6, 7]);
    expect(h.last().of("sync")).toHaveLength(syncs + 1);
    expect(h.last().of("sync").at(-1)).toMatchObject({ cursor: 2 });
  });

  it("keeps backing off while connections end as soon as they are ready", async () => {
    const h = setup();
    const connected = h.client.connect();
    await settle();
    h.last().serve(welcome(0));
    await connected;
    for (let i = 0; i < 6; i++) {
      h.last().drop(4001); // e.g. a server that sheds every connection right after welcome
      h.timers.advance(10_000); // the longest delay (reconnectCapMs)
      await settle();
      h.last().serve(welcome(0));
      expect(h.client.state).toBe("ready");
    }
    const count = h.transports.length;
    h.last().drop(4001);
    h.timers.advance(200); // the base delay: too soon after so many short-lived connections
    await settle();
    expect(h.transports).toHaveLength(count);
    h.timers.advance(10_000);
    await settle();
    expect(h.transports).toHaveLength(count + 1);
    // A connection that lasted resets the backoff.
    h.last().serve(welcome(0));
    h.timers.advance(10_000);
    h.last().drop(4001);
    h.timers.advance(200);
    await settle();
    expect(h.transports).toHaveLength(count + 2);
  });

  it("pipelines syncs; a refused one pauses syncing until its retry-after, then goes on from the cursor", async () => {
    const h = setup({ syncLimit: 2, syncPipeline: 3 });
    const connected = h.client.connect();
    await settle();
    h.last().serve(welcome(6));
    const first = h.last().of("sync");
    expect(first.map((f) => [f.cursor, f.limit])).toEqual([
      [0, 2],
      [2, 2],
      [4, 2],
    ]);
    h.last().serve({
      t: "error",
      id: first[0]!.id,
      code: "E_RATE_LIMITED",
      message: "slow down",
      retry: true,
      retryAfterMs: 500,
    });
    h.last().serve({ t: "synced", id: first[1]!.id, updates: [update(3), update(4)], more: true, head: 6 });
    h.last().serve({ t: "synced", id: first[2]!.id, updates: [update(5), update(6)], more: false, head: 6 });
    expect(h.client.cursor).toBe(0); // 3..6 wait beyond the refused page
    expect(h.last().of("sync")).toHaveLength(3);
    h.timers.advance(499);
    expect(h.last().of("sync")).toHaveLength(3);
    h.timers.advance(1);
    const retry = h.last().of("sync").slice(3);
    expect(retry.map((f) => f.cursor)).toEqual([0, 2, 4]);
    h.last().serve({ t: "synced", id: retry[0]!.id, updates: [update(1), update(2)], more: true, head: 6 });
    expect(h.client.cursor).toBe(6);
    for (const f of retry.slice(1))
      h.last().serve({ t: "synced", id: f.id, updates: [], more: false, head: 6 });
    await connected;
    expect(h.client.state).toBe("ready");
    expect(h.errors).toEqual([]);
  });

  it("leaves no timer behind after close(), even with a sync retry pending", async () => {
    const h = setup();
    const connected = h.client.connect();
    connected.catch(() => {});
    await settle();
    h.last().serve(welcome(3));
    const [sync] = h.last().of("sync");
    h.last().serve({
      t: "error",
      id: sync!.id,
      code: "E_OVERLOADED",
      message: "busy",
      retry: true,
      retryAfterMs: 30_000,
    });
    await h.client.close();
    await expect(connected).rejects.toMatchObject({ code: "E_CLIENT_CLOSED" });
    expect(h.timers.pending).toBe(0);
  });

  it("stops for good on a 41xx disconnect code", async () => {
    const h = setup();
    const connected = h.client.connect();
    await settle();
    h.last().serve({ t: "error", code: "E_TOKEN_INVALID", message: "bad token", retry: false });
    h.last().serve({ t: "bye", code: 4101, reason: "auth failed" });
    h.last().drop(1006); // the bye's code wins over the socket's
    await expect(connected).rejects.toMatchObject({ code: "E_DISCONNECTED", detail: 4101 });
    expect(h.client.state).toBe("stopped");
    expect(h.errors.map((e) => (e as { code?: string }).code)).toEqual(["E_TOKEN_INVALID", "E_DISCONNECTED"]);
    h.timers.advance(60_000);
    expect(h.transports).toHaveLength(1);
    await h.client.close();
  });

  it("close() while a connection is being opened ends it at once and rejects connect()", async () => {
    const timers = new ManualTimers();
    let abort: (err: Error) => void = () => {};
    const hanging = new (class extends ScriptedTransport {
      override connect(): Promise<void> {
        return new Promise((_resolve, reject) => (abort = reject));
      }
      override close(): void {
        abort(new Error("closed while connecting"));
      }
    })();
    const client = new ParleyClient({
      url: "http://x",
      token: "t",
      user: "u",
      device: "d",
      timers,
      transport: () => hanging,
    });
    const connected = client.connect();
    await settle();
    await client.close(); // with manual timers, a wait for a timeout would never end
    await expect(connected).rejects.toMatchObject({ code: "E_CLIENT_CLOSED" });
    expect(client.state).toBe("closed");
  });

  it("rejects connect() for an unknown transport", async () => {
    const client = new ParleyClient({
      url: "http://x",
      token: "t",
      user: "u",
      device: "d",
      transport: "carrier-pigeon",
    });
    client.on("error", () => {});
    await expect(client.connect()).rejects.toThrow(/unknown transport/);
    await client.close();
  });

  it("refuses a store that belongs to another user", () => {
    const a = setup();
    expect(
      () =>
        new ParleyClient({
          url: "http://x",
          token: "t",
          user: "u_other",
          device: "d",
          store: a.client.store,
        }),
    ).toThrow(ClientError);
  });

  it("reports a throwing listener as an error and keeps going", async () => {
    const h = setup();
    h.client.on("message", () => {
      throw new Error("app bug");
    });
    const seen: number[] = [];
    h.client.on("message", (m) => seen.push(m.seq));
    const connected = h.client.connect();
    await settle();
    h.last().serve(welcome(0));
    await connected;
    h.last().serve({ t: "push", useq: 1, u: { k: "msg", msg: msg(1) } });
    expect(seen).toEqual([1]);
    expect(h.errors[0]?.message).toMatch(/"message" listener threw/);
  });
});

describe("ParleyClient against a model server speaking protocol version 2", () => {
  type Step = "send" | "reply" | "other" | "lost-push" | "answer" | "cut";

  // The server keeps one user log and one conversation. It answers a send in place of the
  // entry's push (`sent` with its useq) or, for a cid it holds already, with a plain `sent`;
  // other users' messages come as pushes, some of them lost; connections are cut with requests
  // unanswered. Whatever the order, the client must show each message once, in order, exactly
  // as stored, and resolve each send with the seq it was stored under.
  it("shows each message once, in order, as stored, and resolves each send with its seq", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.constantFrom<Step>("send", "reply", "other", "lost-push", "answer", "cut"), {
          maxLength: 40,
        }),
        async (steps) => {
          const h = setup();
          const seen: Message[] = [];
          h.client.on("message", (m) => seen.push(m));
          const log: LoggedUpdate[] = [];
          const stored = new Map<string, Message>(); // by cid
          const answeredFrames = new Set<ClientFrame>();
          const sends: Array<Promise<{ seq: number }>> = [];
          let online = false;

          const commit = (m: Omit<Message, "seq" | "ts">): LoggedUpdate => {
            const msg: Message = { ...m, seq: log.length + 1, ts: 1000 + log.length };
            const entry: LoggedUpdate = { useq: log.length + 1, u: { k: "msg", msg } };
            log.push(entry);
            return entry;
          };
          const other = (): LoggedUpdate =>
            commit({
              conv: "c1",
              from: "u_other",
              dev: "d_other",
              cid: `o${log.length}`,
              type: "t",
              body: new Uint8Array([log.length]),
            });
          /** Answers every sync the client sent on this connection. */
          const serveSyncs = async (): Promise<void> => {
            for (let again = true; again && online;) {
              again = false;
              for (const f of h.last().of("sync")) {
                if (answeredFrames.has(f)) continue;
                answeredFrames.add(f);
                again = true;
                const limit = f.limit ?? 500;
                const updates = log.slice(f.cursor, f.cursor + limit);
                h.last().serve({
                  t: "synced",
                  id: f.id,
                  updates,
                  more: f.cursor + limit < log.length,
                  head: log.length,
                });
              }
              await settle();
            }
          };
          const answerOne = async (): Promise<void> => {
            const f = h
              .last()
              .of("send")
              .find((s) => !answeredFrames.has(s));
            if (!online || f === undefined) return;
            answeredFrames.add(f);
            const had = stored.get(f.cid);
            if (had !== undefined) {
              h.last().serve({ t: "sent", id: f.id, conv: had.conv, cid: had.cid, seq: had.seq, ts: had.ts });
            } else {
              const entry = commit({
                conv: f.conv,
                from: "u_me",
                dev: "d_me",
                cid: f.cid,
                type: f.type,
                body: f.body,
                ...(f.replyTo !== undefined ? { replyTo: f.replyTo } : {}),
              });
              const msg = (entry.u as Extract<Update, { k: "msg" }>).msg;
              stored.set(f.cid, msg);
              h.last().serve({
                t: "sent",
                id: f.id,
                conv: msg.conv,
                cid: msg.cid,
                seq: msg.seq,
                ts: msg.ts,
                useq: entry.useq,
              });
            }
            await settle();
          };
          const connect = async (): Promise<void> => {
            // Time moves until the client has opened a new connection and said hello on it.
            const before = h.transports.length;
            for (let i = 0; i < 10_000; i++) {
              if (h.transports.length > before && h.last().of("hello").length > 0) break;
              h.timers.advance(250);
              await settle();
            }
            online = true;
            h.last().serve({ ...welcome(log.length), version: 2 });
            await settle();
            await serveSyncs();
          };

          void h.client.connect();
          await connect();
          for (const step of steps) {
            if (step === "send" || step === "reply") {
              const result = h.client.send(
                "c1",
                `m${sends.length}`,
                step === "reply" && log.length > 0 ? { replyTo: 1 } : {},
              );
              result.catch(() => {});
              sends.push(result);
              await settle();
            } else if (step === "other" || step === "lost-push") {
              const entry = other();
              if (online && step === "other") h.last().serve({ t: "push", useq: entry.useq, u: entry.u });
              await settle();
              await serveSyncs();
            } else if (step === "answer") {
              await answerOne();
              await serveSyncs();
            } else {
              online = false;
              h.last().drop(1006);
              await settle();
              await connect();
            }
          }
          // The end: a last cut (so that a lost push is found by the welcome's head), then every
          // send answered.
          online = false;
          h.last().drop(1006);
          await settle();
          await connect();
          for (let i = 0; i < sends.length + 1; i++) await answerOne();
          await serveSyncs();

          const all = log.map((e) => (e.u as Extract<Update, { k: "msg" }>).msg);
          expect(seen.map((m) => m.seq)).toEqual(all.map((m) => m.seq));
          expect(seen).toEqual(all);
          const results = await Promise.all(sends);
          expect(results.map((r) => r.seq)).toEqual(
            [...stored.values()].filter((m) => m.from === "u_me").map((m) => m.seq),
          );
          await h.client.close();
        },
      ),
      { numRuns: 100 },
    );
  }, 60_000);
});

describe("newCid", () => {
  it("makes UUIDv7s: version 7, variant 10, the time in the first 48 bits", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 48 - 1 }), (now) => {
        const cid = newCid(now);
        expect(cid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
        expect(parseInt(cid.slice(0, 8) + cid.slice(9, 13), 16)).toBe(now);
      }),
    );
  });

  it("writes each cid's own time when calls repeat or go back to a millisecond", () => {
    const times = [5, 5, 2 ** 47, 5, 2 ** 47, 2 ** 47, 0];
    expect(times.map((t) => parseInt(newCid(t).replace(/-/g, "").slice(0, 12), 16))).toEqual(times);
  });

  it("sorts as text in time order, and does not repeat", () => {
    const cids = [1_000, 1_001, 2 ** 40, 2 ** 47 + 5].map((t) => newCid(t));
    expect([...cids].sort()).toEqual(cids);
    const many = new Set(Array.from({ length: 10_000 }, () => newCid(1_700_000_000_000)));
    expect(many.size).toBe(10_000);
  });
});
