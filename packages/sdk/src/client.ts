import { DEFAULT_MAX_FRAME_BYTES, SUPPORTED_VERSIONS } from "@parley/protocol";
import type {
  ClientFrame,
  Conversation,
  ConversationId,
  DeviceId,
  ErrorFrame,
  Message,
  SentFrame,
  ServerFrame,
  UserId,
  WelcomeFrame,
} from "@parley/protocol";
import { AckBatcher, ReadBatcher } from "./batching.ts";
import { ClientError, serverError } from "./client-error.ts";
import { ClientConnection } from "./connection.ts";
import type {
  ClientEvents,
  ClientOptions,
  ClientState,
  LoginOptions,
  RegisterOptions,
  SendOptions,
} from "./client-types.ts";
import { Emitter } from "./emitter.ts";
import type { LocalStore, MessageQuery, PendingSend } from "./local-store.ts";
import { MemoryLocalStore } from "./local-store.ts";
import type { SendResult } from "./outbox.ts";
import { Outbox } from "./outbox.ts";
import { Requests } from "./requests.ts";
import type { HistoryPage, HistoryQuery, MemberPage, UserInfo } from "./rest.ts";
import { RestApi } from "./rest.ts";
import type { SyncEvent } from "./sync-engine.ts";
import { SyncEngine } from "./sync-engine.ts";
import type { Timers } from "./timers.ts";
import { backoffDelay, systemTimers } from "./timers.ts";
import type { Transport } from "./transport/transport.ts";
import { encodedSize, getTransport } from "./transport/transport.ts";
import { WsTransport } from "./transport/ws-transport.ts";

// ParleyClient: one logged-in device. It keeps one connection open (reconnecting with jittered
// exponential backoff), runs the sync engine over it, acknowledges in batches, and sends through
// the outbox. On every (re)connect: hello -> welcome -> sync from the stored cursor until caught
// up -> the connection is "ready": the outbox and pending requests are (re)sent and "connected"
// is emitted. A disconnect code in 4100-4199 stops it for good ("error" with E_DISCONNECTED).

const textEncoder = new TextEncoder();

export class ParleyClient extends Emitter<ClientEvents> {
  readonly user: UserId;
  readonly device: DeviceId;
  readonly store: LocalStore;
  private readonly ownsStore: boolean;
  private readonly options: ClientOptions;
  private readonly timers: Timers;
  private readonly rest: RestApi;
  private readonly engine: SyncEngine;
  /** One engine per large group followed (its own log), by conversation. */
  private readonly groups = new Map<ConversationId, SyncEngine>();
  private readonly outbox: Outbox;
  private readonly requests: Requests;
  private stateValue: ClientState = "idle";
  private conn: ClientConnection | undefined;
  private attempt = 0;
  private reconnectTimer: unknown;
  /** When the current connection became ready (for the backoff reset). */
  private readyAt = 0;
  /** Waiting to resend a `sync` the server refused with a retryable error. */
  private syncRetryTimer: unknown;
  private requestId = 0;
  private readonly acks: AckBatcher;
  private readonly reads: ReadBatcher;
  private readonly lastTyping = new Map<ConversationId, number>();
  private watched: UserId[] | undefined;
  private readyWaiters: Array<{ resolve(): void; reject(err: Error): void }> = [];
  private closing: Promise<void> | undefined;
  /** The server's frame limit, from the last welcome. */
  private maxFrameBytes = DEFAULT_MAX_FRAME_BYTES;

  /** Registers an account; resolves with its id and name. */
  static register(options: RegisterOptions): Promise<UserInfo> {
    return new RestApi(options.url, undefined, options.fetch).register(options.name, options.password);
  }

  /** Logs in (a new device and token) and returns a client; call connect() to go online. */
  static async login(options: LoginOptions): Promise<ParleyClient> {
    const { name, password, device, ...rest } = options;
    const r = await new RestApi(options.url, undefined, options.fetch).login(name, password, device);
    return new ParleyClient({ ...rest, token: r.token, user: r.user, device: r.device });
  }

