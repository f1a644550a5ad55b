import { DISCONNECT, ParleyError, SUPPORTED_VERSIONS } from "@parley/protocol";
import type {
  ClientFrame,
  ConversationId,
  ErrorCode,
  HelloFrame,
  LoggedUpdate,
  Message,
  PushFrame,
  SendFrame,
  SentFrame,
  ServerFrame,
  Update,
  UserId,
} from "@parley/protocol";
import type { Accounts } from "./accounts.ts";
import type { Principal } from "./api.ts";
import type { Connection, Session } from "./connection.ts";
import type { Messaging } from "./messaging.ts";
import type { CoreOptions } from "./options.ts";
import type { Bus, Unsubscribe } from "./ports/bus.ts";
import type { Clock } from "./ports/clock.ts";
import type { Logger } from "./ports/logger.ts";
import type { SessionEntry } from "./ports/session-directory.ts";
import type { Store } from "./ports/store.ts";
import type { Beating, Heartbeats } from "./heartbeats.ts";
import { groupTopic, presenceTopic, userTopic, type Presence } from "./presence.ts";
import { TokenBucket } from "./rate-limiter.ts";

/** What a session needs from the core. */
export interface SessionContext {
  readonly store: Store;
  readonly bus: Bus<ServerFrame>;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly options: CoreOptions;
  readonly accounts: Accounts;
  readonly messaging: Messaging;
  readonly presence: Presence;
  /** The shared heartbeat sweep; a session is in it while READY. */
  readonly heartbeats: Heartbeats;
  /** True once shutdown has begun: new requests are refused with E_SHUTTING_DOWN. */
  readonly shuttingDown: boolean;
  connectionsOf(user: string): number;
  /** The session's token is valid: it counts as one of its user's connections from now on
   * (READY follows unless it closes first). */
  attach(session: ClientSession): void;
  /** An attached session closed. */
  detach(session: ClientSession): void;
  /** Any session closed (called once, after detach if it was attached). */
  forget(session: ClientSession): void;
  /** Runs `send` in a later turn, in order with the other fan-out sends (sliced-queue.ts): for
   * the pushes of a large group's log, which reach every online member at once. */
  fanOut(send: () => void): void;
}

// States of one connection: HELLO (waiting for hello) -> AUTH (checking the token; frames that
// arrive meanwhile are queued) -> READY -> CLOSED.
type State = "HELLO" | "AUTH" | "READY" | "CLOSED";

/** Most frames queued while a hello is being checked; beyond, the client is not waiting for
 * welcome as the protocol requires. */
const AUTH_QUEUE_MAX = 64;

/** The core's handling of one client connection: hello and auth, heartbeats, per-connection
 * rate limit, request dispatch, live pushes. All replies go through conn.send in order. */
export class ClientSession implements Session, Beating {
  private state: State = "HELLO";
  principal: Principal | undefined;
  private entry: SessionEntry | undefined;
  private readonly queued: ClientFrame[] = [];
  private unsubscribe: Unsubscribe[] = [];
  /** The subscriptions to the logs of the user's large groups, by conversation; created with the
   * first (most connections have none, and idle ones are counted in bytes). */
  private groups: Map<ConversationId, Unsubscribe> | undefined;
  /** Large groups the user left while hello read the list of them (which may still name them);
   * only kept in state AUTH, which ends in the same turn as that list is used. */
  private leftDuringHello: Set<ConversationId> | undefined;
  /** The presence subscriptions of the watch list, by watched user. */
  private readonly watching = new Map<UserId, Unsubscribe>();
  private pendingPushes: ServerFrame[] | undefined = [];
  /** Protocol version 2: this connection's sends awaiting their commit, by cid. When the push of
   * the entry a send committed comes, `sent` with the entry's useq goes in its place (push()
   * takes the send out), so the sending device gets one frame where version 1 sends two (the
   * push, then `sent`). A send still here when it resolves is answered with a plain `sent`: a
   * resend of a committed cid (no new entry), or one whose push has not come yet (a large
   * group's, which waits in the fan-out queue). */
  private echoes: Map<string, SendFrame> | undefined;
  private readonly bucket: TokenBucket;
  private strikes = 0;
  private serial: Promise<void> = Promise.resolve();
  private serialPending = 0;
  /** Counted in the core's per-user connections (from the limit check in hello until closed). */
  private attached = false;
  private lastHeard: number;
  private pingN = 0;
  /** The hello timeout, dropped once the session is READY: if the reference were kept, the
   * cancelled timer and its closures would live as long as the connection, about 0.5 KiB of the
   * 8 KiB an idle connection may cost (benchmarks.md, twentieth session). */
  private helloTimer: { cancel(): void } | undefined;
  private cursor = 0;
  private savedCursor = 0;
  private lastCursorFlush = 0;

