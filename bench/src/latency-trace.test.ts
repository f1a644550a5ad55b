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

  it("refuses a line that is not two or three numbers", () => {
    expect(() => parseTrace("1\tx\n")).toThrow(/bad line "1\tx"/);
    expect(() => parseTrace("17\n")).toThrow(/bad line/);
    expect(() => parseTrace("1\t2\t3\t4\n")).toThrow(/bad line/);
    expect(() => parseTrace("1\t2\t\n")).toThrow(/bad line/);
  });

  it("splits latency into the send lag and the rest when the trace has the lag", () => {
    // 1,000 messages: lag 1 ms each; latency 2 ms, except ten at 12 ms.
    const lines = Array.from({ length: 1000 }, (_, i) => `${i}\t${i % 100 === 0 ? 12 : 2}\t1`);
    const s = summariseTrace(parseTrace(lines.join("\n")), 50, 15);
    expect(s.latency).toEqual({ p50_ms: 2, p99_ms: 12, p999_ms: 12 });
    expect(s.send_lag).toEqual({ p50_ms: 1, p99_ms: 1, p999_ms: 1 });
    expect(s.after_send).toEqual({ p50_ms: 1, p99_ms: 11, p999_ms: 11 });
  });

  it("leaves the split out when a point has no lag", () => {
    const s = summariseTrace(parseTrace("0\t2\t1\n10\t3\n"), 50, 15);
    expect(s.latency.p50_ms).toBe(3);
    expect(s.send_lag).toBeUndefined();
    expect(s.after_send).toBeUndefined();
  });

  it("says how bunched the slow messages are", () => {
    // Twenty 50 ms buckets of five messages; the slow ones all in bucket 3, or one per bucket.
    const bunched: Array<[number, number]> = [];
    const spread: Array<[number, number]> = [];
    for (let k = 0; k < 20; k++) {
      for (let i = 0; i < 5; i++) {
        bunched.push([k * 50 + i, k === 3 ? 20 : 1]);
        spread.push([k * 50 + i, i === 0 ? 20 : 1]);
      }
    }
    expect(summariseTrace(bunched, 50, 15)).toMatchObject({ slow_messages: 5, slow_in_worst_tenth: 1 });
    // The worst tenth is two buckets of twenty: two of the twenty slow messages.
    expect(summariseTrace(spread, 50, 15)).toMatchObject({ slow_messages: 20, slow_in_worst_tenth: 0.1 });
  });

  it("summarises an empty trace as nothing slow", () => {
    expect(summariseTrace([], 50, 15)).toMatchObject({
      messages: 0,
      slow_messages: 0,
      in_slow_buckets_share: 0,
      slow_in_worst_tenth: 0,
      latency: { p50_ms: 0, p99_ms: 0, p999_ms: 0 },
    });
  });
});
