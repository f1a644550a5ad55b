import type { Conversation, ConversationId, Message, UserId } from "@parley/protocol";

// The client's local state, behind one pluggable port: the sync cursors (the user's log and the
// logs of the large groups it follows), the highest seq received
// per conversation (message dedup), a bounded cache of messages, the conversations, and the
// outbox of sends not yet confirmed.
//
// Contract (every implementation): reads and mutations are synchronous and mutations are visible
// to reads at once; durability is asynchronous. `flush()` resolves once every earlier mutation is
// durable. After a crash the store holds a PREFIX of its mutations in call order, so a persisted
// cursor never covers updates whose effects were lost. MemoryLocalStore is the default (nothing
// survives the process); FileLocalStore (Node, @parley/sdk/node) persists to a directory.

/** A send waiting for its `sent` reply, keyed by its client id. */
export interface PendingSend {
  cid: string;
  conv: ConversationId;
  type: string;
  body: Uint8Array;
  replyTo?: number;
  /** When send() was called, ms since the epoch. */
  createdAt: number;
}

/** Whose state this is; a store never mixes two users (or two servers). */
export interface StoreMeta {
  user: UserId;
  server: string;
}

export interface MessageQuery {
  /** Exclusive upper bound on seq. */
  before?: number;
  /** Exclusive lower bound on seq. */
  after?: number;
  /** At most this many, the newest (or with `after`, the oldest) of the range. Default 50. */
  limit?: number;
}

export interface LocalStore {
  meta(): StoreMeta | undefined;
  setMeta(meta: StoreMeta): void;
  /** Highest useq applied (0 when nothing was). */
  cursor(): number;
  setCursor(useq: number): void;
  /** Position applied in a large group's log; undefined when the device does not follow it. */
  logCursor(conv: ConversationId): number | undefined;
  /** Starts following a large group's log at `useq`, or moves its cursor there. */
  setLogCursor(conv: ConversationId, useq: number): void;
  /** The large groups' logs followed, with their cursors. */
  logCursors(): Array<[ConversationId, number]>;
  /** Highest seq received in `conv` (0 when none). */
  received(conv: ConversationId): number;
  setReceived(conv: ConversationId, seq: number): void;
  /** Inserts or replaces (by conv and seq) a message in the cache. The cache may evict the
   * oldest messages of a conversation beyond its size. */
  putMessage(msg: Message): void;
  getMessage(conv: ConversationId, seq: number): Message | undefined;
  /** Cached messages of a conversation in ascending seq order. */
  messages(conv: ConversationId, query?: MessageQuery): Message[];
  putConversation(conv: Conversation): void;
  getConversation(id: ConversationId): Conversation | undefined;
  conversations(): Conversation[];
  /** Forgets a conversation, its cached messages and its log cursor (after "left"); keeps its
   * received mark. */
  removeConversation(id: ConversationId): void;
  /** Pending sends in the order they were added. */
  outbox(): PendingSend[];
  putOutbox(item: PendingSend): void;
  removeOutbox(cid: string): void;
  /** Forgets everything, for a store handed to another user. */
  clear(): void;
  flush(): Promise<void>;
  /** Flushes and releases resources; the store is unusable afterwards. */
  close(): Promise<void>;
}

export interface StoreOptions {
  /** Messages cached per conversation; older ones are evicted. Default 1000. */
  maxMessagesPerConversation?: number;
}

/** A mutation, as FileLocalStore logs it. Every op sets a full value, so replaying a log over a
 * state that already contains some of its ops converges to the same state. */
export type StoreOp =
  | { o: "meta"; v: StoreMeta }
  | { o: "cur"; v: number }
  | { o: "lcur"; c: ConversationId; v: number }
  | { o: "rcv"; c: ConversationId; s: number }
  | { o: "msg"; v: Message }
  | { o: "conv"; v: Conversation }
  | { o: "rmconv"; c: ConversationId }
  | { o: "out"; v: PendingSend }
  | { o: "unout"; c: string }
  | { o: "clear" };

/** The whole state at one moment, as FileLocalStore snapshots it. */
export interface StoreSnapshot {
  meta?: StoreMeta;
  cursor: number;
  /** Absent in snapshots written before large groups. */
  logs?: Array<[ConversationId, number]>;
  received: Array<[ConversationId, number]>;
  messages: Message[];
  conversations: Conversation[];
  outbox: PendingSend[];
}

/** The in-memory state every store shares; `record` is called after each mutation. */
export abstract class StoreState implements LocalStore {
  private metaValue: StoreMeta | undefined;
  private cursorValue = 0;
  private readonly logCursorBy = new Map<ConversationId, number>();
  private readonly receivedBy = new Map<ConversationId, number>();
  /** Per conversation: seq -> message, and the cached seqs in ascending order. */
  private readonly cache = new Map<ConversationId, { bySeq: Map<number, Message>; seqs: number[] }>();
  private readonly convs = new Map<ConversationId, Conversation>();
  private readonly pending = new Map<string, PendingSend>();
  private readonly maxPerConv: number;

  constructor(options: StoreOptions = {}) {
    this.maxPerConv = Math.max(1, options.maxMessagesPerConversation ?? 1000);
  }

  private replaying = false;

  protected abstract record(op: StoreOp): void;

  private log(op: StoreOp): void {
    if (!this.replaying) this.record(op);
  }
  abstract flush(): Promise<void>;
  abstract close(): Promise<void>;

  meta(): StoreMeta | undefined {
    return this.metaValue;
  }
  setMeta(meta: StoreMeta): void {
    this.metaValue = { ...meta };
    this.log({ o: "meta", v: this.metaValue });
  }

