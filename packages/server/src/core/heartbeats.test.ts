import { describe, expect, it } from "vitest";
import { ManualClock } from "../clock/manual-clock.ts";
import { Heartbeats, type Beating } from "./heartbeats.ts";

describe("Heartbeats (one sweep for every connection)", () => {
  function member(log: string[], name: string, onBeat?: () => void): Beating {
    return {
      beat: (now) => {
        log.push(`${name}@${now}`);
        onBeat?.();
      },
    };
  }

  it("beats every member once per period, and stops sweeping when none is left", () => {
    const clock = new ManualClock(0);
    const hb = new Heartbeats(clock, 100);
    const log: string[] = [];
    const a = member(log, "a");
    const b = member(log, "b");
    hb.add(a);
    clock.advance(50);
    hb.add(b);
    clock.advance(50);
    expect(log).toEqual(["a@100", "b@100"]);
    clock.advance(100);
    expect(log).toEqual(["a@100", "b@100", "a@200", "b@200"]);
    hb.delete(a);
    hb.delete(b);
    clock.advance(100); // the sweep at 300 finds nobody and does not re-arm
    expect(clock.pendingTimers()).toBe(0);
    hb.add(a);
    clock.advance(100);
    expect(log.at(-1)).toBe("a@400");
  });

  it("lets a member leave during its own beat without skipping the others", () => {
    const clock = new ManualClock(0);
    const hb = new Heartbeats(clock, 100);
    const log: string[] = [];
    const a: Beating = member(log, "a", () => hb.delete(a));
    hb.add(a);
    hb.add(member(log, "b"));
    hb.add(member(log, "c"));
    clock.advance(100);
    clock.advance(100);
    expect(log).toEqual(["a@100", "b@100", "c@100", "b@200", "c@200"]);
    expect(hb.size).toBe(2);
  });

  it("sweeps no more after stop()", () => {
    const clock = new ManualClock(0);
    const hb = new Heartbeats(clock, 100);
    const log: string[] = [];
    hb.add(member(log, "a"));
    hb.stop();
    clock.advance(1000);
    hb.add(member(log, "b"));
    clock.advance(1000);
    expect(log).toEqual([]);
  });
});
