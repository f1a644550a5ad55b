// typebox schemas for every frame and shared object, with the bounds a server needs against
// hostile input (string lengths, integer ranges, array sizes, no unknown fields). validate.ts
// checks frames with them; the server and SDK may reuse Message, Conversation, Update, ...

import Type from "typebox";
import type { Static, TObject, TUnsafe } from "typebox";
import type * as F from "./frames.ts";

/** Bounds enforced by the schemas. Lengths count Unicode code points. */
export const LIMITS = {
  /** User, device and conversation ids. */
  id: 64,
  cid: 64,
  contentType: 128,
  emoji: 32,
  name: 128,
  token: 512,
  agent: 128,
  versions: 16,
  watchUsers: 1000,
  ackConvs: 1000,
  /** `limit` of sync/history requests, and entries in one synced/history reply. */
  page: 1000,
  errorCode: 64,
  errorMessage: 1024,
  byeReason: 256,
  members: 100_000,
  /** Distinct emoji on one message, and users per emoji. */
  reactionKinds: 256,
  reactionUsers: 100_000,
} as const;

// ---------------------------------------------------------------- building blocks

const text = (min: number, max: number) => Type.String({ minLength: min, maxLength: max });
const Id = text(1, LIMITS.id);
const UInt = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
/** A sequence number that names an existing entry (seq and useq start at 1). */
const Seq1 = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER });
const Limit = Type.Integer({ minimum: 1, maximum: LIMITS.page });
// Refused as a reaction: it would become an object key, and msgpack decoders treat it specially.
const Emoji = Type.String({ minLength: 1, maxLength: LIMITS.emoji, not: { const: "__proto__" } });
const ContentType = text(1, LIMITS.contentType);
const ReceiptKind = Type.Enum(["delivered", "read"]);
const strict = { additionalProperties: false } as const;

/** A Uint8Array (typebox has no bytes type; JSON Schema sees an unconstrained value). */
export const BytesSchema = Type.Refine(
  Type.Unsafe<Uint8Array>({}),
  (value) => value instanceof Uint8Array,
  () => "must be bytes (a Uint8Array)",
);

/** True for a record as a literal, JSON.parse or msgpack makes it (not an array, a class
 * instance or a typed array). */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** A union of objects told apart by the string field `key`. Unlike anyOf, a failure reports the
 * errors of the variant that `key` names (typebox drops errors under `then`, hence if/else). */
function discriminated<T>(key: string, variants: TObject[]): TUnsafe<T> {
  const tags = variants.map((variant) => (variant.properties[key] as { const: string }).const);
  return Type.Unsafe<T>({
    type: "object",
    required: [key],
    properties: { [key]: { enum: tags } },
    allOf: variants.map((variant, i) => ({
      if: { properties: { [key]: { not: { const: tags[i] } } } },
      else: variant,
    })),
  });
}

// ---------------------------------------------------------------- shared shapes

export const MessageSchema = Type.Object(
  {
    conv: Id,
    seq: Seq1,
    from: Id,
    dev: Id,
    cid: text(1, LIMITS.cid),
    type: ContentType,
    body: BytesSchema,
    ts: UInt,
    replyTo: Type.Optional(UInt),
    editedAt: Type.Optional(UInt),
    deleted: Type.Optional(Type.Boolean()),
    reactions: Type.Optional(
      Type.Refine(
        Type.Record(Type.String(), Type.Array(Id, { maxItems: LIMITS.reactionUsers }), {
          maxProperties: LIMITS.reactionKinds,
          propertyNames: { minLength: 1, maxLength: LIMITS.emoji, not: { const: "__proto__" } },
        }),
        isPlainObject,
        () => "must be an object",
      ),
    ),
  },
  strict,
);

export const MemberSchema = Type.Object(
  {
    user: Id,
    role: Type.Enum(["owner", "admin", "member"]),
    delivered: UInt,
    read: UInt,
  },
  strict,
);

export const ConversationSchema = Type.Object(
  {
    id: Id,
    kind: Type.Enum(["direct", "group"]),
    name: text(0, LIMITS.name),
    createdAt: UInt,
    lastSeq: UInt,
    members: Type.Array(MemberSchema, { maxItems: LIMITS.members }),
    memberCount: Type.Optional(UInt),
    large: Type.Optional(Type.Literal(true)),
    logHead: Type.Optional(UInt),
  },
  strict,
);

const updateVariants = [
  Type.Object({ k: Type.Literal("msg"), msg: MessageSchema }, strict),
  Type.Object({ k: Type.Literal("edit"), msg: MessageSchema }, strict),
  Type.Object({ k: Type.Literal("del"), msg: MessageSchema }, strict),
  Type.Object(
    { k: Type.Literal("react"), msg: MessageSchema, user: Id, emoji: Emoji, on: Type.Boolean() },
    strict,
  ),
  Type.Object({ k: Type.Literal("receipt"), conv: Id, user: Id, kind: ReceiptKind, seq: UInt }, strict),
  Type.Object({ k: Type.Literal("conv"), conv: ConversationSchema }, strict),
  Type.Object({ k: Type.Literal("left"), conv: Id }, strict),
  Type.Object(
    {
      k: Type.Literal("members"),
      conv: Id,
      name: text(0, LIMITS.name),
      set: Type.Array(MemberSchema, { maxItems: LIMITS.members }),
      removed: Type.Array(Id, { maxItems: LIMITS.members }),
      count: Type.Optional(UInt),
    },
    strict,
  ),
];
export const UpdateSchema = discriminated<F.Update>("k", updateVariants);

