import type {
  Conversation,
  ConversationId,
  LoggedUpdate,
  Message,
  ReceiptKind,
  Update,
  UserId,
} from "@parley/protocol";
import type { LocalStore } from "./local-store.ts";

// The heart of the client, with no I/O: applies the user's update log to the local store exactly
// in useq order and tells the application what changed. A large group's log (read diffusion,
// docs/protocol.md "Large groups") is applied by an engine of its own, by the same rules; the
// user's log says when to follow one (a "conv" entry with `large`, starting after its `logHead`)
// and when to stop ("left").
//
// - The cursor is the highest useq applied; it only ever moves to cursor + 1 (or back to 0 when
//   the server's log turns out to be shorter than the cursor: the log was reset).
// - A push with useq == cursor + 1 is applied; a later one is buffered and a sync round from the
//   cursor starts (not one per push); an older one is a duplicate and ignored. A `synced` reply
//   is applied in order, then the buffer drains. Applying the same update twice is impossible, so
//   every update's effect happens once.
// - Sync is pipelined: the log is gap-free, so while the known head is more than a page away the
//   engine keeps up to `pipeline` requests outstanding for consecutive pages (cursor,
//   cursor + page, ...), and the server reads the next page while this side applies the last.
//   A reply that moves the cursor slides the window on. A page the server cut short (its reply
//   budget, or a lower cap on `limit`) leaves a hole: the pages after it wait in the buffer, a
//   new round starts from the cursor when the round's last reply is in, and the engine asks for
//   one page at a time, each from the cursor, until a page comes back full again.
// - Messages are additionally deduplicated by (conversation, seq) against the store's
//   per-conversation `received` mark, which persists with the cursor: the application sees each
//   message once, and per conversation in strictly increasing seq order (checked, not assumed).
//   A seq that jumps by more than one (the user joined late or was away from the group) is
//   legitimate and counted in `stats.gaps`.
// - What was applied since the last acknowledgement is tracked for the batched `ack`.

export interface ReactionEvent {
  msg: Message;
  user: UserId;
  emoji: string;
  on: boolean;
}

export interface ReceiptEvent {
  conv: ConversationId;
  user: UserId;
  kind: ReceiptKind;
  seq: number;
}

export type SyncEvent =
  | { type: "message"; msg: Message }
  | { type: "edit"; msg: Message }
  | { type: "delete"; msg: Message }
  | { type: "reaction"; event: ReactionEvent }
  | { type: "receipt"; event: ReceiptEvent }
  | { type: "conversation"; conv: Conversation }
  | { type: "left"; conv: ConversationId };

const MAX_IDLE_ROUNDS = 3;

export interface SyncEngineHooks {
  /** Called once per applied change, after the store holds it. */
  emit(event: SyncEvent): void;
  /** Send `sync {cursor, limit: pageSize}`. The engine keeps at most `pipeline` outstanding;
   * each must come back as exactly one onSynced() or onSyncFailed(). */
  requestSync(cursor: number): void;
  /** The engine has caught up with the server for the first time since start(). */
  caughtUp(): void;
  /** (User log only) the device now follows this large group's log: its cursor is set. */
  follow?(conv: ConversationId): void;
  /** (User log only) the device left this large group: stop following its log. */
  unfollow?(conv: ConversationId): void;
}

export interface SyncEngineOptions {
  /** Out-of-order pushes kept while a sync fills the gap; beyond it they are dropped (the sync
   * brings them anyway). Default 10000. */
  maxBuffered?: number;
  /** Sync requests kept outstanding while far behind (default 4; 1 asks for one page at a time).
   * Each reply is at most about 1 MiB (the server's reply budget). */
  pipeline?: number;
  /** Apply this large group's log instead of the user's. Its cursor is the store's logCursor;
   * its messages are not acknowledged as delivered (nobody but the reader would see it). */
  log?: ConversationId;
}

/** Updates asked for per sync when start() is not told. */
const DEFAULT_PAGE_SIZE = 500;

export interface AckState {
  cursor: number;
  convs: Array<{ conv: ConversationId; seq: number }>;
}