  constructor(
    private readonly ctx: SessionContext,
    readonly conn: Connection,
  ) {
    const now = ctx.clock.now();
    this.lastHeard = now;
    this.bucket = new TokenBucket(ctx.options.framesPerSecond, ctx.options.frameBurst, now);
    this.helloTimer = ctx.clock.setTimeout(() => {
      if (this.state === "HELLO" || this.state === "AUTH") this.fail("E_TIMEOUT", DISCONNECT.HELLO_TIMEOUT);
    }, ctx.options.helloTimeoutMs);
  }

  receive(frame: ClientFrame): void {
    if (this.state === "CLOSED") return;
    this.lastHeard = this.ctx.clock.now();
    switch (this.state) {
      case "HELLO":
        if (frame.t !== "hello") return this.fail("E_NOT_AUTHENTICATED", DISCONNECT.PROTOCOL_ERROR);
        this.state = "AUTH";
        this.hello(frame).catch((e: unknown) => this.internal(e));
        return;
      case "AUTH":
        if (this.queued.length >= AUTH_QUEUE_MAX) return this.fail("E_RATE_LIMITED", DISCONNECT.RATE_LIMITED);
        this.queued.push(frame);
        return;
      case "READY":
        return this.ready(frame);
    }
  }

  closed(): void {
    if (this.state === "CLOSED") return;
    const wasReady = this.state === "READY";
    this.state = "CLOSED";
    this.helloTimer?.cancel();
    this.helloTimer = undefined;
    this.ctx.heartbeats.delete(this);
    for (const u of this.unsubscribe) u();
    this.unsubscribe = [];
    for (const u of this.watching.values()) u();
    this.watching.clear();
    for (const u of this.groups?.values() ?? []) u();
    this.groups = undefined;
    if (wasReady && this.entry && this.principal) {
      this.ctx.presence.disconnected(this.entry);
      this.ctx.detach(this);
      this.flushCursor(true);
    } else if (this.attached) {
      this.ctx.detach(this);
    }
    this.ctx.forget(this);
  }

  /** Closes the connection with a disconnect code (the gateway then calls closed()). */
  close(code: (typeof DISCONNECT)[keyof typeof DISCONNECT], reason: string): void {
    if (this.state === "CLOSED") return;
    // Saved now, not only in closed(): the gateway reports the socket gone later, and at shutdown
    // that is after the store has closed.
    if (this.state === "READY") this.flushCursor(true);
    this.conn.close(code, reason);
  }

