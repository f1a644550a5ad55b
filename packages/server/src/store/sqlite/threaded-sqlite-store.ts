import { MessageChannel, type MessagePort, type Worker } from "node:worker_threads";
import { ParleyError } from "@parley/protocol";
import type {
  ConversationId,
  DeviceId,
  LoggedUpdate,
  Member,
  Message,
  ReceiptKind,
  Role,
  UserId,
} from "@parley/protocol";
import type { ErrorCode } from "@parley/protocol";
import type {
  AppendResult,
  ConversationChange,
  DeviceRecord,
  HistoryQuery,
  MessageChange,
  NewConversation,
  NewMessage,
  Store,
  TokenRecord,
  UserRecord,
  UserUpdate,
  LogUpdate,
} from "../../core/ports/store.ts";
import type { Conversation } from "@parley/protocol";
import type { Logger } from "../../core/ports/logger.ts";
import { typeScriptWorker } from "../../ts-worker.ts";
import { SqliteStore } from "./sqlite-store.ts";
import { APPEND_PACKED, packBatch, unpackResults, type PackedResults } from "./append-wire.ts";
import type { WireError, WorkerInit, WorkerReply } from "./sqlite-worker.ts";
import type { SequencerInit } from "./sequencer-worker.ts";

// SqliteStore with its writes on a worker thread. better-sqlite3 is synchronous: in the main
// thread, every commit (and its fsync) stops the event loop, which is about a third of the
// server's time under load. Here the writer thread owns the one write connection and runs the
// write methods in order; the main thread keeps a read-only connection for the read methods
// (WAL: readers never wait for the writer, and see a commit once it is durable). A write resolves
// after its commit, so a read issued after it sees it. Same contract as SqliteStore: the store
// conformance suite runs against both.
//
// With a commit interval (SqliteStore's commit log), an append resolves before its commit, and the
// reader does not see it until then. So this side notes which conversations and users (and
// whether any large group's log) have acknowledged appends not yet committed, and a read that
// could show them asks the writer to commit first ("commitNow"); any other read goes straight
// on. An append's reply carries the epoch of the transaction holding it; { committed: epoch }
// arrives once it is committed, and an entry noted with an epoch at or below that is settled.
//
// With a commit interval, the writer is two threads: a sequencer (sequencer-worker.ts) that
// numbers each batch of sends, logs it and acknowledges it, and behind it an applier
// (sqlite-worker.ts) that writes the numbered batches to SQLite and commits every interval. This
// side talks to the sequencer only, in the same protocol; an epoch is then a batch number.

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  /** Append replies: resolve with the epoch too (see the header). */
  withEpoch?: boolean;
}

export interface ThreadedSqliteStoreOptions {
  /** Receives the writer thread's log records (schema migrations, ...). */
  logger?: Logger;
  /** See SqliteStoreOptions.cacheKib (the writer's connection). */
  cacheKib?: number;
  /** See SqliteStoreOptions.commitIntervalMs. */
  commitIntervalMs?: number;
  /** See SqliteStoreOptions.numberedLogDir: where the sequencer writes the numbered log, and
   * whence the writer applies one at open. */
  numberedLogDir?: string;
  /** TEST ONLY, breaks durability on purpose (PARLEY_TEST_FAULTS ack-before-commit): sends are
   * acknowledged without the numbered log and committed this many ms later (or by the next other
   * write), so a SIGKILL loses them; the chaos checker is shown to catch that. Wins over
   * commitIntervalMs. */
  unsafeDeferCommitMs?: number;
  /** Called on this thread with the seconds each batch of sends took to be written to the
   * numbered log and fdatasynced, before its acknowledgement (with a commit interval only: the
   * time the disk made those sends wait, docs/operations.md). */
  onLogSync?: (seconds: number) => void;
}

export class ThreadedSqliteStore implements Store {
  private readonly pending = new Map<number, Pending>();
  /** Cursor saves not yet sent to the writer, and the loop sending them (see touchDevice). */
  private touches: Array<{ touch: [DeviceId, number, number]; resolve(): void; reject(err: Error): void }> =
    [];
  private touching: Promise<void> | undefined;
  private nextId = 1;
  private closed: Promise<void> | undefined;
  /** Acknowledged appends not yet committed, by epoch (see the header): conversations, users,
   * and the latest epoch holding an entry of any large group's log. */
  private readonly unsettledConvs = new Map<ConversationId, number>();
  private readonly unsettledUsers = new Map<UserId, number>();
  private unsettledGroupLogs = 0;
  /** The highest epoch noted, and the highest committed. */
  private latestEpoch = 0;
  private committedEpoch = 0;
  /** The commit asked for by reads, while on its way. */
  private committing: Promise<void> | undefined;