  cursor(): number {
    return this.cursorValue;
  }
  setCursor(useq: number): void {
    this.cursorValue = useq;
    this.log({ o: "cur", v: useq });
  }

  logCursor(conv: ConversationId): number | undefined {
    return this.logCursorBy.get(conv);
  }
  setLogCursor(conv: ConversationId, useq: number): void {
    this.logCursorBy.set(conv, useq);
    this.log({ o: "lcur", c: conv, v: useq });
  }
  logCursors(): Array<[ConversationId, number]> {
    return [...this.logCursorBy];
  }

  received(conv: ConversationId): number {
    return this.receivedBy.get(conv) ?? 0;
  }
  setReceived(conv: ConversationId, seq: number): void {
    this.receivedBy.set(conv, seq);
    this.log({ o: "rcv", c: conv, s: seq });
  }

  putMessage(msg: Message): void {
    let entry = this.cache.get(msg.conv);
    if (!entry) {
      entry = { bySeq: new Map(), seqs: [] };
      this.cache.set(msg.conv, entry);
    }
    if (!entry.bySeq.has(msg.seq)) {
      entry.seqs.splice(lowerBound(entry.seqs, msg.seq), 0, msg.seq);
    }
    entry.bySeq.set(msg.seq, msg);
    while (entry.seqs.length > this.maxPerConv) {
      const oldest = entry.seqs.shift();
      if (oldest !== undefined) entry.bySeq.delete(oldest);
    }
    this.log({ o: "msg", v: msg });
  }
  getMessage(conv: ConversationId, seq: number): Message | undefined {
    return this.cache.get(conv)?.bySeq.get(seq);
  }
  messages(conv: ConversationId, query: MessageQuery = {}): Message[] {
    const entry = this.cache.get(conv);
    if (!entry) return [];
    const limit = Math.max(0, query.limit ?? 50);
    const from = query.after === undefined ? 0 : lowerBound(entry.seqs, query.after + 1);
    const to = query.before === undefined ? entry.seqs.length : lowerBound(entry.seqs, query.before);
    const range = entry.seqs.slice(from, Math.max(from, to));
    const picked =
      query.after !== undefined ? range.slice(0, limit) : range.slice(Math.max(0, range.length - limit));
    return picked.map((seq) => entry.bySeq.get(seq)).filter((m): m is Message => m !== undefined);
  }

  putConversation(conv: Conversation): void {
    this.convs.set(conv.id, conv);
    this.log({ o: "conv", v: conv });
  }
  getConversation(id: ConversationId): Conversation | undefined {
    return this.convs.get(id);
  }
  conversations(): Conversation[] {
    return [...this.convs.values()];
  }
  removeConversation(id: ConversationId): void {
    this.convs.delete(id);
    this.cache.delete(id);
    this.logCursorBy.delete(id);
    this.log({ o: "rmconv", c: id });
  }

  outbox(): PendingSend[] {
    return [...this.pending.values()];
  }
  putOutbox(item: PendingSend): void {
    this.pending.set(item.cid, item);
    this.log({ o: "out", v: item });
  }
  removeOutbox(cid: string): void {
    if (!this.pending.delete(cid)) return;
    this.log({ o: "unout", c: cid });
  }

  clear(): void {
    this.metaValue = undefined;
    this.cursorValue = 0;
    this.logCursorBy.clear();
    this.receivedBy.clear();
    this.cache.clear();
    this.convs.clear();
    this.pending.clear();
    this.log({ o: "clear" });
  }

  /** Applies a logged op (replay), without recording it again. */
  protected apply(op: StoreOp): void {
    this.replaying = true;
    try {
      switch (op.o) {
        case "meta":
          return this.setMeta(op.v);
        case "cur":
          return this.setCursor(op.v);
        case "lcur":
          return this.setLogCursor(op.c, op.v);
        case "rcv":
          return this.setReceived(op.c, op.s);
        case "msg":
          return this.putMessage(op.v);
        case "conv":
          return this.putConversation(op.v);
        case "rmconv":
          return this.removeConversation(op.c);
        case "out":
          return this.putOutbox(op.v);
        case "unout":
          return this.removeOutbox(op.c);
        case "clear":
          return this.clear();
      }
    } finally {
      this.replaying = false;
    }
  }

  protected snapshot(): StoreSnapshot {
    return {
      ...(this.metaValue ? { meta: this.metaValue } : {}),
      cursor: this.cursorValue,
      logs: [...this.logCursorBy],
      received: [...this.receivedBy],
      messages: [...this.cache.values()].flatMap((e) => e.seqs.map((s) => e.bySeq.get(s)).filter(isMessage)),
      conversations: [...this.convs.values()],
      outbox: [...this.pending.values()],
    };
  }

  protected restore(s: StoreSnapshot): void {
    if (s.meta) this.apply({ o: "meta", v: s.meta });
    this.apply({ o: "cur", v: s.cursor });
    for (const [c, v] of s.logs ?? []) this.apply({ o: "lcur", c, v });
    for (const [c, seq] of s.received) this.apply({ o: "rcv", c, s: seq });
    for (const v of s.messages) this.apply({ o: "msg", v });
    for (const v of s.conversations) this.apply({ o: "conv", v });
    for (const v of s.outbox) this.apply({ o: "out", v });
  }
}

/** The default store: everything in memory, lost with the process. */
export class MemoryLocalStore extends StoreState {
  private closed = false;

  protected record(): void {
    if (this.closed) throw new Error("the local store is closed");
  }
  flush(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}

function isMessage(m: Message | undefined): m is Message {
  return m !== undefined;
}

/** First index i with sorted[i] >= value. */
function lowerBound(sorted: number[], value: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((sorted[mid] ?? 0) < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
