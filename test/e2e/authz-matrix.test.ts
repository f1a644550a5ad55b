import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClientFrameSchema, DISCONNECT, ERRORS } from "@parley/protocol";
import type { ClientFrame, LoggedUpdate, ServerFrame } from "@parley/protocol";
import { HttpGateway } from "../../packages/server/src/gateway/http/http-gateway.ts";
import {
  TapClient,
  WIRES,
  buildWorld,
  call,
  http,
  missingId,
  text,
  type Account,
  type HttpAnswer,
  type Received,
  type World,
} from "../helpers/authz-fixture.ts";

// Issue 3, "Bad input": every operation (send, history, sync, receipts, typing, presence,
// membership changes, edits/deletes/reactions, devices), tried by a non-member, a removed member,
// a revoked device, an expired token and a forged token, over every wire and over REST, is
// refused with the documented code (docs/errors.md, docs/rest.md) and changes nothing that anyone
// else can see. Two tables below list every client frame type and every HTTP route; the first
// test fails when the protocol or the route table grows an operation the tables do not cover.

// ------------------------------------------------------------------ the operations

/** What a refused operation is aimed at: a conversation, a message in it, a reaction there. */
interface Target {
  conv: string;
  seq: number;
  reaction: { seq: number; emoji: string };
  /** Users to watch. */
  users: string[];
  /** A valid token of someone else (a second hello must not switch identity). */
  otherToken: string;
  cid: string;
}

/** How a signed-in user who is not a member is answered. */
type FrameOutcome =
  /** `error` E_NOT_FOUND, the same bytes as for a conversation that does not exist. */
  | "not-found"
  /** No reply, and nothing reaches anyone (the conversation's members included). */
  | "silent"
  /** The caller's own update log: nothing of conversations they are not in. */
  | "own-log"
  /** `error` E_ALREADY_AUTHENTICATED; the connection keeps its identity. */
  | "already-authenticated"
  /** Answered (`pong`); concerns no conversation. */
  | "pong";

interface FrameCase {
  outsider: FrameOutcome;
  /** The frames of this operation aimed at `t` (request ids are set by the caller). */
  frames(t: Target): ClientFrame[];
}

/** Every client frame type. The key set is checked against the protocol's schema at run time and
 * against ClientFrame["t"] by the compiler. */
const FRAME_MATRIX: Record<ClientFrame["t"], FrameCase> = {
  hello: {
    outsider: "already-authenticated",
    frames: (t) => [{ t: "hello", versions: [1], token: t.otherToken }],
  },
  send: {
    outsider: "not-found",
    frames: (t) => [
      { t: "send", id: 0, conv: t.conv, cid: t.cid, type: "text/plain", body: text("let me in") },
    ],
  },
  ack: {
    outsider: "silent",
    frames: (t) => [{ t: "ack", convs: [{ conv: t.conv, seq: t.seq }] }],
  },
  sync: { outsider: "own-log", frames: () => [{ t: "sync", id: 0, cursor: 0 }] },
  history: {
    outsider: "not-found",
    frames: (t) => [
      { t: "history", id: 0, conv: t.conv },
      { t: "history", id: 0, conv: t.conv, after: 0, limit: 1000 },
    ],
  },
  receipt: {
    outsider: "not-found",
    frames: (t) => [
      { t: "receipt", id: 0, conv: t.conv, kind: "read", seq: t.seq },
      { t: "receipt", id: 0, conv: t.conv, kind: "delivered", seq: t.seq },
    ],
  },
  edit: {
    outsider: "not-found",
    frames: (t) => [
      { t: "edit", id: 0, conv: t.conv, seq: t.seq, type: "text/plain", body: text("defaced") },
    ],
  },
  delete: { outsider: "not-found", frames: (t) => [{ t: "delete", id: 0, conv: t.conv, seq: t.seq }] },
  react: {
    outsider: "not-found",
    frames: (t) => [
      { t: "react", id: 0, conv: t.conv, seq: t.seq, emoji: "👎", on: true },
      { t: "react", id: 0, conv: t.conv, seq: t.reaction.seq, emoji: t.reaction.emoji, on: false },
    ],
  },
  typing: { outsider: "silent", frames: (t) => [{ t: "typing", conv: t.conv }] },
  watch: { outsider: "silent", frames: (t) => [{ t: "watch", users: t.users }] },
  ping: { outsider: "pong", frames: () => [{ t: "ping", n: 7 }] },
  pong: { outsider: "silent", frames: () => [{ t: "pong", n: 7 }] },
};

