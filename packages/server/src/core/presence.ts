import type { ConversationId, PresenceFrame, ServerFrame, UserId } from "@parley/protocol";
import type { Principal } from "./api.ts";
import type { Conversations } from "./conversations.ts";
import type { Bus } from "./ports/bus.ts";
import type { Clock } from "./ports/clock.ts";
import type { SessionDirectory, SessionEntry } from "./ports/session-directory.ts";
import type { Store } from "./ports/store.ts";

// Ephemeral signals: presence and typing. Never stored, throttled, and only seen by users who
// share a conversation. Presence is pull-subscribed (a client watches the users it shows), so a
// change costs work proportional to its watchers, not to the number of users or contacts.

export const userTopic = (user: UserId): string => `u:${user}`;
export const presenceTopic = (user: UserId): string => `p:${user}`;
/** Entries of a large group's log, for its members' sessions. */
export const groupTopic = (conv: ConversationId): string => `g:${conv}`;

export class Presence {
  private readonly lastSeen = new Map<UserId, number>();
  private readonly lastTyping = new Map<string, number>();
  /** Last presence published per user, for throttling and to skip non-changes. */
  private readonly published = new Map<UserId, { at: number; online: boolean }>();
  private readonly trailing = new Map<UserId, { cancel(): void }>();

  constructor(
    private readonly store: Store,
    private readonly bus: Bus<ServerFrame>,
    private readonly sessions: SessionDirectory,
    private readonly conversations: Conversations,
    private readonly clock: Clock,
    private readonly typingThrottleMs: number,
    private readonly presenceThrottleMs: number,
  ) {}

  connected(entry: SessionEntry): void {
    if (this.sessions.add(entry)) this.changed(entry.user);
  }

  disconnected(entry: SessionEntry): void {
    if (this.sessions.remove(entry)) {
      this.lastSeen.set(entry.user, this.clock.now());
      this.changed(entry.user);
    }
  }

  /** Publishes a user's presence at most once per throttle interval: a change within it is
   * published at its end, with the state as it is then (a flapping connection costs watchers
   * one frame per interval, and nothing if it ends where it started). */
  private changed(user: UserId): void {
    if (this.trailing.has(user)) return;
    const last = this.published.get(user);
    const wait = last === undefined ? 0 : last.at + this.presenceThrottleMs - this.clock.now();
    if (wait <= 0) return this.publishPresence(user);
    this.trailing.set(
      user,
      this.clock.setTimeout(() => {
        this.trailing.delete(user);
        this.publishPresence(user);
      }, wait),
    );
  }

  private publishPresence(user: UserId): void {
    const now = this.clock.now();
    const online = this.sessions.isOnline(user);
    const last = this.published.get(user);
    if (last?.online === online) return;
    if (this.published.size > 100_000) this.prunePublished(now);
    this.published.set(user, { at: now, online });
    this.bus.publish(presenceTopic(user), {
      t: "presence",
      user,
      online,
      lastSeen: online ? now : (this.lastSeen.get(user) ?? now),
    });
  }

  private prunePublished(now: number): void {
    for (const [user, p] of this.published) {
      if (!p.online && now - p.at >= this.presenceThrottleMs) this.published.delete(user);
    }
  }

  /** Of `users`, those who share at least one conversation with the caller. */
  async visible(p: Principal, users: UserId[]): Promise<UserId[]> {
    const contacts = new Set<UserId>();
    const large: ConversationId[] = [];
    for (const c of await this.store.listConversations(p.user)) {
      for (const m of c.members) contacts.add(m.user);
      if (c.large) large.push(c.id);
    }
    const asked = [...new Set(users)].filter((u) => u !== p.user);
    // A large group lists only some of its members: ask about the others one by one.
    for (const u of asked) {
      if (contacts.has(u)) continue;
      for (const conv of large) {
        if ((await this.store.getRole(conv, u)) === undefined) continue;
        contacts.add(u);
        break;
      }
    }
    return asked.filter((u) => contacts.has(u));
  }

  async current(user: UserId): Promise<PresenceFrame> {
    if (this.sessions.isOnline(user))
      return { t: "presence", user, online: true, lastSeen: this.clock.now() };
    let lastSeen = this.lastSeen.get(user);
    if (lastSeen === undefined) {
      lastSeen = 0;
      for (const d of await this.store.listDevices(user)) lastSeen = Math.max(lastSeen, d.lastSeenAt);
    }
    return { t: "presence", user, online: false, lastSeen };
  }

  /** Relays "typing" to the other members, at most once per throttle interval per user and
   * conversation. Silently ignored for non-members (no error: it would reveal existence). */
  /** `large`: the conversation is a large group the caller's session follows; the signal goes
   * to its topic once (every online member's session forwards it) instead of to each member. */
  async typing(p: Principal, conv: ConversationId, large = false): Promise<void> {
    const now = this.clock.now();
    const key = `${p.user}\u0000${conv}`;
    const last = this.lastTyping.get(key);
    if (last !== undefined && now - last < this.typingThrottleMs) return;
    this.lastTyping.set(key, now);
    if (this.lastTyping.size > 50_000) this.pruneTyping(now);
    if (large) {
      if ((await this.store.getRole(conv, p.user)) === undefined) return;
      return this.bus.publish(groupTopic(conv), { t: "typing", conv, user: p.user });
    }
    const c = await this.conversations.get(p, conv).catch(() => undefined);
    if (!c) return;
    // Large since the session last looked: its members are not all listed.
    if (c.large) return this.bus.publish(groupTopic(conv), { t: "typing", conv, user: p.user });
    for (const m of c.members) {
      if (m.user !== p.user) this.bus.publish(userTopic(m.user), { t: "typing", conv, user: p.user });
    }
  }

  private pruneTyping(now: number): void {
    for (const [key, at] of this.lastTyping)
      if (now - at >= this.typingThrottleMs) this.lastTyping.delete(key);
  }
}
