import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Bus } from "../core/ports/bus.ts";

// The Bus conformance suite: every Bus implementation runs these tests. Events are plain JSON so
// that a networked bus (NATS, Redis) can carry them. `flush` resolves once everything published
// so far has been delivered and every subscription made so far is live (a no-op for MemoryBus, a
// round trip for a networked bus). `onError` must receive whatever a handler throws.

export interface BusHarness {
  bus: Bus;
  flush: () => Promise<void>;
  cleanup: () => Promise<void>;
}

export type OpenBus = (onError: (err: unknown, topic: string) => void) => Promise<BusHarness>;

export function runBusConformance(name: string, open: OpenBus): void {
  describe(`Bus conformance: ${name}`, () => {
    let h: BusHarness;
    let errors: Array<{ err: unknown; topic: string }>;

    beforeEach(async () => {
      errors = [];
      h = await open((err, topic) => errors.push({ err, topic }));
    });

    afterEach(async () => {
      await h.bus.close();
      await h.cleanup();
    });

    /** Subscribes a recorder to `topic`. */
    function record(topic: string): { got: unknown[]; stop: () => void } {
      const got: unknown[] = [];
      const stop = h.bus.subscribe(topic, (e) => got.push(e));
      return { got, stop };
    }

    it("delivers to every subscriber of the topic and to no other topic", async () => {
      const a = record("t1");
      const b = record("t1");
      const other = record("t2");
      await h.flush();
      h.bus.publish("t1", { n: 1 });
      await h.flush();
      expect(a.got).toEqual([{ n: 1 }]);
      expect(b.got).toEqual([{ n: 1 }]);
      expect(other.got).toEqual([]);
    });

    it("keeps publish order per topic for each subscriber", async () => {
      const a = record("t1");
      const b = record("t2");
      await h.flush();
      for (let n = 0; n < 200; n++) h.bus.publish(n % 3 ? "t1" : "t2", { n });
      await h.flush();
      const expected = (t: number) =>
        Array.from({ length: 200 }, (_, n) => ({ n })).filter((e) => (e.n % 3 ? 1 : 2) === t);
      expect(a.got).toEqual(expected(1));
      expect(b.got).toEqual(expected(2));
    });

    it("has no replay: a subscriber gets only what is published after it subscribed", async () => {
      h.bus.publish("t1", { n: 1 });
      await h.flush();
      const a = record("t1");
      await h.flush();
      h.bus.publish("t1", { n: 2 });
      await h.flush();
      expect(a.got).toEqual([{ n: 2 }]);
    });

    it("stops delivery on unsubscribe; unsubscribing twice is harmless", async () => {
      const a = record("t1");
      const b = record("t1");
      await h.flush();
      a.stop();
      a.stop();
      await h.flush();
      h.bus.publish("t1", { n: 1 });
      await h.flush();
      expect(a.got).toEqual([]);
      expect(b.got).toEqual([{ n: 1 }]);
      b.stop();
      await h.flush();
      h.bus.publish("t1", { n: 2 });
      await h.flush();
      expect(b.got).toEqual([{ n: 1 }]);
    });

    it("treats two subscriptions of one handler as two", async () => {
      const got: unknown[] = [];
      const handler = (e: unknown) => got.push(e);
      const first = h.bus.subscribe("t1", handler);
      h.bus.subscribe("t1", handler);
      await h.flush();
      h.bus.publish("t1", 1);
      await h.flush();
      expect(got).toEqual([1, 1]);
      first();
      await h.flush();
      h.bus.publish("t1", 2);
      await h.flush();
      expect(got).toEqual([1, 1, 2]);
    });

    it("reports a throwing handler and still delivers to the others", async () => {
      const before = record("t1");
      h.bus.subscribe("t1", () => {
        throw new Error("boom");
      });
      const after = record("t1");
      await h.flush();
      h.bus.publish("t1", { n: 1 });
      h.bus.publish("t1", { n: 2 });
      await h.flush();
      expect(before.got).toEqual([{ n: 1 }, { n: 2 }]);
      expect(after.got).toEqual([{ n: 1 }, { n: 2 }]);
      expect(errors.map((e) => [e.topic, (e.err as Error).message])).toEqual([
        ["t1", "boom"],
        ["t1", "boom"],
      ]);
    });

    it("lets a handler unsubscribe itself or another during delivery", async () => {
      const got: string[] = [];
      const stopSelf: () => void = h.bus.subscribe("t1", (e) => {
        got.push(`self:${String(e)}`);
        stopSelf();
      });
      const stopOther = h.bus.subscribe("t1", (e) => {
        got.push(`killer:${String(e)}`);
        victim();
      });
      const victim = h.bus.subscribe("t1", (e) => got.push(`victim:${String(e)}`));
      await h.flush();
      h.bus.publish("t1", 1);
      await h.flush();
      h.bus.publish("t1", 2);
      await h.flush();
      stopOther();
      expect(got.filter((g) => g.startsWith("self"))).toEqual(["self:1"]);
      expect(got.filter((g) => g.startsWith("killer"))).toEqual(["killer:1", "killer:2"]);
      // The victim was unsubscribed while event 1 was being delivered: at most event 1.
      expect(got.filter((g) => g === "victim:2")).toEqual([]);
      expect(errors).toEqual([]);
    });

    it("after close, delivers nothing and refuses subscriptions; closing twice is harmless", async () => {
      const a = record("t1");
      await h.flush();
      await h.bus.close();
      h.bus.publish("t1", { n: 1 });
      await h.flush();
      expect(a.got).toEqual([]);
      expect(() => h.bus.subscribe("t1", () => {})).toThrow();
      await h.bus.close();
    });
  });
}
