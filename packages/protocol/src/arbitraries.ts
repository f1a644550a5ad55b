// fast-check arbitraries for every frame, for property tests here and in the server and SDK.
// Every value they produce is valid (passes parseClientFrame/parseServerFrame) and round-trips
// through both codecs unchanged. Test-only: mod.ts does not export this file.

import fc from "fast-check";
import type * as F from "./frames.ts";
import { LIMITS } from "./validate.ts";

// fc.record builds null-prototype objects unless told otherwise; decoded frames are ordinary
// objects, and toStrictEqual compares prototypes. Keys outside `requiredKeys` may be absent.
function record<T>(
  model: { [K in keyof T]: fc.Arbitrary<T[K]> },
  requiredKeys?: Array<keyof T>,
): fc.Arbitrary<T> {
  const constraints =
    requiredKeys === undefined ? { noNullPrototype: true } : { requiredKeys, noNullPrototype: true };
  return fc.record(model, constraints);
}

/** One Unicode scalar value, mostly ASCII (lone surrogates cannot travel in UTF-8). */
const codePoint: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0x1f }).map((c) => String.fromCharCode(c)) },
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: 0x80, max: 0x10ffff - 0x800 })
      .map((c) => String.fromCodePoint(c >= 0xd800 ? c + 0x800 : c)),
  },
);

/** A string of `min`..`max` code points. */
export function text(min: number, max: number): fc.Arbitrary<string> {
  return fc.string({ unit: codePoint, minLength: min, maxLength: max });
}

export const id = (): fc.Arbitrary<string> => text(1, LIMITS.id);
export const uint = (): fc.Arbitrary<number> => fc.maxSafeNat();
export const seq1 = (): fc.Arbitrary<number> => fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
export const bytes = (): fc.Arbitrary<Uint8Array> => fc.uint8Array({ maxLength: 300 });
export const emoji = (): fc.Arbitrary<string> => text(1, LIMITS.emoji).filter((s) => s !== "__proto__");
const contentType = (): fc.Arbitrary<string> => text(1, LIMITS.contentType);
const cid = (): fc.Arbitrary<string> => text(1, LIMITS.cid);
const limit = (): fc.Arbitrary<number> => fc.integer({ min: 1, max: LIMITS.page });
const receiptKind = (): fc.Arbitrary<F.ReceiptKind> => fc.constantFrom("delivered", "read");

export const message = (): fc.Arbitrary<F.Message> =>
  record(
    {
      conv: id(),
      seq: seq1(),
      from: id(),
      dev: id(),
      cid: cid(),
      type: contentType(),
      body: bytes(),
      ts: uint(),
      replyTo: uint(),
      editedAt: uint(),
      deleted: fc.boolean(),
      reactions: fc.dictionary(emoji(), fc.array(id(), { maxLength: 4 }), {
        maxKeys: 4,
        noNullPrototype: true,
      }),
    },
    ["conv", "seq", "from", "dev", "cid", "type", "body", "ts"],
  );

export const member = (): fc.Arbitrary<F.Member> =>
  record({
    user: id(),
    role: fc.constantFrom<F.Role>("owner", "admin", "member"),
    delivered: uint(),
    read: uint(),
  });

export const conversation = (): fc.Arbitrary<F.Conversation> =>
  record(
    {
      id: id(),
      kind: fc.constantFrom<F.ConversationKind>("direct", "group"),
      name: text(0, LIMITS.name),
      createdAt: uint(),
      lastSeq: uint(),
      members: fc.array(member(), { maxLength: 4 }),
      memberCount: uint(),
      large: fc.constant(true as const),
      logHead: uint(),
    },
    ["id", "kind", "name", "createdAt", "lastSeq", "members"],
  );

export const update = (): fc.Arbitrary<F.Update> =>
  fc.oneof(
    record({ k: fc.constant("msg" as const), msg: message() }),
    record({ k: fc.constant("edit" as const), msg: message() }),
    record({ k: fc.constant("del" as const), msg: message() }),
    record({
      k: fc.constant("react" as const),
      msg: message(),
      user: id(),
      emoji: emoji(),
      on: fc.boolean(),
    }),
    record({ k: fc.constant("receipt" as const), conv: id(), user: id(), kind: receiptKind(), seq: uint() }),
    record({ k: fc.constant("conv" as const), conv: conversation() }),
    record({ k: fc.constant("left" as const), conv: id() }),
    record(
      {
        k: fc.constant("members" as const),
        conv: id(),
        name: text(0, LIMITS.name),
        set: fc.array(member(), { maxLength: 3 }),
        removed: fc.array(id(), { maxLength: 3 }),
        count: uint(),
      },
      ["k", "conv", "name", "set", "removed"],
    ),
  );

export const loggedUpdate = (): fc.Arbitrary<F.LoggedUpdate> => record({ useq: seq1(), u: update() });

type Arbs<T extends { t: string }> = { [K in T["t"]]: fc.Arbitrary<Extract<T, { t: K }>> };

const ping = (): fc.Arbitrary<F.PingFrame> => record({ t: fc.constant("ping" as const), n: uint() });
const pong = (): fc.Arbitrary<F.PongFrame> => record({ t: fc.constant("pong" as const), n: uint() });