  private constructor(
    private readonly worker: Worker,
    private readonly reader: SqliteStore,
    /** The applier thread behind the sequencer (`worker`), if there is one. */
    private readonly applier?: Worker,
    onLogSync?: (seconds: number) => void,
  ) {
    worker.on("message", (msg: WorkerReply) => {
      if ("committed" in msg) return this.settle(msg.committed);
      if (!("id" in msg)) return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if ("result" in msg) {
        if (msg.logSync !== undefined) onLogSync?.(msg.logSync);
        p.resolve(p.withEpoch ? { result: msg.result, epoch: msg.epoch ?? 0 } : msg.result);
      } else p.reject(toError(msg.error));
    });
    worker.on("error", (err) => this.failAll(err));
    worker.on("exit", () => this.failAll(new Error("the SQLite writer thread exited")));
    applier?.on("error", (err) => this.failAll(err));
  }

  /** Opens the database at `path` (the writer checks and migrates it, as SqliteStore.open does;
   * a damaged or foreign file rejects with an Error naming it). */
  static async open(path: string, opts: ThreadedSqliteStoreOptions = {}): Promise<ThreadedSqliteStore> {
    const interval = opts.unsafeDeferCommitMs || opts.commitIntervalMs || 0;
    const init: WorkerInit = {
      path,
      ...(opts.cacheKib !== undefined ? { cacheKib: opts.cacheKib } : {}),
      ...(opts.commitIntervalMs !== undefined ? { commitIntervalMs: opts.commitIntervalMs } : {}),
      ...(opts.numberedLogDir !== undefined ? { numberedLogDir: opts.numberedLogDir } : {}),
    };
    const threads: Worker[] = [];
    try {
      if (interval === 0) {
        const writer = startWorker("./sqlite-worker.ts", init, [], opts.logger);
        threads.push(writer.worker);
        await writer.ready;
      } else {
        const { port1, port2 } = new MessageChannel();
        const applierInit: WorkerInit = { ...init, commitIntervalMs: interval, applier: true, port: port1 };
        const sequencerInit: SequencerInit = {
          path,
          applier: port2,
          ...(opts.numberedLogDir !== undefined ? { numberedLogDir: opts.numberedLogDir } : {}),
          ...(opts.unsafeDeferCommitMs ? { unsafeNoLog: true } : {}),
        };
        // Both threads boot at once (loading TypeScript in a thread takes about a second); the
        // sequencer begins once the applier has applied what the log held ("start").
        const sequencer = startWorker("./sequencer-worker.ts", sequencerInit, [port2], opts.logger);
        const applier = startWorker("./sqlite-worker.ts", applierInit, [port1], opts.logger);
        threads.push(sequencer.worker, applier.worker);
        await applier.ready;
        sequencer.worker.postMessage("start");
        await sequencer.ready;
      }
      const reader = SqliteStore.openReader(path);
      return new ThreadedSqliteStore(threads[0]!, reader, threads[1], opts.onLogSync);
    } catch (err) {
      await Promise.all(threads.map((t) => t.terminate()));
      throw err;
    }
  }

  // ------------------------------------------------------------------ writes (writer thread)

  createUser(user: UserRecord): Promise<void> {
    return this.call("createUser", user);
  }
  createDevice(device: DeviceRecord, token: TokenRecord): Promise<void> {
    return this.call("createDevice", device, token);
  }
  revokeDevice(user: UserId, device: DeviceId, at: number): Promise<boolean> {
    return this.call("revokeDevice", user, device, at);
  }
  /** Cursor saves come from every connection every few seconds; each in its own transaction
   * they cost an fsync apiece, a tenth of the writer's time under 1:1 load with 2,000
   * connections. They go to the writer many at a time instead, like sends: those made while
   * a batch is on its way wait for it to finish, then go together, in one transaction. */
  touchDevice(device: DeviceId, cursor: number, at: number): Promise<void> {
    if (this.closed) return Promise.reject(new Error("SqliteStore is closed"));
    return new Promise<void>((resolve, reject) => {
      this.touches.push({ touch: [device, cursor, at], resolve, reject });
      if (this.touching === undefined) this.touching = this.saveTouches();
    });
  }
  revokeToken(hash: string, at: number): Promise<void> {
    return this.call("revokeToken", hash, at);
  }
  createConversation(conv: NewConversation): ReturnType<Store["createConversation"]> {
    return this.call("createConversation", conv);
  }
  changeConversation(change: ConversationChange): Promise<{ conv: Conversation; updates: LogUpdate[] }> {
    return this.call("changeConversation", change);
  }
  appendMessages(batch: readonly NewMessage[]): Promise<AppendResult[]> {
    // The hot path: the batch and its results travel packed (append-wire.ts).
    const { packed, transfer } = packBatch(batch);
    return this.callWith<{ result: PackedResults; epoch: number }>(
      APPEND_PACKED,
      [packed],
      transfer,
      false,
      true,
    ).then(({ result, epoch }) => {
      const results = unpackResults(batch, result);
      if (epoch > 0) this.note(results, epoch);
      return results;
    });
  }
  changeMessage(change: MessageChange): Promise<{ msg: Message; updates: LogUpdate[] }> {
    return this.call("changeMessage", change);
  }
  setReceipt(conv: ConversationId, user: UserId, kind: ReceiptKind, seq: number): Promise<UserUpdate[]> {
    return this.call("setReceipt", conv, user, kind, seq);
  }

