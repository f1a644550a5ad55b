import { ParleyError } from "@parley/protocol";
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
import type {
  AppendResult,
  ConversationChange,
  DeviceRecord,
  HistoryQuery,
  MessageChange,
  NewConversation,
  LogUpdate,
  NewMessage,
  Store,
  TokenRecord,
  UserRecord,
  UserUpdate,
} from "../../core/ports/store.ts";
import {
  compareActivity,
  compareText,
  messageAt,
  raiseReceipt,
  replyToProblem,
  requireInteger,
  requireReceiptKind,
  requireUserId,
} from "../store-rules.ts";
import { cidKey, copyConversation, copyDevice, copyMessage, emptyState, foldName } from "./memory-state.ts";
import type { StoredConversation, StoredMessage } from "./memory-state.ts";
import { MemoryUpdateLog } from "./memory-update-log.ts";

// MemoryStore: the Store in process memory, for core tests and throwaway servers. Same semantics
// as SqliteStore (both run the shared conformance suite) except durability: everything is lost
// with the process. Each method validates everything before it mutates anything and never awaits
// in between, so it is atomic. Results are copies: callers cannot reach stored state.

export class MemoryStore implements Store {
  private state = emptyState();
  private log = this.newLog();
  /** The logs of large groups, keyed by conversation id. */
  private groupLogs = this.newLog();
  private closed = false;

  // ------------------------------------------------------------------ accounts and devices

  createUser(user: UserRecord): Promise<void> {
    return this.run(() => {
      requireUserId(user.id);
      const key = foldName(user.name);
      if (this.state.users.has(user.id)) throw new ParleyError("E_CONFLICT", "user id already exists");
      if (this.state.userNames.has(key)) throw new ParleyError("E_CONFLICT", "name is already taken");
      this.state.users.set(user.id, { ...user });
      this.state.userNames.set(key, user.id);
    });
  }

  findUserByName(name: string): Promise<UserRecord | undefined> {
    return this.run(() => {
      const id = this.state.userNames.get(foldName(name));
      return id === undefined ? undefined : this.getUserSync(id);
    });
  }

  getUser(id: UserId): Promise<UserRecord | undefined> {
    return this.run(() => {
      return this.getUserSync(id);
    });
  }

  createDevice(device: DeviceRecord, token: TokenRecord): Promise<void> {
    return this.run(() => {
      if (!this.state.users.has(device.userId)) throw new ParleyError("E_NOT_FOUND", "no such user");
      if (token.deviceId !== device.id || token.userId !== device.userId) {
        throw new ParleyError("E_INVALID", "the token must belong to the device and its user");
      }
      if (this.state.devices.has(device.id)) throw new ParleyError("E_CONFLICT", "device id already exists");
      if (this.state.tokens.has(token.hash)) throw new ParleyError("E_CONFLICT", "token already exists");
      this.state.devices.set(device.id, { ...device });
      this.state.tokens.set(token.hash, { ...token });
    });
  }

  getDevice(id: DeviceId): Promise<DeviceRecord | undefined> {
    return this.run(() => {
      const d = this.state.devices.get(id);
      return d && copyDevice(d);
    });
  }

  listDevices(user: UserId): Promise<DeviceRecord[]> {
    return this.run(() => {
      return [...this.state.devices.values()]
        .filter((d) => d.userId === user)
        .sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
        .map(copyDevice);
    });
  }

  revokeDevice(user: UserId, device: DeviceId, at: number): Promise<boolean> {
    return this.run(() => {
      const d = this.state.devices.get(device);
      if (!d || d.userId !== user || d.revokedAt !== undefined) return false;
      d.revokedAt = at;
      for (const t of this.state.tokens.values()) {
        if (t.deviceId === device && t.revokedAt === undefined) t.revokedAt = at;
      }
      return true;
    });
  }