export class SyncEngine {
  private readonly buffer = new Map<number, Update>();
  private readonly maxBuffered: number;
  private readonly pipeline: number;
  private readonly log: ConversationId | undefined;
  private running = false;
  /** Sync requests sent and not yet answered. */
  private inflight = 0;
  /** The `limit` of each sync request: pipelined requests start this far apart. */
  private pageSize = DEFAULT_PAGE_SIZE;
  /** Where the next pipelined request starts. */
  private nextFrom = 0;
  /** The highest useq known to exist (welcome, synced heads, pushes). */
  private knownHead = 0;
  /** The cursor when the current round of requests began. */
  private roundFrom = 0;
  /** A request failed: no new round until resume(). */
  private paused = false;
  /** The last page came back shorter than asked while more followed: no speculation. */
  private shortPages = false;
  /** Consecutive sync rounds that did not move the cursor. */
  private idleRounds = 0;
  private isCaughtUp = false;
  /** Conversations whose received seq rose since the last ack. */
  private readonly delivered = new Map<ConversationId, number>();
  private ackedCursor = 0;
  private appliedSinceAck = 0;
  readonly stats = { applied: 0, duplicatePushes: 0, duplicateMessages: 0, gaps: 0, dropped: 0, resets: 0 };

  constructor(
    private readonly store: LocalStore,
    private readonly hooks: SyncEngineHooks,
    options: SyncEngineOptions = {},
  ) {
    this.maxBuffered = options.maxBuffered ?? 10_000;
    this.pipeline = Math.max(1, Math.floor(options.pipeline ?? 4));
    this.log = options.log;
  }

  get cursor(): number {
    return this.log === undefined ? this.store.cursor() : (this.store.logCursor(this.log) ?? 0);
  }

  private setCursor(useq: number): void {
    if (this.log === undefined) this.store.setCursor(useq);
    else this.store.setLogCursor(this.log, useq);
  }

  /** True between the first time a start()ed connection caught up and stop(). */
  get caughtUp(): boolean {
    return this.isCaughtUp;
  }

  /** A connection was authenticated; `head` is the server's log head from `welcome`, `pageSize`
   * the `limit` the client puts in its sync requests. An unknown head (a group log followed
   * from now, or not in `welcome`) asks once from the cursor. */
  start(head: number | undefined, pageSize = DEFAULT_PAGE_SIZE): void {
    this.buffer.clear();
    this.running = true;
    this.inflight = 0;
    this.paused = false;
    this.shortPages = false;
    this.pageSize = Math.max(1, Math.floor(pageSize));
    this.knownHead = head ?? this.cursor;
    this.isCaughtUp = false;
    this.idleRounds = 0;
    this.ackedCursor = -1; // acknowledge on every new connection, so the server's cursor is fresh
    if (head !== undefined && head < this.cursor) {
      // The server's log is shorter than what we applied: it was reset (a new data directory).
      // Replay it from the start; the per-conversation received marks still drop duplicates.
      this.stats.resets++;
      this.setCursor(0);
    }
    if (head === undefined || head > this.cursor) this.startRound();
    else this.markCaughtUp();
  }

  /** The connection is gone: forget buffered pushes and the outstanding syncs. */
  stop(): void {
    this.running = false;
    this.buffer.clear();
    this.inflight = 0;
    this.isCaughtUp = false;
  }

  /** A live update (`push`). */
  onPush(useq: number, u: Update): void {
    const cursor = this.cursor;
    if (useq <= cursor) {
      this.stats.duplicatePushes++;
      return;
    }
    if (useq === cursor + 1) {
      this.apply(useq, u);
      this.drain();
      return;
    }
    if (this.buffer.size < this.maxBuffered) this.buffer.set(useq, u);
    else this.stats.dropped++;
    if (useq > this.knownHead) this.knownHead = useq;
    if (this.inflight === 0 && this.running && !this.paused) this.startRound();
  }

  /** The log holds an entry at `useq` that this side was told of but could not be given (the
   * entry of a `sent` whose send it no longer knows): it is fetched with a sync, as a gap is. */
  onMissed(useq: number): void {
    if (useq <= this.cursor) return;
    if (useq > this.knownHead) this.knownHead = useq;
    if (this.inflight === 0 && this.running && !this.paused) this.startRound();
  }

