// Transport-level bad input: TCP length prefixes that lie, WebSocket messages of the wrong type,
// invalid UTF-8 in text messages, empty and oversized messages; and `send` frames sized right
// at maxFrameBytes, on either side of it.

import fc from "fast-check";
import * as A from "@parley/protocol/arbitraries";
import type { ClientFrame } from "@parley/protocol";
import { type Draw, chance, int, oneOf, weighted } from "./draw.ts";
import type { Unit } from "./generate.ts";
import { type Transport, concat, encodeFor, jsonText, msgpack, prefixed, utf8 } from "./wire.ts";

// ---------------------------------------------------------------- transport

const TCP_OPS = [
  "len-larger",
  "len-smaller",
  "len-zero",
  "len-over-max",
  "partial-header",
  "two-in-one",
] as const;

export function tcpLie(draw: Draw, f: ClientFrame, max: number): Unit {
  const op = oneOf(draw, TCP_OPS);
  const body = msgpack(f);
  const bytes = ((): Uint8Array => {
    switch (op) {
      case "len-larger":
        return prefixed(
          body.length + (chance(draw, 80) ? int(draw, 1, 16) : int(draw, 1, max - body.length)),
          body,
        );
      case "len-smaller":
        return prefixed(Math.max(1, body.length - int(draw, 1, 16)), body);
      case "len-zero":
        return prefixed(0, chance(draw, 50) ? body : new Uint8Array());
      case "len-over-max":
        return prefixed(
          oneOf(draw, [max + 1, max * 2, 2 ** 24, 2 ** 31, 2 ** 32 - 1]),
          chance(draw, 50) ? body : new Uint8Array(),
        );
      case "partial-header":
        return prefixed(body.length, body).subarray(0, int(draw, 1, 3));
      case "two-in-one": {
        const both = concat([body, msgpack(f)]);
        return prefixed(both.length, both);
      }
    }
  })();
  return { label: `tcp:${op}`, bytes, text: false };
}

const WS_OPS: ReadonlyArray<readonly [number, string]> = [
  [20, "wrong-type"],
  [15, "other-encoding"],
  [15, "msgpack-as-text"],
  [15, "bad-utf8"],
  [10, "empty"],
  [5, "too-large"],
  [1, "beyond-max-payload"],
];

export function wsOdd(draw: Draw, transport: Transport, f: ClientFrame, max: number): Unit {
  const op = weighted(draw, WS_OPS);
  const json = utf8(jsonText(f));
  const label = `ws:${op}`;
  switch (op) {
    case "wrong-type": {
      const native = encodeFor(transport, f);
      return { label, bytes: native.bytes, text: !native.text };
    }
    case "other-encoding":
      return transport === "ws-binary"
        ? { label, bytes: json, text: false }
        : { label, bytes: msgpack(f), text: false };
    case "msgpack-as-text":
      return { label, bytes: msgpack(f), text: true };
    case "bad-utf8": {
      const quote = json.indexOf(0x22, 2);
      const bad = oneOf(draw, [
        [0xff],
        [0xc0, 0x80],
        [0xed, 0xa0, 0x80],
        [0xf4, 0x90, 0x80, 0x80],
        [0xe2, 0x82],
      ]);
      const p = quote > 0 ? quote + 1 : json.length;
      return {
        label,
        bytes: concat([json.subarray(0, p), Uint8Array.from(bad), json.subarray(p)]),
        text: true,
      };
    }
    case "empty":
      return { label, bytes: new Uint8Array(), text: chance(draw, 50) };
    case "too-large":
      return { label, bytes: new Uint8Array(int(draw, max + 1, 2 * max)).fill(0x61), text: chance(draw, 50) };
    default:
      return {
        label,
        bytes: new Uint8Array(int(draw, 2 * max + 1, 2 * max + 4096)).fill(0x61),
        text: chance(draw, 50),
      };
  }
}

// ---------------------------------------------------------------- big

/** A `send` whose encoding is within a few bytes of maxFrameBytes, on either side of it. */
export function bigSend(draw: Draw, transport: Transport, f: ClientFrame, max: number): Unit {
  const target =
    max +
    draw(
      fc.oneof(
        { weight: 3, arbitrary: fc.constantFrom(-1, 0, 1) },
        { weight: 4, arbitrary: fc.integer({ min: -64, max: 64 }) },
        { weight: 1, arbitrary: fc.integer({ min: -20000, max: 0 }) },
      ),
    );
  const fill = int(draw, 0, 255);
  const frame = {
    t: "send" as const,
    id: "id" in f ? f.id : 0,
    conv: "conv" in f ? f.conv : "c",
    cid: draw(A.text(1, 64)),
    type: "application/octet-stream",
    body: new Uint8Array(),
  };
  const size = (): number => (transport === "ws-json" ? utf8(jsonText(frame)).length : msgpack(frame).length);
  let length = Math.max(0, target - size());
  for (let i = 0; i < 4; i++) {
    frame.body = new Uint8Array(length).fill(fill);
    const miss = target - size();
    if (miss === 0) break;
    length = Math.max(
      0,
      length + (transport === "ws-json" ? Math.trunc((miss * 3) / 4) || Math.sign(miss) : miss),
    );
  }
  frame.body = new Uint8Array(length).fill(fill);
  const encoded = encodeFor(transport, frame);
  const body = transport === "tcp" ? encoded.bytes.length - 4 : encoded.bytes.length;
  return { label: body <= max ? "valid:big" : "big:too-large", ...encoded };
}