/** What a REST route is aimed at. */
interface RestTarget extends Target {
  /** A user of the conversation other than the caller, and the caller. */
  member: string;
  self: Account;
  /** One of another user's devices. */
  device: string;
  otherName: string;
}

/** How a signed-in outsider is answered by a route. */
type RestOutcome =
  /** 404 E_NOT_FOUND, the same bytes as for an object that does not exist. */
  | "not-found"
  /** The caller's own data only (lists); or it acts on the caller's own device. */
  | "own-data"
  /** Documented as open to every signed-in user (docs/rest.md): user directory, creating a
   * conversation of one's own. Not refused, so not tried here with others' objects. */
  | "open-to-all"
  /** No token needed (health, description, accounts). */
  | "public";

interface RestCase {
  outsider: RestOutcome;
  /** The requests of this route aimed at `t`; omitted for routes never tried by outsiders. */
  requests?(t: RestTarget): Array<{ path: string; body?: unknown }>;
}

const conv = (t: RestTarget): string => `/v1/conversations/${t.conv}`;

/** Every HTTP route, keyed "METHOD /path" as fastify registers it (HEAD routes are the GET
 * routes' automatic twins and are tried with them). */
const REST_MATRIX: Record<string, RestCase> = {
  "GET /healthz": { outsider: "public" },
  "GET /openapi.json": { outsider: "public" },
  "POST /v1/register": { outsider: "public" },
  "POST /v1/login": { outsider: "public" },
  "POST /v1/logout": { outsider: "own-data", requests: () => [{ path: "/v1/logout" }] },
  "GET /v1/devices": { outsider: "own-data", requests: () => [{ path: "/v1/devices" }] },
  "DELETE /v1/devices/:id": {
    outsider: "not-found",
    requests: (t) => [{ path: `/v1/devices/${t.device}` }],
  },
  "GET /v1/users/:name": { outsider: "open-to-all", requests: (t) => [{ path: `/v1/users/${t.otherName}` }] },
  "GET /v1/users": { outsider: "open-to-all", requests: (t) => [{ path: `/v1/users?ids=${t.member}` }] },
  "GET /v1/conversations": { outsider: "own-data", requests: () => [{ path: "/v1/conversations" }] },
  "POST /v1/conversations": {
    outsider: "open-to-all",
    requests: (t) => [{ path: "/v1/conversations", body: { kind: "direct", user: t.member } }],
  },
  "GET /v1/conversations/:id": { outsider: "not-found", requests: (t) => [{ path: conv(t) }] },
  "PATCH /v1/conversations/:id": {
    outsider: "not-found",
    requests: (t) => [{ path: conv(t), body: { name: "hijacked" } }],
  },
  "GET /v1/conversations/:id/members": {
    outsider: "not-found",
    requests: (t) => [{ path: `${conv(t)}/members` }, { path: `${conv(t)}/members?limit=1000&after=u` }],
  },
  "POST /v1/conversations/:id/members": {
    outsider: "not-found",
    requests: (t) => [{ path: `${conv(t)}/members`, body: { users: [t.self.user] } }],
  },
  "DELETE /v1/conversations/:id/members/:user": {
    outsider: "not-found",
    requests: (t) => [
      { path: `${conv(t)}/members/${t.member}` },
      { path: `${conv(t)}/members/${t.self.user}` },
    ],
  },
  "PUT /v1/conversations/:id/members/:user/role": {
    outsider: "not-found",
    requests: (t) => [
      { path: `${conv(t)}/members/${t.self.user}/role`, body: { role: "admin" } },
      { path: `${conv(t)}/members/${t.member}/role`, body: { role: "member" } },
    ],
  },
  "GET /v1/conversations/:id/messages": {
    outsider: "not-found",
    requests: (t) => [{ path: `${conv(t)}/messages` }, { path: `${conv(t)}/messages?after=0&limit=1000` }],
  },
  "POST /v1/conversations/:id/messages": {
    outsider: "not-found",
    requests: (t) => [
      { path: `${conv(t)}/messages`, body: { cid: t.cid, type: "text/plain", body: "bGV0IG1lIGlu" } },
    ],
  },
};

