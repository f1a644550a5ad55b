import { describe, expect, it } from "vitest";
import { runClockConformance } from "./clock-conformance.ts";
import { ManualClock } from "./manual-clock.ts";

describe("ManualClock", () => {
  it("stands still until advanced", () => {
    const clock = new ManualClock(1000);
    expect(clock.now()).toBe(1000);
    clock.advance(250);
    expect(clock.now()).toBe(1250);
  });

  it("fires due timers in due order, ties in creation order, each at its due time", () => {
    const clock = new ManualClock();
    const fired: Array<[string, number]> = [];
    const at = (name: string) => () => fired.push([name, clock.now()]);
    clock.setTimeout(at("c"), 30);
    clock.setTimeout(at("a"), 10);
    clock.setTimeout(at("b1"), 20);
    clock.setTimeout(at("b2"), 20);
    clock.setTimeout(at("late"), 100);
    clock.advance(50);
    expect(fired).toEqual([
      ["a", 10],
      ["b1", 20],
      ["b2", 20],
      ["c", 30],
    ]);
    expect(clock.now()).toBe(50);
    expect(clock.pending()).toBe(1);
    clock.advance(50);
    expect(fired.at(-1)).toEqual(["late", 100]);
    expect(clock.pending()).toBe(0);
  });

  it("does not fire a timer before it is due", () => {
    const clock = new ManualClock();
    let fired = false;
    clock.setTimeout(() => (fired = true), 10);
    clock.advance(9);
    expect(fired).toBe(false);
    clock.advance(1);
    expect(fired).toBe(true);
  });

  it("fires timers scheduled by timers when they fall due within the same advance", () => {
    const clock = new ManualClock();
    const fired: number[] = [];
    const tick = () => {
      fired.push(clock.now());
      if (fired.length < 10) clock.setTimeout(tick, 10);
    };
    clock.setTimeout(tick, 10);
    clock.advance(35);
    expect(fired).toEqual([10, 20, 30]);
    clock.advance(100);
    expect(fired).toHaveLength(10);
  });

  it("cancels timers, harmlessly twice, and after firing", () => {
    const clock = new ManualClock();
    let n = 0;
    const t = clock.setTimeout(() => n++, 10);
    const u = clock.setTimeout(() => n++, 10);
    t.cancel();
    t.cancel();
    clock.advance(10);
    expect(n).toBe(1);
    u.cancel();
    expect(clock.pending()).toBe(0);
  });

  it("lets a timer cancel another one due at the same time", () => {
    const clock = new ManualClock();
    const fired: string[] = [];
    const second = { cancel: () => {} };
    clock.setTimeout(() => {
      fired.push("first");
      second.cancel();
    }, 5);
    Object.assign(
      second,
      clock.setTimeout(() => fired.push("second"), 5),
    );
    clock.advance(5);
    expect(fired).toEqual(["first"]);
  });

  it("treats zero, negative and NaN delays as due now; advance(0) fires them", () => {
    const clock = new ManualClock(100);
    const fired: number[] = [];
    clock.setTimeout(() => fired.push(1), 0);
    clock.setTimeout(() => fired.push(2), -5);
    clock.setTimeout(() => fired.push(3), Number.NaN);
    clock.advance(0);
    expect(fired).toEqual([1, 2, 3]);
    expect(clock.now()).toBe(100);
  });

  it("refuses to go backwards", () => {
    const clock = new ManualClock();
    expect(() => clock.advance(-1)).toThrow(RangeError);
    expect(() => clock.advance(Number.NaN)).toThrow(RangeError);
  });

  it("propagates a throwing timer and keeps the later ones pending", () => {
    const clock = new ManualClock();
    const fired: number[] = [];
    clock.setTimeout(() => {
      throw new Error("boom");
    }, 10);
    clock.setTimeout(() => fired.push(clock.now()), 20);
    expect(() => clock.advance(30)).toThrow("boom");
    expect(clock.now()).toBe(10);
    expect(clock.pending()).toBe(1);
    clock.advance(20);
    expect(fired).toEqual([20]);
  });
});

runClockConformance("ManualClock", () => {
  const clock = new ManualClock(1_700_000_000_000);
  return {
    clock,
    advance: (ms) => {
      clock.advance(ms);
      return Promise.resolve();
    },
  };
});