/** One arbitrary per client frame type, by `t`. */
export const clientFrames: Arbs<F.ClientFrame> = {
  hello: record(
    {
      t: fc.constant("hello" as const),
      versions: fc.array(uint(), { minLength: 1, maxLength: LIMITS.versions }),
      token: text(1, LIMITS.token),
      agent: text(0, LIMITS.agent),
    },
    ["t", "versions", "token"],
  ),
  send: record(
    {
      t: fc.constant("send" as const),
      id: uint(),
      conv: id(),
      cid: cid(),
      type: contentType(),
      body: bytes(),
      replyTo: uint(),
    },
    ["t", "id", "conv", "cid", "type", "body"],
  ),
  ack: record(
    {
      t: fc.constant("ack" as const),
      cursor: uint(),
      convs: fc.array(record({ conv: id(), seq: uint() }), { maxLength: 8 }),
    },
    ["t"],
  ),
  sync: record({ t: fc.constant("sync" as const), id: uint(), cursor: uint(), limit: limit(), log: id() }, [
    "t",
    "id",
    "cursor",
  ]),
  history: record(
    {
      t: fc.constant("history" as const),
      id: uint(),
      conv: id(),
      before: uint(),
      after: uint(),
      limit: limit(),
    },
    ["t", "id", "conv"],
  ),
  receipt: record({
    t: fc.constant("receipt" as const),
    id: uint(),
    conv: id(),
    kind: receiptKind(),
    seq: uint(),
  }),
  edit: record({
    t: fc.constant("edit" as const),
    id: uint(),
    conv: id(),
    seq: uint(),
    type: contentType(),
    body: bytes(),
  }),
  delete: record({ t: fc.constant("delete" as const), id: uint(), conv: id(), seq: uint() }),
  react: record({
    t: fc.constant("react" as const),
    id: uint(),
    conv: id(),
    seq: uint(),
    emoji: emoji(),
    on: fc.boolean(),
  }),
  typing: record({ t: fc.constant("typing" as const), conv: id() }),
  watch: record({ t: fc.constant("watch" as const), users: fc.array(id(), { maxLength: 16 }) }),
  ping: ping(),
  pong: pong(),
};

/** One arbitrary per server frame type, by `t`. */
export const serverFrames: Arbs<F.ServerFrame> = {
  welcome: record(
    {
      t: fc.constant("welcome" as const),
      version: uint(),
      user: id(),
      device: id(),
      heartbeatMs: uint(),
      maxFrameBytes: uint(),
      serverTime: uint(),
      head: uint(),
      logs: fc.array(record({ conv: id(), head: uint() }), { maxLength: 3 }),
    },
    ["t", "version", "user", "device", "heartbeatMs", "maxFrameBytes", "serverTime", "head"],
  ),
  sent: record(
    {
      t: fc.constant("sent" as const),
      id: uint(),
      conv: id(),
      cid: cid(),
      seq: seq1(),
      ts: uint(),
      useq: seq1(),
      log: id(),
    },
    ["t", "id", "conv", "cid", "seq", "ts"],
  ),
  push: record({ t: fc.constant("push" as const), useq: seq1(), u: update(), log: id() }, ["t", "useq", "u"]),
  synced: record(
    {
      t: fc.constant("synced" as const),
      id: uint(),
      updates: fc.array(loggedUpdate(), { maxLength: 4 }),
      more: fc.boolean(),
      head: uint(),
      log: id(),
    },
    ["t", "id", "updates", "more", "head"],
  ),
  history: record({
    t: fc.constant("history" as const),
    id: uint(),
    conv: id(),
    messages: fc.array(message(), { maxLength: 4 }),
    more: fc.boolean(),
  }),
  ok: record({ t: fc.constant("ok" as const), id: uint() }),
  typing: record({ t: fc.constant("typing" as const), conv: id(), user: id() }),
  presence: record({
    t: fc.constant("presence" as const),
    user: id(),
    online: fc.boolean(),
    lastSeen: uint(),
  }),
  error: record(
    {
      t: fc.constant("error" as const),
      id: uint(),
      code: text(1, LIMITS.errorCode),
      message: text(0, LIMITS.errorMessage),
      retry: fc.boolean(),
      retryAfterMs: uint(),
    },
    ["t", "code", "message", "retry"],
  ),
  bye: record({
    t: fc.constant("bye" as const),
    code: fc.integer({ min: 4000, max: 4999 }),
    reason: text(0, LIMITS.byeReason),
  }),
  ping: ping(),
  pong: pong(),
};

export const clientFrame = (): fc.Arbitrary<F.ClientFrame> =>
  fc.oneof(...(Object.values(clientFrames) as fc.Arbitrary<F.ClientFrame>[]));
export const serverFrame = (): fc.Arbitrary<F.ServerFrame> =>
  fc.oneof(...(Object.values(serverFrames) as fc.Arbitrary<F.ServerFrame>[]));
export const frame = (): fc.Arbitrary<F.Frame> => fc.oneof(clientFrame(), serverFrame());
