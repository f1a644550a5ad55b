// The frames of Parley's wire protocol, versions 1 and 2. One discriminated union per direction,
// keyed by `t`. Both encodings (binary msgpack, JSON) carry exactly these objects; docs/protocol.md
// describes each with an example. Ids are opaque strings; times are milliseconds since the epoch.
// Version 2 differs in one point: the device that sent a message gets `sent` in place of the push
// of the message's log entry, and builds that entry from its send (SentFrame).

export const PROTOCOL_VERSION = 2;
export const SUPPORTED_VERSIONS: readonly number[] = [1, 2];

/** Default maximum encoded frame size in bytes (payload, excluding the 4-byte length prefix). */
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024;

export type UserId = string;
export type DeviceId = string;
export type ConversationId = string;

/** A stored message as every member sees it. `body` is opaque bytes; `type` says how to read it. */
export interface Message {
  conv: ConversationId;
  /** Per-conversation sequence number: strictly increasing, gap-free, from 1. */
  seq: number;
  from: UserId;
  /** Device that sent it. */
  dev: DeviceId;
  /** The sender's client message id (idempotency key, unique per sender). */
  cid: string;
  /** Content type, e.g. "text/plain". */
  type: string;
  body: Uint8Array;
  /** Server time of the commit. */
  ts: number;
  /** Seq of the message this one replies to, in the same conversation. */
  replyTo?: number;
  /** Set once the message has been edited; the body is the latest version. */
  editedAt?: number;
  /** Set when the message was deleted (recalled): body is then empty. */
  deleted?: boolean;
  /** Reactions: emoji -> user ids, in the order they reacted. */
  reactions?: Record<string, UserId[]>;
}

export type Role = "owner" | "admin" | "member";
export type ConversationKind = "direct" | "group";

export interface Member {
  user: UserId;
  role: Role;
  /** Highest seq delivered to any of this member's devices. */
  delivered: number;
  /** Highest seq this member has read. */
  read: number;
}

/** A conversation as one of its members sees it. */
export interface Conversation {
  id: ConversationId;
  kind: ConversationKind;
  /** Group name; empty for direct conversations. */
  name: string;
  createdAt: number;
  /** Seq of the latest message (0 when empty). */
  lastSeq: number;
  /** Every member, in join order; in a large group only the owner and the admins, and, in a
   * reply to a member's own request (REST) or in the entry that added them, that member too:
   * `memberCount` counts them all, and `GET /v1/conversations/{id}/members` pages through them. */
  members: Member[];
  /** Set on a large group: how many members it has (`members` lists only some of them). */
  memberCount?: number;
  /** Set on a large group (read diffusion, docs/protocol.md "Large groups"): its messages, edits,
   * deletes, reactions and membership changes are entries of the conversation's own log, not of
   * each member's update log. Once large, a group stays large. */
  large?: true;
  /** For a large group: the head of its log when this state was read. A device that starts
   * following the log (the group became large, or the user joined it) applies entries after it. */
  logHead?: number;
}

/** One entry of a user's update log: what changed, in the order it changed. */
export type Update =
  | { k: "msg"; msg: Message }
  | { k: "edit"; msg: Message }
  | { k: "del"; msg: Message }
  | { k: "react"; msg: Message; user: UserId; emoji: string; on: boolean }
  | { k: "receipt"; conv: ConversationId; user: UserId; kind: ReceiptKind; seq: number }
  | { k: "conv"; conv: Conversation }
  | { k: "left"; conv: ConversationId }
  /** In a large group's own log: its name or membership changed. Only the change travels (a
   * large group's whole member list is too big to send on every join): `set` lists members
   * added or whose role changed, `removed` those who left; `name` is the group's name now and
   * `count` its number of members (absent in entries written before it existed). */
  | { k: "members"; conv: ConversationId; name: string; set: Member[]; removed: UserId[]; count?: number };

export type ReceiptKind = "delivered" | "read";

/** An update with its position in the user's update log (`useq`, gap-free per user, from 1). */
export interface LoggedUpdate {
  useq: number;
  u: Update;
}

// ---------------------------------------------------------------- client -> server

/** First frame on every connection. Anything else before it is refused with E_NOT_AUTHENTICATED. */
export interface HelloFrame {
  t: "hello";
  /** Protocol versions the client speaks; the server picks the highest it also speaks. */
  versions: number[];
  /** Bearer token from POST /v1/login. */
  token: string;
  /** Free-form client name and version, for logs. */
  agent?: string;
}

/** Send a message. Idempotent by `cid`: a resend returns the original seq and stores nothing. */
export interface SendFrame {
  t: "send";
  /** Request id, echoed in the reply (`sent` or `error`). */
  id: number;
  conv: ConversationId;
  cid: string;
  type: string;
  body: Uint8Array;
  replyTo?: number;
}

/** Cumulative acknowledgement: this device has applied the update log up to `cursor`, and
 * (optionally) has received each listed conversation up to its seq (a delivery receipt). */
export interface AckFrame {
  t: "ack";
  cursor?: number;
  convs?: Array<{ conv: ConversationId; seq: number }>;
}

/** Ask for the update log after `cursor` (exclusive). The reply is `synced`. */
export interface SyncFrame {
  t: "sync";
  id: number;
  cursor: number;
  /** Maximum updates in the reply (server caps it, default 500). */
  limit?: number;
  /** Read this large group's log instead of the user's (the caller must be a member). */
  log?: ConversationId;
}

