import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { connect as netConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WebSocket } from "ws";
import {
  FrameParser,
  decodeBinary,
  decodeJson,
  encodeBinary,
  encodeFramed,
  encodeJson,
  parseServerFrame,
} from "@parley/protocol";
import type { ClientFrame, ServerFrame } from "@parley/protocol";
import { loadConfig } from "../../packages/server/src/config.ts";
import { startServer, type RunningServer } from "../../packages/server/src/main.ts";

// The world of the authorization matrix (test/e2e/authz-matrix.test.ts): a real server (SQLite in
// a temp dir, real sockets), members with history, outsiders, and bad tokens of every kind. Also
// a protocol client that keeps the exact bytes of every frame it receives, so that a refusal can
// be compared byte for byte with the refusal for something that does not exist.

export type Wire = "tcp" | "ws-binary" | "ws-json";
export const WIRES: readonly Wire[] = ["tcp", "ws-binary", "ws-json"];

/** A client frame that carries a request id, and the same without it. */
export type RequestFrame = Extract<ClientFrame, { id: number }>;
export type Request = RequestFrame extends infer F
  ? F extends { id: number }
    ? Omit<F, "id">
    : never
  : never;

export interface Ports {
  httpPort: number;
  tcpPort: number;
}

/** One frame as received: decoded, and the bytes that carried it (TCP: without the length
 * prefix; WebSocket: the message). */
export interface Received {
  frame: ServerFrame;
  raw: Buffer;
}

/** A protocol client over one wire that records every frame with its bytes. Request ids are
 * chosen by the caller, so that two requests can be made to get byte-identical replies. */
export class TapClient {
  readonly received: Received[] = [];
  /** WebSocket close code, or -1 once a TCP socket closed; undefined while open. */
  closeCode: number | undefined;
  private waiters: Array<() => void> = [];
  private barrierId = 1_000_000;

  private constructor(
    readonly wire: Wire,
    private readonly write: (frames: ClientFrame[]) => void,
    private readonly end: () => void,
  ) {}

  static async open(wire: Wire, ports: Ports): Promise<TapClient> {
    if (wire === "tcp") {
      const socket: Socket = netConnect(ports.tcpPort, "127.0.0.1");
      await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
      // Pipelined frames go out in one write, so the server sees them in one read.
      const client = new TapClient(
        wire,
        (frames) => socket.write(Buffer.concat(frames.map((f) => encodeFramed(f)))),
        () => socket.destroy(),
      );
      const parser = new FrameParser({});
      socket.on("data", (chunk: Buffer) => {
        for (const body of parser.push(chunk)) {
          const raw = Buffer.from(body);
          client.got({ frame: parseServerFrame(decodeBinary(raw)), raw });
        }
      });
      socket.on("close", () => client.closed(-1));
      socket.on("error", () => {});
      return client;
    }
    const binary = wire === "ws-binary";
    const ws = new WebSocket(
      `ws://127.0.0.1:${ports.httpPort}/v1/ws`,
      binary ? "parley.v1.binary" : "parley.v1.json",
    );
    await new Promise<void>((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const client = new TapClient(
      wire,
      (frames) => {
        for (const f of frames) ws.send(binary ? encodeBinary(f) : encodeJson(f));
      },
      () => ws.terminate(),
    );
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      const raw = Buffer.from(data);
      const value = isBinary ? decodeBinary(raw) : decodeJson(raw.toString("utf8"));
      client.got({ frame: parseServerFrame(value), raw });
    });
    ws.on("close", (code: number) => client.closed(code));
    ws.on("error", () => {});
    return client;
  }

  /** Opens a connection and completes hello; rejects unless the server answers welcome. */
  static async login(wire: Wire, ports: Ports, token: string): Promise<TapClient> {
    const c = await TapClient.open(wire, ports);
    c.send({ t: "hello", versions: [1], token });
    const first = await c.next(0);
    if (first.frame.t !== "welcome") {
      c.close();
      throw new Error(`hello refused: ${JSON.stringify(first.frame)}`);
    }
    return c;
  }

  get frames(): ServerFrame[] {
    return this.received.map((r) => r.frame);
  }

  send(...frames: ClientFrame[]): void {
    this.write(frames);
  }

  /** Sends a request (its `id` chosen by the caller) and resolves with the first frame received
   * after it that carries that id. */
  async request(frame: RequestFrame): Promise<Received> {
    const from = this.received.length;
    this.send(frame);
    return this.waitFor((f) => "id" in f && f.id === frame.id, from);
  }

