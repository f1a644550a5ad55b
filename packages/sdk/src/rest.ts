import type { Conversation, ConversationId, Member, Message, UserId } from "@parley/protocol";
import { base64ToBytes } from "./base64.ts";
import { ClientError, serverError } from "./client-error.ts";

// The REST API (accounts, conversations, history) over the global fetch. Errors come back as
// {"error": {code, message, retry, retryAfterMs?}} and are thrown as ParleyError; anything that
// is not the API's JSON is a ClientError E_HTTP.

export type Fetch = typeof fetch;

export interface UserInfo {
  id: UserId;
  name: string;
}

export interface LoginResult {
  token: string;
  user: UserId;
  device: string;
  expiresAt: number;
}

export interface HistoryQuery {
  /** Exclusive upper bound on seq; the newest page when neither bound is given. */
  before?: number;
  /** Exclusive lower bound on seq; pages forwards. */
  after?: number;
  limit?: number;
}

export interface MemberPage {
  /** Ordered by user id. */
  members: Member[];
  /** Another page may follow: ask again with `after` = the last member's user id. */
  more: boolean;
}

export interface HistoryPage {
  /** Ascending seq order. */
  messages: Message[];
  more: boolean;
}

/** The server's limit on ids per `GET /v1/users`. */
const USERS_PER_REQUEST = 100;

export class RestApi {
  constructor(
    private readonly baseUrl: string,
    private readonly token: string | undefined,
    private readonly fetchFn: Fetch = globalThis.fetch,
  ) {}

  register(name: string, password: string): Promise<UserInfo> {
    return this.call<UserInfo>("POST", "/v1/register", { name, password });
  }

  async login(name: string, password: string, device: string): Promise<LoginResult> {
    const r = await this.call<{
      token: string;
      user: UserId | UserInfo;
      device: string | { id: string };
      expiresAt: number;
    }>("POST", "/v1/login", { name, password, device });
    return {
      token: r.token,
      user: typeof r.user === "string" ? r.user : r.user.id,
      device: typeof r.device === "string" ? r.device : r.device.id,
      expiresAt: r.expiresAt,
    };
  }

  async logout(): Promise<void> {
    await this.call<undefined>("POST", "/v1/logout");
  }

  findUser(name: string): Promise<UserInfo> {
    return this.call<UserInfo>("GET", `/v1/users/${encodeURIComponent(name)}`);
  }

  /** The users among `ids` that exist (unknown ids are left out), asking at most
   * USERS_PER_REQUEST ids per request; no request for an empty list. */
  async users(ids: readonly UserId[]): Promise<UserInfo[]> {
    const unique = [...new Set(ids)];
    const found: UserInfo[] = [];
    for (let i = 0; i < unique.length; i += USERS_PER_REQUEST) {
      const chunk = unique.slice(i, i + USERS_PER_REQUEST).map(encodeURIComponent);
      const r = await this.call<{ users: UserInfo[] }>("GET", `/v1/users?ids=${chunk.join(",")}`);
      found.push(...r.users);
    }
    return found;
  }

  async conversations(): Promise<Conversation[]> {
    const r = await this.call<Conversation[] | { conversations: Conversation[] }>("GET", "/v1/conversations");
    return Array.isArray(r) ? r : r.conversations;
  }

  createDirect(user: UserId): Promise<Conversation> {
    return this.call<Conversation>("POST", "/v1/conversations", { kind: "direct", user });
  }

  createGroup(name: string, members: UserId[]): Promise<Conversation> {
    return this.call<Conversation>("POST", "/v1/conversations", { kind: "group", name, members });
  }

  addMembers(conv: ConversationId, users: UserId[]): Promise<Conversation> {
    return this.call<Conversation>("POST", `/v1/conversations/${encodeURIComponent(conv)}/members`, {
      users,
    });
  }

  members(conv: ConversationId, after?: UserId, limit?: number): Promise<MemberPage> {
    const params = new URLSearchParams();
    if (after !== undefined) params.set("after", after);
    if (limit !== undefined) params.set("limit", String(limit));
    const qs = params.size > 0 ? `?${params.toString()}` : "";
    return this.call<MemberPage>("GET", `/v1/conversations/${encodeURIComponent(conv)}/members${qs}`);
  }

  async removeMember(conv: ConversationId, user: UserId): Promise<void> {
    await this.call<unknown>(
      "DELETE",
      `/v1/conversations/${encodeURIComponent(conv)}/members/${encodeURIComponent(user)}`,
    );
  }

  async history(conv: ConversationId, query: HistoryQuery = {}): Promise<HistoryPage> {
    const params = new URLSearchParams();
    for (const key of ["before", "after", "limit"] as const) {
      const v = query[key];
      if (v !== undefined) params.set(key, String(v));
    }
    const qs = params.size > 0 ? `?${params.toString()}` : "";
    const r = await this.call<{ messages: Array<Omit<Message, "body"> & { body: string }>; more: boolean }>(
      "GET",
      `/v1/conversations/${encodeURIComponent(conv)}/messages${qs}`,
    );
    return { messages: r.messages.map((m) => ({ ...m, body: base64ToBytes(m.body) })), more: r.more };
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    // Concatenate rather than resolve: a base with a path (https://host/parley) keeps it.
    const url = `${this.baseUrl.replace(/\/+$/, "")}${path}`;
    const res = await this.fetchFn(url, {
      method,
      headers,
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    let json: unknown;
    try {
      json = text.length > 0 ? JSON.parse(text) : undefined;
    } catch (err) {
      throw new ClientError("E_HTTP", `${method} ${path}: HTTP ${res.status}, not JSON`, {
        cause: err,
        detail: res.status,
      });
    }
    const error = (
      json as { error?: { code?: unknown; message?: unknown; retryAfterMs?: unknown } } | undefined
    )?.error;
    if (error && typeof error.code === "string") {
      throw serverError({
        code: error.code,
        message: typeof error.message === "string" ? error.message : error.code,
        retryAfterMs: typeof error.retryAfterMs === "number" ? error.retryAfterMs : undefined,
      });
    }
    if (!res.ok)
      throw new ClientError("E_HTTP", `${method} ${path}: HTTP ${res.status}`, { detail: res.status });
    return json as T;
  }
}
