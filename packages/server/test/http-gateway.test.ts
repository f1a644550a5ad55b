import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Core } from "../src/core/core.ts";
import { HttpGateway } from "../src/gateway/http/http-gateway.ts";
import { newTestCore } from "./test-core.ts";
import { MemoryStore } from "../src/store/memory/memory-store.ts";

// The REST API over a real listening socket (fetch), against a real Core on a MemoryStore.

const newCore = (): Core => newTestCore();

interface Reply {
  status: number;
  headers: Headers;
  // JSON of many shapes; the tests read what they check.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}

const seqs = (r: Reply): number[] => (r.body.messages as Array<{ seq: number }>).map((m) => m.seq);

describe("HTTP gateway", () => {
  let core: Core;
  let gateway: HttpGateway;
  let base: string;

  async function call(
    method: string,
    path: string,
    opts: { token?: string; body?: unknown; raw?: string } = {},
  ): Promise<Reply> {
    const headers: Record<string, string> = {};
    if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
    let body: string | undefined;
    if (opts.raw !== undefined || opts.body !== undefined) {
      headers["content-type"] = "application/json";
      body = opts.raw ?? JSON.stringify(opts.body);
    }
    const res = await fetch(base + path, { method, headers, ...(body !== undefined ? { body } : {}) });
    const textBody = await res.text();
    return {
      status: res.status,
      headers: res.headers,
      body: textBody === "" ? undefined : JSON.parse(textBody),
    };
  }

  async function account(name: string): Promise<{ id: string; token: string; device: string }> {
    const reg = await call("POST", "/v1/register", { body: { name, password: `password-${name}` } });
    expect(reg.status).toBe(201);
    const login = await call("POST", "/v1/login", {
      body: { name, password: `password-${name}`, device: "test" },
    });
    expect(login.status).toBe(200);
    return { id: reg.body.id, token: login.body.token, device: login.body.device };
  }

  function expectError(r: Reply, status: number, code: string): void {
    expect(r.status, JSON.stringify(r.body)).toBe(status);
    expect(r.body.error.code).toBe(code);
    expect(typeof r.body.error.message).toBe("string");
    expect(typeof r.body.error.retry).toBe("boolean");
  }

  beforeAll(async () => {
    // Groups of 4 become large (read diffusion): one test below uses one; the others stay below.
    core = newTestCore({ options: { largeGroupMembers: 4 } });
    gateway = new HttpGateway(core, { bodyLimit: 64 * 1024 });
    const port = await gateway.listen(0, "127.0.0.1");
    base = `http://127.0.0.1:${port}`;
  });

  afterAll(async () => {
    await core.shutdown();
    await gateway.close();
  });

  it("answers /healthz", async () => {
    const r = await call("GET", "/healthz");
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ ok: true });
  });

  it("registers and logs in", async () => {
    const reg = await call("POST", "/v1/register", { body: { name: "dora", password: "password-dora" } });
    expect(reg.status).toBe(201);
    expect(reg.body).toEqual({ id: expect.any(String), name: "dora" });
    const login = await call("POST", "/v1/login", {
      body: { name: "dora", password: "password-dora", device: "cli" },
    });
    expect(login.status).toBe(200);
    expect(login.body).toEqual({
      token: expect.any(String),
      user: reg.body.id,
      device: expect.any(String),
      expiresAt: expect.any(Number),
    });
    expectError(
      await call("POST", "/v1/register", { body: { name: "DORA", password: "password-x" } }),
      409,
      "E_CONFLICT",
    );
    expectError(
      await call("POST", "/v1/login", { body: { name: "dora", password: "wrong-password", device: "cli" } }),
      401,
      "E_BAD_CREDENTIALS",
    );
  });

  it("refuses missing, mistyped and out-of-range fields with 400 E_INVALID", async () => {
    expectError(await call("POST", "/v1/register", { body: { name: "erin" } }), 400, "E_INVALID");
    expectError(
      await call("POST", "/v1/register", { body: { name: 5, password: "password-x" } }),
      400,
      "E_INVALID",
    );
    expectError(
      await call("POST", "/v1/register", { body: { name: "a b", password: "password-x" } }),
      400,
      "E_INVALID",
    );
    expectError(
      await call("POST", "/v1/register", { body: { name: "erin", password: "short" } }),
      400,
      "E_INVALID",
    );
    expectError(
      await call("POST", "/v1/login", { body: { name: "erin", password: "password-x" } }),
      400,
      "E_INVALID",
    );
    expectError(await call("POST", "/v1/register", { raw: "{not json" }), 400, "E_INVALID");
  });