  private async hello(frame: HelloFrame): Promise<void> {
    const { ctx } = this;
    if (ctx.shuttingDown) return this.fail("E_SHUTTING_DOWN", DISCONNECT.SHUTDOWN);
    const version = Math.max(...frame.versions.filter((v) => SUPPORTED_VERSIONS.includes(v)));
    if (!Number.isFinite(version)) return this.fail("E_UNSUPPORTED_VERSION", DISCONNECT.UNSUPPORTED_VERSION);
    let principal: Principal;
    try {
      principal = await ctx.accounts.authenticate(frame.token);
    } catch (e) {
      if (e instanceof ParleyError) return this.fail(e.code, DISCONNECT.AUTH_FAILED);
      throw e;
    }
    if (this.isClosed()) return;
    if (ctx.connectionsOf(principal.user) >= ctx.options.maxConnectionsPerUser) {
      return this.fail("E_RATE_LIMITED", DISCONNECT.RATE_LIMITED, "too many connections for this user");
    }
    this.principal = principal;
    if (version >= 2) this.echoes = new Map();
    // Counted now, before the next await, so that concurrent hellos of one user cannot all pass
    // the limit check; a device revoked meanwhile finds this session too.
    this.ctx.attach(this);
    this.attached = true;
    // Subscribe before reading the head, so no update committed in between is missed; pushes that
    // arrive before welcome is sent wait in pendingPushes.
    this.unsubscribe.push(ctx.bus.subscribe(userTopic(principal.user), (f) => this.push(f)));
    // A group that becomes large (or is joined) after this read is announced by a push above.
    const [head, logs] = await Promise.all([
      ctx.store.head(principal.user),
      ctx.store.largeConversations(principal.user),
    ]);
    if (this.isClosed()) return;
    for (const { conv } of logs) if (!this.leftDuringHello?.has(conv)) this.follow(conv);
    this.leftDuringHello = undefined;
    this.entry = {
      user: principal.user,
      device: principal.device,
      conn: this.conn.id,
      since: ctx.clock.now(),
    };
    ctx.presence.connected(this.entry);
    this.state = "READY";
    this.helloTimer?.cancel();
    this.helloTimer = undefined;
    this.conn.send({
      t: "welcome",
      version,
      user: principal.user,
      device: principal.device,
      heartbeatMs: ctx.options.heartbeatMs,
      maxFrameBytes: ctx.options.maxFrameBytes,
      serverTime: ctx.clock.now(),
      head,
      ...(logs.length > 0 ? { logs } : {}),
    });
    const pending = this.pendingPushes ?? [];
    this.pendingPushes = undefined;
    for (const f of pending) this.conn.send(f);
    this.ctx.heartbeats.add(this);
    for (const f of this.queued.splice(0)) {
      if (this.isClosed()) return;
      this.ready(f);
    }
  }

  /** Resolves once the requests this connection started one at a time (everything but sends,
   * which the committer drains) have finished. */
  settled(): Promise<void> {
    return this.serial;
  }

  /** Receives the pushes of a large group's log (idempotent). */
  private follow(conv: ConversationId): void {
    this.groups ??= new Map();
    if (this.groups.has(conv)) return;
    this.groups.set(
      conv,
      this.ctx.bus.subscribe(groupTopic(conv), (f) => this.fromGroup(conv, f)),
    );
  }

  private unfollow(conv: ConversationId): void {
    this.groups?.get(conv)?.();
    this.groups?.delete(conv);
  }

  private isClosed(): boolean {
    return this.state === "CLOSED";
  }

  /** What a large group's topic carries (its log's entries, typing) reaches every online member
   * at once: it goes out through the core's sliced fan-out queue. */
  private fromGroup(conv: ConversationId, frame: ServerFrame): void {
    if (this.state === "CLOSED") return;
    this.ctx.fanOut(() => {
      // Not sent once the user's own log has said to stop following it (left meanwhile), nor
      // one's own typing back.
      if (!this.groups?.has(conv)) return;
      if (frame.t === "typing" && frame.user === this.principal?.user) return;
      this.push(frame);
    });
  }

  private push(frame: ServerFrame): void {
    if (this.state === "CLOSED") return;
    if (frame.t === "push" && frame.u.k === "msg") {
      if (this.echoes !== undefined && this.echoes.size > 0) frame = this.answering(frame, frame.u.msg);
    } else if (frame.t === "push" && (frame.u.k === "left" || frame.u.k === "conv")) {
      // The user's own log says which large groups' logs to follow: from a "conv" entry of a
      // large group (it became large, or the user joined it) until "left".
      if (frame.log === undefined) {
        if (frame.u.k === "left") {
          this.unfollow(frame.u.conv);
          if (this.state === "AUTH") (this.leftDuringHello ??= new Set()).add(frame.u.conv);
        } else if (frame.u.conv.large) this.follow(frame.u.conv.id);
      }
      this.unwatchStrangers(frame.u);
    } else if (frame.t === "push" && frame.u.k === "members" && frame.u.removed.length > 0) {
      this.unwatchStrangers(frame.u);
    }
    if (this.pendingPushes) this.pendingPushes.push(frame);
    else this.conn.send(frame);
  }

