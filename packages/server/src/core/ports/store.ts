import type {
  Conversation,
  ConversationId,
  ConversationKind,
  DeviceId,
  LoggedUpdate,
  Member,
  Message,
  ReceiptKind,
  Role,
  UserId,
} from "@parley/protocol";

// The Store port: everything Parley keeps. Every method is atomic: it commits all its rows in one
// transaction or none, and a method that resolves has made its writes durable (for SqliteStore:
// WAL with synchronous=FULL, so fsynced). Methods that change what members see also append to the
// affected users' update logs in that same transaction and return the appended entries, so the
// core can push exactly what was committed.
//
// Errors: a violated precondition rejects with a ParleyError (code given per method). Anything
// else (I/O, corruption) rejects with a plain Error and is reported as E_INTERNAL.

export interface UserRecord {
  id: UserId;
  name: string;
  passwordHash: string;
  createdAt: number;
}

export interface DeviceRecord {
  id: DeviceId;
  userId: UserId;
  name: string;
  createdAt: number;
  /** Highest useq this device has acknowledged (its sync cursor). */
  cursor: number;
  lastSeenAt: number;
  revokedAt?: number;
}

export interface TokenRecord {
  /** sha256 of the bearer token, hex. The token itself is never stored. */
  hash: string;
  userId: UserId;
  deviceId: DeviceId;
  createdAt: number;
  expiresAt: number;
  revokedAt?: number;
}

/** An update appended to one user's log. */
export interface UserUpdate extends LoggedUpdate {
  user: UserId;
  log?: undefined;
}

/** An update appended to a large group's own log (read diffusion): `useq` is its position there. */
export interface ConversationLogUpdate extends LoggedUpdate {
  log: ConversationId;
  user?: undefined;
}

/** What a write appended: entries of user logs and of large groups' logs, in append order. */
export type LogUpdate = UserUpdate | ConversationLogUpdate;

export interface NewConversation {
  id: ConversationId;
  kind: ConversationKind;
  name: string;
  createdAt: number;
  /** For direct conversations: the two user ids sorted and joined with ":"; unique. */
  directKey?: string;
  members: Array<{ user: UserId; role: Role }>;
  /** A group created large (read diffusion from its start): each member's "conv" entry lists the
   * owner, the admins and that member, never the whole list. */
  large?: true;
}

export interface NewMessage {
  conv: ConversationId;
  from: UserId;
  dev: DeviceId;
  cid: string;
  type: string;
  body: Uint8Array;
  ts: number;
  replyTo?: number;
}

export type AppendResult =
  /** Committed now: `updates` holds one "msg" entry per member, or for a large group one entry
   * of the group's log. */
  | { ok: true; duplicate: false; msg: Message; updates: LogUpdate[] }
  /** Same (from, cid) already stored: the original message, nothing written. */
  | { ok: true; duplicate: true; msg: Message; updates: [] }
  /** Refused (sender not a member, replyTo out of range...): nothing written for this item. */
  | { ok: false; code: "E_NOT_FOUND" | "E_INVALID"; message: string };

/** A change to a conversation's metadata or membership, applied atomically. */
export type ConversationChange =
  | { kind: "rename"; conv: ConversationId; name: string }
  | { kind: "add"; conv: ConversationId; users: UserId[] }
  /** `heir`, when given, becomes owner in the same transaction (an owner leaving). */
  | { kind: "remove"; conv: ConversationId; user: UserId; heir?: UserId }
  | { kind: "role"; conv: ConversationId; user: UserId; role: Role }
  /** Makes a group large (read diffusion; a no-op when it already is): every member's log gets a
   * "conv" entry with `large` and `logHead` set, after which the group's changes go to its own
   * log. Rejects E_INVALID for a direct conversation. */
  | { kind: "large"; conv: ConversationId };

export type MessageChange =
  | { kind: "edit"; conv: ConversationId; seq: number; type: string; body: Uint8Array; at: number }
  | { kind: "delete"; conv: ConversationId; seq: number; at: number }
  | { kind: "react"; conv: ConversationId; seq: number; user: UserId; emoji: string; on: boolean };

export interface HistoryQuery {
  /** Exclusive upper bound; newest first page when neither bound is set. */
  before?: number;
  /** Exclusive lower bound; pages forward. */
  after?: number;
  limit: number;
}

export interface Store {
  // --- accounts and devices
  /** Rejects E_CONFLICT if the name is taken (names compare case-insensitively). */
  createUser(user: UserRecord): Promise<void>;
  findUserByName(name: string): Promise<UserRecord | undefined>;
  getUser(id: UserId): Promise<UserRecord | undefined>;
  createDevice(device: DeviceRecord, token: TokenRecord): Promise<void>;
  getDevice(id: DeviceId): Promise<DeviceRecord | undefined>;
  listDevices(user: UserId): Promise<DeviceRecord[]>;
  /** Marks the device revoked and revokes all its tokens. False if not the user's or already revoked. */
  revokeDevice(user: UserId, device: DeviceId, at: number): Promise<boolean>;
  /** Raises the device's cursor to `cursor` (never lowers it) and sets lastSeenAt. */
  touchDevice(device: DeviceId, cursor: number, at: number): Promise<void>;
  findToken(hash: string): Promise<TokenRecord | undefined>;
  revokeToken(hash: string, at: number): Promise<void>;

