import { existsSync, rmSync } from "node:fs";
import type BetterSqlite3 from "better-sqlite3";
import { ParleyError } from "@parley/protocol/errors";
import type {
  Conversation,
  ConversationId,
  DeviceId,
  LoggedUpdate,
  Member,
  Message,
  ReceiptKind,
  Role,
  Update,
  UserId,
} from "@parley/protocol";
import { silentLogger } from "../../core/ports/logger.ts";
import type { Logger } from "../../core/ports/logger.ts";
import type {
  AppendResult,
  ConversationChange,
  DeviceRecord,
  HistoryQuery,
  LogUpdate,
  MessageChange,
  NewConversation,
  NewMessage,
  Store,
  TokenRecord,
  UserRecord,
  UserUpdate,
} from "../../core/ports/store.ts";
import {
  compareActivity,
  messageAt,
  raiseReceipt,
  replyToProblem,
  requireInteger,
  requireReceiptKind,
  requireUserId,
} from "../store-rules.ts";
import { openDatabase, openReader } from "./sqlite-open.ts";
import { CommitLog, decodeBatch, encodeBatch } from "./commit-log.ts";
import {
  NumberedLog,
  decodeNumbered,
  logBase,
  recordLogDir,
  refuseStraySegments,
  type NumberedBatch,
} from "./numbered-log.ts";
import {
  Numbers,
  prepareStatements,
  storedByCid,
  toConversation,
  toDevice,
  toMember,
  toMessage,
  toToken,
  toUser,
  type ConversationRow,
  type Statements,
} from "./sqlite-statements.ts";
import { SqliteUpdateLog, groupLogKey } from "./sqlite-update-log.ts";

// SqliteStore: the embedded Store, one SQLite file on better-sqlite3. better-sqlite3 is
// synchronous, so each method runs its whole transaction in one event-loop turn: nothing
// interleaves with it in this process, and its promise settles after COMMIT has been fsynced.
//
// With a commit interval (commitIntervalMs), message appends are the exception: each batch runs
// in one long write transaction and is acknowledged once it is also in the commit log
// (commit-log.ts, `<path>-commitlog`, fdatasynced); SQLite commits every commitIntervalMs, or
// before any other write, and the log is emptied. What the log holds at open is applied again
// first. This connection sees its own uncommitted appends; another connection (the main thread's
// reader in ThreadedSqliteStore) does not, and must ask for a commit first (commitNow, onCommit).

export interface SqliteStoreOptions {
  logger?: Logger;
  /** Page cache of the connection in KiB (default 64 MiB, sqlite-open.ts): under load it keeps
   * the pages every batch touches, at the cost of that much memory. */
  cacheKib?: number;
  /** Commit message appends every this many ms, acknowledging each batch once it is in the commit
   * log (see above); 0 or absent: every write is its own commit. Whatever the setting, a commit
   * log left at `<path>-commitlog` is applied at open. Set (even to 0), this store owns the log:
   * it empties it after applying it (0: removes it). Absent, it is a tool beside a server that may
   * be running (`parley user add`): it applies the log, which writes nothing the server has
   * committed, and never changes the file, which the server may be writing. */
  commitIntervalMs?: number;
  /** Called after each commit of deferred appends with its epoch (see uncommittedEpoch); in an
   * applier, with the last numbered batch applied. */
  onCommit?: (epoch: number) => void;
  /** This store is the applier of a Sequencer's numbered batches (ThreadedSqliteStore,
   * architecture.md "Acknowledging ahead of SQLite"): appends arrive numbered (applyNumbered)
   * and are committed every commitIntervalMs (required, > 0); appendMessages is refused. The
   * numbered log's segments are the sequencer's: this store only reads them, to replay them at
   * open and after a failed commit. */
  applier?: boolean;
  /** Where the numbered log's segments live (default: beside the database). An owner (see
   * commitIntervalMs) refuses to open if segments lie beside the database while this is another
   * directory (numbered-log.ts, refuseStraySegments). */
  numberedLogDir?: string;
}

/** The log message of a start that applied a non-empty commit log (the chaos run counts them). */
export const COMMIT_LOG_APPLIED =
  "sqlite store: applied the commit log (acknowledged sends not yet committed)";
/** The same, for the numbered log of a sequencer (ThreadedSqliteStore). */
export const NUMBERED_LOG_APPLIED =
  "sqlite store: applied the numbered commit log (acknowledged sends not yet committed)";

/** Where the commit log of the database at `path` lives. */
function commitLogPath(path: string): string {
  return `${path}-commitlog`;
}

/** A conversation as appendMessages reads it: its row (last_seq counted on from batch to batch)
 * and, unless it is large, its members. */
interface SendTarget {
  row: ConversationRow;
  members: UserId[];
  memberSet: Set<UserId>;
}

/** What applied messages moved in one conversation: its last seq and activity, and the last seq
 * of each of its senders. */
interface Advance {
  seq: number;
  ts: number;
  senders: Map<UserId, number>;
}

/** Bounds of the caches kept between write transactions (cleared when exceeded). */
const SEND_CACHE_MAX = 50_000;
const HEADS_MAX = 200_000;