  it("refuses a body above the limit with 413", async () => {
    const r = await call("POST", "/v1/register", { body: { name: "x", password: "p".repeat(70 * 1024) } });
    expectError(r, 413, "E_FRAME_TOO_LARGE");
  });

  it("requires a valid bearer token", async () => {
    const none = await call("GET", "/v1/conversations");
    expectError(none, 401, "E_TOKEN_INVALID");
    expect(none.headers.get("www-authenticate")).toBe("Bearer");
    expectError(await call("GET", "/v1/conversations", { token: "forged" }), 401, "E_TOKEN_INVALID");
  });

  it("answers unknown routes with 404 E_NOT_FOUND", async () => {
    expectError(await call("GET", "/v1/nothing-here"), 404, "E_NOT_FOUND");
    expectError(await call("DELETE", "/healthz"), 404, "E_NOT_FOUND");
  });

  it("runs conversations and messages end to end", async () => {
    const a = await account("alice");
    const b = await account("bob");
    const c = await account("carol");

    const found = await call("GET", "/v1/users/bob", { token: a.token });
    expect(found.body).toEqual({ id: b.id, name: "bob" });
    expectError(await call("GET", "/v1/users/nobody", { token: a.token }), 404, "E_NOT_FOUND");

    const direct = await call("POST", "/v1/conversations", {
      token: a.token,
      body: { kind: "direct", user: b.id },
    });
    expect(direct.status).toBe(201);
    expect(direct.body.kind).toBe("direct");
    const again = await call("POST", "/v1/conversations", {
      token: b.token,
      body: { kind: "direct", user: a.id },
    });
    expect(again.body.id).toBe(direct.body.id);
    const conv = direct.body.id as string;

    const body = Buffer.from("hello, bob").toString("base64");
    const sent = await call("POST", `/v1/conversations/${conv}/messages`, {
      token: a.token,
      body: { cid: "m1", type: "text/plain", body },
    });
    expect(sent.status).toBe(201);
    expect(sent.body).toEqual({ seq: 1, ts: expect.any(Number), duplicate: false });
    const resent = await call("POST", `/v1/conversations/${conv}/messages`, {
      token: a.token,
      body: { cid: "m1", type: "text/plain", body },
    });
    expect(resent.status).toBe(200);
    expect(resent.body).toEqual({ seq: 1, ts: sent.body.ts, duplicate: true });
    await call("POST", `/v1/conversations/${conv}/messages`, {
      token: b.token,
      body: { cid: "m2", type: "text/plain", body: Buffer.from("hi").toString("base64"), replyTo: 1 },
    });

    const page = await call("GET", `/v1/conversations/${conv}/messages?limit=10`, { token: b.token });
    expect(page.status).toBe(200);
    expect(page.body.more).toBe(false);
    expect(seqs(page)).toEqual([1, 2]);
    expect(Buffer.from(page.body.messages[0].body as string, "base64").toString()).toBe("hello, bob");
    expect(page.body.messages[1].replyTo).toBe(1);
    const after = await call("GET", `/v1/conversations/${conv}/messages?after=1`, { token: a.token });
    expect(seqs(after)).toEqual([2]);
    expectError(
      await call("GET", `/v1/conversations/${conv}/messages?limit=0`, { token: a.token }),
      400,
      "E_INVALID",
    );
    expectError(
      await call("GET", `/v1/conversations/${conv}/messages?before=x`, { token: a.token }),
      400,
      "E_INVALID",
    );

    // Not a member: the conversation does not exist, as far as carol can tell.
    expectError(await call("GET", `/v1/conversations/${conv}`, { token: c.token }), 404, "E_NOT_FOUND");
    expectError(
      await call("GET", `/v1/conversations/${conv}/messages`, { token: c.token }),
      404,
      "E_NOT_FOUND",
    );
    expectError(
      await call("POST", `/v1/conversations/${conv}/messages`, {
        token: c.token,
        body: { cid: "x", type: "text/plain", body: "" },
      }),
      404,
      "E_NOT_FOUND",
    );
    expectError(
      await call("POST", `/v1/conversations/${conv}/messages`, {
        token: a.token,
        body: { cid: "bad", type: "text/plain", body: "not base64!" },
      }),
      400,
      "E_INVALID",
    );

    const list = await call("GET", "/v1/conversations", { token: a.token });
    expect((list.body.conversations as Array<{ id: string }>).map((x) => x.id)).toContain(conv);
  });