  // --- conversations
  /** Creates the conversation and appends a "conv" update for every member (for a large group,
   * one listing its owner, admins and that member, as changeConversation "large" does). For a
   * direct conversation whose directKey exists, writes nothing and returns the existing one.
   * Rejects E_INVALID for a large direct conversation. */
  createConversation(
    conv: NewConversation,
  ): Promise<{ conv: Conversation; created: boolean; updates: LogUpdate[] }>;
  /** The conversation; a large group's `members` lists only its owner and admins (in join order)
   * and `memberCount` counts everyone: its state stays small however many members it has. */
  getConversation(id: ConversationId): Promise<Conversation | undefined>;
  /** Role of `user` in `conv`, or undefined if not a current member (or no such conversation). */
  getRole(conv: ConversationId, user: UserId): Promise<Role | undefined>;
  /** `user`'s membership record in `conv` (role and marks), or undefined if not a member. */
  getMember(conv: ConversationId, user: UserId): Promise<Member | undefined>;
  /** A page of a conversation's members ordered by user id: those after `after` (exclusive; from
   * the first when undefined), at most `limit`. Empty for an unknown conversation. */
  listMembers(conv: ConversationId, after: UserId | undefined, limit: number): Promise<Member[]>;
  /** The longest-standing member other than `except` (the heir when no admin is left), or
   * undefined when there is none. */
  eldestMember(conv: ConversationId, except: UserId): Promise<UserId | undefined>;
  /** Conversations the user is a member of, most recently active first; in a large group,
   * `members` holds the owner, the admins and `user` (see getConversation). */
  listConversations(user: UserId): Promise<Conversation[]>;
  /** Applies the change and appends a "conv" update for every member after the change and a
   * "left" update for a removed member. In a large group the "conv" update goes to the group's
   * log instead (a "members" entry with what changed and the member count), plus one "conv"
   * entry to each added member's own log (with `logHead`: where they start following; its
   * `members` includes that member). Rejects E_NOT_FOUND for an unknown conversation, a
   * removed user who is not a member, or an heir who is not another member. Adding a current
   * member is a no-op for that user. */
  changeConversation(change: ConversationChange): Promise<{ conv: Conversation; updates: LogUpdate[] }>;

  // --- messages
  /** Appends a batch in ONE transaction (group commit), each item independently: per-conversation
   * seq is the previous lastSeq + 1 (gap-free); (from, cid) already present returns the stored
   * message as a duplicate. The sender's delivered and read marks rise to the new seq (no receipt
   * update: the "msg" entry says as much). Results are in input order. */
  appendMessages(batch: readonly NewMessage[]): Promise<AppendResult[]>;
  /** Applies an edit, delete or reaction to an existing message and appends an update ("edit",
   * "del", "react") for every member. Rejects E_NOT_FOUND if the message does not exist.
   * Reacting twice with the same emoji (or removing a missing one) writes nothing, returns []. */
  changeMessage(change: MessageChange): Promise<{ msg: Message; updates: LogUpdate[] }>;
  getMessage(conv: ConversationId, seq: number): Promise<Message | undefined>;
  /** Messages in ascending seq order. */
  history(conv: ConversationId, query: HistoryQuery): Promise<Message[]>;

  // --- receipts and sync
  /** Raises the member's delivered or read mark to `seq` (capped at lastSeq; read also raises
   * delivered). When it rises, appends a "receipt" update for every member (in a large group: to
   * the reader's own log only); otherwise writes nothing and returns []. Rejects E_NOT_FOUND if
   * not a member. */
  setReceipt(conv: ConversationId, user: UserId, kind: ReceiptKind, seq: number): Promise<UserUpdate[]>;
  /** The user's update log after `after` (exclusive), ascending, at most `limit` entries, with
   * message payloads in their current state. Cost proportional to the entries returned. */
  readUpdates(user: UserId, after: number, limit: number): Promise<LoggedUpdate[]>;
  /** Head (highest useq) of the user's update log; 0 when empty. */
  head(user: UserId): Promise<number>;
  /** A large group's log after `after` (exclusive), like readUpdates. Empty for a conversation
   * that is not large (or does not exist). */
  readConversationLog(conv: ConversationId, after: number, limit: number): Promise<LoggedUpdate[]>;
  /** Head of a large group's log; 0 for a conversation that is not large. */
  conversationLogHead(conv: ConversationId): Promise<number>;
  /** The large groups the user is a member of, with the heads of their logs. */
  largeConversations(user: UserId): Promise<Array<{ conv: ConversationId; head: number }>>;

  /** Flushes and releases everything. Further calls reject. */
  close(): Promise<void>;
}
