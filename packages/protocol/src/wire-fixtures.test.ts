// Frames with their exact bytes on the wire, checked by hand against the MessagePack spec
// (https://github.com/msgpack/msgpack/blob/master/spec.md) and frozen here: a change in these
// bytes is a protocol change. docs/protocol.md shows the same bytes.
import { describe, expect, it } from "vitest";
import { encodeFramed } from "./binary-codec.ts";
import { FrameParser } from "./frame-parser.ts";
import type { Frame } from "./frames.ts";
import { encodeJson } from "./json-codec.ts";
import { decodeClientBinary, decodeClientJson, decodeServerBinary } from "./mod.ts";

const fromHex = (hex: string) => new Uint8Array(Buffer.from(hex.replace(/\s+/g, ""), "hex"));

interface Fixture {
  name: string;
  from: "client" | "server";
  frame: Frame;
  hex: string;
}

const fixtures: Fixture[] = [
  {
    name: "ping",
    from: "client",
    frame: { t: "ping", n: 1 },
    // length 11 | fixmap(2) | "t" "ping" | "n" 1
    hex: "0000000b 82 a174 a470696e67 a16e 01",
  },
  {
    name: "send",
    from: "client",
    frame: {
      t: "send",
      id: 7,
      conv: "c1",
      cid: "m1",
      type: "text/plain",
      body: new TextEncoder().encode("hi"),
    },
    // length 52 | fixmap(6) | "t" "send" | "id" 7 | "conv" "c1" | "cid" "m1" | "type" "text/plain"
    // | "body" bin8(2) "hi"
    hex:
      "00000034 86 a174 a473656e64 a26964 07 a4636f6e76 a26331 a3636964 a26d31" +
      " a474797065 aa746578742f706c61696e a4626f6479 c402 6869",
  },
  {
    name: "sent (a timestamp beyond 32 bits travels as float64)",
    from: "server",
    frame: { t: "sent", id: 7, conv: "c1", cid: "m1", seq: 42, ts: 1_700_000_000_000 },
    // length 44 | fixmap(6) | "t" "sent" | "id" 7 | "conv" "c1" | "cid" "m1" | "seq" 42
    // | "ts" float64 1.7e12
    hex: "0000002c 86 a174 a473656e74 a26964 07 a4636f6e76 a26331 a3636964 a26d31 a3736571 2a a27473 cb4278bcfe56800000",
  },
  {
    name: "push of a read receipt",
    from: "server",
    frame: { t: "push", useq: 300, u: { k: "receipt", conv: "c1", user: "u2", kind: "read", seq: 42 } },
    // length 60 | fixmap(3) | "t" "push" | "useq" uint16 300 | "u" fixmap(5) | "k" "receipt"
    // | "conv" "c1" | "user" "u2" | "kind" "read" | "seq" 42
    hex:
      "0000003c 83 a174 a470757368 a475736571 cd012c a175 85 a16b a772656365697074" +
      " a4636f6e76 a26331 a475736572 a27532 a46b696e64 a472656164 a3736571 2a",
  },
  {
    name: "error",
    from: "server",
    frame: {
      t: "error",
      id: 3,
      code: "E_RATE_LIMITED",
      message: "slow down",
      retry: true,
      retryAfterMs: 1500,
    },
    // length 74 | fixmap(6) | "t" "error" | "id" 3 | "code" "E_RATE_LIMITED" | "message" "slow down"
    // | "retry" true | "retryAfterMs" uint16 1500
    hex:
      "0000004a 86 a174 a56572726f72 a26964 03 a4636f6465 ae455f524154455f4c494d49544544" +
      " a76d657373616765 a9736c6f7720646f776e a57265747279 c3 ac726574727941667465724d73 cd05dc",
  },
];

const decode = (f: Fixture, body: Uint8Array) =>
  f.from === "client" ? decodeClientBinary(body) : decodeServerBinary(body);

describe("wire fixtures", () => {
  it.each(fixtures)("$name encodes to its frozen bytes", (f) => {
    expect(encodeFramed(f.frame)).toStrictEqual(fromHex(f.hex));
  });

  it.each(fixtures)("$name decodes from its frozen bytes", (f) => {
    const [body, ...rest] = new FrameParser().push(fromHex(f.hex));
    expect(rest).toHaveLength(0);
    expect(decode(f, body!)).toStrictEqual(f.frame);
  });

  it("parses all fixtures fed one byte at a time", () => {
    const stream = fromHex(fixtures.map((f) => f.hex).join(""));
    const parser = new FrameParser();
    const bodies: Uint8Array[] = [];
    for (let i = 0; i < stream.length; i++) bodies.push(...parser.push(stream.subarray(i, i + 1)));
    expect(bodies.map((body, i) => decode(fixtures[i]!, body))).toStrictEqual(fixtures.map((f) => f.frame));
    expect(parser.bufferedBytes).toBe(0);
  });

  it("send in JSON", () => {
    const json = '{"t":"send","id":7,"conv":"c1","cid":"m1","type":"text/plain","body":{"$bytes":"aGk="}}';
    expect(encodeJson(fixtures[1]!.frame)).toBe(json);
    expect(decodeClientJson(json)).toStrictEqual(fixtures[1]!.frame);
  });
});