export const LoggedUpdateSchema = Type.Object({ useq: Seq1, u: UpdateSchema }, strict);

// ---------------------------------------------------------------- client -> server

export const HelloFrameSchema = Type.Object(
  {
    t: Type.Literal("hello"),
    versions: Type.Array(UInt, { minItems: 1, maxItems: LIMITS.versions }),
    token: text(1, LIMITS.token),
    agent: Type.Optional(text(0, LIMITS.agent)),
  },
  strict,
);
export const SendFrameSchema = Type.Object(
  {
    t: Type.Literal("send"),
    id: UInt,
    conv: Id,
    cid: text(1, LIMITS.cid),
    type: ContentType,
    body: BytesSchema,
    replyTo: Type.Optional(UInt),
  },
  strict,
);
export const AckFrameSchema = Type.Object(
  {
    t: Type.Literal("ack"),
    cursor: Type.Optional(UInt),
    convs: Type.Optional(
      Type.Array(Type.Object({ conv: Id, seq: UInt }, strict), { maxItems: LIMITS.ackConvs }),
    ),
  },
  strict,
);
export const SyncFrameSchema = Type.Object(
  { t: Type.Literal("sync"), id: UInt, cursor: UInt, limit: Type.Optional(Limit), log: Type.Optional(Id) },
  strict,
);
export const HistoryFrameSchema = Type.Object(
  {
    t: Type.Literal("history"),
    id: UInt,
    conv: Id,
    before: Type.Optional(UInt),
    after: Type.Optional(UInt),
    limit: Type.Optional(Limit),
  },
  strict,
);
export const ReceiptFrameSchema = Type.Object(
  { t: Type.Literal("receipt"), id: UInt, conv: Id, kind: ReceiptKind, seq: UInt },
  strict,
);
export const EditFrameSchema = Type.Object(
  { t: Type.Literal("edit"), id: UInt, conv: Id, seq: UInt, type: ContentType, body: BytesSchema },
  strict,
);
export const DeleteFrameSchema = Type.Object(
  { t: Type.Literal("delete"), id: UInt, conv: Id, seq: UInt },
  strict,
);
export const ReactFrameSchema = Type.Object(
  { t: Type.Literal("react"), id: UInt, conv: Id, seq: UInt, emoji: Emoji, on: Type.Boolean() },
  strict,
);
export const TypingFrameSchema = Type.Object({ t: Type.Literal("typing"), conv: Id }, strict);
export const WatchPresenceFrameSchema = Type.Object(
  { t: Type.Literal("watch"), users: Type.Array(Id, { maxItems: LIMITS.watchUsers }) },
  strict,
);
export const PingFrameSchema = Type.Object({ t: Type.Literal("ping"), n: UInt }, strict);
export const PongFrameSchema = Type.Object({ t: Type.Literal("pong"), n: UInt }, strict);

/** The schema of each client frame type (validate.ts compiles one validator per type). */
export const clientVariants = [
  HelloFrameSchema,
  SendFrameSchema,
  AckFrameSchema,
  SyncFrameSchema,
  HistoryFrameSchema,
  ReceiptFrameSchema,
  EditFrameSchema,
  DeleteFrameSchema,
  ReactFrameSchema,
  TypingFrameSchema,
  WatchPresenceFrameSchema,
  PingFrameSchema,
  PongFrameSchema,
];
export const ClientFrameSchema = discriminated<F.ClientFrame>("t", clientVariants);

// ---------------------------------------------------------------- server -> client

