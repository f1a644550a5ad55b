import { describe, expect, it } from "vitest";
import { SlicedQueue } from "./sliced-queue.ts";

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe("SlicedQueue", () => {
  it("runs everything in order, a slice per turn, letting other work run in between", async () => {
    const ran: string[] = [];
    const q = new SlicedQueue(3, (e) => {
      throw e;
    });
    for (let i = 0; i < 7; i++) q.add(() => ran.push(`q${i}`));
    expect(ran).toEqual([]);
    expect(q.size).toBe(7);
    // Work scheduled meanwhile (a socket read, say) gets a turn between two slices.
    setImmediate(() => ran.push("other"));
    await turn();
    await turn();
    await turn();
    await turn();
    expect(ran).toEqual(["q0", "q1", "q2", "other", "q3", "q4", "q5", "q6"]);
    expect(q.size).toBe(0);
    q.add(() => ran.push("later"));
    await turn();
    expect(ran.at(-1)).toBe("later");
  });

  it("reports what a function threw and runs the rest", async () => {
    const errors: unknown[] = [];
    const ran: number[] = [];
    const q = new SlicedQueue(10, (e) => errors.push(e));
    q.add(() => ran.push(1));
    q.add(() => {
      throw new Error("boom");
    });
    q.add(() => ran.push(3));
    await turn();
    expect(ran).toEqual([1, 3]);
    expect(errors).toEqual([new Error("boom")]);
  });
});