  it("names users by id: unknown ids are left out, the token is required, 1-100 ids", async () => {
    const a = await account("lena");
    const b = await account("mick");
    const r = await call("GET", `/v1/users?ids=${b.id},u_nobody,${a.id},${b.id}`, { token: a.token });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      users: [
        { id: b.id, name: "mick" },
        { id: a.id, name: "lena" },
      ],
    });
    const none = await call("GET", "/v1/users?ids=u_nobody", { token: a.token });
    expect(none.body).toEqual({ users: [] });

    expectError(await call("GET", `/v1/users?ids=${b.id}`), 401, "E_TOKEN_INVALID");
    const many = Array.from({ length: 101 }, (_, i) => `u_${i}`).join(",");
    expectError(await call("GET", `/v1/users?ids=${many}`, { token: a.token }), 400, "E_INVALID");
    const hundred = Array.from({ length: 100 }, (_, i) => `u_${i}`).join(",");
    expect((await call("GET", `/v1/users?ids=${hundred},`, { token: a.token })).status).toBe(400);
    expect((await call("GET", `/v1/users?ids=${hundred}`, { token: a.token })).body).toEqual({ users: [] });
    for (const bad of ["", "a,,b", "x".repeat(65)]) {
      expectError(await call("GET", `/v1/users?ids=${bad}`, { token: a.token }), 400, "E_INVALID");
    }
    expectError(await call("GET", "/v1/users", { token: a.token }), 400, "E_INVALID");
  });

  it("manages groups: create, rename, members, roles, leave", async () => {
    const a = await account("gina");
    const b = await account("hank");
    const c = await account("ivan");
    const created = await call("POST", "/v1/conversations", {
      token: a.token,
      body: { kind: "group", name: "team", members: [b.id] },
    });
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    expect(created.body.members).toHaveLength(2);

    const renamed = await call("PATCH", `/v1/conversations/${id}`, {
      token: a.token,
      body: { name: "squad" },
    });
    expect(renamed.body.name).toBe("squad");
    expectError(
      await call("PATCH", `/v1/conversations/${id}`, { token: b.token, body: { name: "mine" } }),
      403,
      "E_FORBIDDEN",
    );

    const added = await call("POST", `/v1/conversations/${id}/members`, {
      token: a.token,
      body: { users: [c.id] },
    });
    expect(added.body.members).toHaveLength(3);
    expectError(
      await call("POST", `/v1/conversations/${id}/members`, { token: a.token, body: { users: [] } }),
      400,
      "E_INVALID",
    );

    const promoted = await call("PUT", `/v1/conversations/${id}/members/${b.id}/role`, {
      token: a.token,
      body: { role: "admin" },
    });
    const members = promoted.body.members as Array<{ user: string; role: string }>;
    expect(members.find((m) => m.user === b.id)?.role).toBe("admin");
    expectError(
      await call("PUT", `/v1/conversations/${id}/members/${b.id}/role`, {
        token: a.token,
        body: { role: "king" },
      }),
      400,
      "E_INVALID",
    );

    const removed = await call("DELETE", `/v1/conversations/${id}/members/${c.id}`, { token: a.token });
    expect(removed.status).toBe(200);
    expect(removed.body.members).toHaveLength(2);
    const left = await call("DELETE", `/v1/conversations/${id}/members/${b.id}`, { token: b.token });
    expect(left.status).toBe(204);
    expectError(await call("GET", `/v1/conversations/${id}`, { token: b.token }), 404, "E_NOT_FOUND");
  });

  it("a large group lists its owner, admins and the caller; its members are paged by user id", async () => {
    const [o, b, c, d] = await Promise.all(["lgo", "lgb", "lgc", "lgd"].map((n) => account(n)));
    const created = await call("POST", "/v1/conversations", {
      token: o!.token,
      body: { kind: "group", name: "big", members: [b!.id, c!.id, d!.id] },
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ large: true, memberCount: 4 });
    const id = created.body.id as string;
    const listed = (r: Reply): string[] => (r.body.members as Array<{ user: string }>).map((m) => m.user);
    expect(listed(created)).toEqual([o!.id]);
    // A plain member sees the owner and itself, with its own marks.
    const forB = await call("GET", `/v1/conversations/${id}`, { token: b!.token });
    expect(forB.body.memberCount).toBe(4);
    expect(listed(forB)).toEqual([o!.id, b!.id]);
    expect(forB.body.members[1]).toEqual({ user: b!.id, role: "member", delivered: 0, read: 0 });
    const list = await call("GET", "/v1/conversations", { token: c!.token });
    expect(listed({ ...list, body: list.body.conversations[0] })).toEqual([o!.id, c!.id]);

    const everyone = [o!.id, b!.id, c!.id, d!.id].sort();
    const page1 = await call("GET", `/v1/conversations/${id}/members?limit=3`, { token: d!.token });
    expect(page1.status).toBe(200);
    expect(page1.body.more).toBe(true);
    expect(listed(page1)).toEqual(everyone.slice(0, 3));
    const after = encodeURIComponent(everyone[2]!);
    const page2 = await call("GET", `/v1/conversations/${id}/members?limit=3&after=${after}`, {
      token: d!.token,
    });
    expect(page2.body).toMatchObject({ more: false });
    expect(listed(page2)).toEqual(everyone.slice(3));
    expect(
      (await call("GET", `/v1/conversations/${id}/members`, { token: d!.token })).body.members,
    ).toHaveLength(4);
    expectError(
      await call("GET", `/v1/conversations/${id}/members?limit=0`, { token: d!.token }),
      400,
      "E_INVALID",
    );
    expectError(
      await call("GET", `/v1/conversations/${id}/members?limit=1001`, { token: d!.token }),
      400,
      "E_INVALID",
    );
    const outsider = await account("lgx");
    expectError(
      await call("GET", `/v1/conversations/${id}/members`, { token: outsider.token }),
      404,
      "E_NOT_FOUND",
    );
    expectError(await call("GET", `/v1/conversations/${id}/members`), 401, "E_TOKEN_INVALID");

    // Promoted, c is listed for everyone; the reply to the owner does not list plain members.
    const promoted = await call("PUT", `/v1/conversations/${id}/members/${c!.id}/role`, {
      token: o!.token,
      body: { role: "admin" },
    });
    expect(listed(promoted)).toEqual([o!.id, c!.id]);
    // The admin removes a plain member who is not in its list: looked up, not refused.
    const removed = await call("DELETE", `/v1/conversations/${id}/members/${d!.id}`, { token: c!.token });
    expect(removed.status).toBe(200);
    expect(removed.body.memberCount).toBe(3);
    expectError(
      await call("DELETE", `/v1/conversations/${id}/members/${d!.id}`, { token: c!.token }),
      404,
      "E_NOT_FOUND",
    );
    expectError(
      await call("DELETE", `/v1/conversations/${id}/members/${o!.id}`, { token: c!.token }),
      403,
      "E_FORBIDDEN",
    );
  });

  it("lists and revokes devices; logout revokes the token", async () => {
    const a = await account("judy");
    const second = await call("POST", "/v1/login", {
      body: { name: "judy", password: "password-judy", device: "phone" },
    });
    const devices = await call("GET", "/v1/devices", { token: a.token });
    expect(devices.body.devices).toHaveLength(2);
    const list = devices.body.devices as Array<{ id: string; current: boolean }>;
    expect(list.find((d) => d.current)?.id).toBe(a.device);

    const revoked = await call("DELETE", `/v1/devices/${second.body.device}`, { token: a.token });
    expect(revoked.status).toBe(204);
    expectError(await call("GET", "/v1/devices", { token: second.body.token }), 401, "E_TOKEN_INVALID");
    expectError(
      await call("DELETE", `/v1/devices/${second.body.device}`, { token: a.token }),
      404,
      "E_NOT_FOUND",
    );

    const out = await call("POST", "/v1/logout", { token: a.token });
    expect(out.status).toBe(204);
    expectError(await call("GET", "/v1/devices", { token: a.token }), 401, "E_TOKEN_INVALID");
  });

  it("publishes an OpenAPI document listing every route", async () => {
    const r = await call("GET", "/openapi.json");
    expect(r.status).toBe(200);
    expect(r.body.openapi).toMatch(/^3\./);
    const paths = Object.keys(r.body.paths as object);
    for (const p of [
      "/healthz",
      "/v1/register",
      "/v1/login",
      "/v1/logout",
      "/v1/devices",
      "/v1/devices/{id}",
      "/v1/users",
      "/v1/users/{name}",
      "/v1/conversations",
      "/v1/conversations/{id}",
      "/v1/conversations/{id}/members",
      "/v1/conversations/{id}/members/{user}",
      "/v1/conversations/{id}/members/{user}/role",
      "/v1/conversations/{id}/messages",
    ]) {
      expect(paths).toContain(p);
    }
    expect(paths).not.toContain("/openapi.json");
    expect(r.body.paths["/v1/conversations/{id}/messages"].post.security).toEqual([{ bearer: [] }]);
    expect(r.body.components.securitySchemes.bearer).toEqual({ type: "http", scheme: "bearer" });
  });
});