export class SqliteStore implements Store {
  private readonly st: Statements;
  private readonly log: SqliteUpdateLog;
  /** Runs a function inside a transaction (rolled back if it throws). */
  private readonly txn: BetterSqlite3.Transaction<(fn: () => unknown) => unknown>;
  private closed = false;
  /** Set when a failed commit could not be recovered from: every call fails with it. */
  private broken: Error | undefined;
  private deferredCommit: NodeJS.Timeout | undefined;
  /** When the deferred transaction began (performance.now()). */
  private deferredSince = 0;
  /** Appends are deferred (committed every deferMs) when > 0. */
  private readonly deferMs: number;
  private commitLog: CommitLog | undefined;
  /** Numbers the deferred transactions; see uncommittedEpoch. */
  private epoch = 0;
  private readonly onCommit: ((epoch: number) => void) | undefined;
  /** Writes run in the deferred transaction that settle when it commits (device cursors). */
  private readonly awaitingCommit: Array<{ settle(): void; reject(err: Error): void }> = [];
  private readonly logger: Logger;
  /** What appendMessages read of each conversation, kept from one batch to the next (see
   * write() for when it is dropped). Large groups keep only the senders found to be members. */
  private readonly sendCache = new Map<ConversationId, SendTarget | null>();
  /** The numbers messages rows name conversations and senders by; dropped with the other caches. */
  private readonly convNums: Numbers;
  private readonly userNums: Numbers;
  /** PRAGMA data_version when the caches were last known good. */
  private dataVersion: number | undefined;
  /** Set in an applier (options.applier): the database's path, where the numbered log is. */
  private readonly numberedLog: string | undefined;
  /** In an applier, the last numbered batch applied (0 after open: the sequencer counts anew). */
  private appliedBatch = 0;
  /** In an applier, what the numbered batches applied in the open transaction moved: each
   * conversation's last seq and activity, and its senders' marks. Written once per conversation
   * and sender when the transaction commits, or before anything else writes in it
   * (writeAdvanced), not once per batch: a busy conversation has messages in many of the
   * batches one transaction holds (a 1:1 conversation in each of the 30-40 of `npm run bench --
   * store-append`), and an update of its row and one of its sender's per batch were about 8% of
   * the applier's CPU there (docs/benchmarks.md). */
  private readonly advanced = new Map<ConversationId, Advance>();

  private constructor(
    private readonly db: BetterSqlite3.Database,
    opts: SqliteStoreOptions = {},
    path?: string,
  ) {
    this.st = prepareStatements(db);
    this.convNums = new Numbers(this.st.convNum);
    this.userNums = new Numbers(this.st.userNum);
    this.log = new SqliteUpdateLog(this.st, this.convNums);
    this.txn = db.transaction((fn: () => unknown) => fn());
    this.deferMs = opts.commitIntervalMs || 0;
    this.onCommit = opts.onCommit;
    this.logger = opts.logger ?? silentLogger;
    if (opts.applier) {
      if (!(this.deferMs > 0)) throw new Error("an applier needs a commit interval");
      this.numberedLog = path === undefined ? undefined : logBase(path, opts.numberedLogDir);
    }
  }

  /** Opens (creating if absent) and migrates the database at `path`. Rejects with an Error naming
   * the file if it is not a SQLite database, is damaged, belongs to another program, or was
   * written by a newer Parley. The caller owns the store and must close() it. */
  static open(path: string, opts: SqliteStoreOptions = {}): Promise<SqliteStore> {
    return new Promise((resolve) => {
      const db = openDatabase(path, opts.logger ?? silentLogger, opts.cacheKib);
      let store: SqliteStore;
      try {
        store = new SqliteStore(db, opts, path);
      } catch (err) {
        db.close();
        throw err;
      }
      try {
        const owner = opts.commitIntervalMs !== undefined;
        const keep = !opts.applier && opts.commitIntervalMs;
        store.openCommitLog(commitLogPath(path), !owner ? "leave" : keep ? "keep" : "remove");
        // A sequencer's numbered log (a ThreadedSqliteStore that stopped): applied and removed by
        // whichever store owns the file next. Not by a tool beside a running server, which may be
        // writing it.
        if (owner) {
          refuseStraySegments(path, opts.numberedLogDir);
          const base = logBase(path, opts.numberedLogDir);
          store.replayNumbered(base, false);
          NumberedLog.removeAll(base);
          recordLogDir(path, opts.numberedLogDir);
        }
      } catch (err) {
        store.commitLog?.close();
        store.db.close();
        throw err;
      }
      resolve(store);
    });
  }

  /** A store over a read-only connection to a database another SqliteStore (the writer) holds
   * open: its read methods work, its write methods reject. See threaded-sqlite-store.ts. */
  static openReader(path: string): SqliteStore {
    return new SqliteStore(openReader(path));
  }

  // ------------------------------------------------------------------ accounts and devices

  createUser(user: UserRecord): Promise<void> {
    return this.write(() => {
      requireUserId(user.id);
      if (this.st.userById.get(user.id)) throw new ParleyError("E_CONFLICT", "user id already exists");
      if (this.st.userByName.get(user.name)) throw new ParleyError("E_CONFLICT", "name is already taken");
      this.st.insertUser.run(user.id, user.name, user.passwordHash, user.createdAt);
    });
  }

  findUserByName(name: string): Promise<UserRecord | undefined> {
    return this.read(() => {
      const r = this.st.userByName.get(name);
      return r && toUser(r);
    });
  }

  getUser(id: UserId): Promise<UserRecord | undefined> {
    return this.read(() => {
      const r = this.st.userById.get(id);
      return r && toUser(r);
    });
  }

