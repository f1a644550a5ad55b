import { describe, expect, it } from "vitest";
import { allocationSites, type HeapProfile } from "./heap-summary.ts";

/** A node of a sampling heap profile. */
function node(
  functionName: string,
  selfSize: number,
  children: HeapProfile["head"][] = [],
): HeapProfile["head"] {
  return { callFrame: { functionName, url: "file:///x/app.ts", lineNumber: 0 }, selfSize, children };
}

describe("allocation sites", () => {
  it("adds up each function's own bytes across its call paths, with the callers they came from", () => {
    const p: HeapProfile = {
      head: node("(root)", 0, [
        node("onData", 10, [node("decode", 310), node("send", 0, [node("encode", 100)])]),
        node("publish", 0, [node("send", 50, [node("encode", 200)])]),
      ]),
    };
    const { totalBytes, sites } = allocationSites(p, 10);
    expect(totalBytes).toBe(670);
    expect(sites.map((s) => [s.site, s.bytes])).toEqual([
      ["decode app.ts:1", 310],
      ["encode app.ts:1", 300],
      ["send app.ts:1", 50],
      ["onData app.ts:1", 10],
    ]);
    expect(sites[1]!.callers).toEqual([
      ["send app.ts:1 <- publish app.ts:1", 200],
      ["send app.ts:1 <- onData app.ts:1", 100],
    ]);
    expect(allocationSites(p, 1).sites).toHaveLength(1);
  });

  it("walks a stack deeper than the JavaScript stack without overflowing", () => {
    let deep = node("leaf", 8);
    for (let i = 0; i < 50_000; i++) deep = node(`f${i % 3}`, 0, [deep]);
    const { totalBytes, sites } = allocationSites({ head: deep }, 5);
    expect(totalBytes).toBe(8);
    expect(sites).toEqual([
      { site: "leaf app.ts:1", bytes: 8, callers: [["f0 app.ts:1 <- f1 app.ts:1", 8]] },
    ]);
  });
});
