import { describe, expect, it } from "vitest";
import { decodeBinary, encodeBinary } from "@parley/protocol";
import type { PushFrame, ServerFrame } from "@parley/protocol";
import { sharedEncoder } from "./shared-encoding.ts";

describe("sharedEncoder", () => {
  const push = (log?: string): PushFrame => ({
    t: "push",
    useq: 3,
    u: { k: "left", conv: "c1" },
    ...(log === undefined ? {} : { log }),
  });

  it("encodes a large group's push once for every socket, anything else each time", () => {
    let calls = 0;
    const encode = sharedEncoder((f: ServerFrame) => {
      calls++;
      return encodeBinary(f);
    });
    const group = push("g1");
    const first = encode(group);
    expect(encode(group)).toBe(first);
    expect(calls).toBe(1);
    expect(decodeBinary(first)).toEqual(group);
    // An equal frame that is another object (another publish) is encoded again.
    expect(encode(push("g1"))).not.toBe(first);
    const own = push();
    encode(own);
    encode(own);
    encode({ t: "ok", id: 1 });
    expect(calls).toBe(5);
  });
});
