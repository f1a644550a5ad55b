import { describe, expect, it } from "vitest";
import { runClockConformance } from "./clock-conformance.ts";
import { SystemClock } from "./system-clock.ts";

// Real timers: these check that timers fire and cancel, never how long they took.

describe("SystemClock", () => {
  it("tells wall time in epoch milliseconds", () => {
    const before = Date.now();
    const now = new SystemClock().now();
    expect(now).toBeGreaterThanOrEqual(before);
    expect(now).toBeLessThanOrEqual(Date.now());
  });

  it("fires a timer once", async () => {
    const clock = new SystemClock();
    let n = 0;
    await new Promise<void>((resolve) => {
      clock.setTimeout(() => {
        n++;
        resolve();
      }, 1);
    });
    expect(n).toBe(1);
  });

  it("does not fire a cancelled timer", async () => {
    const clock = new SystemClock();
    let fired = false;
    clock.setTimeout(() => (fired = true), 1).cancel();
    // A later timer firing means the cancelled one's time has passed too.
    await new Promise<void>((resolve) => clock.setTimeout(resolve, 20));
    expect(fired).toBe(false);
  });
});

runClockConformance("SystemClock", () => ({
  clock: new SystemClock(),
  advance: (ms) => new Promise((resolve) => setTimeout(resolve, ms + 5)),
}));
