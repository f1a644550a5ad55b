import { DISCONNECT, ParleyError } from "@parley/protocol";
import type {
  Conversation,
  ConversationId,
  DeviceId,
  Member,
  Role,
  ServerFrame,
  UserId,
} from "@parley/protocol";
import { Accounts } from "./accounts.ts";
import type {
  DeviceInfo,
  HistoryPage,
  LoginResult,
  Principal,
  SendInput,
  SendResult,
  UserInfo,
} from "./api.ts";
import { ClientSession, type SessionContext } from "./client-session.ts";
import { Heartbeats } from "./heartbeats.ts";
import type { Connection, Session } from "./connection.ts";
import { Conversations } from "./conversations.ts";
import { Messaging } from "./messaging.ts";
import { DEFAULT_CORE_OPTIONS, type CoreOptions } from "./options.ts";
import type { Bus } from "./ports/bus.ts";
import type { Clock } from "./ports/clock.ts";
import type { Logger } from "./ports/logger.ts";
import type { Metrics } from "./ports/metrics.ts";
import type { PasswordHasher } from "./ports/password-hasher.ts";
import type { SessionDirectory } from "./ports/session-directory.ts";
import type { LogUpdate, Store } from "./ports/store.ts";
import { Presence, groupTopic, userTopic } from "./presence.ts";
import { FANOUT_SLICE, SlicedQueue } from "./sliced-queue.ts";

export interface CoreDeps {
  store: Store;
  bus: Bus<ServerFrame>;
  sessions: SessionDirectory;
  clock: Clock;
  hasher: PasswordHasher;
  logger: Logger;
  options?: Partial<CoreOptions>;
  /** The process's resident set size in bytes, read by the memory bound (options.maxRssBytes);
   * supplied by the composition root, since the core reads no process state. */
  rssBytes?: () => number;
  /** Where commit timings and refusals are reported (default: nowhere). */
  metrics?: Metrics;
}

/** How long shutdown waits for requests already running before it closes the store. */
export const SHUTDOWN_REQUESTS_MS = 5000;

/** The logic layer: the one object gateways, the REST API and the CLI talk to. Every method
 * checks authorization and rejects with a ParleyError for expected failures. Changes are
 * committed to the Store first, then published on the Bus to the members' online devices. */
export class Core implements SessionContext {
  readonly options: CoreOptions;
  readonly store: Store;
  readonly bus: Bus<ServerFrame>;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly accounts: Accounts;
  readonly conversations: Conversations;
  readonly messaging: Messaging;
  readonly presence: Presence;
  readonly heartbeats: Heartbeats;
  shuttingDown = false;
  private readonly fanOutQueue: SlicedQueue;
  private readonly byDevice = new Map<DeviceId, Set<ClientSession>>();
  private readonly byUser = new Map<UserId, number>();
  private readonly all = new Set<ClientSession>();

  constructor(deps: CoreDeps) {
    this.options = { ...DEFAULT_CORE_OPTIONS, ...deps.options };
    this.store = deps.store;
    this.bus = deps.bus;
    this.clock = deps.clock;
    this.logger = deps.logger;
    this.heartbeats = new Heartbeats(deps.clock, this.options.heartbeatMs / 2);
    this.fanOutQueue = new SlicedQueue(FANOUT_SLICE, (err) => this.logger.error({ err }, "a push failed"));
    const publish = (updates: LogUpdate[]): void => this.publish(updates);
    this.accounts = new Accounts(deps.store, deps.hasher, deps.clock, this.options);
    this.conversations = new Conversations(deps.store, deps.clock, this.options, publish);
    this.messaging = new Messaging(
      deps.store,
      this.conversations,
      deps.clock,
      this.options,
      publish,
      deps.rssBytes,
      (e) => {
        // Operators see overload begin and end, not one line per refused send.
        if (e.shedding) this.logger.warn(e, "overloaded: refusing sends (E_OVERLOADED)");
        else this.logger.info(e, "no longer overloaded: sends admitted again");
      },
      deps.metrics,
      () => this.fanOutBacklog,
    );
    this.presence = new Presence(
      deps.store,
      deps.bus,
      deps.sessions,
      this.conversations,
      deps.clock,
      this.options.typingThrottleMs,
      this.options.presenceThrottleMs,
    );
  }

  // --- accounts
  register(name: string, password: string): Promise<UserInfo> {
    return this.accounts.register(name, password);
  }
  login(name: string, password: string, deviceName: string): Promise<LoginResult> {
    return this.accounts.login(name, password, deviceName);
  }
  authenticate(token: string): Promise<Principal> {
    return this.accounts.authenticate(token);
  }
  /** Revokes the caller's device (each login is a device) and closes its connections. */
  logout(p: Principal): Promise<void> {
    return this.revokeDevice(p, p.device);
  }
  findUser(_p: Principal, name: string): Promise<UserInfo> {
    return this.accounts.findUser(name);
  }
  /** The names of the users among `ids` that exist (see Accounts.getUsers); any user may look
   * up any id, as with findUser by name. */
  getUsers(_p: Principal, ids: UserId[]): Promise<UserInfo[]> {
    return this.accounts.getUsers(ids);
  }
  listDevices(p: Principal): Promise<DeviceInfo[]> {
    return this.accounts.listDevices(p);
  }
  async revokeDevice(p: Principal, device: DeviceId): Promise<void> {
    await this.accounts.revokeDevice(p, device);
    for (const s of this.byDevice.get(device) ?? []) s.close(DISCONNECT.AUTH_FAILED, "device revoked");
  }