  // ------------------------------------------------------------------ reads (this thread)
  // Those that may show a message append wait for its commit (settled, see the header); users,
  // devices, tokens and roles are written by other writes only, which resolve after their commit.

  findUserByName(name: string): Promise<UserRecord | undefined> {
    return this.reader.findUserByName(name);
  }
  getUser(id: UserId): Promise<UserRecord | undefined> {
    return this.reader.getUser(id);
  }
  getDevice(id: DeviceId): Promise<DeviceRecord | undefined> {
    return this.reader.getDevice(id);
  }
  listDevices(user: UserId): Promise<DeviceRecord[]> {
    return this.reader.listDevices(user);
  }
  findToken(hash: string): Promise<TokenRecord | undefined> {
    return this.reader.findToken(hash);
  }
  getConversation(id: ConversationId): Promise<Conversation | undefined> {
    return this.when(this.settled(id, undefined), () => this.reader.getConversation(id));
  }
  getRole(conv: ConversationId, user: UserId): Promise<Role | undefined> {
    return this.reader.getRole(conv, user);
  }

  getMember(conv: ConversationId, user: UserId): Promise<Member | undefined> {
    return this.when(this.settled(conv, undefined), () => this.reader.getMember(conv, user));
  }

  listMembers(conv: ConversationId, after: UserId | undefined, limit: number): Promise<Member[]> {
    return this.when(this.settled(conv, undefined), () => this.reader.listMembers(conv, after, limit));
  }

  eldestMember(conv: ConversationId, except: UserId): Promise<UserId | undefined> {
    return this.reader.eldestMember(conv, except);
  }
  listConversations(user: UserId): Promise<Conversation[]> {
    // The user's own log has an entry for every message to a conversation they are in, except
    // a large group's.
    return this.when(this.settled(undefined, user, true), () => this.reader.listConversations(user));
  }
  getMessage(conv: ConversationId, seq: number): Promise<Message | undefined> {
    return this.when(this.settled(conv, undefined), () => this.reader.getMessage(conv, seq));
  }
  history(conv: ConversationId, query: HistoryQuery): Promise<Message[]> {
    return this.when(this.settled(conv, undefined), () => this.reader.history(conv, query));
  }
  readUpdates(user: UserId, after: number, limit: number): Promise<LoggedUpdate[]> {
    return this.when(this.settled(undefined, user), () => this.reader.readUpdates(user, after, limit));
  }
  head(user: UserId): Promise<number> {
    return this.when(this.settled(undefined, user), () => this.reader.head(user));
  }
  readConversationLog(conv: ConversationId, after: number, limit: number): Promise<LoggedUpdate[]> {
    return this.when(this.settled(conv, undefined), () =>
      this.reader.readConversationLog(conv, after, limit),
    );
  }
  conversationLogHead(conv: ConversationId): Promise<number> {
    return this.when(this.settled(conv, undefined), () => this.reader.conversationLogHead(conv));
  }
  largeConversations(user: UserId): Promise<Array<{ conv: ConversationId; head: number }>> {
    return this.when(this.settled(undefined, undefined, true), () => this.reader.largeConversations(user));
  }

