import { describe, expect, it } from "vitest";
import { parseTrace, summariseTrace } from "./latency-trace.ts";

describe("latency trace", () => {
  it("lists the buckets that hold a slow message, with their median and slowest", () => {
    const points = parseTrace("0\t1\n10\t2\n60\t30\n70\t2\n80\t3\n\n120\t1\n");
    const s = summariseTrace(points, 50, 15);
    expect(s.messages).toBe(6);
    expect(s.slow_messages).toBe(1);
    expect(s.slow_buckets).toEqual([{ at_ms: 50, messages: 3, p50_ms: 3, max_ms: 30 }]);
    expect(s.in_slow_buckets_share).toBe(0.5);
  });

  it("refuses a line that is not two numbers", () => {
    expect(() => parseTrace("1\tx\n")).toThrow(/bad line "1\tx"/);
    expect(() => parseTrace("17\n")).toThrow(/bad line/);
  });

  it("summarises an empty trace as nothing slow", () => {
    expect(summariseTrace([], 50, 15)).toMatchObject({
      messages: 0,
      slow_messages: 0,
      in_slow_buckets_share: 0,
    });
  });
});