  touchDevice(device: DeviceId, cursor: number, at: number): Promise<void> {
    return this.run(() => {
      requireInteger(cursor, "cursor");
      const d = this.state.devices.get(device);
      if (!d) throw new ParleyError("E_NOT_FOUND", "no such device");
      d.cursor = Math.max(d.cursor, cursor);
      d.lastSeenAt = at;
    });
  }

  findToken(hash: string): Promise<TokenRecord | undefined> {
    return this.run(() => {
      const t = this.state.tokens.get(hash);
      return t && { ...t };
    });
  }

  revokeToken(hash: string, at: number): Promise<void> {
    return this.run(() => {
      const t = this.state.tokens.get(hash);
      if (t && t.revokedAt === undefined) t.revokedAt = at;
    });
  }

  // ------------------------------------------------------------------ conversations

  createConversation(
    conv: NewConversation,
  ): Promise<{ conv: Conversation; created: boolean; updates: LogUpdate[] }> {
    return this.run(() => {
      const existing = conv.directKey === undefined ? undefined : this.state.directKeys.get(conv.directKey);
      const found = existing === undefined ? undefined : this.state.convs.get(existing);
      if (found) return { conv: this.view(found), created: false, updates: [] };
      if (this.state.convs.has(conv.id))
        throw new ParleyError("E_CONFLICT", "conversation id already exists");
      if (conv.members.length === 0) throw new ParleyError("E_INVALID", "a conversation needs members");
      if (conv.large && conv.kind !== "group")
        throw new ParleyError("E_INVALID", "only a group can be large");
      const users = new Set(conv.members.map((m) => m.user));
      if (users.size !== conv.members.length) throw new ParleyError("E_INVALID", "a member is listed twice");
      for (const u of users)
        if (!this.state.users.has(u)) throw new ParleyError("E_NOT_FOUND", `no such user: ${u}`);

      const c: StoredConversation = {
        id: conv.id,
        kind: conv.kind,
        name: conv.name,
        createdAt: conv.createdAt,
        lastSeq: 0,
        lastActivity: conv.createdAt,
        members: new Map(
          conv.members.map((m) => [m.user, { user: m.user, role: m.role, delivered: 0, read: 0 }]),
        ),
        messages: [],
      };
      if (conv.directKey !== undefined) {
        c.directKey = conv.directKey;
        this.state.directKeys.set(conv.directKey, conv.id);
      }
      if (conv.large) c.large = true;
      this.state.convs.set(c.id, c);
      const updates = c.large ? this.appendOwnStates(c, [...c.members.keys()]) : this.appendConvState(c);
      return { conv: this.view(c), created: true, updates };
    });
  }

  getConversation(id: ConversationId): Promise<Conversation | undefined> {
    return this.run(() => {
      const c = this.state.convs.get(id);
      return c && this.view(c);
    });
  }

  getRole(conv: ConversationId, user: UserId): Promise<Role | undefined> {
    return this.run(() => {
      return this.state.convs.get(conv)?.members.get(user)?.role;
    });
  }

  getMember(conv: ConversationId, user: UserId): Promise<Member | undefined> {
    return this.run(() => {
      const m = this.state.convs.get(conv)?.members.get(user);
      return m && { ...m };
    });
  }

  listMembers(conv: ConversationId, after: UserId | undefined, limit: number): Promise<Member[]> {
    return this.run(() => {
      const c = this.state.convs.get(conv);
      if (!c) return [];
      // Ordered as SQLite orders TEXT (BINARY: by UTF-8 bytes, which code points compare alike).
      return [...c.members.values()]
        .filter((m) => after === undefined || compareText(m.user, after) > 0)
        .sort((a, b) => compareText(a.user, b.user))
        .slice(0, Math.max(0, limit))
        .map((m) => ({ ...m }));
    });
  }

  eldestMember(conv: ConversationId, except: UserId): Promise<UserId | undefined> {
    return this.run(() => {
      for (const u of this.state.convs.get(conv)?.members.keys() ?? []) if (u !== except) return u;
      return undefined;
    });
  }

