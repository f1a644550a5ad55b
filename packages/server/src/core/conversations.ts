import { ParleyError } from "@parley/protocol";
import type { Conversation, ConversationId, Member, Role, UserId } from "@parley/protocol";
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
//
// A large group's state lists only its owner and admins (Store.getConversation): the caller's
// own membership, and anyone else's, is looked up by itself, so no operation here reads all the
// members of a large group.

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
      // Large from the start: no member's log ever gets the whole list.
      ...(others.length + 1 >= this.options.largeGroupMembers ? { large: true as const } : {}),
    });
    this.publish(result.updates);
    return result.conv;
  }

  listConversations(p: Principal): Promise<Conversation[]> {
    return this.store.listConversations(p.user);
  }

  /** The conversation if the caller is a member (a large group's lists the caller after its
   * owner and admins); E_NOT_FOUND otherwise. */
  async get(p: Principal, conv: ConversationId): Promise<Conversation> {
    const { c, me } = await this.access(p, conv);
    return withViewer(c, me);
  }

  /** A page of the members of a conversation the caller is in, ordered by user id. */
  async members(
    p: Principal,
    conv: ConversationId,
    after: UserId | undefined,
    limit: number,
  ): Promise<Member[]> {
    if (after !== undefined && typeof after !== "string")
      throw new ParleyError("E_INVALID", "after must be a user id");
    if (!Number.isInteger(limit) || limit < 1 || limit > MEMBERS_PAGE_MAX)
      throw new ParleyError("E_INVALID", `limit must be 1-${MEMBERS_PAGE_MAX}`);
    const { c } = await this.access(p, conv);
    return this.store.listMembers(c.id, after, limit);
  }

  /** The caller's role in a conversation; E_NOT_FOUND if not a member. */
  async requireRole(p: Principal, conv: ConversationId): Promise<Role> {
    const role = typeof conv === "string" ? await this.store.getRole(conv, p.user) : undefined;
    if (!role) throw new ParleyError("E_NOT_FOUND", "no such conversation");
    return role;
  }

  async rename(p: Principal, conv: ConversationId, name: string): Promise<Conversation> {
    checkName(name);
    const { c, me } = await this.access(p, conv);
    requireGroup(c);
    requireAtLeast(me.role, "admin");
    return withViewer(await this.change({ kind: "rename", conv, name }), me);
  }

  async addMembers(p: Principal, conv: ConversationId, users: UserId[]): Promise<Conversation> {
    if (!Array.isArray(users) || users.length === 0)
      throw new ParleyError("E_INVALID", "users must be a non-empty list");
    const { c, me } = await this.access(p, conv);
    requireGroup(c);
    requireAtLeast(me.role, "admin");
    const fresh: UserId[] = [];
    for (const u of new Set(users)) if (!(await this.memberOf(c, u))) fresh.push(u);
    if ((c.memberCount ?? c.members.length) + fresh.length > this.options.maxGroupMembers) {
      throw new ParleyError("E_INVALID", `a group has at most ${this.options.maxGroupMembers} members`);
    }
    if (fresh.length === 0) return withViewer(c, me);
    await this.requireUsers(fresh);
    return withViewer(await this.largeIfBig(await this.change({ kind: "add", conv, users: fresh })), me);
  }

  /** Removes `user`; when `user` is the caller this is "leave" and returns undefined. */
  async removeMember(p: Principal, conv: ConversationId, user: UserId): Promise<Conversation | undefined> {
    const { c, me } = await this.access(p, conv);
    requireGroup(c);
    if (user === p.user) {
      await this.leave(c, me);
      return undefined;
    }
    const target = await this.memberOf(c, user);
    if (!target) throw new ParleyError("E_NOT_FOUND", "not a member");
    // Owner removes anyone; admin removes plain members only.
    if (!(me.role === "owner" || (me.role === "admin" && target.role === "member")))
      throw new ParleyError("E_FORBIDDEN");
    return withViewer(await this.change({ kind: "remove", conv, user }), me);
  }

  async setRole(p: Principal, conv: ConversationId, user: UserId, role: Role): Promise<Conversation> {
    if (role !== "admin" && role !== "member")
      throw new ParleyError("E_INVALID", "role must be admin or member");
    const { c, me } = await this.access(p, conv);
    requireGroup(c);
    if (me.role !== "owner") throw new ParleyError("E_FORBIDDEN");
    if (user === p.user) throw new ParleyError("E_INVALID", "the owner cannot change their own role");
    if (!(await this.memberOf(c, user))) throw new ParleyError("E_NOT_FOUND", "not a member");
    return withViewer(await this.change({ kind: "role", conv, user, role }), me);
  }

  /** The conversation and the caller's membership; E_NOT_FOUND if not a member. */
  private async access(p: Principal, conv: ConversationId): Promise<{ c: Conversation; me: Member }> {
    const c = typeof conv === "string" ? await this.store.getConversation(conv) : undefined;
    const me = c && (await this.memberOf(c, p.user));
    if (!c || !me) throw new ParleyError("E_NOT_FOUND", "no such conversation");
    return { c, me };
  }

  /** `user`'s membership in `c`: from its list, or for a large group (which lists only its owner
   * and admins) from the store. */
  private async memberOf(c: Conversation, user: UserId): Promise<Member | undefined> {
    const listed = c.members.find((m) => m.user === user);
    if (listed || !c.large || typeof user !== "string") return listed;
    return this.store.getMember(c.id, user);
  }

  private async leave(c: Conversation, me: Member): Promise<void> {
    // The heir's promotion and the removal are one change: one transaction. c.members lists
    // every admin in join order, even in a large group; the longest-standing member otherwise.
    const heir =
      me.role !== "owner"
        ? undefined
        : (c.members.find((m) => m.role === "admin")?.user ??
          (c.large
            ? await this.store.eldestMember(c.id, me.user)
            : c.members.find((m) => m.user !== me.user)?.user));
    await this.change({ kind: "remove", conv: c.id, user: me.user, ...(heir ? { heir } : {}) });
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

/** Most members a page of `members` returns. */
export const MEMBERS_PAGE_MAX = 1000;

/** A large group's state lists only its owner and admins: as a reply to `me`, list `me` too (its
 * marks are the caller's own), after them. */
function withViewer(c: Conversation, me: Member): Conversation {
  if (!c.large || c.members.some((m) => m.user === me.user)) return c;
  return { ...c, members: [...c.members, me] };
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