  /** The reply to one outstanding `sync`. */
  onSynced(updates: readonly LoggedUpdate[], more: boolean, head: number): void {
    if (this.inflight > 0) this.inflight--;
    const before = this.cursor;
    for (const { useq, u } of updates) {
      const cursor = this.cursor;
      if (useq <= cursor) continue;
      if (useq === cursor + 1) this.apply(useq, u);
      else if (this.buffer.size < this.maxBuffered) this.buffer.set(useq, u); // a hole in the reply
    }
    this.drain();
    if (!this.running) return;
    if (head > this.knownHead) this.knownHead = head;
    // Only a page that moved the cursor says how the server pages now (not one beyond a hole).
    const progressed = this.cursor > before;
    if (more && updates.length < this.pageSize) this.shortPages = true;
    else if (progressed && updates.length >= this.pageSize) this.shortPages = false;
    if (progressed && !this.paused) this.pump();
    if (this.inflight > 0) return;
    this.roundEnded(more);
  }

  /** One outstanding `sync` was refused (a retryable error): no new round starts until
   * resume(), which the client calls after the error's retry-after. */
  onSyncFailed(): void {
    if (this.inflight > 0) this.inflight--;
    this.paused = true;
  }

  /** After a failed sync's retry-after: go on syncing. */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.running && this.inflight === 0) this.startRound();
  }

  /** Whether an ack would say something new, and how many updates it would cover. */
  pendingAck(): number {
    // A group's log is not acknowledged: the server keeps no cursor for it.
    if (this.log !== undefined) return 0;
    const cursorNews = this.cursor !== this.ackedCursor && this.cursor > 0;
    if (!cursorNews && this.delivered.size === 0) return 0;
    return Math.max(1, this.appliedSinceAck);
  }

  /** What to acknowledge now; resets the pending state. Undefined when nothing is new. */
  takeAck(): AckState | undefined {
    if (this.pendingAck() === 0) return undefined;
    const ack: AckState = {
      cursor: this.cursor,
      convs: [...this.delivered].map(([conv, seq]) => ({ conv, seq })),
    };
    this.delivered.clear();
    this.ackedCursor = ack.cursor;
    this.appliedSinceAck = 0;
    return ack;
  }

  /** Puts back an ack that could not be sent. */
  restoreAck(ack: AckState): void {
    for (const { conv, seq } of ack.convs) {
      if (seq > (this.delivered.get(conv) ?? 0)) this.delivered.set(conv, seq);
    }
    this.ackedCursor = -1;
    this.appliedSinceAck++;
  }

  /** The round's last reply is in (or it failed). Another round is needed when the server says
   * so, when pushes wait beyond a hole, or when we are below the head. A round that brings
   * nothing new can be legitimate (the reply was read before the commit of a push we already
   * hold) but must not make us spin forever on a server that misbehaves: after a few, wait for
   * the next push instead. */
  private roundEnded(more: boolean): void {
    if (this.paused) return;
    this.idleRounds = this.cursor > this.roundFrom ? 0 : this.idleRounds + 1;
    const behind = more || this.buffer.size > 0 || this.cursor < this.knownHead;
    if (behind && this.idleRounds < MAX_IDLE_ROUNDS) return this.startRound();
    this.markCaughtUp();
  }

  private startRound(): void {
    this.roundFrom = this.cursor;
    this.request(this.cursor);
    this.pump();
  }

  /** Keep the window full: requests for the pages after the last one asked, below the head. */
  private pump(): void {
    const window = this.shortPages ? 1 : this.pipeline;
    if (this.nextFrom < this.cursor || this.shortPages) this.nextFrom = this.cursor;
    while (this.inflight < window && this.nextFrom < this.knownHead) this.request(this.nextFrom);
  }

  private request(from: number): void {
    this.inflight++;
    this.nextFrom = from + this.pageSize;
    this.hooks.requestSync(from);
  }

  private markCaughtUp(): void {
    if (this.isCaughtUp || !this.running) return;
    this.isCaughtUp = true;
    this.hooks.caughtUp();
  }

  private drain(): void {
    if (this.buffer.size === 0) return;
    for (let next = this.buffer.get(this.cursor + 1); next; next = this.buffer.get(this.cursor + 1)) {
      this.buffer.delete(this.cursor + 1);
      this.apply(this.cursor + 1, next);
    }
    const cursor = this.cursor;
    for (const useq of this.buffer.keys()) if (useq <= cursor) this.buffer.delete(useq);
  }

  private apply(useq: number, u: Update): void {
    const event = this.applyToStore(u);
    this.setCursor(useq);
    this.appliedSinceAck++;
    this.stats.applied++;
    if (event) this.hooks.emit(event);
  }

  private applyToStore(u: Update): SyncEvent | undefined {
    switch (u.k) {
      case "msg": {
        const { msg } = u;
        const last = this.store.received(msg.conv);
        if (msg.seq <= last) {
          this.stats.duplicateMessages++;
          return undefined;
        }
        if (last > 0 && msg.seq > last + 1) this.stats.gaps++;
        this.store.putMessage(msg);
        this.store.setReceived(msg.conv, msg.seq);
        if (this.log === undefined) this.delivered.set(msg.conv, msg.seq);
        return { type: "message", msg };
      }
      case "edit":
        this.store.putMessage(u.msg);
        return { type: "edit", msg: u.msg };
      case "del":
        this.store.putMessage(u.msg);
        return { type: "delete", msg: u.msg };
      case "react":
        this.store.putMessage(u.msg);
        return { type: "reaction", event: { msg: u.msg, user: u.user, emoji: u.emoji, on: u.on } };
      case "receipt":
        this.applyReceipt(u.conv, u.user, u.kind, u.seq);
        return { type: "receipt", event: { conv: u.conv, user: u.user, kind: u.kind, seq: u.seq } };
      case "conv": {
        const { conv } = u;
        this.store.putConversation(conv);
        // Became large, or joined one: follow its log from where this entry says, once.
        if (this.log === undefined && conv.large && this.store.logCursor(conv.id) === undefined) {
          this.store.setLogCursor(conv.id, conv.logHead ?? 0);
          this.hooks.follow?.(conv.id);
        }
        return { type: "conversation", conv };
      }
      case "members": {
        // A large group's change: merge it into the state its "conv" entry gave. That state lists
        // only the owner, the admins and this user: a listed member's record is replaced, an
        // owner or admin not listed yet is added, a plain member is not (the list would grow to
        // the whole group); `count` is the new member count.
        const conv = this.store.getConversation(u.conv);
        if (!conv) return undefined;
        const gone = new Set(u.removed);
        const set = new Map(u.set.map((m) => [m.user, m]));
        const members = conv.members.filter((m) => !gone.has(m.user)).map((m) => set.get(m.user) ?? m);
        const known = new Set(members.map((m) => m.user));
        const listAll = conv.memberCount === undefined && u.count === undefined;
        for (const m of u.set)
          if (!known.has(m.user) && !gone.has(m.user) && (listAll || m.role !== "member")) members.push(m);
        const merged: Conversation = { ...conv, name: u.name, members };
        if (u.count !== undefined) merged.memberCount = u.count;
        this.store.putConversation(merged);
        return { type: "conversation", conv: merged };
      }
      case "left":
        this.store.removeConversation(u.conv);
        if (this.log === undefined) this.hooks.unfollow?.(u.conv);
        return { type: "left", conv: u.conv };
      default:
        // An update kind from a newer server: skip it, but still advance the cursor.
        return undefined;
    }
  }

  private applyReceipt(convId: ConversationId, user: UserId, kind: ReceiptKind, seq: number): void {
    const conv = this.store.getConversation(convId);
    if (!conv) return;
    const members = conv.members.map((m) => {
      if (m.user !== user) return m;
      const delivered = Math.max(m.delivered, seq);
      return kind === "read" ? { ...m, delivered, read: Math.max(m.read, seq) } : { ...m, delivered };
    });
    this.store.putConversation({ ...conv, members });
  }
}