  listConversations(user: UserId): Promise<Conversation[]> {
    return this.run(() => {
      return [...this.state.convs.values()]
        .filter((c) => c.members.has(user))
        .sort(compareActivity)
        .map((c) => this.view(c, user));
    });
  }

  changeConversation(change: ConversationChange): Promise<{ conv: Conversation; updates: LogUpdate[] }> {
    return this.run(() => {
      const c = this.state.convs.get(change.conv);
      if (!c) throw new ParleyError("E_NOT_FOUND", "no such conversation");
      // Copied only when returned: most changes do change something.
      const unchanged = (): { conv: Conversation; updates: LogUpdate[] } => ({
        conv: this.view(c),
        updates: [],
      });
      /** Added members of a large group: they get the new state in their own logs too. */
      let fresh: UserId[] = [];
      let left: UserId | undefined;
      /** Members whose record changed (added, promoted, role set): a large group's delta. */
      let changed: UserId[] = [];
      switch (change.kind) {
        case "rename":
          if (c.name === change.name) return unchanged();
          c.name = change.name;
          break;
        case "add": {
          fresh = [...new Set(change.users)].filter((u) => !c.members.has(u));
          for (const u of fresh)
            if (!this.state.users.has(u)) throw new ParleyError("E_NOT_FOUND", `no such user: ${u}`);
          if (fresh.length === 0) return unchanged();
          for (const u of fresh) c.members.set(u, { user: u, role: "member", delivered: 0, read: 0 });
          changed = fresh;
          break;
        }
        case "remove": {
          if (!c.members.has(change.user)) throw new ParleyError("E_NOT_FOUND", "not a member");
          const heir = change.heir === undefined ? undefined : c.members.get(change.heir);
          if (change.heir !== undefined && (!heir || change.heir === change.user))
            throw new ParleyError("E_NOT_FOUND", "the heir is not a member");
          c.members.delete(change.user);
          if (heir) heir.role = "owner";
          if (heir) changed = [heir.user];
          left = change.user;
          break;
        }
        case "role": {
          const m = c.members.get(change.user);
          if (!m) throw new ParleyError("E_NOT_FOUND", "not a member");
          if (m.role === change.role) return unchanged();
          m.role = change.role;
          changed = [m.user];
          break;
        }
        case "large":
          if (c.kind !== "group") throw new ParleyError("E_INVALID", "only a group can be large");
          if (c.large) return unchanged();
          c.large = true;
          // Every member learns from their own log that the group's log starts here.
          return { conv: this.view(c), updates: this.appendOwnStates(c, [...c.members.keys()]) };
      }
      // A large group's log gets only what changed; anyone else's log the whole new state.
      const updates: LogUpdate[] = c.large
        ? this.fanOut(c, {
            k: "members",
            conv: c.id,
            name: c.name,
            set: changed.map((u) => ({ ...c.members.get(u)! })),
            removed: left === undefined ? [] : [left],
            count: c.members.size,
          })
        : this.appendConvState(c);
      if (c.large) updates.push(...this.appendOwnStates(c, fresh));
      if (left !== undefined) updates.push(...this.log.append([left], { k: "left", conv: c.id }));
      return { conv: this.view(c), updates };
    });
  }

  // ------------------------------------------------------------------ messages

  appendMessages(batch: readonly NewMessage[]): Promise<AppendResult[]> {
    return this.run(() => {
      return batch.map((item) => this.appendOne(item));
    });
  }