  // --- conversations
  createDirect(p: Principal, other: UserId): Promise<Conversation> {
    return this.conversations.createDirect(p, other);
  }
  createGroup(p: Principal, name: string, members: UserId[]): Promise<Conversation> {
    return this.conversations.createGroup(p, name, members);
  }
  listConversations(p: Principal): Promise<Conversation[]> {
    return this.conversations.listConversations(p);
  }
  getConversation(p: Principal, conv: ConversationId): Promise<Conversation> {
    return this.conversations.get(p, conv);
  }
  /** A page of a conversation's members, by user id (a large group's state lists only some). */
  listMembers(
    p: Principal,
    conv: ConversationId,
    after: UserId | undefined,
    limit: number,
  ): Promise<Member[]> {
    return this.conversations.members(p, conv, after, limit);
  }
  renameGroup(p: Principal, conv: ConversationId, name: string): Promise<Conversation> {
    return this.conversations.rename(p, conv, name);
  }
  addMembers(p: Principal, conv: ConversationId, users: UserId[]): Promise<Conversation> {
    return this.conversations.addMembers(p, conv, users);
  }
  removeMember(p: Principal, conv: ConversationId, user: UserId): Promise<Conversation | undefined> {
    return this.conversations.removeMember(p, conv, user);
  }
  setRole(p: Principal, conv: ConversationId, user: UserId, role: Role): Promise<Conversation> {
    return this.conversations.setRole(p, conv, user, role);
  }

  // --- messages
  send(p: Principal, input: SendInput): Promise<SendResult> {
    // Sessions refuse requests once shutdown begins; this covers a REST send already in flight,
    // which would otherwise reach the committer after drain and fail on the closed store.
    if (this.shuttingDown)
      return Promise.reject(new ParleyError("E_SHUTTING_DOWN", undefined, { retryAfterMs: 1000 }));
    return this.messaging.send(p, input);
  }
  history(
    p: Principal,
    conv: ConversationId,
    q: { before?: number | undefined; after?: number | undefined; limit?: number | undefined },
  ): Promise<HistoryPage> {
    return this.messaging.history(p, conv, q);
  }

  // --- connections
  /** Starts the core's side of a new connection. */
  open(conn: Connection): Session {
    const session = new ClientSession(this, conn);
    this.all.add(session);
    if (this.shuttingDown) session.close(DISCONNECT.SHUTDOWN, "shutting down");
    return session;
  }

  /** Number of open connections (any state). */
  get connections(): number {
    return this.all.size;
  }

  connectionsOf(user: UserId): number {
    return this.byUser.get(user) ?? 0;
  }

  attach(session: ClientSession): void {
    const p = session.principal!;
    let set = this.byDevice.get(p.device);
    if (!set) this.byDevice.set(p.device, (set = new Set()));
    set.add(session);
    this.byUser.set(p.user, (this.byUser.get(p.user) ?? 0) + 1);
  }

  detach(session: ClientSession): void {
    const p = session.principal!;
    const set = this.byDevice.get(p.device);
    set?.delete(session);
    if (set?.size === 0) this.byDevice.delete(p.device);
    const n = (this.byUser.get(p.user) ?? 1) - 1;
    if (n <= 0) this.byUser.delete(p.user);
    else this.byUser.set(p.user, n);
  }

  forget(session: ClientSession): void {
    this.all.delete(session);
  }

  fanOut(send: () => void): void {
    this.fanOutQueue.add(send);
  }

  /** Pushes of large groups waiting to go out (options.maxFanOutBacklog). */
  get fanOutBacklog(): number {
    return this.fanOutQueue.size;
  }

  /** Graceful stop: refuse new requests, commit everything already accepted, say bye (4000) to
   * every connection, then close the store. Gateways stop accepting before calling this. */
  async shutdown(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    await this.messaging.drain();
    // Let the committed sends' replies (promise continuations) reach their connections first.
    await new Promise((resolve) => setImmediate(resolve));
    const sessions = [...this.all];
    for (const s of sessions) s.close(DISCONNECT.SHUTDOWN, "server shutting down");
    this.heartbeats.stop();
    // Requests already running (a sync reading the store, say) finish before the store closes
    // under them, for at most SHUTDOWN_REQUESTS_MS.
    let timer: { cancel(): void } | undefined;
    await Promise.race([
      Promise.all(sessions.map((s) => s.settled())),
      new Promise<void>((resolve) => (timer = this.clock.setTimeout(resolve, SHUTDOWN_REQUESTS_MS))),
    ]);
    timer?.cancel();
    await this.bus.close();
    await this.store.close();
  }

  private publish(updates: LogUpdate[]): void {
    for (const { user, log, useq, u } of updates) {
      try {
        if (log !== undefined) this.bus.publish(groupTopic(log), { t: "push", useq, u, log });
        else this.bus.publish(userTopic(user), { t: "push", useq, u });
      } catch (e) {
        // A lost push is recovered by the device's next sync; never fail the committed write.
        this.logger.error({ err: e, user, log }, "publish failed");
      }
    }
  }
}