  /** Under version 2, the reply to this connection's send that committed the pushed message, in
   * place of the push (the client builds the entry from its send); else the push itself. */
  private answering(frame: PushFrame, msg: Message): PushFrame | SentFrame {
    const send = this.echoes!.get(msg.cid);
    const p = this.principal!;
    if (send === undefined || send.conv !== msg.conv || msg.dev !== p.device || msg.from !== p.user)
      return frame;
    // The client builds the entry from its send: only if that is what was stored. It is not when
    // this push is of an earlier send of the cid (from a connection since lost) whose content the
    // client has changed since, against the protocol: then it gets the push, and `sent` later.
    if (send.type !== msg.type || send.replyTo !== msg.replyTo || !sameBytes(send.body, msg.body))
      return frame;
    this.echoes!.delete(msg.cid);
    const sent: SentFrame = {
      t: "sent",
      id: send.id,
      conv: msg.conv,
      cid: msg.cid,
      seq: msg.seq,
      ts: msg.ts,
      useq: frame.useq,
    };
    if (frame.log !== undefined) sent.log = frame.log;
    return sent;
  }

  private ready(frame: ClientFrame): void {
    const now = this.ctx.clock.now();
    if (frame.t !== "pong" && !this.bucket.take(now)) {
      // Repeatedly ignoring the limit gets the connection closed; a well-behaved client backs off.
      if (++this.strikes > this.ctx.options.frameBurst)
        return this.fail("E_RATE_LIMITED", DISCONNECT.RATE_LIMITED);
      if ("id" in frame)
        this.error(
          frame.id,
          new ParleyError("E_RATE_LIMITED", undefined, { retryAfterMs: this.bucket.waitMs(now) }),
        );
      return;
    }
    this.strikes = 0;
    // Arrows passed inline, not a `const fail = ...` shared by them: tsx names every function
    // assigned to a const (a defineProperty on each new closure), 1% of the main thread at
    // direct-max for this one.
    if (frame.t === "send") {
      // Sends are pipelined (many in flight per connection, group-committed); their order is
      // kept because each is queued for commit synchronously, in arrival order.
      this.send(frame);
    } else if (frame.t === "ping" || frame.t === "pong") {
      this.dispatch(frame).catch((e: unknown) => this.failed(frame, e));
    } else {
      // Everything else runs one at a time per connection, in arrival order, so that e.g. an
      // edit followed by a delete of the same message applies in that order. At most one burst
      // waits: when they run slower than the rate limit admits them, later ones are refused
      // rather than queued without bound.
      if (this.serialPending >= this.ctx.options.frameBurst)
        return this.failed(
          frame,
          new ParleyError("E_OVERLOADED", "too many requests in progress on this connection", {
            retryAfterMs: 500,
          }),
        );
      this.serialPending++;
      this.serial = this.serial.then(() =>
        // A request still queued when the connection closed is not started: nobody awaits it.
        (this.isClosed() ? Promise.resolve() : this.dispatch(frame))
          .catch((e: unknown) => this.failed(frame, e))
          .finally(() => this.serialPending--),
      );
    }
  }

  /** A request failed: the error goes back to the client, in reply to the frame's id if it has one. */
  private failed(frame: ClientFrame, e: unknown): void {
    this.error("id" in frame ? frame.id : undefined, e);
  }