  changeMessage(change: MessageChange): Promise<{ msg: Message; updates: LogUpdate[] }> {
    return this.run(() => {
      const c = this.state.convs.get(change.conv);
      const m = c?.messages[change.seq - 1];
      if (!c || !m) throw new ParleyError("E_NOT_FOUND", "no such message");
      const unchanged = { msg: copyMessage(m), updates: [] };
      switch (change.kind) {
        case "edit":
          if (m.deletedAt !== undefined) throw new ParleyError("E_CONFLICT", "the message was deleted");
          m.type = change.type;
          m.body = new Uint8Array(change.body);
          m.editedAt = change.at;
          return this.fanOutChange(c, m, change);
        case "delete":
          if (m.deletedAt !== undefined) return unchanged;
          // A recall keeps no content: the body and the reactions to it go.
          m.body = new Uint8Array(0);
          m.deletedAt = change.at;
          m.reactions = [];
          return this.fanOutChange(c, m, change);
        case "react": {
          if (!c.members.has(change.user)) throw new ParleyError("E_NOT_FOUND", "not a member");
          if (m.deletedAt !== undefined) throw new ParleyError("E_CONFLICT", "the message was deleted");
          const i = m.reactions.findIndex(([e, u]) => e === change.emoji && u === change.user);
          if (change.on === i >= 0) return unchanged;
          if (change.on) m.reactions.push([change.emoji, change.user]);
          else m.reactions.splice(i, 1);
          return this.fanOutChange(c, m, change);
        }
      }
    });
  }

  getMessage(conv: ConversationId, seq: number): Promise<Message | undefined> {
    return this.run(() => {
      const m =
        Number.isSafeInteger(seq) && seq >= 1 ? this.state.convs.get(conv)?.messages[seq - 1] : undefined;
      return m && copyMessage(m);
    });
  }

  history(conv: ConversationId, query: HistoryQuery): Promise<Message[]> {
    return this.run(() => {
      const { after, before, limit } = query;
      requireInteger(limit, "limit");
      if (after !== undefined) requireInteger(after, "after");
      if (before !== undefined) requireInteger(before, "before");
      const messages = this.state.convs.get(conv)?.messages ?? [];
      if (limit <= 0) return [];
      // Bounds are exclusive: seq s sits at index s - 1.
      const lo = Math.max(0, after ?? 0);
      const hi = Math.min(messages.length, Math.max(0, (before ?? Number.MAX_SAFE_INTEGER) - 1));
      if (lo >= hi) return [];
      // Forward from `after` when it is given, else backward from `before` (or the newest).
      const start = after !== undefined ? lo : Math.max(lo, hi - limit);
      return messages.slice(start, Math.min(hi, start + limit)).map(copyMessage);
    });
  }

  // ------------------------------------------------------------------ receipts and sync

  setReceipt(conv: ConversationId, user: UserId, kind: ReceiptKind, seq: number): Promise<UserUpdate[]> {
    return this.run(() => {
      requireReceiptKind(kind);
      requireInteger(seq, "seq");
      const c = this.state.convs.get(conv);
      const member = c?.members.get(user);
      if (!c || !member) throw new ParleyError("E_NOT_FOUND", "no such conversation");
      const raised = raiseReceipt(member, kind, seq, c.lastSeq);
      if (!raised) return [];
      member.delivered = raised.delivered;
      member.read = raised.read;
      // In a large group only the reader's own devices hear of it (N members x N receipts else).
      return this.log.append(c.large ? [user] : c.members.keys(), {
        k: "receipt",
        conv,
        user,
        kind,
        seq: raised.seq,
      });
    });
  }

  readUpdates(user: UserId, after: number, limit: number): Promise<LoggedUpdate[]> {
    return this.readLog(this.log, user, after, limit);
  }

  head(user: UserId): Promise<number> {
    return this.run(() => {
      return this.log.head(user);
    });
  }

  readConversationLog(conv: ConversationId, after: number, limit: number): Promise<LoggedUpdate[]> {
    return this.readLog(this.groupLogs, conv, after, limit);
  }

  conversationLogHead(conv: ConversationId): Promise<number> {
    return this.run(() => this.groupLogs.head(conv));
  }

  largeConversations(user: UserId): Promise<Array<{ conv: ConversationId; head: number }>> {
    return this.run(() => {
      return [...this.state.convs.values()]
        .filter((c) => c.large && c.members.has(user))
        .map((c) => ({ conv: c.id, head: this.groupLogs.head(c.id) }));
    });
  }

  close(): Promise<void> {
    this.closed = true;
    this.state = emptyState();
    this.log = this.newLog();
    this.groupLogs = this.newLog();
    return Promise.resolve();
  }

