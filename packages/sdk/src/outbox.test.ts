import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import type { SendFrame } from "@parley/protocol";
import { ParleyError } from "@parley/protocol";
import { describe, expect, it } from "vitest";
import { ClientError } from "./client-error.ts";
import { MemoryLocalStore } from "./local-store.ts";
import type { LocalStore } from "./local-store.ts";
import { Outbox } from "./outbox.ts";
import type { SendResult } from "./outbox.ts";
import { FileLocalStore } from "./store/file-store.ts";
import { ManualTimers } from "./manual-timers.ts";

function setup(store: LocalStore = new MemoryLocalStore()) {
  const timers = new ManualTimers();
  const wire: SendFrame[] = [];
  let connected = false;
  let id = 0;
  const outbox = new Outbox(
    store,
    {
      transmit: (frame) => {
        if (!connected) return false;
        wire.push(frame);
        return true;
      },
      nextId: () => ++id,
    },
    timers,
  );
  const online = (): void => {
    connected = true;
    outbox.online();
  };
  const offline = (): void => {
    connected = false;
    outbox.offline();
  };
  return { store, timers, wire, outbox, online, offline };
}

const body = (s: string): Uint8Array => new TextEncoder().encode(s);
const sent = (f: SendFrame, seq: number) => ({
  t: "sent" as const,
  id: f.id,
  conv: f.conv,
  cid: f.cid,
  seq,
  ts: 7,
});
const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