/** Page through a conversation. `before` (exclusive) pages backwards from the newest by default;
 * `after` (exclusive) pages forwards. The reply is `history`. */
export interface HistoryFrame {
  t: "history";
  id: number;
  conv: ConversationId;
  before?: number;
  after?: number;
  limit?: number;
}

/** Delivered/read up to `seq` in `conv` (monotonic; lower values are ignored). Reply: `ok`. */
export interface ReceiptFrame {
  t: "receipt";
  id: number;
  conv: ConversationId;
  kind: ReceiptKind;
  seq: number;
}

/** Edit one's own message. Reply: `ok`. */
export interface EditFrame {
  t: "edit";
  id: number;
  conv: ConversationId;
  seq: number;
  type: string;
  body: Uint8Array;
}

/** Delete (recall) a message: the sender, or a group owner/admin. Reply: `ok`. */
export interface DeleteFrame {
  t: "delete";
  id: number;
  conv: ConversationId;
  seq: number;
}

/** Add (`on: true`) or remove a reaction. Reply: `ok`. */
export interface ReactFrame {
  t: "react";
  id: number;
  conv: ConversationId;
  seq: number;
  emoji: string;
  on: boolean;
}

/** "I am typing in conv": relayed to the other members' online devices, never stored. */
export interface TypingFrame {
  t: "typing";
  conv: ConversationId;
}

/** Watch the presence of these users (replaces the previous watch list). Users who share no
 * conversation with the caller are silently left out. The server answers with one `presence`
 * frame per visible user, then one more each time it changes. */
export interface WatchPresenceFrame {
  t: "watch";
  users: UserId[];
}

export interface PingFrame {
  t: "ping";
  n: number;
}

export interface PongFrame {
  t: "pong";
  n: number;
}

export type ClientFrame =
  | HelloFrame
  | SendFrame
  | AckFrame
  | SyncFrame
  | HistoryFrame
  | ReceiptFrame
  | EditFrame
  | DeleteFrame
  | ReactFrame
  | TypingFrame
  | WatchPresenceFrame
  | PingFrame
  | PongFrame;

// ---------------------------------------------------------------- server -> client

/** Reply to `hello`: the connection is authenticated. */
export interface WelcomeFrame {
  t: "welcome";
  version: number;
  user: UserId;
  device: DeviceId;
  /** The server sends `ping` when it has heard nothing for this long; the client should too. */
  heartbeatMs: number;
  maxFrameBytes: number;
  serverTime: number;
  /** Head of the user's update log: a device whose cursor is lower should `sync`. */
  head: number;
  /** Heads of the logs of the large groups the user is in (absent when none). */
  logs?: Array<{ conv: ConversationId; head: number }>;
}

/** Reply to `send`: the message is durably committed. */
export interface SentFrame {
  t: "sent";
  id: number;
  conv: ConversationId;
  cid: string;
  seq: number;
  ts: number;
  /** Version 2 only: this reply also stands for the `msg` entry the send added at `useq` to the
   * user's log (or, with `log`, to that large group's log), and comes where its push would have,
   * in order; that push is not sent to this connection. The client builds the entry from its
   * send: conv, seq, cid and ts from here, from and dev its own, type, body and replyTo as sent. */
  useq?: number;
  log?: ConversationId;
}

/** A live update for the user, in update-log order. With `log`, an entry of that large group's
 * log instead, and `useq` is its position there. */
export interface PushFrame {
  t: "push";
  useq: number;
  u: Update;
  log?: ConversationId;
}

/** Reply to `sync`: updates after the requested cursor, in order. `more` means ask again from
 * the last useq. `head` is the log's head when the reply was read. */
export interface SyncedFrame {
  t: "synced";
  id: number;
  updates: LoggedUpdate[];
  more: boolean;
  head: number;
  /** Echoes the request's `log`. */
  log?: ConversationId;
}

/** Reply to `history`: messages in ascending seq order. */
export interface HistoryResultFrame {
  t: "history";
  id: number;
  conv: ConversationId;
  messages: Message[];
  more: boolean;
}

/** Success reply to a request that returns nothing else. */
export interface OkFrame {
  t: "ok";
  id: number;
}

export interface TypingEventFrame {
  t: "typing";
  conv: ConversationId;
  user: UserId;
}

export interface PresenceFrame {
  t: "presence";
  user: UserId;
  online: boolean;
  /** When the user was last seen online (0 if never). */
  lastSeen: number;
}

/** A refused request (`id` set) or a connection-level problem (`id` absent). */
export interface ErrorFrame {
  t: "error";
  id?: number;
  code: string;
  message: string;
  retry: boolean;
  retryAfterMs?: number;
}

/** Sent just before the server closes the connection; `code` is a disconnect code. */
export interface ByeFrame {
  t: "bye";
  code: number;
  reason: string;
}

export type ServerFrame =
  | WelcomeFrame
  | SentFrame
  | PushFrame
  | SyncedFrame
  | HistoryResultFrame
  | OkFrame
  | TypingEventFrame
  | PresenceFrame
  | ErrorFrame
  | ByeFrame
  | PingFrame
  | PongFrame;

export type Frame = ClientFrame | ServerFrame;