  createDevice(device: DeviceRecord, token: TokenRecord): Promise<void> {
    return this.write(() => {
      if (!this.st.userById.get(device.userId)) throw new ParleyError("E_NOT_FOUND", "no such user");
      if (token.deviceId !== device.id || token.userId !== device.userId) {
        throw new ParleyError("E_INVALID", "the token must belong to the device and its user");
      }
      if (this.st.deviceById.get(device.id)) throw new ParleyError("E_CONFLICT", "device id already exists");
      if (this.st.tokenByHash.get(token.hash)) throw new ParleyError("E_CONFLICT", "token already exists");
      const d = device;
      this.st.insertDevice.run(
        d.id,
        d.userId,
        d.name,
        d.createdAt,
        d.cursor,
        d.lastSeenAt,
        d.revokedAt ?? null,
      );
      const t = token;
      this.st.insertToken.run(t.hash, t.userId, t.deviceId, t.createdAt, t.expiresAt, t.revokedAt ?? null);
    });
  }

  getDevice(id: DeviceId): Promise<DeviceRecord | undefined> {
    return this.read(() => {
      const r = this.st.deviceById.get(id);
      return r && toDevice(r);
    });
  }

  listDevices(user: UserId): Promise<DeviceRecord[]> {
    return this.read(() => this.st.devicesOfUser.all(user).map(toDevice));
  }

  revokeDevice(user: UserId, device: DeviceId, at: number): Promise<boolean> {
    return this.write(() => {
      if (this.st.revokeDevice.run(at, device, user).changes === 0) return false;
      this.st.revokeDeviceTokens.run(at, device);
      return true;
    });
  }

  touchDevice(device: DeviceId, cursor: number, at: number): Promise<void> {
    return this.write(() => this.touch(device, cursor, at), "cursor");
  }

  /** touchDevice for each of `touches`, in order, in one transaction (one fsync instead of one
   * each: ThreadedSqliteStore's writer saves cursors this way). Each item's outcome is null, or
   * the error touchDevice would have rejected it with; a refused item writes nothing and does not
   * stop the others. */
  touchDevices(
    touches: ReadonlyArray<readonly [DeviceId, number, number]>,
  ): Promise<Array<ParleyError | null>> {
    return this.write(
      () =>
        touches.map(([device, cursor, at]) => {
          try {
            this.touch(device, cursor, at);
            return null;
          } catch (err) {
            if (err instanceof ParleyError) return err;
            throw err;
          }
        }),
      "cursor",
    );
  }

  findToken(hash: string): Promise<TokenRecord | undefined> {
    return this.read(() => {
      const r = this.st.tokenByHash.get(hash);
      return r && toToken(r);
    });
  }

  revokeToken(hash: string, at: number): Promise<void> {
    return this.write(() => {
      this.st.revokeToken.run(at, hash);
    });
  }

  // ------------------------------------------------------------------ conversations

  createConversation(
    conv: NewConversation,
  ): Promise<{ conv: Conversation; created: boolean; updates: LogUpdate[] }> {
    return this.write(() => {
      const existing =
        conv.directKey === undefined ? undefined : this.st.convIdByDirectKey.get(conv.directKey);
      if (existing !== undefined)
        return { conv: this.loadConversation(existing), created: false, updates: [] };
      if (this.st.convById.get(conv.id))
        throw new ParleyError("E_CONFLICT", "conversation id already exists");
      if (conv.members.length === 0) throw new ParleyError("E_INVALID", "a conversation needs members");
      if (conv.large && conv.kind !== "group")
        throw new ParleyError("E_INVALID", "only a group can be large");
      const users = new Set(conv.members.map((m) => m.user));
      if (users.size !== conv.members.length) throw new ParleyError("E_INVALID", "a member is listed twice");
      for (const u of users)
        if (!this.st.userById.get(u)) throw new ParleyError("E_NOT_FOUND", `no such user: ${u}`);

      const { id, kind, name, createdAt } = conv;
      const large = conv.large ? 1 : 0;
      this.st.insertConversation.run(id, kind, name, createdAt, conv.directKey ?? null, createdAt, large);
      for (const m of conv.members) this.st.insertMember.run(id, m.user, m.role);
      const c = this.loadConversation(id);
      const updates = large
        ? this.appendOwnStates(c, this.st.membersOf.all(id).map(toMember))
        : this.appendConvState(c);
      return { conv: c, created: true, updates };
    });
  }

  getConversation(id: ConversationId): Promise<Conversation | undefined> {
    return this.read(() => (this.st.convById.get(id) ? this.loadConversation(id) : undefined));
  }

  getRole(conv: ConversationId, user: UserId): Promise<Role | undefined> {
    return this.read(() => this.st.member.get(conv, user)?.role);
  }

  getMember(conv: ConversationId, user: UserId): Promise<Member | undefined> {
    return this.read(() => {
      const r = this.st.member.get(conv, user);
      return r ? toMember(r) : undefined;
    });
  }

  listMembers(conv: ConversationId, after: UserId | undefined, limit: number): Promise<Member[]> {
    return this.read(() => this.st.membersPage.all(conv, after ?? "", Math.max(0, limit)).map(toMember));
  }

  eldestMember(conv: ConversationId, except: UserId): Promise<UserId | undefined> {
    return this.read(() => this.st.eldestMember.get(conv, except));
  }