  // ------------------------------------------------------------------ internals

  /** Runs `fn` now; a throw becomes a rejection, as for a database store. */
  private run<T>(fn: () => T): Promise<T> {
    return new Promise<T>((resolve) => {
      if (this.closed) throw new Error("MemoryStore is closed");
      resolve(fn());
    });
  }

  /** A user's log or a large group's: entries after `after`, at most `limit`. */
  private readLog(log: MemoryUpdateLog, key: string, after: number, limit: number): Promise<LoggedUpdate[]> {
    return this.run(() => {
      requireInteger(after, "after");
      requireInteger(limit, "limit");
      return log.read(key, after, limit);
    });
  }

  private newLog(): MemoryUpdateLog {
    return new MemoryUpdateLog((conv, seq) => this.state.convs.get(conv)?.messages[seq - 1]);
  }

  private getUserSync(id: UserId): UserRecord | undefined {
    const u = this.state.users.get(id);
    return u && { ...u };
  }

  private appendOne(item: NewMessage): AppendResult {
    const key = cidKey(item.from, item.cid);
    const existing = this.state.cids.get(key);
    if (existing) return { ok: true, duplicate: true, msg: copyMessage(existing), updates: [] };
    const c = this.state.convs.get(item.conv);
    if (!c || !c.members.has(item.from))
      return { ok: false, code: "E_NOT_FOUND", message: "no such conversation" };
    const seq = c.lastSeq + 1;
    const problem = replyToProblem(item.replyTo, seq);
    if (problem) return { ok: false, code: "E_INVALID", message: problem };

    const m: StoredMessage = { ...messageAt(item, c.id, seq, new Uint8Array(item.body)), reactions: [] };
    c.messages.push(m);
    c.lastSeq = seq;
    c.lastActivity = Math.max(c.lastActivity, item.ts);
    // The sender has read what they sent (and everything before it).
    const sender = c.members.get(item.from)!;
    sender.delivered = sender.read = seq;
    this.state.cids.set(key, m);
    const msg = copyMessage(m);
    return { ok: true, duplicate: false, msg, updates: this.fanOut(c, { k: "msg", msg }) };
  }

  private fanOutChange(
    c: StoredConversation,
    m: StoredMessage,
    change: MessageChange,
  ): { msg: Message; updates: LogUpdate[] } {
    const msg = copyMessage(m);
    const u: Update =
      change.kind === "react"
        ? { k: "react", msg, user: change.user, emoji: change.emoji, on: change.on }
        : { k: change.kind === "edit" ? "edit" : "del", msg };
    return { msg, updates: this.fanOut(c, u) };
  }

  /** Appends `u` to every member's log, or for a large group to the group's log. */
  private fanOut(c: StoredConversation, u: Update): LogUpdate[] {
    if (!c.large) return this.log.append(c.members.keys(), u);
    return this.groupLogs.append([c.id], u).map(({ useq }) => ({ log: c.id, useq, u }));
  }

  /** Appends to each user's log a large group's state listing that user too (its own marks), as
   * a reply to that user would. */
  private appendOwnStates(c: StoredConversation, users: readonly UserId[]): UserUpdate[] {
    // The owner and admins are read once, not once per member (a group of thousands).
    const base = this.view(c);
    return users.flatMap((u) => {
      const m = c.members.get(u);
      const own = m?.role === "member" ? { ...base, members: [...base.members, { ...m }] } : base;
      return this.log.append([u], { k: "conv", conv: own });
    });
  }

  /** Appends a "conv" update with the conversation's state now to every current member. */
  private appendConvState(c: StoredConversation): UserUpdate[] {
    return this.log.append(c.members.keys(), { k: "conv", conv: this.view(c) });
  }

  /** The conversation as members see it now (`viewer`: see copyConversation). */
  private view(c: StoredConversation, viewer?: UserId): Conversation {
    return copyConversation(c, this.groupLogs.head(c.id), viewer);
  }
}
