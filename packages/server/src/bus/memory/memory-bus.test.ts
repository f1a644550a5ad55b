import { describe, expect, it } from "vitest";
import { runBusConformance } from "../bus-conformance.ts";
import { MemoryBus } from "./memory-bus.ts";

runBusConformance("MemoryBus", (onError) =>
  Promise.resolve({
    bus: new MemoryBus({ onError }),
    flush: () => Promise.resolve(),
    cleanup: () => Promise.resolve(),
  }),
);

describe("MemoryBus", () => {
  it("delivers before publish returns", () => {
    const bus = new MemoryBus<number>();
    const got: number[] = [];
    bus.subscribe("t", (n) => got.push(n));
    bus.publish("t", 1);
    expect(got).toEqual([1]);
  });

  it("delivers an event published by a handler after the current one, keeping per-subscriber order", () => {
    const bus = new MemoryBus<string>();
    const got: string[] = [];
    bus.subscribe("t", (e) => {
      got.push(`a:${e}`);
      if (e === "first") bus.publish("t", "second");
    });
    bus.subscribe("t", (e) => got.push(`b:${e}`));
    bus.publish("t", "first");
    expect(got).toEqual(["a:first", "b:first", "a:second", "b:second"]);
  });

  it("does not give an event to a subscriber added while it is being delivered", () => {
    const bus = new MemoryBus<number>();
    const late: number[] = [];
    bus.subscribe("t", () => {
      if (late.length === 0) bus.subscribe("t", (n) => late.push(n));
    });
    bus.publish("t", 1);
    expect(late).toEqual([]);
    bus.publish("t", 2);
    expect(late).toEqual([2]);
  });

  it("survives an onError that throws", () => {
    const bus = new MemoryBus<number>({
      onError: () => {
        throw new Error("reporter broke");
      },
    });
    const got: number[] = [];
    bus.subscribe("t", () => {
      throw new Error("boom");
    });
    bus.subscribe("t", (n) => got.push(n));
    expect(() => bus.publish("t", 1)).not.toThrow();
    expect(got).toEqual([1]);
  });

  it("keeps delivering after a handler throws mid-queue", () => {
    const errors: unknown[] = [];
    const bus = new MemoryBus<number>({ onError: (e) => errors.push(e) });
    const got: number[] = [];
    bus.subscribe("t", (n) => {
      if (n === 1) {
        bus.publish("t", 2);
        throw new Error("after queueing");
      }
    });
    bus.subscribe("t", (n) => got.push(n));
    bus.publish("t", 1);
    expect(got).toEqual([1, 2]);
    expect(errors).toHaveLength(1);
  });
});
