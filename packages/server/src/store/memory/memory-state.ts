import type {
  Conversation,
  ConversationId,
  ConversationKind,
  DeviceId,
  Member,
  Message,
  UserId,
} from "@parley/protocol";
import type { DeviceRecord, TokenRecord, UserRecord } from "../../core/ports/store.ts";
import { reactionsRecord } from "../store-rules.ts";

// The data MemoryStore keeps, and the copies it hands out. Nothing stored is ever returned by
// reference: callers get fresh objects (and fresh body bytes) every time.

export interface StoredMessage {
  conv: ConversationId;
  seq: number;
  from: UserId;
  dev: DeviceId;
  cid: string;
  type: string;
  body: Uint8Array;
  ts: number;
  replyTo?: number;
  editedAt?: number;
  deletedAt?: number;
  /** In the order they were added. */
  reactions: Array<[emoji: string, user: UserId]>;
}

export interface StoredConversation {
  id: ConversationId;
  kind: ConversationKind;
  name: string;
  createdAt: number;
  directKey?: string;
  lastSeq: number;
  lastActivity: number;
  /** In join order (Map keeps insertion order; a re-added member goes to the end). */
  members: Map<UserId, Member>;
  /** messages[seq - 1]. */
  messages: StoredMessage[];
  /** A large group: its changes go to its own log (read diffusion). */
  large?: true;
}

export interface MemoryState {
  users: Map<UserId, UserRecord>;
  /** ASCII-case-folded name -> id, the same equality as SQLite's NOCASE. */
  userNames: Map<string, UserId>;
  devices: Map<DeviceId, DeviceRecord>;
  tokens: Map<string, TokenRecord>;
  convs: Map<ConversationId, StoredConversation>;
  directKeys: Map<string, ConversationId>;
  /** cidKey(from, cid) -> the message. */
  cids: Map<string, StoredMessage>;
}

export function emptyState(): MemoryState {
  return {
    users: new Map(),
    userNames: new Map(),
    devices: new Map(),
    tokens: new Map(),
    convs: new Map(),
    directKeys: new Map(),
    cids: new Map(),
  };
}

/** SQLite's NOCASE folds ASCII letters only; do exactly the same. */
export function foldName(name: string): string {
  return name.replace(/[A-Z]+/g, (s) => s.toLowerCase());
}

export function cidKey(from: UserId, cid: string): string {
  return JSON.stringify([from, cid]);
}

export function copyMessage(m: StoredMessage): Message {
  const out: Message = {
    conv: m.conv,
    seq: m.seq,
    from: m.from,
    dev: m.dev,
    cid: m.cid,
    type: m.type,
    body: new Uint8Array(m.body),
    ts: m.ts,
  };
  if (m.replyTo !== undefined) out.replyTo = m.replyTo;
  if (m.editedAt !== undefined) out.editedAt = m.editedAt;
  if (m.deletedAt !== undefined) out.deleted = true;
  const reactions = reactionsRecord(m.reactions);
  if (reactions) out.reactions = reactions;
  return out;
}

/** A copy of the conversation as members see it; `logHead` is its log's head (large groups).
 * A large group lists only its owner and admins (in join order), then `viewer` when that is
 * another member. */
export function copyConversation(c: StoredConversation, logHead: number, viewer?: UserId): Conversation {
  const all = [...c.members.values()];
  const you = viewer === undefined ? undefined : c.members.get(viewer);
  const listed = c.large ? all.filter((m) => m.role !== "member") : all;
  if (c.large && you?.role === "member") listed.push(you);
  const conv: Conversation = {
    id: c.id,
    kind: c.kind,
    name: c.name,
    createdAt: c.createdAt,
    lastSeq: c.lastSeq,
    members: listed.map((m) => ({ ...m })),
  };
  if (c.large) {
    conv.memberCount = c.members.size;
    conv.large = true;
    conv.logHead = logHead;
  }
  return conv;
}

export function copyDevice(d: DeviceRecord): DeviceRecord {
  return { ...d };
}

export function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
