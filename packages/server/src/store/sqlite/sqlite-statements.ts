import type BetterSqlite3 from "better-sqlite3";
import type { Conversation, ConversationKind, Member, Message, Role, UserId } from "@parley/protocol";
import type { DeviceRecord, TokenRecord, UserRecord } from "../../core/ports/store.ts";
import { reactionsRecord } from "../store-rules.ts";

// Every statement SqliteStore runs, prepared once when the store opens, with the row shapes they
// return and the functions that turn rows into port types.

export interface UserRow {
  id: string;
  /** The number messages rows name the user by (migration 7). */
  num: number;
  name: string;
  password_hash: string;
  created_at: number;
}

export interface DeviceRow {
  id: string;
  user_id: string;
  name: string;
  created_at: number;
  cursor: number;
  last_seen_at: number;
  revoked_at: number | null;
}

export interface TokenRow {
  hash: string;
  user_id: string;
  device_id: string;
  created_at: number;
  expires_at: number;
  revoked_at: number | null;
}

export interface ConversationRow {
  id: string;
  /** The number messages, reactions and updates rows name the conversation by (migration 7). */
  num: number;
  kind: ConversationKind;
  name: string;
  created_at: number;
  last_seq: number;
  last_activity: number;
  /** 1 for a large group (read diffusion). */
  large: number;
}

export interface MemberRow {
  conv_id: string;
  user_id: string;
  role: Role;
  delivered: number;
  read: number;
}

export interface MessageRow {
  conv_id: string;
  seq: number;
  from_user: string;
  from_dev: string;
  cid: string;
  type: string;
  body: Buffer;
  ts: number;
  reply_to: number | null;
  edited_at: number | null;
  deleted_at: number | null;
  /** JSON array of [emoji, user] pairs in the order they were added. */
  reactions: string;
}

/** An update log row, with the conversation snapshot it points at (for "conv") and, for the
 * entries that name a message, that message's current state (m_* columns; m_seq is null when
 * the entry names none). */
export interface UpdateRow {
  useq: number;
  kind: "msg" | "edit" | "del" | "react" | "receipt" | "conv" | "left";
  conv_id: string;
  seq: number | null;
  data: string | null;
  snapshot_data: string | null;
  m_seq: number | null;
  m_from_user: string;
  m_from_dev: string;
  m_cid: string;
  m_type: string;
  m_body: Buffer;
  m_ts: number;
  m_reply_to: number | null;
  m_edited_at: number | null;
  m_deleted_at: number | null;
  m_reactions: string | null;
}

/** A row of readUpdates as better-sqlite3 returns it in raw mode: an array, in UpdateRow's order.
 * Building an array is much cheaper than building an object with named columns (in-process,
 * 5.6 -> 3.6-3.9 us per entry of a sync page of 1,000, read and materialised). */
export type UpdateTuple = [
  UpdateRow["useq"],
  UpdateRow["kind"],
  /** null if the entry's conversation number names no conversation (never written so). */
  UpdateRow["conv_id"] | null,
  UpdateRow["seq"],
  UpdateRow["data"],
  UpdateRow["snapshot_data"],
  UpdateRow["m_seq"],
  UpdateRow["m_from_user"],
  UpdateRow["m_from_dev"],
  UpdateRow["m_cid"],
  UpdateRow["m_type"],
  UpdateRow["m_body"],
  UpdateRow["m_ts"],
  UpdateRow["m_reply_to"],
  UpdateRow["m_edited_at"],
  UpdateRow["m_deleted_at"],
  UpdateRow["m_reactions"],
];

export function updateRow(t: UpdateTuple): UpdateRow {
  // Refused, not skipped: a reader would take the gap in useqs for entries it has.
  if (t[2] === null) throw new Error(`update ${t[0]} names a missing conversation`);
  return {
    useq: t[0],
    kind: t[1],
    conv_id: t[2],
    seq: t[3],
    data: t[4],
    snapshot_data: t[5],
    m_seq: t[6],
    m_from_user: t[7],
    m_from_dev: t[8],
    m_cid: t[9],
    m_type: t[10],
    m_body: t[11],
    m_ts: t[12],
    m_reply_to: t[13],
    m_edited_at: t[14],
    m_deleted_at: t[15],
    m_reactions: t[16],
  };
}