  /** Sends `frames`, then a barrier (`sync` of one entry from cursor 0, which reads and changes
   * nothing); resolves with every frame received before the barrier's reply. The server answers
   * every frame but `send`, `ping` and `pong` one at a time in arrival order, so whatever it sends
   * in answer to such `frames` comes before the barrier's reply. */
  async exchange(...frames: ClientFrame[]): Promise<Received[]> {
    const from = this.received.length;
    const id = this.barrierId++;
    this.send(...frames, { t: "sync", id, cursor: 0, limit: 1 });
    const barrier = await this.waitFor((f) => f.t === "synced" && f.id === id, from);
    return this.received.slice(from, this.received.indexOf(barrier));
  }

  /** The `index`-th frame received (waiting for it). */
  async next(index: number, timeoutMs = 10_000): Promise<Received> {
    await this.until(() => this.received.length > index || this.closeCode !== undefined, timeoutMs);
    const r = this.received[index];
    if (!r) throw new Error(`connection closed (${String(this.closeCode)}) before frame ${index}`);
    return r;
  }

  /** The first frame at or after `from` that matches. */
  async waitFor(pred: (f: ServerFrame) => boolean, from = 0, timeoutMs = 10_000): Promise<Received> {
    let hit: Received | undefined;
    await this.until(() => {
      hit = this.received.slice(from).find((r) => pred(r.frame));
      return hit !== undefined;
    }, timeoutMs);
    return hit!;
  }

  async waitClosed(timeoutMs = 10_000): Promise<number> {
    await this.until(() => this.closeCode !== undefined, timeoutMs);
    return this.closeCode!;
  }

  close(): void {
    this.end();
  }