describe("HTTP gateway on a failing store", () => {
  it("answers 500 E_INTERNAL without leaking the cause", async () => {
    const core = newCore();
    await core.register("kim", "password-kim");
    const { token } = await core.login("kim", "password-kim", "x");
    const gateway = new HttpGateway(core);
    const port = await gateway.listen(0, "127.0.0.1");
    // A closed store rejects every call with a plain Error: the kind of failure nobody expects.
    await core.shutdown();
    const res = await fetch(`http://127.0.0.1:${port}/v1/conversations`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(res.status).toBe(500);
    const body = (await res.json()) as { error: { code: string; message: string; retry: boolean } };
    expect(body).toEqual({ error: { code: "E_INTERNAL", message: "unexpected server error", retry: true } });
    await gateway.close();
  });
});

describe("HTTP gateway while stopping", () => {
  it("answers 503 E_SHUTTING_DOWN with Retry-After once close() has begun", async () => {
    const core = newCore();
    const gateway = new HttpGateway(core);
    await gateway.listen(0, "127.0.0.1");
    const closed = gateway.close();
    // inject() reaches the app without a socket: what a request on a kept-alive connection sees.
    const r = await gateway.app.inject({ method: "GET", url: "/healthz" });
    expect(r.statusCode).toBe(503);
    expect(r.headers["retry-after"]).toBe("1");
    expect(r.json()).toEqual({
      error: { code: "E_SHUTTING_DOWN", message: expect.any(String), retry: true, retryAfterMs: 1000 },
    });
    await closed;
    await core.shutdown();
  });
});

describe("HTTP gateway: requests in progress when stopping", () => {
  it("requestsSettled() waits for a request in progress, which is answered normally", async () => {
    class SlowList extends MemoryStore {
      release: (() => void) | undefined;
      override async listConversations(user: string) {
        await new Promise<void>((resolve) => (this.release = resolve));
        return super.listConversations(user);
      }
    }
    const store = new SlowList();
    const core = newTestCore({ store });
    await core.register("kim", "password-kim");
    const { token } = await core.login("kim", "password-kim", "x");
    const gateway = new HttpGateway(core);
    const port = await gateway.listen(0, "127.0.0.1");
    expect(await gateway.requestsSettled()).toBeUndefined(); // nothing in progress
    const inProgress = fetch(`http://127.0.0.1:${port}/v1/conversations`, {
      headers: { authorization: `Bearer ${token}` },
    });
    for (let i = 0; i < 500 && !store.release; i++) await new Promise((r) => setTimeout(r, 2));
    expect(store.release).toBeDefined();
    const closed = gateway.close();
    let settled = false;
    const settling = gateway.requestsSettled().then(() => (settled = true));
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(settled).toBe(false);
    store.release!();
    const res = await inProgress;
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ conversations: [] });
    await settling;
    expect(settled).toBe(true);
    await closed;
    await core.shutdown();
  });
});
