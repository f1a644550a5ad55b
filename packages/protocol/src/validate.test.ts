import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { clientFrame, clientFrames, message, serverFrame, serverFrames } from "./arbitraries.ts";
import { ParleyError } from "./errors.ts";
import type { ErrorCode } from "./errors.ts";
import { Compile } from "typebox/compile";
import {
  ClientFrameSchema,
  LIMITS,
  parseClientFrame,
  parseServerFrame,
  ServerFrameSchema,
} from "./validate.ts";
import { thrownParleyError } from "./test-helpers.ts";

const failure = thrownParleyError;

const bytes = new Uint8Array([1, 2]);
const send = { t: "send", id: 1, conv: "c1", cid: "m1", type: "text/plain", body: bytes };
const msg = { conv: "c1", seq: 1, from: "u1", dev: "d1", cid: "m1", type: "text/plain", body: bytes, ts: 5 };
const push = (u: unknown) => ({ t: "push", useq: 1, u });
const s = (n: number, unit = "a") => unit.repeat(n);

describe("parseClientFrame and parseServerFrame", () => {
  it("accept every frame the arbitraries make", () => {
    fc.assert(fc.property(clientFrame(), (f) => void expect(parseClientFrame(f)).toBe(f)));
    fc.assert(fc.property(serverFrame(), (f) => void expect(parseServerFrame(f)).toBe(f)));
  });

  it("accept objects without a prototype", () => {
    expect(parseClientFrame(Object.assign(Object.create(null) as object, { t: "ping", n: 1 }))).toBeTruthy();
  });

  it("accept strings at their bounds, counted in code points", () => {
    expect(
      parseClientFrame({ ...send, conv: s(LIMITS.id), cid: s(LIMITS.cid), type: s(LIMITS.contentType) }),
    ).toBeTruthy();
    expect(parseClientFrame({ ...send, conv: s(LIMITS.id, "😀") })).toBeTruthy();
    expect(
      parseClientFrame({ t: "hello", versions: [1], token: s(LIMITS.token), agent: s(LIMITS.agent) }),
    ).toBeTruthy();
    expect(
      parseClientFrame({ t: "react", id: 1, conv: "c", seq: 1, emoji: s(LIMITS.emoji, "👍"), on: true }),
    ).toBeTruthy();
    expect(parseClientFrame({ t: "watch", users: Array(LIMITS.watchUsers).fill("u") })).toBeTruthy();
    expect(
      parseClientFrame({ t: "sync", id: 0, cursor: Number.MAX_SAFE_INTEGER, limit: LIMITS.page }),
    ).toBeTruthy();
  });

  const unknown: Array<[string, (v: unknown) => unknown, unknown]> = [
    ["an unknown t", parseClientFrame, { t: "nope" }],
    ["a t from Object.prototype", parseClientFrame, { t: "constructor" }],
    ["t __proto__", parseClientFrame, { t: "__proto__" }],
    ["a server frame sent by a client", parseClientFrame, { t: "welcome" }],
    ["a client frame sent by a server", parseServerFrame, { t: "send" }],
    ["an empty t", parseServerFrame, { t: "" }],
  ];
  it.each(unknown)("refuse %s with E_UNKNOWN_FRAME", (_name, parse, value) => {
    expect(failure(() => parse(value)).code).toBe("E_UNKNOWN_FRAME");
  });

  const bad: Array<[string, unknown, string]> = [
    // not a frame at all
    ["null", null, "frame: must be an object"],
    ["a number", 1, "frame: must be an object"],
    ["a string", "ping", "frame: must be an object"],
    ["an array", [{ t: "ping", n: 1 }], "frame: must be an object"],
    ["bytes", bytes, "frame: must be an object"],
    ["a Date", new Date(0), "frame: must be an object"],
    ["no t", { n: 1 }, "t: must be a string"],
    ["a numeric t", { t: 1 }, "t: must be a string"],
    // missing fields
    ["send without body", { ...send, body: undefined }, "send.body"],
    ["send without conv", { t: "send", id: 1, cid: "m", type: "x", body: bytes }, "send.conv: missing"],
    ["ping without n", { t: "ping" }, "ping.n: missing"],
    // wrong types
    ["a string id", { ...send, id: "1" }, "send.id"],
    ["a negative id", { ...send, id: -1 }, "send.id"],
    ["a fractional id", { ...send, id: 1.5 }, "send.id"],
    ["an unsafe id", { ...send, id: 2 ** 53 }, "send.id"],
    ["a NaN id", { ...send, id: NaN }, "send.id"],
    ["an infinite id", { ...send, id: Infinity }, "send.id"],
    ["a bigint id", { ...send, id: 1n }, "send.id"],
    ["a string body", { ...send, body: "aGk=" }, "send.body: must be bytes"],
    ["a number-array body", { ...send, body: [1, 2] }, "send.body: must be bytes"],
    ["a boolean as a string", { t: "react", id: 1, conv: "c", seq: 1, emoji: "x", on: "true" }, "react.on"],
    [
      "an unknown receipt kind",
      { t: "receipt", id: 1, conv: "c", kind: "seen", seq: 1 },
      "receipt.kind: must be one of",
    ],
    // strings out of bounds
    ["an empty conv", { ...send, conv: "" }, "send.conv"],
    ["a conv too long", { ...send, conv: s(LIMITS.id + 1) }, "send.conv"],
    ["a cid too long", { ...send, cid: s(LIMITS.cid + 1) }, "send.cid"],
    ["a content type too long", { ...send, type: s(LIMITS.contentType + 1) }, "send.type"],
    ["a token too long", { t: "hello", versions: [1], token: s(LIMITS.token + 1) }, "hello.token"],
    [
      "an agent too long",
      { t: "hello", versions: [1], token: "x", agent: s(LIMITS.agent + 1) },
      "hello.agent",
    ],
    ["an emoji too long", { t: "react", id: 1, conv: "c", seq: 1, emoji: s(33), on: true }, "react.emoji"],
    [
      "emoji __proto__",
      { t: "react", id: 1, conv: "c", seq: 1, emoji: "__proto__", on: true },
      "react.emoji",
    ],
    // arrays out of bounds
    ["no versions", { t: "hello", versions: [], token: "x" }, "hello.versions"],
    ["too many versions", { t: "hello", versions: Array(17).fill(1), token: "x" }, "hello.versions"],
    ["too many watched users", { t: "watch", users: Array(LIMITS.watchUsers + 1).fill("u") }, "watch.users"],
    ["a watched user too long", { t: "watch", users: ["u", s(65)] }, "watch.users[1]"],
    ["too many acked convs", { t: "ack", convs: Array(1001).fill({ conv: "c", seq: 1 }) }, "ack.convs"],
    ["a limit of 0", { t: "sync", id: 1, cursor: 0, limit: 0 }, "sync.limit"],
    ["a limit over the page size", { t: "history", id: 1, conv: "c", limit: 1001 }, "history.limit"],
    // unknown fields
    ["an extra field", { ...send, extra: 1 }, "send.extra: unknown field"],
    [
      "an extra nested field",
      { t: "ack", convs: [{ conv: "c", seq: 1, x: 1 }] },
      "ack.convs[0].x: unknown field",
    ],
  ];
  it.each(bad)("refuse %s with E_BAD_FRAME naming the field", (_name, value, reason) => {
    const error = failure(() => parseClientFrame(value));
    expect(error.code).toBe<ErrorCode>("E_BAD_FRAME");
    expect(error.message).toContain(reason);
  });

  const badServer: Array<[string, unknown, string]> = [
    ["a message with seq 0", push({ k: "msg", msg: { ...msg, seq: 0 } }), "push.u.msg.seq"],
    ["a message without body", push({ k: "msg", msg: { ...msg, body: undefined } }), "push.u.msg.body"],
    ["an update of unknown kind", push({ k: "zap" }), "push.u.k: must be one of"],
    ["an update without kind", push({ conv: "c" }), "push.u.k: missing"],
    [
      "a receipt update with a bad seq",
      push({ k: "receipt", conv: "c", user: "u", kind: "read", seq: -1 }),
      "push.u.seq",
    ],
    ["an edit update with an extra field", push({ k: "edit", msg, x: 1 }), "push.u.x: unknown field"],
    [
      "reactions that are bytes",
      push({ k: "msg", msg: { ...msg, reactions: bytes } }),
      "push.u.msg.reactions",
    ],
    [
      "a reaction with an empty emoji",
      push({ k: "msg", msg: { ...msg, reactions: { "": ["u"] } } }),
      "reactions",
    ],
    [
      "a reaction user too long",
      push({ k: "msg", msg: { ...msg, reactions: { x: [s(65)] } } }),
      "reactions.x[0]",
    ],
    [
      "a bad member role",
      push({
        k: "conv",
        conv: {
          id: "c",
          kind: "group",
          name: "",
          createdAt: 0,
          lastSeq: 0,
          members: [{ user: "u", role: "boss", delivered: 0, read: 0 }],
        },
      }),
      "push.u.conv.members[0].role",
    ],
    ["a bye code outside 4000-4999", { t: "bye", code: 1000, reason: "" }, "bye.code"],
    [
      "too many synced updates",
      {
        t: "synced",
        id: 1,
        updates: Array(1001).fill({ useq: 1, u: { k: "left", conv: "c" } }),
        more: false,
        head: 1,
      },
      "synced.updates",
    ],
  ];
  it.each(badServer)("refuse a server frame with %s", (_name, value, reason) => {
    const error = failure(() => parseServerFrame(value));
    expect(error.code).toBe<ErrorCode>("E_BAD_FRAME");
    expect(error.message).toContain(reason);
  });

  it("agree with the exported union schemas", () => {
    const client = Compile(ClientFrameSchema);
    const server = Compile(ServerFrameSchema);
    fc.assert(
      fc.property(clientFrame(), serverFrame(), (c, s) => {
        expect(client.Check(c)).toBe(true);
        expect(server.Check(s)).toBe(true);
      }),
    );
    for (const [, value] of bad.slice(2)) expect(client.Check(value)).toBe(false);
    expect(client.Check({ t: "welcome" })).toBe(false);
    expect(server.Check({ t: "send" })).toBe(false);
  });

  it("accept a message with reactions", () => {
    fc.assert(fc.property(message(), (m) => void parseServerFrame(push({ k: "msg", msg: m }))));
  });

  it("throw only ParleyError when any field of a valid frame is replaced by anything", () => {
    const all = [...Object.values(clientFrames), ...Object.values(serverFrames)] as unknown as Array<
      fc.Arbitrary<Record<string, unknown>>
    >;
    fc.assert(
      fc.property(fc.oneof(...all), fc.nat(), fc.oneof(fc.anything(), fc.uint8Array()), (f, pick, value) => {
        const keys = Object.keys(f);
        const mutated = { ...f, [keys[pick % keys.length]!]: value };
        for (const parse of [parseClientFrame, parseServerFrame]) {
          try {
            parse(mutated);
          } catch (error) {
            expect(error).toBeInstanceOf(ParleyError);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});
