import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { clientFrame, serverFrame } from "./arbitraries.ts";
import * as P from "./mod.ts";

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(P.ParleyError);
    return (error as P.ParleyError).code;
  }
  return "no error";
}

describe("mod", () => {
  it("decodes and validates in one step, per direction and encoding", () => {
    fc.assert(
      fc.property(clientFrame(), serverFrame(), (c, s) => {
        expect(P.decodeClientBinary(P.encodeBinary(c))).toStrictEqual(c);
        expect(P.decodeClientJson(P.encodeJson(c))).toStrictEqual(c);
        expect(P.decodeServerBinary(P.encodeBinary(s))).toStrictEqual(s);
        expect(P.decodeServerJson(P.encodeJson(s))).toStrictEqual(s);
      }),
    );
  });

  it("reports a frame of the wrong direction as unknown", () => {
    const welcome: P.WelcomeFrame = {
      t: "welcome",
      version: 1,
      user: "u",
      device: "d",
      heartbeatMs: 30_000,
      maxFrameBytes: P.DEFAULT_MAX_FRAME_BYTES,
      serverTime: 0,
      head: 0,
    };
    expect(code(() => P.decodeClientBinary(P.encodeBinary(welcome)))).toBe("E_UNKNOWN_FRAME");
    expect(code(() => P.decodeClientJson(P.encodeJson(welcome)))).toBe("E_UNKNOWN_FRAME");
    expect(code(() => P.decodeServerJson(P.encodeJson({ t: "sync", id: 1, cursor: 0 })))).toBe(
      "E_UNKNOWN_FRAME",
    );
  });

  it("reports undecodable input as a bad frame", () => {
    expect(code(() => P.decodeClientBinary(new Uint8Array([0xc1])))).toBe("E_BAD_FRAME");
    expect(code(() => P.decodeServerJson("{"))).toBe("E_BAD_FRAME");
  });

  it("exports the whole API", () => {
    for (const name of [
      "encodeBinary",
      "encodeFramed",
      "lengthPrefixed",
      "decodeBinary",
      "encodeJson",
      "decodeJson",
      "FrameParser",
      "parseClientFrame",
      "parseServerFrame",
      "decodeClientBinary",
      "decodeClientJson",
      "decodeServerBinary",
      "decodeServerJson",
      "ParleyError",
      "mayReconnect",
    ]) {
      expect(typeof (P as Record<string, unknown>)[name], name).toBe("function");
    }
    for (const name of [
      "ClientFrameSchema",
      "ServerFrameSchema",
      "MessageSchema",
      "ConversationSchema",
      "UpdateSchema",
    ]) {
      expect(typeof (P as Record<string, unknown>)[name], name).toBe("object");
    }
  });
});
