import { ParleyError } from "@parley/protocol";
import type { Conversation, ConversationId, Role, UserId } from "@parley/protocol";
import type { Principal } from "./api.ts";
import { newId } from "./ids.ts";
import type { CoreOptions } from "./options.ts";
import type { Clock } from "./ports/clock.ts";
import type { LogUpdate, Store } from "./ports/store.ts";

// Conversations and membership, with authorization. A non-member gets E_NOT_FOUND for anything
// about a conversation, exactly as if it did not exist, so membership cannot be probed. A member
// whose role does not allow an operation gets E_FORBIDDEN.
//
// Roles: the owner can do everything (rename, add, remove anyone, set roles); an admin can rename,
// add, and remove plain members; a member can only leave. When the owner leaves, the longest-
// standing admin (else member) becomes owner.

const GROUP_NAME_MAX = 128;

export class Conversations {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly options: CoreOptions,
    private readonly publish: (updates: LogUpdate[]) => void,
  ) {}

  /** The direct conversation between the caller and `other`, created on first use. */
  async createDirect(p: Principal, other: UserId): Promise<Conversation> {
    if (typeof other !== "string" || other === p.user) {
      throw new ParleyError("E_INVALID", "a direct conversation needs another user");
    }
    if (!(await this.store.getUser(other))) throw new ParleyError("E_NOT_FOUND", "no such user");
    const [a, b] = [p.user, other].sort() as [UserId, UserId];
    const result = await this.store.createConversation({
      id: newId("c"),
      kind: "direct",
      name: "",
      createdAt: this.clock.now(),
      directKey: `${a}:${b}`,
      members: [
        { user: a, role: "member" },
        { user: b, role: "member" },
      ],
    });
    this.publish(result.updates);
    return result.conv;
  }

  async createGroup(p: Principal, name: string, members: UserId[]): Promise<Conversation> {
    checkName(name);
    if (!Array.isArray(members)) throw new ParleyError("E_INVALID", "members must be a list of user ids");
    const others = [...new Set(members)].filter((u) => u !== p.user);
    if (others.length + 1 > this.options.maxGroupMembers) {
      throw new ParleyError("E_INVALID", `a group has at most ${this.options.maxGroupMembers} members`);
    }
    await this.requireUsers(others);
    const result = await this.store.createConversation({
      id: newId("c"),
      kind: "group",
      name,
      createdAt: this.clock.now(),
      members: [
        { user: p.user, role: "owner" },
        ...others.map((user): { user: UserId; role: Role } => ({ user, role: "member" })),
      ],
    });
    this.publish(result.updates);
    return this.largeIfBig(result.conv);
  }

  listConversations(p: Principal): Promise<Conversation[]> {
    return this.store.listConversations(p.user);
  }

  /** The conversation if the caller is a member; E_NOT_FOUND otherwise. */
  async get(p: Principal, conv: ConversationId): Promise<Conversation> {
    const c = typeof conv === "string" ? await this.store.getConversation(conv) : undefined;
    if (!c || !c.members.some((m) => m.user === p.user))
      throw new ParleyError("E_NOT_FOUND", "no such conversation");
    return c;
  }

  /** The caller's role in a conversation; E_NOT_FOUND if not a member. */
  async requireRole(p: Principal, conv: ConversationId): Promise<Role> {
    const role = typeof conv === "string" ? await this.store.getRole(conv, p.user) : undefined;
    if (!role) throw new ParleyError("E_NOT_FOUND", "no such conversation");
    return role;
  }

  async rename(p: Principal, conv: ConversationId, name: string): Promise<Conversation> {
    checkName(name);
    const c = await this.get(p, conv);
    requireGroup(c);
    requireAtLeast(roleOf(c, p.user), "admin");
    return this.change({ kind: "rename", conv, name });
  }

  async addMembers(p: Principal, conv: ConversationId, users: UserId[]): Promise<Conversation> {
    if (!Array.isArray(users) || users.length === 0)
      throw new ParleyError("E_INVALID", "users must be a non-empty list");
    const c = await this.get(p, conv);
    requireGroup(c);
    requireAtLeast(roleOf(c, p.user), "admin");
    const fresh = [...new Set(users)].filter((u) => !c.members.some((m) => m.user === u));
    if (c.members.length + fresh.length > this.options.maxGroupMembers) {
      throw new ParleyError("E_INVALID", `a group has at most ${this.options.maxGroupMembers} members`);
    }
    if (fresh.length === 0) return c;
    await this.requireUsers(fresh);
    return this.largeIfBig(await this.change({ kind: "add", conv, users: fresh }));
  }

  /** Removes `user`; when `user` is the caller this is "leave" and returns undefined. */
  async removeMember(p: Principal, conv: ConversationId, user: UserId): Promise<Conversation | undefined> {
    const c = await this.get(p, conv);
    requireGroup(c);
    if (user === p.user) {
      await this.leave(c, p.user);
      return undefined;
    }
    const mine = roleOf(c, p.user);
    const target = c.members.find((m) => m.user === user);
    if (!target) throw new ParleyError("E_NOT_FOUND", "not a member");
    // Owner removes anyone; admin removes plain members only.
    if (!(mine === "owner" || (mine === "admin" && target.role === "member")))
      throw new ParleyError("E_FORBIDDEN");
    return this.change({ kind: "remove", conv, user });
  }

  async setRole(p: Principal, conv: ConversationId, user: UserId, role: Role): Promise<Conversation> {
    if (role !== "admin" && role !== "member")
      throw new ParleyError("E_INVALID", "role must be admin or member");
    const c = await this.get(p, conv);
    requireGroup(c);
    if (roleOf(c, p.user) !== "owner") throw new ParleyError("E_FORBIDDEN");
    if (user === p.user) throw new ParleyError("E_INVALID", "the owner cannot change their own role");
    if (!c.members.some((m) => m.user === user)) throw new ParleyError("E_NOT_FOUND", "not a member");
    return this.change({ kind: "role", conv, user, role });
  }

  private async leave(c: Conversation, user: UserId): Promise<void> {
    // The heir's promotion and the removal are one change: one transaction.
    const heir =
      roleOf(c, user) === "owner"
        ? (c.members.find((m) => m.role === "admin") ?? c.members.find((m) => m.user !== user))
        : undefined;
    await this.change({ kind: "remove", conv: c.id, user, ...(heir ? { heir: heir.user } : {}) });
  }

  /** A group that has reached largeGroupMembers becomes large (a change of its own, after the
   * one that made it grow): from then on its changes are entries of its own log. */
  private async largeIfBig(c: Conversation): Promise<Conversation> {
    if (c.kind !== "group" || c.large || c.members.length < this.options.largeGroupMembers) return c;
    return this.change({ kind: "large", conv: c.id });
  }

  private async change(change: Parameters<Store["changeConversation"]>[0]): Promise<Conversation> {
    const result = await this.store.changeConversation(change);
    this.publish(result.updates);
    return result.conv;
  }

  private async requireUsers(users: UserId[]): Promise<void> {
    for (const u of users) {
      if (typeof u !== "string" || !(await this.store.getUser(u)))
        throw new ParleyError("E_NOT_FOUND", `no such user: ${String(u)}`);
    }
  }
}

const RANK: Record<Role, number> = { member: 0, admin: 1, owner: 2 };

function roleOf(c: Conversation, user: UserId): Role {
  return c.members.find((m) => m.user === user)?.role ?? "member";
}

function requireAtLeast(role: Role, needed: Role): void {
  if (RANK[role] < RANK[needed]) throw new ParleyError("E_FORBIDDEN");
}

function requireGroup(c: Conversation): void {
  if (c.kind !== "group") throw new ParleyError("E_INVALID", "direct conversations have fixed members");
}

function checkName(name: string): void {
  if (typeof name !== "string" || name.trim().length === 0 || name.length > GROUP_NAME_MAX) {
    throw new ParleyError("E_INVALID", `group name must be 1-${GROUP_NAME_MAX} characters`);
  }
}
