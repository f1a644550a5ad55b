import { describe, expect, it } from "vitest";
import type { Clock } from "../core/ports/clock.ts";

// The Clock port's shared conformance suite: every implementation runs it. `advance` lets time
// pass (really, for SystemClock; instantly, for ManualClock), so the same assertions hold for
// both without asserting any duration.

export interface ClockHarness {
  clock: Clock;
  /** Lets at least `ms` of the clock's time pass and its due timers run. */
  advance: (ms: number) => Promise<void>;
}

export function runClockConformance(name: string, make: () => ClockHarness): void {
  describe(`Clock conformance: ${name}`, () => {
    it("tells time in epoch milliseconds that never goes back", async () => {
      const { clock, advance } = make();
      const a = clock.now();
      expect(Number.isSafeInteger(Math.floor(a))).toBe(true);
      await advance(5);
      const b = clock.now();
      expect(b).toBeGreaterThanOrEqual(a + 5);
    });

    it("fires a timer exactly once, once its delay has passed", async () => {
      const { clock, advance } = make();
      let fired = 0;
      clock.setTimeout(() => fired++, 20);
      await advance(40);
      await advance(40);
      expect(fired).toBe(1);
    });

    it("never fires a cancelled timer; cancelling twice or after firing is harmless", async () => {
      const { clock, advance } = make();
      let fired = 0;
      const t = clock.setTimeout(() => fired++, 10);
      t.cancel();
      t.cancel();
      const u = clock.setTimeout(() => fired++, 10);
      await advance(30);
      u.cancel();
      expect(fired).toBe(1);
    });

    it("fires timers in the order they fall due", async () => {
      const { clock, advance } = make();
      const order: number[] = [];
      clock.setTimeout(() => order.push(30), 30);
      clock.setTimeout(() => order.push(10), 10);
      clock.setTimeout(() => order.push(20), 20);
      await advance(60);
      expect(order).toEqual([10, 20, 30]);
    });
  });
}