  /** A send. Not a case of dispatch, and not async: a promise and an async function around
   * each send were about a kilobyte of garbage per message and a fifth of the main thread's
   * allocation at direct-max (docs/benchmarks.md, eighteenth session). */
  private send(frame: SendFrame): void {
    if (this.ctx.shuttingDown)
      return this.failed(frame, new ParleyError("E_SHUTTING_DOWN", undefined, { retryAfterMs: 1000 }));
    const { echoes } = this;
    // Under version 2 it may be answered in place of the push of the entry it commits (push()).
    // A second send of a cid already awaited here is answered as under version 1.
    const echo = echoes !== undefined && !echoes.has(frame.cid);
    if (echo) echoes.set(frame.cid, frame);
    // The frame is the input (SendInput is a subset of it): messaging keeps none of it.
    this.ctx.messaging.sendWith(this.principal!, frame, (err, r) => {
      try {
        if (r === undefined) {
          if (echo && echoes.get(frame.cid) === frame) echoes.delete(frame.cid);
          return this.failed(frame, err);
        }
        if (echo) {
          if (echoes.get(frame.cid) !== frame) return; // answered in place of its push
          echoes.delete(frame.cid);
        }
        this.reply({ t: "sent", id: frame.id, conv: r.conv, cid: r.cid, seq: r.seq, ts: r.ts });
      } catch (e) {
        this.failed(frame, e);
      }
    });
  }

  /** Every request but a send (ready() gives those to send()). */
  private async dispatch(frame: Exclude<ClientFrame, SendFrame>): Promise<void> {
    const p = this.principal!;
    const { messaging } = this.ctx;
    if (this.ctx.shuttingDown && "id" in frame)
      throw new ParleyError("E_SHUTTING_DOWN", undefined, { retryAfterMs: 1000 });
    switch (frame.t) {
      case "hello":
        throw new ParleyError("E_ALREADY_AUTHENTICATED");
      case "ack":
        if (frame.cursor !== undefined) this.advanceCursor(frame.cursor);
        for (const { conv, seq } of frame.convs ?? []) {
          // Up to a thousand writes: stop once the connection is gone (shutdown waits for this
          // request before closing the store, but only so long).
          if (this.isClosed()) return;
          // Delivery receipts are best effort: a stale conversation (left meanwhile) is skipped.
          await messaging.receipt(p, conv, "delivered", seq).catch((e: unknown) => {
            if (!(e instanceof ParleyError)) throw e;
          });
        }
        return;
      case "sync": {
        // Not an acknowledgement: a client may ask for pages ahead of what it has applied
        // (pipelining, docs/protocol.md); only `ack` moves the device's cursor.
        const limit = Math.min(frame.limit ?? 500, this.ctx.options.syncBatchMax);
        if (frame.log !== undefined) return this.syncGroup(frame.id, frame.log, frame.cursor, limit);
        const [updates, head] = await Promise.all([
          this.ctx.store.readUpdates(p.user, frame.cursor, limit),
          this.ctx.store.head(p.user),
        ]);
        await this.hideLeftConversations(updates);
        trimToBudget(updates, this.ctx.options.replyBudgetBytes);
        const last = updates.length > 0 ? updates[updates.length - 1]!.useq : frame.cursor;
        return this.reply({ t: "synced", id: frame.id, updates, more: last < head, head });
      }
      case "history": {
        const page = await messaging.history(p, frame.conv, frame);
        const trimmed = trimToBudget(
          page.messages,
          this.ctx.options.replyBudgetBytes,
          frame.after === undefined,
        );
        return this.reply({
          t: "history",
          id: frame.id,
          conv: frame.conv,
          messages: page.messages,
          more: page.more || trimmed,
        });
      }
      case "receipt":
        await messaging.receipt(p, frame.conv, frame.kind, frame.seq);
        return this.reply({ t: "ok", id: frame.id });
      case "edit":
        await messaging.edit(p, frame.conv, frame.seq, frame.type, frame.body);
        return this.reply({ t: "ok", id: frame.id });
      case "delete":
        await messaging.delete(p, frame.conv, frame.seq);
        return this.reply({ t: "ok", id: frame.id });
      case "react":
        await messaging.react(p, frame.conv, frame.seq, frame.emoji, frame.on);
        return this.reply({ t: "ok", id: frame.id });
      case "typing":
        return this.ctx.presence.typing(p, frame.conv, this.groups?.has(frame.conv) === true);
      case "watch":
        return this.watch(frame.users);
      case "ping":
        return this.reply({ t: "pong", n: frame.n });
      case "pong":
        return;
    }
  }

