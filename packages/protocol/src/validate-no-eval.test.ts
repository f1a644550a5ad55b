// Validation where code generation is forbidden (a browser page whose CSP lacks unsafe-eval):
// typebox then interprets the schemas instead of compiling them. Same answers, including the
// Uint8Array refinement. Each vitest file has its own module registry, so the setting below
// holds for this file's import of validate.ts only.
import fc from "fast-check";
import Type from "typebox";
import { Compile } from "typebox/compile";
import { Settings } from "typebox/system";
import { afterAll, describe, expect, it } from "vitest";
import { clientFrame, serverFrame } from "./arbitraries.ts";
import { ParleyError } from "./errors.ts";

Settings.Set({ useAcceleration: false });
const { parseClientFrame, parseServerFrame } = await import("./validate.ts");
afterAll(() => Settings.Reset());

describe("validation without eval", () => {
  it("really runs without compiled code", () => {
    expect(Compile(Type.String()).IsAccelerated()).toBe(false);
  });

  it("accepts valid frames", () => {
    fc.assert(fc.property(clientFrame(), (f) => void expect(parseClientFrame(f)).toBe(f)));
    fc.assert(fc.property(serverFrame(), (f) => void expect(parseServerFrame(f)).toBe(f)));
  });

  it.each([
    [{ t: "send", id: 1, conv: "c", cid: "m", type: "x", body: "not bytes" }, "send.body"],
    [{ t: "send", id: 1, conv: "c", cid: "m", type: "x", body: new Uint8Array(0), x: 1 }, "send.x"],
    [{ t: "push", useq: 1, u: { k: "receipt", conv: "c", user: "u", kind: "read", seq: -1 } }, "push.u.seq"],
  ])("refuses %j", (value, reason) => {
    const parse = value.t === "push" ? parseServerFrame : parseClientFrame;
    try {
      parse(value);
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(ParleyError);
      expect((error as ParleyError).message).toContain(reason);
    }
  });
});