  /** Waits for the writes already sent, closes both connections and ends the thread. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      await this.touching;
      await this.callWith("close", [], [], true);
      await this.reader.close();
      await this.worker.terminate();
      await this.applier?.terminate();
    })();
    return this.closed;
  }

  private async saveTouches(): Promise<void> {
    while (this.touches.length > 0) {
      const batch = this.touches.splice(0);
      try {
        const outcomes = await this.callWith<Array<WireError | null>>(
          "touchDevices",
          [batch.map((t) => t.touch)],
          [],
          true,
        );
        batch.forEach((t, i) => {
          const e = outcomes[i];
          if (e) t.reject(toError(e));
          else t.resolve();
        });
      } catch (err) {
        for (const t of batch) t.reject(err as Error);
      }
    }
    this.touching = undefined;
  }

  private call<T>(method: string, ...args: unknown[]): Promise<T> {
    return this.callWith(method, args, []);
  }

  /** Calls `method` on the writer; the buffers in `transfer` move to it (unusable here after).
   * Refused once closing began, except for the saves close() waits for (`whileClosing`). */
  private callWith<T>(
    method: string,
    args: unknown[],
    transfer: ArrayBuffer[],
    whileClosing = false,
    withEpoch = false,
  ): Promise<T> {
    if (this.closed && !whileClosing) return Promise.reject(new Error("SqliteStore is closed"));
    return new Promise<T>((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject, withEpoch });
      this.worker.postMessage({ id, method, args }, transfer);
    });
  }

  /** `read()`, after `settled` if there is something to wait for. */
  private when<T>(settled: Promise<void> | undefined, read: () => Promise<T>): Promise<T> {
    return settled ? settled.then(read) : read();
  }

  /** Notes what acknowledged appends of `epoch` change, until it is committed. */
  private note(results: readonly AppendResult[], epoch: number): void {
    if (epoch <= this.committedEpoch) return;
    if (epoch > this.latestEpoch) this.latestEpoch = epoch;
    for (const r of results) {
      if (!r.ok) continue;
      // A resend's original may be uncommitted too.
      this.unsettledConvs.set(r.msg.conv, epoch);
      for (const u of r.updates) {
        if (u.user !== undefined) this.unsettledUsers.set(u.user, epoch);
        else this.unsettledGroupLogs = epoch;
      }
    }
  }

  /** The writer committed everything up to `epoch`. */
  private settle(epoch: number): void {
    if (epoch > this.committedEpoch) this.committedEpoch = epoch;
    if (this.committedEpoch >= this.latestEpoch) {
      this.unsettledConvs.clear();
      this.unsettledUsers.clear();
    }
  }

  /** Resolves once nothing noted for these keys is uncommitted: undefined (go on at once) if
   * nothing is, else a promise that asks the writer to commit. `groupLogs`: any large group's
   * log. */
  private settled(
    conv: ConversationId | undefined,
    user: UserId | undefined,
    groupLogs = false,
  ): Promise<void> | undefined {
    const need = Math.max(
      conv === undefined ? 0 : (this.unsettledConvs.get(conv) ?? 0),
      user === undefined ? 0 : (this.unsettledUsers.get(user) ?? 0),
      groupLogs ? this.unsettledGroupLogs : 0,
    );
    return need > this.committedEpoch ? this.commitThrough(need) : undefined;
  }

  /** Asks the writer to commit until `epoch` is. A commit already on its way may have been asked
   * before that epoch's appends reached the writer: then another one follows. Each answer comes
   * after the writer's { committed } (one port, in order). */
  private async commitThrough(epoch: number): Promise<void> {
    while (this.committedEpoch < epoch) {
      this.committing ??= this.call<void>("commitNow").finally(() => (this.committing = undefined));
      await this.committing;
    }
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}

/** The young generation of each writer thread, in MiB. */
const WORKER_YOUNG_GENERATION_MB = 16;

/** Starts the worker module `file` (next to this one, TypeScript: typeScriptWorker) with `data`;
 * `ready` resolves once it says it is ready. */
function startWorker(
  file: string,
  data: unknown,
  transfer: MessagePort[],
  logger: Logger | undefined,
): { worker: Worker; ready: Promise<void> } {
  const worker = typeScriptWorker(new URL(file, import.meta.url), {
    workerData: data,
    transferList: transfer,
    // Not the main thread's young generation (--max-semi-space-size, node-flags.ts): these threads
    // keep little between batches, and a large one here is only resident memory.
    resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB },
  });
  worker.on("message", (msg: WorkerReply) => {
    if ("log" in msg) logger?.[msg.log.level](msg.log.obj, msg.log.msg);
  });
  const ready = new Promise<void>((resolve, reject) => {
    const onMessage = (msg: WorkerReply) => {
      if ("ready" in msg) resolve();
      else if ("failed" in msg) reject(new Error(msg.failed));
      else return;
      worker.off("message", onMessage);
    };
    worker.on("message", onMessage);
    worker.once("error", reject);
    worker.once("exit", (code) => reject(new Error(`the SQLite writer thread exited with ${code}`)));
  }).then(() => {
    worker.removeAllListeners("error");
    worker.removeAllListeners("exit");
  });
  // Until someone awaits it (the applier's, while the sequencer boots): no unhandled rejection.
  ready.catch(() => {});
  return { worker, ready };
}

function toError(e: WireError): Error {
  if (e.code !== undefined) {
    return new ParleyError(e.code as ErrorCode, e.message, {
      ...(e.retryAfterMs !== undefined ? { retryAfterMs: e.retryAfterMs } : {}),
    });
  }
  const err = new Error(e.message);
  if (e.stack !== undefined) err.stack = e.stack;
  return err;
}