  /** A page of a large group's log, for a member. */
  private async syncGroup(id: number, conv: ConversationId, cursor: number, limit: number): Promise<void> {
    const { store } = this.ctx;
    // A non-member learns nothing, not even whether the conversation exists.
    if ((await store.getRole(conv, this.principal!.user)) === undefined)
      throw new ParleyError("E_NOT_FOUND", "no such conversation");
    const [updates, head] = await Promise.all([
      store.readConversationLog(conv, cursor, limit),
      store.conversationLogHead(conv),
    ]);
    trimToBudget(updates, this.ctx.options.replyBudgetBytes);
    const last = updates.length > 0 ? updates[updates.length - 1]!.useq : cursor;
    return this.reply({ t: "synced", id, updates, more: last < head, head, log: conv });
  }

  /** Message entries are read in the message's current state. For a conversation the user is no
   * longer in, that state can show what happened after they left (an edit, a reaction): such
   * entries are served as `left` instead, which is true and what the log says later anyway. */
  private async hideLeftConversations(updates: LoggedUpdate[]): Promise<void> {
    const user = this.principal!.user;
    const convs = [...new Set(updates.flatMap(({ u }) => ("msg" in u ? [u.msg.conv] : [])))];
    const roles = await Promise.all(convs.map((conv) => this.ctx.store.getRole(conv, user)));
    const left = new Set(convs.filter((_, i) => roles[i] === undefined));
    if (left.size === 0) return;
    for (const e of updates)
      if ("msg" in e.u && left.has(e.u.msg.conv)) e.u = { k: "left", conv: e.u.msg.conv };
  }

  private async watch(users: string[]): Promise<void> {
    const { presence, bus } = this.ctx;
    const visible = await presence.visible(this.principal!, users);
    if (this.isClosed()) return;
    // Replace the previous watch list.
    for (const u of this.watching.values()) u();
    this.watching.clear();
    // A change pushed while the initial states are read is newer than the state read for it.
    const changed = new Set<string>();
    for (const user of visible)
      this.watching.set(
        user,
        bus.subscribe(presenceTopic(user), (f) => {
          changed.add(user);
          this.push(f);
        }),
      );
    for (const user of visible) {
      const state = await presence.current(user);
      if (!changed.has(user)) this.reply(state);
    }
  }

  /** After a membership change (this user left, or someone left a conversation of theirs), stops
   * watching the users who no longer share a conversation with this user: presence is only for
   * those who do. Queued with the requests, so that it and a `watch` apply in order. */
  private unwatchStrangers(u: Extract<Update, { k: "left" | "conv" | "members" }>): void {
    this.serial = this.serial
      .then(async () => {
        if (this.watching.size === 0 || this.isClosed()) return;
        // A large group's change names who left: only they can have become strangers.
        let candidates: UserId[];
        if (u.k === "members") candidates = u.removed.filter((user) => this.watching.has(user));
        // A large group's own "conv" entries (it became large, this user joined) remove nobody;
        // its state lists only some members anyway.
        else if (u.k === "conv" && u.conv.large) return;
        else {
          const members = new Set(u.k === "conv" ? u.conv.members.map((m) => m.user) : []);
          candidates = [...this.watching.keys()].filter((user) => !members.has(user));
        }
        if (candidates.length === 0) return;
        const visible = new Set(await this.ctx.presence.visible(this.principal!, candidates));
        for (const user of candidates) {
          if (visible.has(user)) continue;
          this.watching.get(user)?.();
          this.watching.delete(user);
        }
      })
      .catch((e: unknown) => this.ctx.logger.warn({ err: e }, "could not re-check the watch list"));
  }

  private advanceCursor(cursor: number): void {
    if (cursor > this.cursor) this.cursor = cursor;
    this.flushCursor(false);
  }