const methodOf = (key: string): string => key.split(" ", 1)[0]!;
const pathOf = (key: string): string => key.slice(key.indexOf(" ") + 1);

// ------------------------------------------------------------------ helpers

const isTokenRoute = (key: string): boolean => REST_MATRIX[key]!.outsider !== "public";

/** The exact bytes of each frame (hex), to compare two answers. */
function bytesOf(rs: Received[]): string[] {
  return rs.map((r) => r.raw.toString("hex"));
}

/** A real token with one character changed: the right alphabet and length, but unknown. */
function tampered(token: string): string {
  const i = token.length >> 1;
  return token.slice(0, i) + (token[i] === "A" ? "B" : "A") + token.slice(i + 1);
}

interface Snapshot {
  heads: Record<string, number>;
  rest: Record<string, unknown>;
}

describe("authorization matrix", () => {
  let w: World;
  let missing: { conv: string; device: string };
  /** Members' live connections during the matrix: [owner, index of the first matrix frame]. */
  const observers: Array<{ who: Account; c: TapClient; from: number }> = [];
  let before: Snapshot;
  const actors: TapClient[] = [];

  /** What A and B can see: conversations, members and marks, complete history, devices, heads. */
  async function snapshot(): Promise<Snapshot> {
    const rest: Record<string, unknown> = {};
    for (const who of [w.a, w.b]) {
      const get = (path: string) => call<unknown>(w.base, "GET", path, who.token);
      rest[`${who.name} conversations`] = await get("/v1/conversations");
      rest[`${who.name} devices`] = await get("/v1/devices");
      for (const id of [w.group, w.direct]) {
        rest[`${who.name} ${id}`] = await get(`/v1/conversations/${id}`);
        rest[`${who.name} ${id} messages`] = await get(`/v1/conversations/${id}/messages?after=0&limit=1000`);
      }
    }
    const heads: Record<string, number> = {};
    for (const o of observers) {
      const synced = (await o.c.request({ t: "sync", id: 900, cursor: 0 })).frame;
      if (synced.t !== "synced" || synced.more) throw new Error(`sync: ${JSON.stringify(synced)}`);
      heads[o.who.name] = synced.head;
    }
    return { heads, rest };
  }

  beforeAll(async () => {
    w = await buildWorld();
    missing = { conv: missingId("c"), device: missingId("d") };
    // Members online on every wire, watching each other and the outsiders. B comes back online
    // first; A's set-up connection, which still watches B, sees that change published, so that
    // no presence change is still pending when the matrix starts.
    const aFrom = w.aLive.received.length;
    for (const wire of ["ws-json", "ws-binary"] as const) {
      const c = await TapClient.login(wire, w.ports, w.b.token);
      w.clients.push(c);
      observers.push({ who: w.b, c, from: 0 });
    }
    await w.aLive.waitFor((f) => f.t === "presence" && f.user === w.b.user && f.online, aFrom);
    observers.push({ who: w.a, c: w.aLive, from: 0 });
    // A's connection keeps the watch list it had before D's removal (B and D).
    for (const { who, c } of observers) {
      if (who === w.a) continue;
      const from = c.received.length;
      c.send({ t: "watch", users: [w.a.user, w.c.user, w.d.user] });
      await c.waitFor((f) => f.t === "presence" && f.user === w.a.user && f.online, from);
    }
    before = await snapshot();
    for (const o of observers) o.from = o.c.received.length;
  });

  afterAll(async () => {
    for (const a of actors) a.close();
    await w?.stop();
  });

  it("covers every client frame type and every HTTP route", async () => {
    const schemaTags = (ClientFrameSchema as unknown as { properties: { t: { enum: string[] } } }).properties
      .t.enum;
    expect(Object.keys(FRAME_MATRIX).sort()).toEqual([...schemaTags].sort());

    // The route table as fastify builds it (hidden routes too), from a gateway that never listens.
    const gateway = new HttpGateway(w.server.core);
    const routes: string[] = [];
    gateway.app.addHook("onRoute", (r) => {
      for (const m of [r.method].flat()) routes.push(`${m} ${r.url}`);
    });
    await gateway.app.ready();
    await gateway.close();
    const gets = routes.filter((r) => methodOf(r) === "GET").map(pathOf);
    const heads = routes.filter((r) => methodOf(r) === "HEAD").map(pathOf);
    expect(heads.sort()).toEqual([...gets].sort());
    expect(routes.filter((r) => methodOf(r) !== "HEAD").sort()).toEqual(Object.keys(REST_MATRIX).sort());

    // The OpenAPI document agrees: the same routes, and a bearer requirement exactly where the
    // matrix expects a token.
    const doc = JSON.parse((await http(w.base, "GET", "/openapi.json")).text) as {
      paths: Record<string, Record<string, { security?: unknown[] }>>;
    };
    const documented: Record<string, boolean> = {};
    for (const [path, ops] of Object.entries(doc.paths))
      for (const [method, op] of Object.entries(ops))
        documented[`${method.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ":$1")}`] =
          (op.security ?? []).length > 0;
    const expected = Object.fromEntries(
      Object.keys(REST_MATRIX)
        .filter((k) => k !== "GET /openapi.json")
        .map((k) => [k, isTokenRoute(k)]),
    );
    expect(documented).toEqual(expected);
  });

  // ---------------------------------------------------------------- signed in, not a member

  /** The targets of C (never a member) and D (removed), in the group and the direct conversation. */
  function targets(): Array<{ who: Account; label: string; t: Target }> {
    const out: Array<{ who: Account; label: string; t: Target }> = [];
    for (const who of [w.c, w.d]) {
      const users = [w.a.user, w.b.user, who === w.c ? w.d.user : w.c.user];
      out.push({
        who,
        label: `${who.name} -> group`,
        t: {
          conv: w.group,
          // D aims at D's own message and D's own reaction: both were D's to change while a member.
          seq: who === w.d ? w.seq.dMessage : w.seq.aFirst,
          reaction: { seq: w.seq.aFirst, emoji: "👍" },
          users,
          otherToken: w.a.token,
          cid: `${who.name}-g-${randomBytes(4).toString("hex")}`,
        },
      });
      out.push({
        who,
        label: `${who.name} -> direct`,
        t: {
          conv: w.direct,
          seq: w.directSeq,
          reaction: { seq: w.directSeq, emoji: "🍕" },
          users,
          otherToken: w.b.token,
          cid: `${who.name}-d-${randomBytes(4).toString("hex")}`,
        },
      });
    }
    return out;
  }

  for (const wire of WIRES) {
    it(`${wire}: a non-member and a removed member are refused as if the conversation did not exist`, async () => {
      const logins = new Map<Account, TapClient>();
      for (const who of [w.c, w.d]) {
        const c = await TapClient.login(wire, w.ports, who.token);
        actors.push(c);
        logins.set(who, c);
      }
      /** Per operation, the bytes of every answer: real targets and missing ones alike. */
      const answers = new Map<string, Set<string>>();
      for (const { who, label, t } of targets()) {
        const c = logins.get(who)!;
        const absent: Target = { ...t, conv: missing.conv, users: [missingId("u")], cid: `${t.cid}-x` };
        for (const [tag, kase] of Object.entries(FRAME_MATRIX)) {
          for (const [k, frame] of kase.frames(t).entries()) {
            const twin = kase.frames(absent)[k]!;
            const what = `${label} ${tag}#${k}`;
            // The same request id for the real target and the missing one: equal bytes expected.
            const id = 100 + k;
            const ask = async (f: ClientFrame): Promise<Received[]> =>
              "id" in f ? [await c.request({ ...f, id })] : c.exchange(f);
            const got = await ask(frame);
            const gotMissing = await ask(twin);
            const frames = got.map((r) => r.frame);
            switch (kase.outsider) {
              case "not-found": {
                const message = expect.any(String) as string;
                expect(frames, what).toEqual([
                  { t: "error", id, code: "E_NOT_FOUND", message, retry: false },
                ]);
                expect(bytesOf(got), what).toEqual(bytesOf(gotMissing));
                const seen = answers.get(`${tag}#${k}`) ?? new Set();
                seen.add(bytesOf(got)[0]!);
                answers.set(`${tag}#${k}`, seen);
                break;
              }
              case "silent":
                expect(frames, what).toEqual([]);
                expect(gotMissing, what).toEqual([]);
                break;
              case "pong":
                expect(frames, what).toEqual([{ t: "pong", n: 7 }]);
                break;
              case "already-authenticated": {
                const message = ERRORS.E_ALREADY_AUTHENTICATED.message;
                expect(frames, what).toEqual([
                  { t: "error", code: "E_ALREADY_AUTHENTICATED", message, retry: false },
                ]);
                expect(c.closeCode, what).toBeUndefined();
                break;
              }
              case "own-log":
                expect(
                  frames.map((f) => f.t),
                  what,
                ).toEqual(["synced"]);
                expectOwnLog(who, frames[0]!);
                break;
            }
          }
        }
      }
      // Every refusal of one operation is the same bytes, whoever asks about whatever: nothing
      // tells a conversation one was removed from, a stranger's, and none at all apart.
      for (const [op, seen] of answers) expect(seen.size, op).toBe(1);
      for (const [who, c] of logins) {
        // The connection still speaks for its own user (a second hello changed nothing)...
        expectOwnLog(who, (await c.request({ t: "sync", id: 1, cursor: 0 })).frame);
        // ...and nothing but answers ever reached it: no push, typing or presence.
        await c.exchange();
        expect(c.frames.filter((f) => f.t === "push" || f.t === "typing" || f.t === "presence")).toEqual([]);
      }
    });
  }

  /** C's log is empty; D's holds only what D saw while a member, and the `left`. */
  function expectOwnLog(who: Account, f: ServerFrame): void {
    expect(f.t).toBe("synced");
    if (f.t !== "synced") return;
    if (who === w.c) {
      expect(f).toMatchObject({ updates: [], more: false, head: 0 });
      return;
    }
    expectNothingAfterRemoval(f.updates);
    expect(f.updates.at(-1)?.u).toEqual({ k: "left", conv: w.group });
    expect(f.head).toBe(f.updates.at(-1)!.useq);
  }

  /** None of D's updates shows the group as it became after D was removed. */
  function expectNothingAfterRemoval(updates: LoggedUpdate[]): void {
    const { editedBody, emoji, cid } = w.afterRemoval;
    for (const { useq, u } of updates) {
      const what = `D's update ${useq} (${u.k})`;
      if (!("msg" in u)) continue;
      expect(u.msg.cid, what).not.toBe(cid);
      expect(new TextDecoder().decode(u.msg.body), what).not.toBe(editedBody);
      expect(Object.keys(u.msg.reactions ?? {}), what).not.toContain(emoji);
      if (u.msg.seq === w.seq.aFirst) expect(u.msg.editedAt, what).toBeUndefined();
    }
  }

  it("presence watches end with the shared conversation, both ways", () => {
    // D's connection watched A and B while D was a member; since then B went offline, and the
    // group was edited, reacted to and written to. None of it reached D.
    const { aLive, dLive, dLiveRemovedAt, aLiveRemovedAt } = w;
    const sinceRemoval = dLive.frames.slice(dLiveRemovedAt);
    expect(sinceRemoval.at(-1)?.t).toBe("synced"); // the set-up's barrier
    expect(sinceRemoval.slice(0, -1)).toEqual([]);
    // A watched D too: D went offline after the removal (and came and went during the matrix,
    // for the observers' check at the end); A saw none of it, though A saw B's changes.
    const presence = aLive.frames.slice(aLiveRemovedAt).filter((f) => f.t === "presence");
    expect(presence.filter((f) => f.user === w.d.user)).toEqual([]);
    expect(presence.filter((f) => f.user === w.b.user).map((f) => f.t === "presence" && f.online)).toEqual([
      false,
      true,
    ]);
  });

  it("REST: a non-member and a removed member are refused as if the object did not exist", async () => {
    const answers = new Map<string, Set<string>>();
    for (const { who, label, t } of targets()) {
      const member = t.conv === w.group ? w.b.user : w.a.user;
      const rt: RestTarget = { ...t, member, self: who, device: w.a.device, otherName: w.b.name };
      const absent: RestTarget = { ...rt, conv: missing.conv, device: missing.device, cid: `${t.cid}-x` };
      const auth = `Bearer ${who.token}`;
      for (const [key, kase] of Object.entries(REST_MATRIX)) {
        if (kase.outsider !== "not-found") continue;
        const twins = kase.requests!(absent);
        for (const [k, req] of kase.requests!(rt).entries()) {
          const what = `${label} ${methodOf(key)} ${req.path}`;
          const got = await http(w.base, methodOf(key), req.path, { auth, body: req.body });
          const twin = await http(w.base, methodOf(key), twins[k]!.path, { auth, body: twins[k]!.body });
          expect(got.status, `${what}: ${got.text}`).toBe(404);
          expect(JSON.parse(got.text), what).toEqual({
            error: { code: "E_NOT_FOUND", message: expect.any(String) as string, retry: false },
          });
          expect(restShape(got), what).toEqual(restShape(twin));
          const seen = answers.get(`${key}#${k}`) ?? new Set();
          seen.add(restShape(got));
          answers.set(`${key}#${k}`, seen);
        }
      }
      // Lists hold only the caller's own things.
      const convs = await call<{ conversations: Array<{ id: string }> }>(
        w.base,
        "GET",
        "/v1/conversations",
        who.token,
      );
      expect(convs.conversations.map((c) => c.id)).toEqual([]);
      const devices = await call<{ devices: Array<{ id: string; name: string }> }>(
        w.base,
        "GET",
        "/v1/devices",
        who.token,
      );
      expect(devices.devices.map((d) => d.id)).toEqual([who.device]);
      // The directory, open to every user by design, tells a user's id and name, nothing else.
      const found = await call<object>(w.base, "GET", `/v1/users/${w.b.name}`, who.token);
      expect(found).toEqual({ id: w.b.user, name: w.b.name });
    }
    for (const [op, seen] of answers) expect(seen.size, op).toBe(1);
  });

  it("a removed member's resend of a message it sent while a member gets the original seq, and stores nothing", async () => {
    // The one answer that is not a refusal: sends are idempotent by cid (DESIGN.md), and this
    // message was committed while D was a member. D learns nothing it did not know: the same
    // cid aimed at a missing conversation is refused as a cid used elsewhere.
    const c = await TapClient.login("tcp", w.ports, w.d.token);
    actors.push(c);
    const resend = {
      t: "send",
      id: 1,
      cid: "d-g1",
      type: "text/plain",
      body: text("hi, dave here"),
    } as const;
    const got = await c.request({ ...resend, conv: w.group });
    expect(got.frame).toMatchObject({ t: "sent", id: 1, conv: w.group, cid: "d-g1", seq: w.seq.dMessage });
    const elsewhere = await c.request({ ...resend, conv: missing.conv });
    expect(elsewhere.frame).toMatchObject({ t: "error", id: 1, code: "E_INVALID" });
    // Stores nothing: checked with everything else by the last test.
  });

  /** Status, content type and body: what a client can tell two HTTP answers apart by. */
  function restShape(r: HttpAnswer): string {
    return JSON.stringify([
      r.status,
      r.headers.get("content-type"),
      r.headers.get("www-authenticate"),
      r.text,
    ]);
  }

  // ---------------------------------------------------------------- tokens that are not valid

  it("the revoked device's live connections were closed with 4101 (bye, then close)", async () => {
    for (const c of w.revokedLive) {
      expect(await c.waitClosed()).toBe(c.wire === "tcp" ? -1 : DISCONNECT.AUTH_FAILED);
      const last = c.frames.at(-1);
      expect(last, c.wire).toMatchObject({ t: "bye", code: DISCONNECT.AUTH_FAILED });
      // Nothing after the welcome but the bye: the device got no update while revoked.
      expect(
        c.frames.map((f) => f.t),
        c.wire,
      ).toEqual(["welcome", "bye"]);
    }
  });

  /** Every kind of token that must not authenticate, each once genuine-looking. */
  function badTokens(): Array<{ label: string; token: string }> {
    return [
      { label: "revoked device", token: w.aRevoked.token },
      { label: "expired", token: w.aExpired.token },
      { label: "forged (random text)", token: "forged-token" },
      { label: "forged (a real token altered)", token: tampered(w.a.token) },
      { label: "forged (well formed)", token: randomBytes(32).toString("base64url") },
    ];
  }

  async function untilExpired(): Promise<void> {
    const wait = w.aExpired.expiresAt - Date.now() + 50;
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }

  /** Every operation aimed at the group as its owner would aim it. */
  function ownerTarget(): Target {
    return {
      conv: w.group,
      seq: w.seq.aFirst,
      reaction: { seq: w.seq.aFirst, emoji: "👍" },
      users: [w.b.user],
      otherToken: w.a.token,
      cid: `bad-token-${randomBytes(4).toString("hex")}`,
    };
  }

  for (const wire of WIRES) {
    it(`${wire}: hello with a bad token is refused (E_TOKEN_INVALID, bye 4101); frames sent behind it never run`, async () => {
      await untilExpired();
      const t = ownerTarget();
      let id = 1;
      const ops: ClientFrame[] = Object.values(FRAME_MATRIX).flatMap((k) =>
        k.frames(t).map((f) => ("id" in f ? { ...f, id: id++ } : f)),
      );
      const refusals = new Set<string>();
      for (const { label, token } of badTokens()) {
        const c = await TapClient.open(wire, w.ports);
        actors.push(c);
        c.send({ t: "hello", versions: [1], token }, ...ops);
        const code = await c.waitClosed();
        expect(code, label).toBe(wire === "tcp" ? -1 : DISCONNECT.AUTH_FAILED);
        expect(c.frames, label).toEqual([
          { t: "error", code: "E_TOKEN_INVALID", message: ERRORS.E_TOKEN_INVALID.message, retry: false },
          { t: "bye", code: DISCONNECT.AUTH_FAILED, reason: expect.any(String) as string },
        ]);
        refusals.add(bytesOf(c.received).join(","));
      }
      // Revoked, expired and forged are refused alike: no oracle for which tokens once existed.
      expect(refusals.size).toBe(1);
    });

    it(`${wire}: any operation before hello is refused (E_NOT_AUTHENTICATED, bye 4100)`, async () => {
      const t = ownerTarget();
      for (const [tag, kase] of Object.entries(FRAME_MATRIX)) {
        if (tag === "hello") continue;
        const c = await TapClient.open(wire, w.ports);
        actors.push(c);
        c.send(...kase.frames(t).map((f) => ("id" in f ? { ...f, id: 1 } : f)));
        const code = await c.waitClosed();
        expect(code, tag).toBe(wire === "tcp" ? -1 : DISCONNECT.PROTOCOL_ERROR);
        expect(c.frames, tag).toEqual([
          {
            t: "error",
            code: "E_NOT_AUTHENTICATED",
            message: ERRORS.E_NOT_AUTHENTICATED.message,
            retry: false,
          },
          { t: "bye", code: DISCONNECT.PROTOCOL_ERROR, reason: expect.any(String) as string },
        ]);
      }
    });
  }

  it("REST: every route that needs a token answers 401 E_TOKEN_INVALID to a bad one, before anything else", async () => {
    await untilExpired();
    const t = ownerTarget();
    // Aimed where a bypass would hurt most: A's own main device, A's group.
    const rt: RestTarget = { ...t, member: w.b.user, self: w.a, device: w.a.device, otherName: w.b.name };
    // `bearer`: a well-formed header whose token is bad; the others are malformed headers, whose
    // message says so.
    const headers: Array<{ label: string; auth: string | undefined; bearer: boolean }> = [
      ...badTokens().map(({ label, token }) => ({ label, auth: `Bearer ${token}`, bearer: true })),
      { label: "no Authorization header", auth: undefined, bearer: false },
      { label: "a valid token, wrong scheme", auth: `Basic ${w.a.token}`, bearer: false },
      { label: "a valid token and junk", auth: `Bearer ${w.a.token} x`, bearer: false },
    ];
    const bodies = new Set<string>();
    for (const [key, kase] of Object.entries(REST_MATRIX)) {
      if (!isTokenRoute(key)) continue;
      for (const req of kase.requests!(rt)) {
        for (const { label, auth, bearer } of headers) {
          const what = `${label}: ${methodOf(key)} ${req.path}`;
          // With a valid request, and with garbage where the route validates a body.
          for (const body of req.body === undefined ? [undefined] : [req.body, { junk: true }]) {
            const got = await http(w.base, methodOf(key), req.path, { auth, body });
            expect(got.status, `${what}: ${got.text}`).toBe(401);
            expect(got.headers.get("www-authenticate"), what).toBe("Bearer");
            const parsed = JSON.parse(got.text) as { error: { code: string; retry: boolean } };
            expect(parsed, what).toEqual({
              error: { code: "E_TOKEN_INVALID", message: expect.any(String) as string, retry: false },
            });
            if (bearer) bodies.add(got.text);
          }
          if (methodOf(key) === "GET") {
            const head = await http(w.base, "HEAD", req.path, { auth });
            expect(head.status, `HEAD ${what}`).toBe(401);
          }
        }
      }
    }
    expect([...bodies]).toEqual([
      JSON.stringify({
        error: { code: "E_TOKEN_INVALID", message: ERRORS.E_TOKEN_INVALID.message, retry: false },
      }),
    ]);
  });

  it("a throwaway device of an outsider logs out: only that device is revoked", async () => {
    const r = await http(w.base, "POST", "/v1/login", {
      body: { name: w.c.name, password: `password-of-${w.c.name}`, device: "c-throwaway" },
    });
    const throwaway = JSON.parse(r.text) as { token: string; device: string };
    expect((await http(w.base, "POST", "/v1/logout", { auth: `Bearer ${throwaway.token}` })).status).toBe(
      204,
    );
    expect((await http(w.base, "GET", "/v1/devices", { auth: `Bearer ${throwaway.token}` })).status).toBe(
      401,
    );
    const devices = await call<{ devices: Array<{ id: string; revoked: boolean }> }>(
      w.base,
      "GET",
      "/v1/devices",
      w.c.token,
    );
    expect(devices.devices.map((d) => [d.id, d.revoked])).toEqual([
      [w.c.device, false],
      [throwaway.device, true],
    ]);
  });

  // ---------------------------------------------------------------- nothing happened

  it("after the whole matrix, the members' state is unchanged and their connections got nothing", async () => {
    const after = await snapshot();
    expect(after.rest).toEqual(before.rest);
    expect(after.heads).toEqual(before.heads);
    for (const o of observers) {
      // Sync from the cursor held before the matrix: nothing new.
      const synced = (await o.c.request({ t: "sync", id: 901, cursor: before.heads[o.who.name]! })).frame;
      expect(synced).toMatchObject({ t: "synced", updates: [], more: false, head: before.heads[o.who.name] });
      // No push, typing, presence or anything else, besides the replies to the snapshots' syncs.
      const pushed = o.c.frames
        .slice(o.from)
        .filter((f) => !(f.t === "synced" && (f.id === 900 || f.id === 901)));
      expect(pushed, o.who.name).toEqual([]);
    }
    // D's reaction, which D tried to take back after the removal, is still there.
    const group = after.rest[`${w.a.name} ${w.group} messages`] as {
      messages: Array<{ seq: number; reactions?: Record<string, string[]> }>;
    };
    expect(group.messages.find((m) => m.seq === w.seq.aFirst)?.reactions).toEqual({
      "👍": [w.d.user, w.b.user],
    });
  });
});