  listConversations(user: UserId): Promise<Conversation[]> {
    return this.read(() => {
      const out: Array<Conversation & { lastActivity: number }> = [];
      for (const r of this.st.conversationsOfUser.all(user, user, user)) {
        let c = out.at(-1);
        if (c?.id !== r.id) {
          const count = r.large === 1 ? this.st.memberCount.get(r.id)! : 0;
          c = { ...toConversation(r, [], this.groupHead(r), count), lastActivity: r.last_activity };
          out.push(c);
        }
        c.members.push({ user: r.m_user, role: r.m_role, delivered: r.m_delivered, read: r.m_read });
      }
      // SQL already ordered them; sorting with the shared rule keeps ties identical to MemoryStore.
      return out.sort(compareActivity).map(({ lastActivity: _, ...c }) => c);
    });
  }

  changeConversation(change: ConversationChange): Promise<{ conv: Conversation; updates: LogUpdate[] }> {
    return this.write(() => {
      const row = this.st.convById.get(change.conv);
      if (!row) throw new ParleyError("E_NOT_FOUND", "no such conversation");
      const unchanged = (): { conv: Conversation; updates: LogUpdate[] } => ({
        conv: this.loadConversation(row.id),
        updates: [],
      });
      /** Added members of a large group: they get the new state in their own logs too. */
      let fresh: UserId[] = [];
      let left: UserId | undefined;
      /** Members whose record changed (added, promoted, role set): a large group's delta. */
      let changed: UserId[] = [];
      switch (change.kind) {
        case "rename":
          if (row.name === change.name) return unchanged();
          this.st.renameConversation.run(change.name, row.id);
          break;
        case "add": {
          fresh = [...new Set(change.users)].filter((u) => !this.st.member.get(row.id, u));
          for (const u of fresh)
            if (!this.st.userById.get(u)) throw new ParleyError("E_NOT_FOUND", `no such user: ${u}`);
          if (fresh.length === 0) return unchanged();
          for (const u of fresh) this.st.insertMember.run(row.id, u, "member");
          changed = fresh;
          break;
        }
        case "remove":
          if (this.st.deleteMember.run(row.id, change.user).changes === 0)
            throw new ParleyError("E_NOT_FOUND", "not a member");
          if (change.heir !== undefined) {
            const heir = this.st.member.get(row.id, change.heir);
            if (!heir) throw new ParleyError("E_NOT_FOUND", "the heir is not a member");
            if (heir.role !== "owner") this.st.setRole.run("owner", row.id, change.heir);
            changed = [change.heir];
          }
          left = change.user;
          break;
        case "role": {
          const m = this.st.member.get(row.id, change.user);
          if (!m) throw new ParleyError("E_NOT_FOUND", "not a member");
          if (m.role === change.role) return unchanged();
          this.st.setRole.run(change.role, row.id, change.user);
          changed = [change.user];
          break;
        }
        case "large": {
          if (row.kind !== "group") throw new ParleyError("E_INVALID", "only a group can be large");
          if (row.large === 1) return unchanged();
          this.st.makeLarge.run(row.id);
          // Every member learns from their own log that the group's log starts here.
          const c = this.loadConversation(row.id);
          return { conv: c, updates: this.appendOwnStates(c, this.st.membersOf.all(row.id).map(toMember)) };
        }
      }
      const removed = left === undefined ? [] : [left];
      // A large group's log gets only what changed; anyone else's log the whole new state.
      const updates: LogUpdate[] =
        row.large === 1
          ? this.log.appendToGroup(row.id, {
              k: "members",
              conv: row.id,
              name: change.kind === "rename" ? change.name : row.name,
              set: changed.map((u) => toMember(this.st.member.get(row.id, u)!)),
              removed,
              count: this.st.memberCount.get(row.id)!,
            })
          : [];
      // Read after that entry: a large group's state includes its log's head.
      const c = this.loadConversation(row.id);
      if (row.large === 0) updates.push(...this.appendConvState(c));
      else
        updates.push(
          ...this.appendOwnStates(
            c,
            fresh.map((u) => toMember(this.st.member.get(row.id, u)!)),
          ),
        );
      if (left !== undefined) updates.push(...this.log.append([left], { k: "left", conv: row.id }));
      return { conv: c, updates };
    });
  }

  // ------------------------------------------------------------------ messages

  appendMessages(batch: readonly NewMessage[]): Promise<AppendResult[]> {
    if (this.numberedLog !== undefined) {
      return Promise.reject(new Error("an applier takes numbered batches only (applyNumbered)"));
    }
    // The whole batch is one transaction, hence one fsync: this is the group commit. With a commit
    // interval, one record of the commit log instead (see write()).
    return this.write(
      () => this.append(batch),
      "append",
      () => encodeBatch(batch),
    );
  }

  /** Applies numbered batches (encodeNumbered) of the sequencer, in order, in the deferred
   * transaction (applier only). A batch at or below the last one applied is skipped: after a
   * failed commit the applier applied it again from the log, before it arrived. SQLite refusing
   * a batch is a bug (the sequencer checked everything): the transaction is rolled back and the
   * log applied again, and if that fails too the store stops (recover()). */
  applyNumbered(records: readonly Uint8Array[]): Promise<void> {
    return this.write(() => {
      if (this.numberedLog === undefined) throw new Error("not an applier");
      for (const payload of records) {
        const b = decodeNumbered(payload);
        if (b.batch <= this.appliedBatch) continue;
        this.applyBatch(b);
        this.appliedBatch = b.batch;
      }
    }, "append");
  }