describe("Outbox", () => {
  it("persists, transmits, and resolves on `sent`", async () => {
    const h = setup();
    h.online();
    const p = h.outbox.add({ conv: "c1", type: "text/plain", body: body("hi") }, "cid-1");
    await tick();
    expect(h.wire).toHaveLength(1);
    expect(h.store.outbox().map((x) => x.cid)).toEqual(["cid-1"]);
    h.outbox.onSent(sent(h.wire[0]!, 3));
    await expect(p).resolves.toEqual({ conv: "c1", cid: "cid-1", seq: 3, ts: 7 });
    expect(h.store.outbox()).toEqual([]);
  });

  it("holds sends while offline and transmits them in order once online", async () => {
    const h = setup();
    const a = h.outbox.add({ conv: "c1", type: "t", body: body("a") }, "a");
    const b = h.outbox.add({ conv: "c1", type: "t", body: body("b"), replyTo: 1 }, "b");
    await tick();
    expect(h.wire).toEqual([]);
    h.online();
    expect(h.wire.map((f) => f.cid)).toEqual(["a", "b"]);
    expect(h.wire[1]?.replyTo).toBe(1);
    h.outbox.onSent(sent(h.wire[0]!, 1));
    h.outbox.onSent(sent(h.wire[1]!, 2));
    await expect(Promise.all([a, b])).resolves.toMatchObject([{ seq: 1 }, { seq: 2 }]);
  });

  it("resends with the same cid after a reconnect", async () => {
    const h = setup();
    h.online();
    const p = h.outbox.add({ conv: "c1", type: "t", body: body("x") }, "same");
    await tick();
    h.offline();
    h.online();
    expect(h.wire.map((f) => f.cid)).toEqual(["same", "same"]);
    expect(h.wire[0]!.id).not.toBe(h.wire[1]!.id);
    h.outbox.onSent(sent(h.wire[1]!, 5));
    await expect(p).resolves.toMatchObject({ seq: 5 });
  });

  it("waits retryAfterMs after E_RATE_LIMITED, then retransmits", async () => {
    const h = setup();
    h.online();
    const p = h.outbox.add({ conv: "c1", type: "t", body: body("x") }, "r");
    await tick();
    const error = {
      t: "error" as const,
      id: h.wire[0]!.id,
      code: "E_RATE_LIMITED",
      message: "slow down",
      retry: true,
    };
    expect(h.outbox.onError({ ...error, retryAfterMs: 1000 })).toBe(true);
    h.offline();
    h.online(); // a reconnect does not cut the wait short
    h.timers.advance(999);
    expect(h.wire).toHaveLength(1);
    h.timers.advance(1);
    expect(h.wire).toHaveLength(2);
    expect(h.wire[1]!.cid).toBe("r");
    h.outbox.onSent(sent(h.wire[1]!, 1));
    await expect(p).resolves.toMatchObject({ seq: 1 });
  });

  it("settles every send() made with the same cid (an application-level resend)", async () => {
    const h = setup();
    h.online();
    const first = h.outbox.add({ conv: "c1", type: "t", body: body("x") }, "dup");
    await tick();
    const again = h.outbox.add({ conv: "c1", type: "t", body: body("x") }, "dup");
    await tick();
    expect(h.wire.map((f) => f.cid)).toEqual(["dup"]); // still one on the wire
    h.outbox.onSent(sent(h.wire[0]!, 4));
    await expect(again).resolves.toMatchObject({ seq: 4 });
    await expect(first).resolves.toMatchObject({ seq: 4 });
    expect(h.store.outbox()).toEqual([]);
  });

  it("rejects and forgets a send refused for good", async () => {
    const h = setup();
    h.online();
    const p = h.outbox.add({ conv: "nope", type: "t", body: body("x") }, "n");
    await tick();
    h.outbox.onError({
      t: "error",
      id: h.wire[0]!.id,
      code: "E_NOT_FOUND",
      message: "no such conversation",
      retry: false,
    });
    await expect(p).rejects.toSatisfy((e: unknown) => e instanceof ParleyError && e.code === "E_NOT_FOUND");
    expect(h.store.outbox()).toEqual([]);
    expect(h.outbox.onError({ t: "error", id: 999, code: "E_INVALID", message: "", retry: false })).toBe(
      false,
    );
  });

  it("sends what a previous session left in a durable store", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "parley-outbox-"));
    try {
      const first = setup(await FileLocalStore.open(dir));
      const lost = first.outbox.add({ conv: "c1", type: "t", body: body("keep me") }, "durable");
      await tick();
      first.outbox.stop();
      await expect(lost).rejects.toBeInstanceOf(ClientError);
      await first.store.close();

      const second = setup(await FileLocalStore.open(dir));
      second.online();
      expect(second.wire.map((f) => [f.cid, new TextDecoder().decode(f.body)])).toEqual([
        ["durable", "keep me"],
      ]);
      second.outbox.onSent(sent(second.wire[0]!, 1));
      expect(second.outbox.size).toBe(0);
      await second.store.close();
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it("property: with lost frames, lost replies and reconnects, every send commits once", async () => {
    type Step = "deliver" | "lose-frame" | "lose-reply" | "reconnect";
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 6 }),
        fc.array(fc.constantFrom<Step>("deliver", "lose-frame", "lose-reply", "reconnect"), {
          maxLength: 40,
        }),
        async (count, steps) => {
          const h = setup();
          // The server: idempotent by cid, like Messaging.send.
          const committed = new Map<string, number>();
          const commit = (f: SendFrame): number => {
            let seq = committed.get(f.cid);
            if (seq === undefined) committed.set(f.cid, (seq = committed.size + 1));
            return seq;
          };
          h.online();
          const results: Array<Promise<SendResult>> = [];
          for (let i = 0; i < count; i++) {
            results.push(h.outbox.add({ conv: "c1", type: "t", body: body(`m${i}`) }, `cid-${i}`));
          }
          await tick();
          let read = 0;
          for (const step of steps) {
            const f = h.wire[read];
            if (step === "reconnect") {
              h.offline();
              read = h.wire.length; // whatever was on the old connection is gone
              h.online();
            } else if (f) {
              read++;
              if (step === "deliver") h.outbox.onSent(sent(f, commit(f)));
              else if (step === "lose-reply") commit(f);
            }
          }
          // Then the network heals: one more reconnect and everything is delivered.
          h.offline();
          read = h.wire.length;
          h.online();
          for (; read < h.wire.length; read++) h.outbox.onSent(sent(h.wire[read]!, commit(h.wire[read]!)));

          const seqs = (await Promise.all(results)).map((r) => r.seq);
          expect(committed.size).toBe(count);
          expect(seqs.map((_, i) => committed.get(`cid-${i}`))).toEqual(seqs);
          expect(h.outbox.size).toBe(0);
        },
      ),
      { numRuns: 200 },
    );
  });
});