  constructor(options: ClientOptions) {
    super((err, event) => this.listenerFailed(err, event));
    this.options = options;
    this.user = options.user;
    this.device = options.device;
    this.timers = options.timers ?? systemTimers;
    this.ownsStore = options.store === undefined;
    this.store = options.store ?? new MemoryLocalStore();
    const meta = this.store.meta();
    if (meta && meta.user !== this.user) {
      throw new ClientError(
        "E_STORE_MISMATCH",
        `the local store belongs to user ${meta.user}, not ${this.user}`,
      );
    }
    if (!meta) this.store.setMeta({ user: this.user, server: options.url });
    this.rest = new RestApi(options.url, options.token, options.fetch);
    this.engine = new SyncEngine(
      this.store,
      {
        emit: (e) => this.emitSync(e),
        requestSync: (cursor) => this.requestSync(cursor),
        caughtUp: () => this.caughtUp(),
        follow: (conv) => this.follow(conv),
        unfollow: (conv) => this.unfollow(conv),
      },
      options.syncPipeline === undefined ? {} : { pipeline: options.syncPipeline },
    );
    for (const [conv] of this.store.logCursors()) this.groups.set(conv, this.groupEngine(conv));
    this.outbox = new Outbox(
      this.store,
      { transmit: (frame) => this.transmit(frame), nextId: () => this.nextId() },
      this.timers,
    );
    this.requests = new Requests(
      { transmit: (frame) => this.transmit(frame), nextId: () => this.nextId() },
      this.timers,
    );
    this.acks = new AckBatcher(
      this.engine,
      this.store,
      this.timers,
      { delayMs: options.ackDelayMs ?? 250, every: options.ackEvery ?? 100 },
      {
        connection: () => (this.conn?.welcome ? this.conn : undefined),
        send: (conn, frame) => {
          if (conn !== this.conn || !this.conn) return false;
          this.conn.send(frame);
          return true;
        },
        error: (err) => this.emit("error", err),
      },
    );
    this.reads = new ReadBatcher(this.timers, options.readDelayMs ?? 250, (conv, seq) => {
      this.requests
        .request((id) => ({ t: "receipt", id, conv, kind: "read", seq }))
        .catch((err: unknown) => {
          // Sent while closing: whether the `ok` arrived before the socket closed does not matter.
          if (err instanceof ClientError && err.code === "E_CLIENT_CLOSED") return;
          this.emit("error", err instanceof Error ? err : new Error(String(err)));
        });
    });
  }

  get state(): ClientState {
    return this.stateValue;
  }

  /** Highest update-log position applied. */
  get cursor(): number {
    return this.engine.cursor;
  }

