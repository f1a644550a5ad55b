import { describe, expect, it } from "vitest";
import { busyStretches, type Profile } from "./profile-summary.ts";

/** A profile sampled every millisecond: "i" is idle, "a" and "b" are two functions. */
function profile(pattern: string): Profile {
  const frame = (id: number, functionName: string) => ({
    id,
    callFrame: {
      functionName,
      url: functionName === "a" || functionName === "b" ? "file:///x/work.ts" : "",
      lineNumber: 0,
    },
  });
  const ids: Record<string, number> = { i: 2, a: 3, b: 4 };
  return {
    nodes: [{ ...frame(1, "(root)"), children: [2, 3, 4] }, frame(2, "(idle)"), frame(3, "a"), frame(4, "b")],
    startTime: 1_000_000,
    endTime: 1_000_000 + pattern.length * 1000,
    samples: [...pattern].map((c) => ids[c]!),
    timeDeltas: [...pattern].map(() => 1000),
  };
}

describe("busy stretches", () => {
  it("finds the runs between idle samples, with what ran in them", () => {
    // Runs: 5 ms (a a a b a) from 2 ms, then 2 ms (b b) from 9 ms, then 1 ms at the end.
    const s = busyStretches(profile("iaaabaiibbia"), 3);
    expect(s.at_least_ms).toEqual({ "1": 2, "2": 2, "3": 1, "5": 1, "10": 0, "20": 0 });
    expect(s.longest).toEqual([
      {
        start_s: 0.002,
        ms: 5,
        top: [
          ["a work.ts:1", 4],
          ["b work.ts:1", 1],
        ],
      },
    ]);
    // The last sample has no delta after it: 7 busy ms of the 11 that have one.
    expect(s.busy_share).toBe(0.636);
  });

  it("keeps to the window", () => {
    const s = busyStretches(profile("iaaabaiibbia"), 1, 0.008, 0.011);
    expect(s.longest.map((r) => r.start_s)).toEqual([0.009]);
    expect(s.at_least_ms["1"]).toBe(1);
  });

  it("counts no run in an idle profile", () => {
    const s = busyStretches(profile("iiii"), 0);
    expect(s.longest).toEqual([]);
    expect(s.busy_share).toBe(0);
  });
});