export const WelcomeFrameSchema = Type.Object(
  {
    t: Type.Literal("welcome"),
    version: UInt,
    user: Id,
    device: Id,
    heartbeatMs: UInt,
    maxFrameBytes: UInt,
    serverTime: UInt,
    head: UInt,
    logs: Type.Optional(
      Type.Array(Type.Object({ conv: Id, head: UInt }, strict), { maxItems: LIMITS.members }),
    ),
  },
  strict,
);
export const SentFrameSchema = Type.Object(
  {
    t: Type.Literal("sent"),
    id: UInt,
    conv: Id,
    cid: text(1, LIMITS.cid),
    seq: Seq1,
    ts: UInt,
    useq: Type.Optional(Seq1),
    log: Type.Optional(Id),
  },
  strict,
);
export const PushFrameSchema = Type.Object(
  { t: Type.Literal("push"), useq: Seq1, u: UpdateSchema, log: Type.Optional(Id) },
  strict,
);
export const SyncedFrameSchema = Type.Object(
  {
    t: Type.Literal("synced"),
    id: UInt,
    updates: Type.Array(LoggedUpdateSchema, { maxItems: LIMITS.page }),
    more: Type.Boolean(),
    head: UInt,
    log: Type.Optional(Id),
  },
  strict,
);
export const HistoryResultFrameSchema = Type.Object(
  {
    t: Type.Literal("history"),
    id: UInt,
    conv: Id,
    messages: Type.Array(MessageSchema, { maxItems: LIMITS.page }),
    more: Type.Boolean(),
  },
  strict,
);
export const OkFrameSchema = Type.Object({ t: Type.Literal("ok"), id: UInt }, strict);
export const TypingEventFrameSchema = Type.Object({ t: Type.Literal("typing"), conv: Id, user: Id }, strict);
export const PresenceFrameSchema = Type.Object(
  { t: Type.Literal("presence"), user: Id, online: Type.Boolean(), lastSeen: UInt },
  strict,
);
export const ErrorFrameSchema = Type.Object(
  {
    t: Type.Literal("error"),
    id: Type.Optional(UInt),
    code: text(1, LIMITS.errorCode),
    message: text(0, LIMITS.errorMessage),
    retry: Type.Boolean(),
    retryAfterMs: Type.Optional(UInt),
  },
  strict,
);
export const ByeFrameSchema = Type.Object(
  {
    t: Type.Literal("bye"),
    // Application close codes (RFC 6455 section 7.4.2); Parley's are listed in errors.ts.
    code: Type.Integer({ minimum: 4000, maximum: 4999 }),
    reason: text(0, LIMITS.byeReason),
  },
  strict,
);

/** The schema of each server frame type. */
export const serverVariants = [
  WelcomeFrameSchema,
  SentFrameSchema,
  PushFrameSchema,
  SyncedFrameSchema,
  HistoryResultFrameSchema,
  OkFrameSchema,
  TypingEventFrameSchema,
  PresenceFrameSchema,
  ErrorFrameSchema,
  ByeFrameSchema,
  PingFrameSchema,
  PongFrameSchema,
];
export const ServerFrameSchema = discriminated<F.ServerFrame>("t", serverVariants);

// ---------------------------------------------------------------- schemas match frames.ts

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
type _SchemasMatchFrames = [
  Assert<Same<Static<typeof MessageSchema>, F.Message>>,
  Assert<Same<Static<typeof ConversationSchema>, F.Conversation>>,
  Assert<Same<Static<typeof LoggedUpdateSchema>, F.LoggedUpdate>>,
  Assert<Same<Static<typeof HelloFrameSchema>, F.HelloFrame>>,
  Assert<Same<Static<typeof SendFrameSchema>, F.SendFrame>>,
  Assert<Same<Static<typeof AckFrameSchema>, F.AckFrame>>,
  Assert<Same<Static<typeof SyncFrameSchema>, F.SyncFrame>>,
  Assert<Same<Static<typeof HistoryFrameSchema>, F.HistoryFrame>>,
  Assert<Same<Static<typeof ReceiptFrameSchema>, F.ReceiptFrame>>,
  Assert<Same<Static<typeof EditFrameSchema>, F.EditFrame>>,
  Assert<Same<Static<typeof DeleteFrameSchema>, F.DeleteFrame>>,
  Assert<Same<Static<typeof ReactFrameSchema>, F.ReactFrame>>,
  Assert<Same<Static<typeof TypingFrameSchema>, F.TypingFrame>>,
  Assert<Same<Static<typeof WatchPresenceFrameSchema>, F.WatchPresenceFrame>>,
  Assert<Same<Static<typeof PingFrameSchema>, F.PingFrame>>,
  Assert<Same<Static<typeof PongFrameSchema>, F.PongFrame>>,
  Assert<Same<Static<typeof WelcomeFrameSchema>, F.WelcomeFrame>>,
  Assert<Same<Static<typeof SentFrameSchema>, F.SentFrame>>,
  Assert<Same<Static<typeof PushFrameSchema>, F.PushFrame>>,
  Assert<Same<Static<typeof SyncedFrameSchema>, F.SyncedFrame>>,
  Assert<Same<Static<typeof HistoryResultFrameSchema>, F.HistoryResultFrame>>,
  Assert<Same<Static<typeof OkFrameSchema>, F.OkFrame>>,
  Assert<Same<Static<typeof TypingEventFrameSchema>, F.TypingEventFrame>>,
  Assert<Same<Static<typeof PresenceFrameSchema>, F.PresenceFrame>>,
  Assert<Same<Static<typeof ErrorFrameSchema>, F.ErrorFrame>>,
  Assert<Same<Static<typeof ByeFrameSchema>, F.ByeFrame>>,
  // Every frame type has a schema in its direction's list, and nothing else is in it.
  Assert<Same<Static<(typeof clientVariants)[number]>, F.ClientFrame>>,
  Assert<Same<Static<(typeof serverVariants)[number]>, F.ServerFrame>>,
];