  /** Goes online. Resolves once connected and caught up with the user's own log (the logs of
   * large groups catch up beside it, each by its own engine); keeps reconnecting afterwards.
   * Rejects if the server refuses for good (41xx) or close() comes first. */
  connect(): Promise<void> {
    if (this.stateValue === "closed" || this.stateValue === "stopped") {
      return Promise.reject(new ClientError("E_CLIENT_CLOSED"));
    }
    if (this.stateValue === "ready") return Promise.resolve();
    const ready = new Promise<void>((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
    if (this.stateValue === "idle") {
      this.stateValue = "connecting";
      void this.open();
    }
    return ready;
  }

  /** Stops everything: sends what is batched (acks, read receipts) if online, closes the
   * connection, rejects pending promises (the outbox keeps its sends), flushes the store (and
   * closes it if the client created it). Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  /** Sends a message; resolves with its seq once the server has committed it. Survives
   * reconnects (same cid), and restarts with a durable store. */
  async send(
    conv: ConversationId,
    body: string | Uint8Array,
    options: SendOptions = {},
  ): Promise<SendResult> {
    const bytes = typeof body === "string" ? textEncoder.encode(body) : body;
    const type = options.type ?? (typeof body === "string" ? "text/plain" : "application/octet-stream");
    const cid = options.cid ?? newCid();
    this.checkSize({
      t: "send",
      id: 2 ** 31,
      conv,
      cid,
      type,
      body: bytes,
      ...(options.replyTo !== undefined ? { replyTo: options.replyTo } : {}),
    });
    return this.outbox.add(
      { conv, type, body: bytes, ...(options.replyTo !== undefined ? { replyTo: options.replyTo } : {}) },
      cid,
    );
  }

  /** Replaces the body of one's own message. */
  edit(
    conv: ConversationId,
    seq: number,
    body: string | Uint8Array,
    options: { type?: string } = {},
  ): Promise<void> {
    const bytes = typeof body === "string" ? textEncoder.encode(body) : body;
    const type = options.type ?? (typeof body === "string" ? "text/plain" : "application/octet-stream");
    this.checkSize({ t: "edit", id: 2 ** 31, conv, seq, type, body: bytes });
    return this.requests.request((id) => ({ t: "edit", id, conv, seq, type, body: bytes }));
  }

  /** Deletes (recalls) a message: one's own, or any in a group one administers. */
  delete(conv: ConversationId, seq: number): Promise<void> {
    return this.requests.request((id) => ({ t: "delete", id, conv, seq }));
  }

  /** Adds (on) or removes (off) a reaction. */
  react(conv: ConversationId, seq: number, emoji: string, on = true): Promise<void> {
    return this.requests.request((id) => ({ t: "react", id, conv, seq, emoji, on }));
  }

  /** Marks `conv` read up to `seq`. Coalesced per conversation and sent within readDelayMs;
   * failures are reported as "error" events. */
  markRead(conv: ConversationId, seq: number): void {
    this.reads.mark(conv, seq);
  }

  /** Tells the other members that this user is typing (throttled; dropped when offline). */
  typing(conv: ConversationId): void {
    const now = this.timers.now();
    if (now - (this.lastTyping.get(conv) ?? -Infinity) < (this.options.typingIntervalMs ?? 2000)) return;
    if (this.conn?.ready !== true) return;
    this.lastTyping.set(conv, now);
    this.transmit({ t: "typing", conv });
  }

  /** Watches these users' presence (replacing the previous list, kept across reconnects). The
   * server reports each visible user at once, then every change, as "presence" events. */
  watchPresence(users: UserId[]): void {
    this.watched = [...users];
    if (this.conn?.ready === true) this.transmit({ t: "watch", users: this.watched });
  }

  /** Cached messages of a conversation (those received since this store was new). */
  messages(conv: ConversationId, query?: MessageQuery): Message[] {
    return this.store.messages(conv, query);
  }

  /** Sends not yet confirmed by the server. */
  pendingSends(): PendingSend[] {
    return this.store.outbox();
  }

  // ---------------------------------------------------------------- REST

  conversations(): Promise<Conversation[]> {
    return this.rest.conversations();
  }

  /** Revokes this device and its token on the server; the connection ends with 4101 and the
   * client stops. close() it afterwards. */
  logout(): Promise<void> {
    return this.rest.logout();
  }

  findUser(name: string): Promise<UserInfo> {
    return this.rest.findUser(name);
  }

  /** The names of users by id (e.g. conversation members), in the order asked for, each once;
   * ids that do not exist are left out. Any number of ids: the requests ask 100 at a time. */
  users(ids: readonly UserId[]): Promise<UserInfo[]> {
    return this.rest.users(ids);
  }

  /** The direct conversation with a user, given by name (looked up first) or id. */
  async createDirect(user: string): Promise<Conversation> {
    let id = user;
    try {
      id = (await this.rest.findUser(user)).id;
    } catch (err) {
      if ((err as { code?: unknown }).code !== "E_NOT_FOUND") throw err;
    }
    return this.rest.createDirect(id);
  }

  createGroup(name: string, members: UserId[]): Promise<Conversation> {
    return this.rest.createGroup(name, members);
  }

  /** Adds users to a group (owner or admin). A group that reaches the server's large-group size
   * becomes large: its members' devices then follow its own log (docs/protocol.md). */
  addMembers(conv: ConversationId, users: UserId[]): Promise<Conversation> {
    return this.rest.addMembers(conv, users);
  }

  /** A page of a conversation's members, ordered by user id (at most `limit`, server default
   * 100, at most 1,000). A large group's `Conversation.members` lists only its owner, its admins
   * and this user (`memberCount` counts everyone): this is how to see the rest. */
  members(conv: ConversationId, after?: UserId, limit?: number): Promise<MemberPage> {
    return this.rest.members(conv, after, limit);
  }

  /** Removes a member from a group (owner or admin); removing oneself leaves it. */
  removeMember(conv: ConversationId, user: UserId): Promise<void> {
    return this.rest.removeMember(conv, user);
  }

  /** A page of the server's history of a conversation (not via the local cache). */
  history(conv: ConversationId, query?: HistoryQuery): Promise<HistoryPage> {
    return this.rest.history(conv, query);
  }

  // ---------------------------------------------------------------- connection lifecycle

  private async open(): Promise<void> {
    let transport: Transport;
    try {
      transport = this.makeTransport();
    } catch (err) {
      // A configuration error: retrying cannot fix it.
      return this.stop(err instanceof Error ? err : new Error(String(err)));
    }
    const conn = new ClientConnection(transport, this.timers, this.options.connectTimeoutMs ?? 10_000);
    this.conn = conn;
    transport.events.on("frame", (frame) => this.onFrame(conn, frame));
    transport.events.on("close", (code, reason) => this.onClose(conn, code, reason));
    try {
      await transport.connect();
    } catch (err) {
      if (this.conn === conn) this.onClose(conn, 1006, err instanceof Error ? err.message : String(err));
      return;
    }
    if (this.conn !== conn) {
      transport.close();
      return;
    }
    conn.send({
      t: "hello",
      versions: [...SUPPORTED_VERSIONS],
      token: this.options.token,
      agent: this.options.agent ?? "parley-sdk/0.1",
    });
  }

  private makeTransport(): Transport {
    const t = this.options.transport ?? "ws";
    const options = {
      url: this.options.endpoint ?? this.options.url,
      encoding: this.options.transport === "tcp" ? "binary" : (this.options.encoding ?? "binary"),
      maxFrameBytes: this.maxIncomingFrameBytes(),
      ...(this.options.tcpPort !== undefined ? { tcpPort: this.options.tcpPort } : {}),
    } as const;
    if (typeof t === "function") return t(options);
    if (t === "ws") {
      return new WsTransport({
        ...options,
        ...(this.options.WebSocket ? { WebSocket: this.options.WebSocket } : {}),
      });
    }
    const factory = getTransport(t);
    if (factory) return factory(options);
    throw new Error(`unknown transport "${t}" (on Node.js, import @parley/sdk/node for "tcp")`);
  }

  private onClose(conn: ClientConnection, transportCode: number, transportReason: string): void {
    if (this.conn !== conn) return;
    this.conn = undefined;
    const { code, reason } = conn.ended(transportCode, transportReason);
    const wasReady = conn.ready;
    this.engine.stop();
    for (const g of this.groups.values()) g.stop();
    this.outbox.offline();
    this.requests.offline();
    this.acks.cancel();
    if (this.syncRetryTimer !== undefined) this.timers.clearTimeout(this.syncRetryTimer);
    this.syncRetryTimer = undefined;
    if (this.stateValue === "closed") {
      if (wasReady) this.emit("disconnected", { code, reason, willReconnect: false });
      return;
    }
    if (code >= 4100 && code < 4200) {
      if (wasReady) this.emit("disconnected", { code, reason, willReconnect: false });
      const err = new ClientError(
        "E_DISCONNECTED",
        `the server closed the session for good: ${code} ${reason}`,
        {
          detail: code,
        },
      );
      return this.stop(err);
    }
    this.stateValue = "connecting";
    if (wasReady) this.emit("disconnected", { code, reason, willReconnect: true });
    const backoff = {
      baseMs: this.options.reconnectBaseMs ?? 200,
      capMs: this.options.reconnectCapMs ?? 10_000,
    };
    // Start over only after a connection that lasted (at least the longest delay): connections
    // that end as soon as they are ready must not bring the reconnects back to the base delay.
    if (wasReady && this.timers.now() - this.readyAt >= backoff.capMs) this.attempt = 0;
    const delay = backoffDelay(this.attempt++, backoff);
    this.reconnectTimer = this.timers.setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.stateValue === "connecting") void this.open();
    }, delay);
  }

  /** Stops for good (state "stopped"): reports `err`, fails what waits. close() still cleans up. */
  private stop(err: Error): void {
    this.stateValue = "stopped";
    this.emit("error", err);
    this.outbox.stop(err);
    this.requests.stop(err);
    this.settleReady(err);
  }

  private onFrame(conn: ClientConnection, frame: ServerFrame): void {
    if (this.conn !== conn) return;
    conn.heard();
    switch (frame.t) {
      case "welcome":
        return this.welcomed(conn, frame);
      case "push":
        if (frame.log === undefined) this.engine.onPush(frame.useq, frame.u);
        else this.groups.get(frame.log)?.onPush(frame.useq, frame.u);
        return this.acks.schedule();
      case "synced": {
        // Routed by what this side asked, not by what the reply says.
        const log = conn.syncIds.get(frame.id);
        if (!conn.syncIds.delete(frame.id)) return;
        const engine = log === undefined ? this.engine : this.groups.get(log);
        engine?.onSynced(frame.updates, frame.more, frame.head);
        return this.acks.schedule();
      }
      case "sent":
        if (frame.useq !== undefined) this.ownEntry(conn, frame);
        return this.outbox.onSent(frame);
      case "ok":
        this.requests.onOk(frame.id);
        return;
      case "error":
        return this.onErrorFrame(conn, frame);
      case "typing":
        this.emit("typing", { conv: frame.conv, user: frame.user });
        return;
      case "presence":
        this.emit("presence", { user: frame.user, online: frame.online, lastSeen: frame.lastSeen });
        return;
      case "ping":
        return conn.send({ t: "pong", n: frame.n });
      case "pong":
      case "bye": // the transport reports its code with the close
      case "history": // history goes through REST
        return;
    }
  }

  /** Protocol version 2: `sent` with a useq comes in place of the push of our own message, which
   * is built here from the send, as the server stored it. Were the send not known (it always is:
   * the id is this connection's), the entry is fetched by sync instead. */
  private ownEntry(conn: ClientConnection, sent: SentFrame): void {
    const engine = sent.log === undefined ? this.engine : this.groups.get(sent.log);
    const send = this.outbox.inFlight(sent.id);
    if (send === undefined || send.cid !== sent.cid || send.conv !== sent.conv || !conn.welcome) {
      engine?.onMissed(sent.useq!);
      return;
    }
    const msg: Message = {
      conv: sent.conv,
      seq: sent.seq,
      from: conn.welcome.user,
      dev: conn.welcome.device,
      cid: sent.cid,
      type: send.type,
      body: send.body,
      ts: sent.ts,
      ...(send.replyTo !== undefined ? { replyTo: send.replyTo } : {}),
    };
    engine?.onPush(sent.useq!, { k: "msg", msg });
    this.acks.schedule();
  }

  private welcomed(conn: ClientConnection, welcome: WelcomeFrame): void {
    conn.welcomed(welcome);
    this.maxFrameBytes = welcome.maxFrameBytes;
    this.engine.start(welcome.head, this.syncLimit());
    const heads = new Map((welcome.logs ?? []).map((l) => [l.conv, l.head]));
    for (const [conv, g] of this.groups) g.start(heads.get(conv), this.syncLimit());
  }

  private groupEngine(log: ConversationId): SyncEngine {
    return new SyncEngine(
      this.store,
      {
        emit: (e) => this.emitSync(e),
        requestSync: (cursor) => this.requestSync(cursor, log),
        // Readiness waits for the user's own log only; a group's log catches up beside it.
        caughtUp: () => {},
      },
      { log, ...(this.options.syncPipeline === undefined ? {} : { pipeline: this.options.syncPipeline }) },
    );
  }

  /** The user's log says the device now follows a large group's log (its cursor is set). */
  private follow(conv: ConversationId): void {
    if (this.groups.has(conv)) return;
    const g = this.groupEngine(conv);
    this.groups.set(conv, g);
    // Entries may have come before the server's session followed the group: ask once.
    if (this.conn?.welcome) g.start(undefined, this.syncLimit());
  }

  private unfollow(conv: ConversationId): void {
    this.groups.get(conv)?.stop();
    this.groups.delete(conv);
  }

  private caughtUp(): void {
    const conn = this.conn;
    if (!conn?.welcome || conn.ready) return;
    conn.ready = true;
    this.readyAt = this.timers.now();
    this.stateValue = "ready";
    this.outbox.online();
    this.requests.online();
    if (this.watched) this.transmit({ t: "watch", users: this.watched });
    this.acks.schedule();
    this.emit("connected", {
      user: this.user,
      device: this.device,
      cursor: this.engine.cursor,
      welcome: conn.welcome,
    });
    this.settleReady();
  }

  private onErrorFrame(conn: ClientConnection, frame: ErrorFrame): void {
    const log = frame.id === undefined ? undefined : conn.syncIds.get(frame.id);
    if (frame.id !== undefined && conn.syncIds.delete(frame.id)) {
      const engine = log === undefined ? this.engine : this.groups.get(log);
      if (!frame.retry) {
        // A group's log refused for good: the user was removed, and their own log will say so
        // ("left"); stop asking until then.
        if (log !== undefined) return engine?.stop();
        this.emit("error", serverError(frame));
        return conn.close(1006, `sync refused: ${frame.code}`);
      }
      engine?.onSyncFailed();
      if (this.syncRetryTimer !== undefined) return; // the other refusals of a pipelined round
      this.syncRetryTimer = this.timers.setTimeout(() => {
        this.syncRetryTimer = undefined;
        if (this.conn !== conn) return;
        this.engine.resume();
        for (const g of this.groups.values()) g.resume();
      }, frame.retryAfterMs ?? 1000);
      return;
    }
    if (this.outbox.onError(frame) || this.requests.onError(frame)) return;
    this.emit("error", serverError(frame));
  }

  private requestSync(cursor: number, log?: ConversationId): void {
    const conn = this.conn;
    if (!conn) return;
    const id = this.nextId();
    conn.syncIds.set(id, log);
    conn.send({ t: "sync", id, cursor, limit: this.syncLimit(), ...(log === undefined ? {} : { log }) });
  }

  // ---------------------------------------------------------------- plumbing

  private async shutdown(): Promise<void> {
    const prev = this.stateValue;
    this.stateValue = "closed";
    if (this.reconnectTimer !== undefined) this.timers.clearTimeout(this.reconnectTimer);
    const conn = this.conn;
    if (conn?.ready === true && prev !== "stopped") {
      // Read receipts go out without waiting for their `ok`; the ack with a final store flush.
      this.reads.flush();
      await this.acks.flush();
    }
    this.reads.cancel();
    const err = new ClientError("E_CLIENT_CLOSED");
    this.outbox.stop(err);
    this.requests.stop(err);
    this.settleReady(err);
    if (conn && this.conn === conn) {
      conn.close(1000, "client closed");
      let timer: unknown;
      const timeout = new Promise<void>((resolve) => (timer = this.timers.setTimeout(resolve, 2000)));
      await Promise.race([conn.gone, timeout]);
      this.timers.clearTimeout(timer);
      // A transport that never reported its close still counts as gone.
      this.onClose(conn, 1000, "client closed");
    }
    await this.store.flush();
    if (this.ownsStore) await this.store.close();
  }

  private settleReady(err?: Error): void {
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) {
      if (err) w.reject(err);
      else w.resolve();
    }
  }

  /** Sends on the current connection once it is ready; false otherwise. */
  private transmit(frame: ClientFrame): boolean {
    const conn = this.conn;
    if (conn?.ready !== true) return false;
    conn.send(frame);
    return true;
  }

  private nextId(): number {
    this.requestId = this.requestId >= 2 ** 31 - 1 ? 1 : this.requestId + 1;
    return this.requestId;
  }

  /** Updates per `synced`: the server bounds a frame it receives, not one it sends, and one
   * update can carry a body of up to maxFrameBytes (a third more as JSON base64), so ask for no
   * more than what surely fits in maxIncomingFrameBytes. */
  private syncLimit(): number {
    const fit = Math.floor(this.maxIncomingFrameBytes() / (this.maxFrameBytes * 1.5));
    return this.options.syncLimit ?? Math.min(500, Math.max(10, fit));
  }

  private maxIncomingFrameBytes(): number {
    return this.options.maxIncomingFrameBytes ?? 16 * 1024 * 1024;
  }

  private checkSize(frame: ClientFrame): void {
    const max = this.maxFrameBytes;
    const encoding = this.options.transport === "tcp" ? "binary" : (this.options.encoding ?? "binary");
    const size = encodedSize(frame, encoding);
    if (size > max) {
      throw serverError({
        code: "E_FRAME_TOO_LARGE",
        message: `the frame would be ${size} bytes; the limit is ${max}`,
      });
    }
  }

  private emitSync(e: SyncEvent): void {
    switch (e.type) {
      case "message":
        this.emit("message", e.msg);
        return;
      case "edit":
        this.emit("edit", e.msg);
        return;
      case "delete":
        this.emit("delete", e.msg);
        return;
      case "reaction":
        this.emit("reaction", e.event);
        return;
      case "receipt":
        this.emit("receipt", e.event);
        return;
      case "conversation":
        this.emit("conversation", e.conv);
        return;
      case "left":
        this.emit("left", e.conv);
        return;
    }
  }

  private listenerFailed(err: unknown, event: keyof ClientEvents): void {
    if (event === "error") {
      queueMicrotask(() => {
        throw err;
      });
      return;
    }
    this.emit("error", new Error(`a "${event}" listener threw`, { cause: err }));
  }
}