  /** The epoch of the deferred transaction holding acknowledged appends, 0 when none is open;
   * onCommit(epoch) tells when it is committed. */
  get uncommittedEpoch(): number {
    return this.deferredCommit !== undefined ? this.epoch : 0;
  }

  /** In an applier, the last numbered batch applied. */
  get appliedThrough(): number {
    return this.appliedBatch;
  }

  /** Set once a failure could not be recovered from: every call fails until the store is
   * reopened (which applies the commit log again). */
  get stopped(): Error | undefined {
    return this.broken;
  }

  /** Commits the deferred appends now (no-op when there are none). */
  commitNow(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.check();
      this.commitDeferred();
      this.check();
      resolve();
    });
  }

  /** appendMessages' work, in the caller's transaction (also the commit log's replay). */
  private append(batch: readonly NewMessage[]): AppendResult[] {
    // Each conversation is read once and kept for the next batches (sendCache): only other
    // writes change membership, and they drop it. A large group's members are looked up one
    // sender at a time: its messages go to its own log, so the whole member list is not needed.
    if (this.sendCache.size > SEND_CACHE_MAX) this.sendCache.clear();
    const touched = new Set<SendTarget>();
    const conversation = (id: ConversationId) => {
      let c = this.sendCache.get(id);
      if (c === undefined) {
        const row = this.st.convById.get(id);
        const members = row && row.large === 0 ? this.st.memberUserIds.all(id) : [];
        c = row ? { row, members, memberSet: new Set(members) } : null;
        this.sendCache.set(id, c);
      }
      return c;
    };
    const isMember = (c: SendTarget, user: UserId): boolean => {
      if (c.memberSet.has(user)) return true;
      if (c.row.large === 0 || !this.st.member.get(c.row.id, user)) return false;
      c.memberSet.add(user);
      return true;
    };
    // The sender's read marks, written once per conversation and sender at the end.
    const marks = new Map<ConversationId, Map<UserId, number>>();
    const duplicateOf = (item: NewMessage): AppendResult | undefined => {
      const dup = storedByCid(this.st, this.userNums, item.from, item.cid);
      return dup && { ok: true, duplicate: true, msg: toMessage(dup), updates: [] };
    };
    const results = batch.map((item): AppendResult => {
      const c = conversation(item.conv);
      if (!c || !isMember(c, item.from)) {
        return duplicateOf(item) ?? { ok: false, code: "E_NOT_FOUND", message: "no such conversation" };
      }
      const seq = c.row.last_seq + 1;
      const problem = replyToProblem(item.replyTo, seq);
      if (problem) return duplicateOf(item) ?? { ok: false, code: "E_INVALID", message: problem };

      const { from, dev, cid, type, ts } = item;
      const replyTo = item.replyTo ?? null;
      // The unique (cid, from_num) key finds a resend: nothing is inserted, and it is answered
      // with the message stored first. One statement for the usual case instead of a lookup
      // before every insert.
      const inserted = this.st.insertMessage.run(
        c.row.num,
        seq,
        this.userNums.of(from),
        dev,
        cid,
        type,
        item.body,
        ts,
        replyTo,
      );
      if (inserted.changes === 0) return duplicateOf(item)!;
      touched.add(c);
      let senders = marks.get(c.row.id);
      if (!senders) marks.set(c.row.id, (senders = new Map<UserId, number>()));
      senders.set(from, seq);
      c.row.last_seq = seq;
      c.row.last_activity = Math.max(c.row.last_activity, ts);
      const msg = messageAt(item, c.row.id, seq, new Uint8Array(item.body));
      return {
        ok: true,
        duplicate: false,
        msg,
        updates:
          c.row.large === 1
            ? this.log.appendToGroup(c.row.id, { k: "msg", msg })
            : this.log.append(c.members, { k: "msg", msg }),
      };
    });
    // The sender has read what they sent (and everything before it).
    for (const [conv, senders] of marks) {
      for (const [user, seq] of senders) this.st.setMarks.run(seq, seq, conv, user);
    }
    for (const c of touched) this.st.advanceConversation.run(c.row.last_seq, c.row.last_activity, c.row.id);
    return results;
  }

  changeMessage(change: MessageChange): Promise<{ msg: Message; updates: LogUpdate[] }> {
    return this.write(() => {
      const { conv, seq } = change;
      const row = Number.isSafeInteger(seq) ? this.st.messageBySeq.get(conv, seq) : undefined;
      if (!row) throw new ParleyError("E_NOT_FOUND", "no such message");
      const deleted = row.deleted_at !== null;
      const unchanged = { msg: toMessage(row), updates: [] };
      switch (change.kind) {
        case "edit":
          if (deleted) throw new ParleyError("E_CONFLICT", "the message was deleted");
          this.st.editMessage.run(change.type, change.body, change.at, conv, seq);
          break;
        case "delete":
          if (deleted) return unchanged;
          // A recall keeps no content: the body and the reactions to it go.
          this.st.recallMessage.run(change.at, conv, seq);
          this.st.clearReactions.run(conv, seq);
          break;
        case "react": {
          if (!this.st.member.get(conv, change.user)) throw new ParleyError("E_NOT_FOUND", "not a member");
          if (deleted) throw new ParleyError("E_CONFLICT", "the message was deleted");
          const stmt = change.on ? this.st.addReaction : this.st.removeReaction;
          if (stmt.run(conv, seq, change.emoji, change.user).changes === 0) return unchanged;
          break;
        }
      }
      const msg = this.messageNow(conv, seq);
      const u: Update =
        change.kind === "react"
          ? { k: "react", msg, user: change.user, emoji: change.emoji, on: change.on }
          : { k: change.kind === "edit" ? "edit" : "del", msg };
      const large = this.st.convById.get(conv)?.large === 1;
      return {
        msg,
        updates: large
          ? this.log.appendToGroup(conv, u)
          : this.log.append(this.st.memberUserIds.all(conv), u),
      };
    });
  }

  getMessage(conv: ConversationId, seq: number): Promise<Message | undefined> {
    return this.read(() => {
      const r = Number.isSafeInteger(seq) ? this.st.messageBySeq.get(conv, seq) : undefined;
      return r && toMessage(r);
    });
  }

  history(conv: ConversationId, query: HistoryQuery): Promise<Message[]> {
    return this.read(() => {
      const { after, before, limit } = query;
      requireInteger(limit, "limit");
      if (after !== undefined) requireInteger(after, "after");
      if (before !== undefined) requireInteger(before, "before");
      // LIMIT with a negative value means "no limit" in SQLite.
      if (limit <= 0) return [];
      // Forward from `after` when it is given, else backward from `before` (or the newest).
      const stmt = after !== undefined ? this.st.historyForward : this.st.historyBackward;
      return stmt.all(conv, after ?? 0, before ?? Number.MAX_SAFE_INTEGER, limit).map(toMessage);
    });
  }

  // ------------------------------------------------------------------ receipts and sync

  setReceipt(conv: ConversationId, user: UserId, kind: ReceiptKind, seq: number): Promise<UserUpdate[]> {
    return this.write(() => {
      requireReceiptKind(kind);
      requireInteger(seq, "seq");
      const row = this.st.convById.get(conv);
      const member = row && this.st.member.get(conv, user);
      if (!row || !member) throw new ParleyError("E_NOT_FOUND", "no such conversation");
      const raised = raiseReceipt(member, kind, seq, row.last_seq);
      if (!raised) return [];
      this.st.setMarks.run(raised.delivered, raised.read, conv, user);
      // In a large group only the reader's own devices hear of it (N members x N receipts else).
      return this.log.append(row.large === 1 ? [user] : this.st.memberUserIds.all(conv), {
        k: "receipt",
        conv,
        user,
        kind,
        seq: raised.seq,
      });
    }, "marks");
  }

  readUpdates(user: UserId, after: number, limit: number): Promise<LoggedUpdate[]> {
    return this.read(() => {
      requireInteger(after, "after");
      requireInteger(limit, "limit");
      if (limit <= 0) return [];
      return this.log.read(user, after, limit);
    });
  }

  head(user: UserId): Promise<number> {
    return this.read(() => this.log.head(user));
  }

  readConversationLog(conv: ConversationId, after: number, limit: number): Promise<LoggedUpdate[]> {
    return this.read(() => {
      requireInteger(after, "after");
      requireInteger(limit, "limit");
      if (limit <= 0 || this.st.convById.get(conv)?.large !== 1) return [];
      return this.log.read(groupLogKey(conv), after, limit);
    });
  }

  conversationLogHead(conv: ConversationId): Promise<number> {
    return this.read(() => this.log.head(groupLogKey(conv)));
  }

  largeConversations(user: UserId): Promise<Array<{ conv: ConversationId; head: number }>> {
    return this.read(() =>
      this.st.largeConversationsOf
        .all(user)
        .map((conv) => ({ conv, head: this.log.head(groupLogKey(conv)) })),
    );
  }

  /** Closes the database (SQLite checkpoints the WAL into the file). Idempotent. */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.commitDeferred();
      this.commitLog?.close(this.broken === undefined);
      this.db.close();
    }
    return Promise.resolve();
  }

  // ------------------------------------------------------------------ internals

  private touch(device: DeviceId, cursor: number, at: number): void {
    requireInteger(cursor, "cursor");
    if (this.st.touchDevice.run(cursor, at, device).changes === 0)
      throw new ParleyError("E_NOT_FOUND", "no such device");
  }

  /** Runs `fn` in a write transaction. IMMEDIATE takes the write lock up front, so another
   * process on the same file makes us wait (busy_timeout) rather than fail halfway. `kind` says
   * what it may change: message appends ("append"), device cursors ("cursor") and receipts ("marks") leave
   * conversation rows and memberships alone, so appendMessages' cache survives them; any other
   * write drops it. Both caches (that one and the log's heads) also go when a transaction fails or
   * another connection has written to the file. With a commit interval, an append runs in the
   * open deferred transaction and `record` goes to the commit log; any other write commits that
   * transaction first, so that the log only ever holds appends made on the last commit's state
   * (which is what makes its replay give the same seqs). Except device cursors: they change no
   * seq or log, so they run in the open transaction too, and settle when it commits (a crash loses
   * them unsettled; they are advisory anyway, client-session.ts). Saved every few seconds by
   * every connection, they would otherwise commit the appends many times a second. */
  private write<T>(
    fn: () => T,
    kind: "append" | "cursor" | "marks" | "other" = "other",
    record?: () => Uint8Array,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.check();
      if (kind === "cursor" && this.deferredCommit !== undefined) {
        const result = this.inDeferred(fn);
        this.awaitingCommit.push({ settle: () => resolve(result), reject });
        return;
      }
      if (this.deferMs > 0 && kind !== "append") {
        this.commitDeferred();
        this.check();
      }
      const dataVersion = this.st.dataVersion.get();
      if (dataVersion !== this.dataVersion) {
        this.forgetCaches();
        this.dataVersion = dataVersion;
      } else if (kind === "other") this.sendCache.clear();
      if (this.log.size > HEADS_MAX) this.log.forget();
      if (this.deferMs > 0 && kind === "append") {
        resolve(this.appendDeferred(fn, record));
        return;
      }
      try {
        resolve(this.txn.immediate(fn) as T);
      } catch (err) {
        this.forgetCaches();
        throw err;
      }
    });
  }

  /** An append in the deferred transaction (opened if need be, with its commit timer). Runs
   * straight in it, not as a savepoint (what txn() would make of it): a savepoint journals every
   * page it first changes, which is the cost the deferral exists to save. So a batch that fails
   * rolls back the whole transaction, and recover() applies the commit log again.
   *
   * An append that finds the transaction older than the interval commits it too: the timer alone
   * is not enough in a worker thread, whose port delivers the messages already queued before
   * timers run (400 queued messages of 5 ms each: a 100 ms timer had not run after 2 s). Behind a
   * backlog at direct-max the applier committed 1.5-2.7 s apart, the transaction grew to the
   * sequencer's bound (MAX_UNCOMMITTED), and sends waited for it. */
  private appendDeferred<T>(fn: () => T, record: (() => Uint8Array) | undefined): T {
    if (!this.db.inTransaction) {
      this.db.exec("BEGIN IMMEDIATE");
      this.epoch++;
      this.deferredSince = performance.now();
      this.deferredCommit = setTimeout(() => this.commitDeferred(), this.deferMs);
    }
    const result = this.inDeferred(() => {
      const result = fn();
      if (this.commitLog && record) this.commitLog.append(record());
      return result;
    });
    if (performance.now() - this.deferredSince >= this.deferMs) this.commitDeferred();
    return result;
  }

  /** Runs `fn` in the open deferred transaction; if it throws, recovers (see recover()). */
  private inDeferred<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      this.recover(err as Error);
      throw err;
    }
  }

  /** Commits the deferred transaction, if one is open, and empties the commit log. Never throws
   * (it runs from a timer): a failed commit goes to recover(). */
  private commitDeferred(): void {
    clearTimeout(this.deferredCommit);
    this.deferredCommit = undefined;
    if (!this.db.inTransaction) return;
    try {
      this.writeAdvanced();
      this.db.exec("COMMIT");
    } catch (err) {
      this.logger.error({ err }, "sqlite store: a commit failed; applying the commit log again");
      this.recover(err as Error);
      return;
    }
    this.committed();
  }

  /** After a commit of deferred appends: the log is no longer needed, and the writes that waited
   * for it are done. */
  private committed(): void {
    for (const w of this.awaitingCommit.splice(0)) w.settle();
    try {
      this.commitLog?.reset();
    } catch (err) {
      // It still holds committed batches: applied again, they write nothing.
      this.logger.warn({ err }, "sqlite store: could not empty the commit log");
    }
    this.onCommit?.(this.numberedLog !== undefined ? this.appliedBatch : this.epoch);
  }

  /** After a failed batch or commit in the deferred transaction: rolls it back, then applies and
   * commits what the commit log holds (the batches already acknowledged), on the last committed
   * state, as at open. If even that fails, the store is broken: every call fails until it is
   * reopened, which replays the log once more. An applier applies its sequencer's numbered log
   * the same way. */
  private recover(cause: Error): void {
    clearTimeout(this.deferredCommit);
    this.deferredCommit = undefined;
    this.advanced.clear(); // rolled back below, with the batches that moved it
    this.forgetCaches();
    // Rolled back with the transaction, and not in the log.
    for (const w of this.awaitingCommit.splice(0)) w.reject(cause);
    try {
      if (this.db.inTransaction) this.db.exec("ROLLBACK");
      if (this.commitLog) {
        this.commitLog.truncateTail();
        this.replay(CommitLog.read(this.commitLog.path));
      }
      if (this.numberedLog !== undefined) this.replayNumbered(this.numberedLog, true);
      this.committed();
    } catch (err) {
      this.forgetCaches();
      this.broken = new Error(`the SQLite store failed and must be reopened: ${(err as Error).message}`, {
        cause: err,
      });
      this.logger.error({ err }, "sqlite store: could not apply the commit log again; the store is stopped");
    }
  }

  /** Applies what the commit log at `path` holds; then keeps it open for appends ("keep"),
   * removes it ("remove"), or leaves the file as it is ("leave": not this store's, see
   * commitIntervalMs). */
  private openCommitLog(path: string, mode: "keep" | "remove" | "leave"): void {
    const apply = (records: readonly Uint8Array[]) => {
      try {
        this.replay(records);
      } catch (err) {
        // Left as it is: nothing acknowledged is dropped, and the next start tries again.
        throw new Error(`cannot apply the commit log ${path}: ${(err as Error).message}`, { cause: err });
      }
    };
    if (mode === "keep") {
      const { log, records } = CommitLog.open(path);
      this.commitLog = log;
      apply(records);
      log.reset();
      return;
    }
    const records = CommitLog.read(path);
    if (records.length === 0 && !existsSync(path)) return;
    apply(records);
    if (mode === "remove") rmSync(path, { force: true });
  }

  /** Applies the batches of `records` in order, in one transaction, and commits it. */
  private replay(records: readonly Uint8Array[]): void {
    if (records.length === 0) return;
    let messages = 0;
    let fresh = 0;
    this.txn.immediate(() => {
      for (const r of records) {
        for (const res of this.append(decodeBatch(r))) {
          messages++;
          if (res.ok && !res.duplicate) fresh++;
        }
      }
    });
    this.forgetCaches();
    this.logger.info({ batches: records.length, messages, stored: fresh }, COMMIT_LOG_APPLIED);
  }

  /** Applies the batches of the numbered log at `path` (its base: numbered-log.ts, logBase) that
   * SQLite does not hold yet, in order, in one transaction, and commits it. A batch is committed
   * whole or not at all, so its first message tells. `resume`: after a failed commit, the sequencer goes on numbering
   * from these (appliedBatch); at open it starts anew. */
  private replayNumbered(path: string, resume: boolean): void {
    const records = NumberedLog.readAll(path);
    if (records.length === 0) return;
    let last = 0;
    let applied = 0;
    let messages = 0;
    this.txn.immediate(() => {
      for (const r of records) {
        const b = decodeNumbered(r);
        last = Math.max(last, b.batch);
        const first = b.messages[0];
        if (first === undefined || this.st.messageExists.get(first.msg.conv, first.seq) !== undefined)
          continue;
        this.applyBatch(b);
        applied++;
        messages += b.messages.length;
      }
      this.writeAdvanced();
    });
    this.forgetCaches();
    if (resume) this.appliedBatch = Math.max(this.appliedBatch, last);
    this.logger.info({ batches: records.length, applied, stored: messages }, NUMBERED_LOG_APPLIED);
  }

  /** Writes a numbered batch as the sequencer numbered it; what it moves is written later
   * (writeAdvanced). */
  private applyBatch(b: NumberedBatch): void {
    const { advanced } = this;
    for (const { msg, seq, logs, useqs } of b.messages) {
      const { conv, from } = msg;
      const replyTo = msg.replyTo ?? null;
      const inserted = this.st.insertMessage.run(
        this.convNums.of(conv),
        seq,
        this.userNums.of(from),
        msg.dev,
        msg.cid,
        msg.type,
        msg.body,
        msg.ts,
        replyTo,
      );
      if (inserted.changes === 0) {
        throw new Error(`numbered batch ${b.batch}: ${from}'s message ${msg.cid} is stored already`);
      }
      for (let i = 0; i < logs.length; i++) this.log.appendNumbered(logs[i]!, useqs[i]!, conv, seq);
      let a = advanced.get(conv);
      if (!a) advanced.set(conv, (a = { seq, ts: msg.ts, senders: new Map() }));
      a.seq = seq;
      a.ts = Math.max(a.ts, msg.ts);
      a.senders.set(from, seq);
    }
  }

  /** Writes what the numbered batches applied since the last call moved (in the transaction
   * that applied them). Each batch numbers a conversation's messages after the last batch's, so
   * the last seq and sender mark seen are the ones a write per batch would have left. */
  private writeAdvanced(): void {
    // The sender has read what they sent (and everything before it), as append() does.
    for (const [conv, a] of this.advanced) {
      for (const [user, seq] of a.senders) this.st.setMarks.run(seq, seq, conv, user);
      this.st.advanceConversation.run(a.seq, a.ts, conv);
    }
    this.advanced.clear();
  }

  /** Drops what was read or counted in earlier transactions. */
  private forgetCaches(): void {
    this.sendCache.clear();
    this.convNums.clear();
    this.userNums.clear();
    this.log.forget();
  }

  /** Runs `fn` in a read transaction, so its queries see one snapshot. */
  private read<T>(fn: () => T): Promise<T> {
    return new Promise<T>((resolve) => {
      this.check();
      resolve(this.txn.deferred(fn) as T);
    });
  }

  private check(): void {
    if (this.closed) throw new Error("SqliteStore is closed");
    if (this.broken) throw this.broken;
  }

  /** The conversation's state; for a large group with only its owner and admins listed (in join
   * order). */
  private loadConversation(id: ConversationId): Conversation {
    const row = this.st.convById.get(id);
    if (!row) throw new Error(`conversation ${id} vanished`);
    const large = row.large === 1;
    const members = (large ? this.st.staffOf : this.st.membersOf).all(id).map(toMember);
    return toConversation(row, members, this.groupHead(row), large ? this.st.memberCount.get(id)! : 0);
  }

  /** Head of a large group's log (0 for any other conversation). */
  private groupHead(row: ConversationRow): number {
    return row.large === 1 ? this.log.head(groupLogKey(row.id)) : 0;
  }

  private messageNow(conv: ConversationId, seq: number): Message {
    const row = this.st.messageBySeq.get(conv, seq);
    if (!row) throw new Error(`message ${conv}#${seq} vanished`);
    return toMessage(row);
  }

  /** Appends to each member's log a large group's state `c` listing that member too (its own
   * marks), as a reply to that member would. */
  private appendOwnStates(c: Conversation, members: readonly Member[]): UserUpdate[] {
    return members.flatMap((m) =>
      this.log.append([m.user], {
        k: "conv",
        conv: c.members.some((l) => l.user === m.user) ? c : { ...c, members: [...c.members, m] },
      }),
    );
  }

  /** Appends a "conv" update with the conversation's state now to every current member (of a
   * large group too, whose `c.members` lists only some). */
  private appendConvState(c: Conversation): UserUpdate[] {
    return this.log.append(this.st.memberUserIds.all(c.id), { k: "conv", conv: c });
  }
}