  private async until(check: () => boolean, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      if (Date.now() > deadline)
        throw new Error(`timed out; got ${this.received.map((r) => r.frame.t).join(",") || "nothing"}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  private got(r: Received): void {
    this.received.push(r);
    for (const w of this.waiters.splice(0)) w();
  }

  private closed(code: number): void {
    this.closeCode ??= code;
    for (const w of this.waiters.splice(0)) w();
  }
}

/** An HTTP answer, never thrown: the status, headers and exact body text. */
export interface HttpAnswer {
  status: number;
  headers: Headers;
  text: string;
}

/** One HTTP request. `auth` is the whole Authorization header (undefined: none sent). */
export async function http(
  base: string,
  method: string,
  path: string,
  options: { auth?: string | undefined; body?: unknown } = {},
): Promise<HttpAnswer> {
  const res = await fetch(base + path, {
    method,
    headers: {
      ...(options.body !== undefined ? { "content-type": "application/json" } : {}),
      ...(options.auth !== undefined ? { authorization: options.auth } : {}),
    },
    ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
  });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** A JSON call that must succeed (2xx); returns the parsed body (undefined for 204). */
export async function call<T>(base: string, method: string, path: string, token: string, body?: unknown) {
  const r = await http(base, method, path, { auth: `Bearer ${token}`, body });
  if (r.status < 200 || r.status > 299) throw new Error(`${method} ${path}: ${r.status} ${r.text}`);
  return (r.text === "" ? undefined : JSON.parse(r.text)) as T;
}

export interface Account {
  name: string;
  user: string;
  device: string;
  token: string;
  expiresAt: number;
}

const password = (name: string): string => `password-of-${name}`;

async function register(base: string, name: string): Promise<void> {
  const r = await http(base, "POST", "/v1/register", { body: { name, password: password(name) } });
  if (r.status !== 201) throw new Error(`register ${name}: ${r.status} ${r.text}`);
}

async function login(base: string, name: string, device: string): Promise<Account> {
  const r = await http(base, "POST", "/v1/login", { body: { name, password: password(name), device } });
  if (r.status !== 200) throw new Error(`login ${name}: ${r.status} ${r.text}`);
  return { name, ...(JSON.parse(r.text) as Omit<Account, "name">) };
}

/** A server started in-process on port 0 over a SQLite file in `dir`. */
export function serve(dir: string, core?: { tokenTtlMs: number }): Promise<RunningServer> {
  return startServer({
    ...loadConfig(["--data", dir, "--port", "0", "--tcp-port", "0", "--log-level", "warn"], {}),
    core,
  });
}

/** Lifetime of the token that the matrix uses as "expired": it must still work when checked right
 * after login, and have expired by the time the matrix runs (the test waits for that). */
export const SHORT_TTL_MS = 3_000;

/** Allocates a conversation-id-shaped string that names nothing (`c_` and 16 base32 chars). */
export function missingId(prefix: "c" | "d" | "u"): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  let s = "";
  for (const b of randomBytes(16)) s += alphabet[b & 31];
  return `${prefix}_${s}`;
}

export interface World {
  server: RunningServer;
  base: string;
  ports: Ports;
  /** The group's owner (device a-laptop). */
  a: Account;
  /** A's second device, revoked by A during set-up; its live sockets were closed. */
  aRevoked: Account;
  /** A token of A's third device, issued with a lifetime of SHORT_TTL_MS. */
  aExpired: Account;
  /** A member of the group and A's direct partner. */
  b: Account;
  /** A user who never shared a conversation with anyone. */
  c: Account;
  /** Was a member of the group (sent, reacted, read), then removed by A. */
  d: Account;
  group: string;
  direct: string;
  /** Seqs in the group: A's first message, D's message (with D's reaction), B's message. */
  seq: { aFirst: number; dMessage: number; bMessage: number };
  /** Seq of B's message in the direct conversation. */
  directSeq: number;
  /** Markers of what changed in the group after D was removed, that D must never see. */
  afterRemoval: { editedBody: string; emoji: string; cid: string };
  /** Frames the set-up connections received: D's (a member's live connection, watching A and
   * B, still open after D's removal) and the revoked device's three connections. */
  dLive: TapClient;
  /** Index in dLive.received of the first frame after D's removal was committed. dLive is closed
   * at the end of the set-up (D goes offline), after a barrier (an `exchange`). */
  dLiveRemovedAt: number;
  /** Index in aLive.received of the first frame after D's removal: aLive watched D before. */
  aLiveRemovedAt: number;
  revokedLive: TapClient[];
  /** A's set-up connection (tcp), still open: it watches B. */
  aLive: TapClient;
  /** Every connection the world opened, closed by stop(). */
  clients: TapClient[];
  stop(): Promise<void>;
}

export const text = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Builds the world. On failure everything opened so far is closed and removed. */
export async function buildWorld(): Promise<World> {
  const dir = mkdtempSync(join(tmpdir(), "parley-authz-"));
  const clients: TapClient[] = [];
  let server: RunningServer | undefined;
  const stop = async (): Promise<void> => {
    for (const c of clients) c.close();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const names = { a: "alice", b: "bob", c: "carol", d: "dave" };
    // 1. A server whose tokens live SHORT_TTL_MS: accounts, and A's token that will expire.
    server = await serve(dir, { tokenTtlMs: SHORT_TTL_MS });
    let base = `http://127.0.0.1:${server.httpPort}`;
    for (const name of Object.values(names)) await register(base, name);
    const aExpired = await login(base, names.a, "a-expiring");
    // The token is genuine: it works before it expires.
    await call(base, "GET", "/v1/devices", aExpired.token);
    await server.stop();
    server = undefined;

    // 2. The same data with the default token lifetime.
    server = await serve(dir);
    base = `http://127.0.0.1:${server.httpPort}`;
    const ports = { httpPort: server.httpPort, tcpPort: server.tcpPort };
    const a = await login(base, names.a, "a-laptop");
    const aRevoked = await login(base, names.a, "a-phone");
    const b = await login(base, names.b, "b-laptop");
    const c = await login(base, names.c, "c-laptop");
    const d = await login(base, names.d, "d-laptop");

    const group = (
      await call<{ id: string }>(base, "POST", "/v1/conversations", a.token, {
        kind: "group",
        name: "release",
        members: [b.user, d.user],
      })
    ).id;
    const direct = (
      await call<{ id: string }>(base, "POST", "/v1/conversations", a.token, {
        kind: "direct",
        user: b.user,
      })
    ).id;

    const login3 = async (wire: Wire, token: string): Promise<TapClient> => {
      const t = await TapClient.login(wire, ports, token);
      clients.push(t);
      return t;
    };
    const aLive = await login3("tcp", a.token);
    const bLive = await login3("ws-json", b.token);
    const dLive = await login3("ws-binary", d.token);
    let id = 1;
    const ok = async (t: TapClient, f: Request) => {
      const r = await t.request({ ...f, id: id++ });
      if (r.frame.t === "error") throw new Error(`${f.t}: ${JSON.stringify(r.frame)}`);
      return r.frame;
    };
    const sent = async (t: TapClient, conv: string, cid: string, body: string, replyTo?: number) => {
      const f = await ok(t, {
        t: "send",
        conv,
        cid,
        type: "text/plain",
        body: text(body),
        ...(replyTo !== undefined ? { replyTo } : {}),
      });
      if (f.t !== "sent") throw new Error(`send: ${JSON.stringify(f)}`);
      return f.seq;
    };

    // D watches A and B, and A watches B and D, while D is a member: neither watch may outlive
    // the membership. A's watch of B also tells when a change of B's presence was published.
    dLive.send({ t: "watch", users: [a.user, b.user] });
    await dLive.waitFor((f) => f.t === "presence" && f.user === b.user);
    aLive.send({ t: "watch", users: [b.user, d.user] });
    await aLive.waitFor((f) => f.t === "presence" && f.user === b.user && f.online);
    await aLive.waitFor((f) => f.t === "presence" && f.user === d.user && f.online);

    // 3. History: messages, a reply, reactions, an edit, a delete, read receipts.
    const aFirst = await sent(aLive, group, "a-g1", "welcome to the group");
    const dMessage = await sent(dLive, group, "d-g1", "hi, dave here");
    const bMessage = await sent(bLive, group, "b-g1", "hi dave", aFirst);
    await ok(dLive, { t: "react", conv: group, seq: aFirst, emoji: "👍", on: true });
    await ok(bLive, { t: "react", conv: group, seq: aFirst, emoji: "👍", on: true });
    const gone = await sent(bLive, group, "b-g2", "oops, wrong group");
    await ok(bLive, { t: "delete", conv: group, seq: gone });
    await ok(bLive, { t: "edit", conv: group, seq: bMessage, type: "text/plain", body: text("hi Dave") });
    await ok(dLive, { t: "receipt", conv: group, kind: "read", seq: bMessage });
    await sent(aLive, direct, "a-d1", "lunch?");
    const directSeq = await sent(bLive, direct, "b-d1", "sure");
    await ok(aLive, { t: "react", conv: direct, seq: directSeq, emoji: "🍕", on: true });
    await ok(aLive, { t: "receipt", conv: direct, kind: "read", seq: directSeq });

    // 4. A removes D; then the group changes in ways D must not learn.
    const dHead = dLive.received.length;
    const aHead0 = aLive.received.length;
    await call(base, "DELETE", `/v1/conversations/${group}/members/${d.user}`, a.token);
    await dLive.waitFor((f) => f.t === "push" && f.u.k === "left", dHead);
    const dLiveRemovedAt = dLive.received.length;
    await aLive.waitFor((f) => f.t === "push" && f.u.k === "conv" && f.u.conv.id === group, aHead0);
    const aLiveRemovedAt = aLive.received.length;
    const afterRemoval = { editedBody: "edited after dave left", emoji: "🎉", cid: "a-g-after" };
    await ok(aLive, {
      t: "edit",
      conv: group,
      seq: aFirst,
      type: "text/plain",
      body: text(afterRemoval.editedBody),
    });
    await ok(bLive, { t: "react", conv: group, seq: dMessage, emoji: afterRemoval.emoji, on: true });
    await sent(aLive, group, afterRemoval.cid, "now without dave");
    // B's presence changes after D's removal: B goes offline (B's set-up connection closes).
    const aHead = aLive.received.length;
    bLive.close();
    await aLive.waitFor((f) => f.t === "presence" && f.user === b.user && !f.online, aHead);
    // D goes offline: a change of D's presence that A must not see.
    await dLive.exchange();
    dLive.close();
    await dLive.waitClosed();

    // 5. A's second device is online on every wire; A revokes it.
    const revokedLive: TapClient[] = [];
    for (const wire of WIRES) revokedLive.push(await login3(wire, aRevoked.token));
    await call(base, "DELETE", `/v1/devices/${aRevoked.device}`, a.token);

    return {
      server,
      base,
      ports,
      a,
      aRevoked,
      aExpired,
      b,
      c,
      d,
      group,
      direct,
      seq: { aFirst, dMessage, bMessage },
      directSeq,
      afterRemoval,
      aLive,
      dLive,
      dLiveRemovedAt,
      aLiveRemovedAt,
      revokedLive,
      clients,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