/** The reactions of message `m`, as MessageRow.reactions. */
const REACTIONS_OF_M = `(SELECT json_group_array(json_array(r.emoji, r.user_id) ORDER BY r.id)
  FROM reactions r WHERE r.conv_num = m.conv_num AND r.seq = m.seq)`;

/** A message as MessageRow, its conversation (c) and sender (u) named by their ids again. */
const SELECT_MESSAGE = `SELECT c.id AS conv_id, m.seq, u.id AS from_user, m.from_dev, m.cid, m.type, m.body,
    m.ts, m.reply_to, m.edited_at, m.deleted_at, ${REACTIONS_OF_M} AS reactions
  FROM messages m JOIN conversations c ON c.num = m.conv_num JOIN users u ON u.num = m.from_num`;

/** The number of the conversation whose id is the statement's next parameter. */
const CONV_NUM = "(SELECT num FROM conversations WHERE id = ?)";
/** The number of the log whose key (a user id, or '#' || a large group's id) is the next one. */
const LOG_NUM = "(SELECT num FROM logs WHERE key = ?)";

export function prepareStatements(db: BetterSqlite3.Database) {
  const s = <P extends unknown[] = unknown[], R = unknown>(sql: string) => db.prepare<P, R>(sql);
  return {
    insertUser: s<[string, string, string, number]>(
      `INSERT INTO users (id, name, password_hash, created_at, num)
       VALUES (?, ?, ?, ?, (SELECT coalesce(max(num), 0) + 1 FROM users))`,
    ),
    userById: s<[string], UserRow>("SELECT * FROM users WHERE id = ?"),
    // users.name is COLLATE NOCASE, so this comparison is case-insensitive (ASCII).
    userByName: s<[string], UserRow>("SELECT * FROM users WHERE name = ?"),

    insertDevice: s<[string, string, string, number, number, number, number | null]>(
      "INSERT INTO devices (id, user_id, name, created_at, cursor, last_seen_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    ),
    deviceById: s<[string], DeviceRow>("SELECT * FROM devices WHERE id = ?"),
    devicesOfUser: s<[string], DeviceRow>("SELECT * FROM devices WHERE user_id = ? ORDER BY created_at, id"),
    revokeDevice: s<[number, string, string]>(
      "UPDATE devices SET revoked_at = ? WHERE id = ? AND user_id = ? AND revoked_at IS NULL",
    ),
    revokeDeviceTokens: s<[number, string]>(
      "UPDATE tokens SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL",
    ),
    touchDevice: s<[number, number, string]>(
      "UPDATE devices SET cursor = max(cursor, ?), last_seen_at = ? WHERE id = ?",
    ),
    insertToken: s<[string, string, string, number, number, number | null]>(
      "INSERT INTO tokens (hash, user_id, device_id, created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?)",
    ),
    tokenByHash: s<[string], TokenRow>("SELECT * FROM tokens WHERE hash = ?"),
    revokeToken: s<[number, string]>(
      "UPDATE tokens SET revoked_at = ? WHERE hash = ? AND revoked_at IS NULL",
    ),

    insertConversation: s<[string, string, string, number, string | null, number, number]>(
      `INSERT INTO conversations (id, kind, name, created_at, direct_key, last_seq, last_activity, large, num)
       VALUES (?, ?, ?, ?, ?, 0, ?, ?, (SELECT coalesce(max(num), 0) + 1 FROM conversations))`,
    ),
    /** Changes when another connection commits to the file (never for this one's own writes). */
    dataVersion: s<[], number>("PRAGMA data_version").pluck(),
    convById: s<[string], ConversationRow>("SELECT * FROM conversations WHERE id = ?"),
    // The applier's lookups, for insertMessage (kept in memory by the caller).
    convNum: s<[string], number>("SELECT num FROM conversations WHERE id = ?").pluck(),
    userNum: s<[string], number>("SELECT num FROM users WHERE id = ?").pluck(),
    convIdByDirectKey: s<[string], string>("SELECT id FROM conversations WHERE direct_key = ?").pluck(),
    renameConversation: s<[string, string]>("UPDATE conversations SET name = ? WHERE id = ?"),
    makeLarge: s<[string]>("UPDATE conversations SET large = 1 WHERE id = ?"),
    largeConversationsOf: s<[string], string>(
      `SELECT c.id FROM members m JOIN conversations c ON c.id = m.conv_id
       WHERE m.user_id = ? AND c.large = 1 ORDER BY c.id`,
    ).pluck(),
    advanceConversation: s<[number, number, string]>(
      "UPDATE conversations SET last_seq = ?, last_activity = max(last_activity, ?) WHERE id = ?",
    ),
    membersOf: s<[string], MemberRow>("SELECT * FROM members WHERE conv_id = ? ORDER BY pos"),
    // A large group's state lists only these (the partial index members_staff).
    staffOf: s<[string], MemberRow>(
      "SELECT * FROM members WHERE conv_id = ? AND role != 'member' ORDER BY pos",
    ),
    memberCount: s<[string], number>("SELECT count(*) FROM members WHERE conv_id = ?").pluck(),
    membersPage: s<[string, string, number], MemberRow>(
      "SELECT * FROM members WHERE conv_id = ? AND user_id > ? ORDER BY user_id LIMIT ?",
    ),
    eldestMember: s<[string, string], string>(
      "SELECT user_id FROM members WHERE conv_id = ? AND user_id != ? ORDER BY pos LIMIT 1",
    ).pluck(),
    memberUserIds: s<[string], string>("SELECT user_id FROM members WHERE conv_id = ? ORDER BY pos").pluck(),
    member: s<[string, string], MemberRow>("SELECT * FROM members WHERE conv_id = ? AND user_id = ?"),
    insertMember: s<[string, string, string]>(
      "INSERT INTO members (conv_id, user_id, role) VALUES (?, ?, ?)",
    ),
    deleteMember: s<[string, string]>("DELETE FROM members WHERE conv_id = ? AND user_id = ?"),
    setRole: s<[string, string, string]>("UPDATE members SET role = ? WHERE conv_id = ? AND user_id = ?"),
    setMarks: s<[number, number, string, string]>(
      "UPDATE members SET delivered = ?, read = ? WHERE conv_id = ? AND user_id = ?",
    ),
    // The conversations of a user with all their members (of a large group: its owner and admins,
    // found with members_staff, then the user), most recently active first. Three parts, so that
    // a large group's plain members are never scanned.
    conversationsOfUser: s<
      [string, string, string],
      ConversationRow & { m_user: string; m_role: Role; m_delivered: number; m_read: number }
    >(
      `SELECT c.*, m.user_id AS m_user, m.role AS m_role, m.delivered AS m_delivered, m.read AS m_read,
              0 AS m_last, m.pos AS m_pos
       FROM members me JOIN conversations c ON c.id = me.conv_id JOIN members m ON m.conv_id = c.id
       WHERE me.user_id = ? AND c.large = 0
       UNION ALL
       SELECT c.*, m.user_id, m.role, m.delivered, m.read, 0, m.pos
       FROM members me JOIN conversations c ON c.id = me.conv_id JOIN members m ON m.conv_id = c.id
       WHERE me.user_id = ? AND c.large = 1 AND m.role != 'member'
       UNION ALL
       SELECT c.*, me.user_id, me.role, me.delivered, me.read, 1, me.pos
       FROM members me JOIN conversations c ON c.id = me.conv_id
       WHERE me.user_id = ? AND c.large = 1 AND me.role = 'member'
       ORDER BY last_activity DESC, id, m_last, m_pos`,
    ),

    // Keyed by the conversation's and the sender's numbers (convNum, userNum).
    insertMessage: s<[number, number, number, string, string, string, Uint8Array, number, number | null]>(
      `INSERT INTO messages (conv_num, seq, from_num, from_dev, cid, type, body, ts, reply_to)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (cid, from_num) DO NOTHING`,
    ),
    messageBySeq: s<[string, number], MessageRow>(`${SELECT_MESSAGE} WHERE c.id = ? AND m.seq = ?`),
    // By the sender's number (userNum): one seek in the resend key, as the sequencer makes for
    // every message it numbers.
    messageByCid: s<[number, string], MessageRow>(`${SELECT_MESSAGE} WHERE m.from_num = ? AND m.cid = ?`),
    messageExists: s<[string, number], number>(
      `SELECT 1 FROM messages WHERE conv_num = ${CONV_NUM} AND seq = ?`,
    ).pluck(),
    historyForward: s<[string, number, number, number], MessageRow>(
      `${SELECT_MESSAGE} WHERE c.id = ? AND m.seq > ? AND m.seq < ? ORDER BY m.seq LIMIT ?`,
    ),
    historyBackward: s<[string, number, number, number], MessageRow>(
      `SELECT * FROM (${SELECT_MESSAGE} WHERE c.id = ? AND m.seq > ? AND m.seq < ? ORDER BY m.seq DESC LIMIT ?)
       ORDER BY seq`,
    ),
    editMessage: s<[string, Uint8Array, number, string, number]>(
      `UPDATE messages SET type = ?, body = ?, edited_at = ? WHERE conv_num = ${CONV_NUM} AND seq = ?`,
    ),
    recallMessage: s<[number, string, number]>(
      `UPDATE messages SET body = x'', deleted_at = ? WHERE conv_num = ${CONV_NUM} AND seq = ?`,
    ),
    addReaction: s<[string, number, string, string]>(
      `INSERT OR IGNORE INTO reactions (conv_num, seq, emoji, user_id) VALUES (${CONV_NUM}, ?, ?, ?)`,
    ),
    removeReaction: s<[string, number, string, string]>(
      `DELETE FROM reactions WHERE conv_num = ${CONV_NUM} AND seq = ? AND emoji = ? AND user_id = ?`,
    ),
    clearReactions: s<[string, number]>(`DELETE FROM reactions WHERE conv_num = ${CONV_NUM} AND seq = ?`),

    // The head of a log (a user id, or '#' || a large group's id): one seek to the end of the
    // log's range of the primary key.
    head: s<[string], number | null>(`SELECT max(useq) FROM updates WHERE log_num = ${LOG_NUM}`).pluck(),
    logNum: s<[string], number>("SELECT num FROM logs WHERE key = ?").pluck(),
    insertLog: s<[string]>("INSERT INTO logs (key) VALUES (?)"),
    // Keyed by the log's number (logNum) and naming the conversation by its number (convNum).
    insertUpdate: s<[number, number, string, number, number | null, number | bigint | null, string | null]>(
      "INSERT INTO updates (log_num, useq, kind, conv_num, seq, snapshot, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
    ),
    insertSnapshot: s<[string]>("INSERT INTO snapshots (data) VALUES (?)"),
    // A range scan of the (log_num, useq) primary key: cost follows the entries returned.
    // One statement per page of the log, messages joined in (a lookup per entry was most of
    // the cost of a catch-up). Entries without a message (receipt, conv, left) have seq NULL.
    // Raw rows (UpdateTuple), columns in UpdateRow's order.
    readUpdates: s<[string, number, number], UpdateTuple>(
      `SELECT u.useq, u.kind, c.id, u.seq, u.data, s.data AS snapshot_data,
         m.seq, mu.id, m.from_dev, m.cid, m.type, m.body, m.ts, m.reply_to, m.edited_at,
         m.deleted_at, CASE WHEN m.seq IS NULL THEN NULL ELSE ${REACTIONS_OF_M} END
       FROM updates u
       LEFT JOIN conversations c ON c.num = u.conv_num
       LEFT JOIN snapshots s ON s.id = u.snapshot
       LEFT JOIN messages m ON m.conv_num = u.conv_num AND m.seq = u.seq
       LEFT JOIN users mu ON mu.num = m.from_num
       WHERE u.log_num = ${LOG_NUM} AND u.useq > ?
       ORDER BY u.useq
       LIMIT ?`,
    ).raw(true),
  };
}

export type Statements = ReturnType<typeof prepareStatements>;

/** Bound of a Numbers cache (cleared when exceeded). */
const NUMBERS_MAX = 200_000;

/** Conversation or user ids to the numbers messages rows name them by (migration 7), each read
 * once with `lookup`: a number never changes once given. A connection that writes clears it when
 * it rolls back, so that no number read inside the rolled back transaction outlives it. */
export class Numbers {
  private readonly map = new Map<string, number>();

  /** `create` (for logs) gives a number to an id that has none, in the caller's transaction. */
  constructor(
    private readonly lookup: BetterSqlite3.Statement<[string], number | null>,
    private readonly create?: BetterSqlite3.Statement<[string]>,
  ) {}

  /** The number of `id`; undefined when there is no such row (and no `create`). */
  get(id: string): number | undefined {
    let n = this.map.get(id);
    if (n === undefined) {
      const read = this.lookup.get(id) ?? this.create?.run(id).lastInsertRowid;
      if (read == null) return undefined;
      n = Number(read);
      if (this.map.size >= NUMBERS_MAX) this.map.clear();
      this.map.set(id, n);
    }
    return n;
  }

  /** The number of `id`, which must exist (a conversation or sender a message is stored for). */
  of(id: string): number {
    const n = this.get(id);
    if (n === undefined) throw new Error(`${id} has no number: no such conversation or user`);
    return n;
  }

  clear(): void {
    this.map.clear();
  }
}

/** The message `user` stored with `cid` (the resend key), if any. */
export function storedByCid(
  st: Statements,
  userNums: Numbers,
  user: UserId,
  cid: string,
): MessageRow | undefined {
  const from = userNums.get(user);
  return from === undefined ? undefined : st.messageByCid.get(from, cid);
}

export function toUser(r: UserRow): UserRecord {
  return { id: r.id, name: r.name, passwordHash: r.password_hash, createdAt: r.created_at };
}

export function toDevice(r: DeviceRow): DeviceRecord {
  const d: DeviceRecord = {
    id: r.id,
    userId: r.user_id,
    name: r.name,
    createdAt: r.created_at,
    cursor: r.cursor,
    lastSeenAt: r.last_seen_at,
  };
  if (r.revoked_at !== null) d.revokedAt = r.revoked_at;
  return d;
}

export function toToken(r: TokenRow): TokenRecord {
  const t: TokenRecord = {
    hash: r.hash,
    userId: r.user_id,
    deviceId: r.device_id,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
  };
  if (r.revoked_at !== null) t.revokedAt = r.revoked_at;
  return t;
}

export function toMember(r: MemberRow): Member {
  return { user: r.user_id, role: r.role, delivered: r.delivered, read: r.read };
}

/** `logHead` and `memberCount`: shown for a large group. */
export function toConversation(
  r: ConversationRow,
  members: Member[],
  logHead: number,
  memberCount: number,
): Conversation {
  const c: Conversation = {
    id: r.id,
    kind: r.kind,
    name: r.name,
    createdAt: r.created_at,
    lastSeq: r.last_seq,
    members,
  };
  if (r.large === 1) {
    c.memberCount = memberCount;
    c.large = true;
    c.logHead = logHead;
  }
  return c;
}

export function toMessage(r: MessageRow): Message {
  const m: Message = {
    conv: r.conv_id,
    seq: r.seq,
    from: r.from_user,
    dev: r.from_dev,
    cid: r.cid,
    type: r.type,
    // A plain Uint8Array of its own: a view of the Buffer could expose a shared ArrayBuffer.
    body: new Uint8Array(r.body),
    ts: r.ts,
  };
  if (r.reply_to !== null) m.replyTo = r.reply_to;
  if (r.edited_at !== null) m.editedAt = r.edited_at;
  if (r.deleted_at !== null) m.deleted = true;
  // Most messages have none: skip parsing the empty array (a sync page maps a thousand rows).
  const reactions =
    r.reactions === "[]" ? undefined : reactionsRecord(JSON.parse(r.reactions) as Array<[string, UserId]>);
  if (reactions) m.reactions = reactions;
  return m;
}