/** Random bytes for newCid, drawn from the CSPRNG a pool at a time: a getRandomValues call for
 * every cid was 12% of a load process's CPU at 30,000 sends a second (docs/benchmarks.md). */
const CID_RANDOM_POOL = 4096;
/** Random bytes a cid takes: 74 random bits, the version and variant bits set over 6 of them. */
const CID_RANDOM_BYTES = 10;
let cidRandom = new Uint8Array(0);
let cidRandomAt = 0;
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** A fresh client message id: a UUIDv7, time-ordered and unique without coordination. */
export function newCid(now: number = Date.now()): string {
  // A UUIDv7 (RFC 9562): 48 bits of Unix time in ms, then 74 random bits. Time-ordered ids land
  // at the end of the server's resend index (cid first), so a batch of sends dirties a few of its
  // pages instead of one per sender; the random bits keep it unique without coordination.
  if (cidRandomAt + CID_RANDOM_BYTES > cidRandom.length) {
    cidRandom = globalThis.crypto.getRandomValues(new Uint8Array(CID_RANDOM_POOL));
    cidRandomAt = 0;
  }
  const r = cidRandom;
  const o = cidRandomAt;
  cidRandomAt += CID_RANDOM_BYTES;
  const ms = Math.max(0, Math.floor(now)) % 2 ** 48;
  if (ms !== cidTimeMs) {
    const time = ms.toString(16).padStart(12, "0");
    cidTimeMs = ms;
    cidTimePrefix = `${time.slice(0, 8)}-${time.slice(8)}-`;
  }
  return (
    cidTimePrefix +
    `${HEX[0x70 | (r[o]! & 0x0f)]!}${HEX[r[o + 1]!]!}-` + // version 7
    `${HEX[0x80 | (r[o + 2]! & 0x3f)]!}${HEX[r[o + 3]!]!}-` + // variant 10
    hexOf(r, o + 4, o + CID_RANDOM_BYTES)
  );
}

// The time part of the last cid made: a sender makes many in the same millisecond.
let cidTimeMs = -1;
let cidTimePrefix = "";

/** bytes[from..to) in lowercase hex. A function of the module, not a closure made per cid: tsx
 * defines the name of every function assigned to a const each time one is made (1.3% of a load
 * process's CPU for this one). */
function hexOf(bytes: Uint8Array, from: number, to: number): string {
  let out = "";
  for (let i = from; i < to; i++) out += HEX[bytes[i]!]!;
  return out;
}

/** The UTF-8 text of a message body. */
export function textOf(msg: Pick<Message, "body">): string {
  return new TextDecoder().decode(msg.body);
}