  /** Persists the device cursor at most every cursorFlushMs (and on close): it is advisory (the
   * device keeps its own), so losing the last few seconds of it on a crash costs nothing. */
  private flushCursor(force: boolean): void {
    const now = this.ctx.clock.now();
    if (
      this.cursor <= this.savedCursor ||
      (!force && now - this.lastCursorFlush < this.ctx.options.cursorFlushMs)
    )
      return;
    this.savedCursor = this.cursor;
    this.lastCursorFlush = now;
    this.ctx.store.touchDevice(this.principal!.device, this.cursor, now).catch((e: unknown) => {
      this.ctx.logger.warn({ err: e }, "could not save device cursor");
    });
  }

  /** Called by the shared heartbeat sweep every heartbeatMs / 2 while READY: pings after
   * heartbeatMs of silence, closes after 2.5 x heartbeatMs. */
  beat(now: number): void {
    if (this.state !== "READY") return;
    const hb = this.ctx.options.heartbeatMs;
    const silence = now - this.lastHeard;
    if (silence >= hb * 2.5) return this.close(DISCONNECT.IDLE_TIMEOUT, "no frames received");
    if (silence >= hb) this.conn.send({ t: "ping", n: ++this.pingN });
  }

  private reply(frame: ServerFrame): void {
    if (this.state !== "CLOSED") this.conn.send(frame);
  }

  private error(id: number | undefined, e: unknown): void {
    if (!(e instanceof ParleyError)) {
      this.ctx.logger.error({ err: e, conn: this.conn.id }, "request failed");
      e = new ParleyError("E_INTERNAL");
    }
    const err = e as ParleyError;
    this.reply({
      t: "error",
      ...(id !== undefined ? { id } : {}),
      code: err.code,
      message: err.message,
      retry: err.retry,
      ...(err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}),
    });
  }

  /** Connection-level failure: an error frame, then close with `code`. */
  private fail(
    errorCode: ErrorCode,
    code: (typeof DISCONNECT)[keyof typeof DISCONNECT],
    message?: string,
  ): void {
    if (this.state === "CLOSED") return;
    this.error(undefined, new ParleyError(errorCode, message));
    this.close(code, message ?? errorCode);
  }

  private internal(e: unknown): void {
    this.ctx.logger.error({ err: e, conn: this.conn.id }, "session failed");
    this.fail("E_INTERNAL", DISCONNECT.INTERNAL);
  }
}

/** Shortens a reply list in place so that its entries total at most about `budget` bytes (but
 * keeps at least one entry), so a page of large messages or large conversation snapshots still
 * fits a client's frame limit. `fromStart` drops entries from the start instead of the end
 * (backward history pages keep the newest). Returns true if anything was dropped. */
/** Whether two byte strings are equal; the same object at once (a store that keeps what it was
 * given), else byte by byte (one that copies). */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a === b) return true;
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

function trimToBudget(items: Array<LoggedUpdate | Message>, budget: number, fromStart = false): boolean {
  let total = 0;
  const order = fromStart ? [...items.keys()].reverse() : [...items.keys()];
  for (const [n, i] of order.entries()) {
    total += approxBytes(items[i]!);
    if (total > budget && n > 0) {
      if (fromStart) items.splice(0, i + 1);
      else items.splice(i);
      return true;
    }
  }
  return false;
}

/** Rough encoded size of one entry: 256 bytes plus its message's body and reactions, or the
 * member list of a conversation snapshot (which grows with the group, not with a body). */
function approxBytes(item: LoggedUpdate | Message): number {
  const u = "useq" in item ? item.u : undefined;
  const msg = u === undefined ? (item as Message) : "msg" in u ? u.msg : undefined;
  let bytes = 256;
  if (msg) {
    bytes += msg.body.byteLength;
    for (const [emoji, users] of Object.entries(msg.reactions ?? {})) {
      bytes += emoji.length * 3 + 8;
      for (const user of users) bytes += user.length + 4;
    }
  }
  if (u?.k === "conv") for (const m of u.conv.members) bytes += m.user.length + 80;
  if (u?.k === "members") for (const m of u.set) bytes += m.user.length + 80;
  return bytes;
}
