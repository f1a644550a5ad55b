import { connect as netConnect, type Socket } from "node:net";
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

// A minimal protocol client over raw sockets, for end-to-end tests that must see exactly what
// the server sends (the SDK hides retries and dedup). One class, three wire formats.

export type Wire = "tcp" | "ws-binary" | "ws-json";

/** A request frame without its id (distributes over the union, unlike a plain Omit). */
export type Request =
  Extract<ClientFrame, { id: number }> extends infer F
    ? F extends { id: number }
      ? Omit<F, "id">
      : never
    : never;

export class RawClient {
  readonly frames: ServerFrame[] = [];
  closeCode: number | undefined;
  private waiters: Array<() => void> = [];
  private nextId = 1;

  private constructor(
    private readonly write: (frame: ClientFrame) => void,
    private readonly end: () => void,
  ) {}

  static async open(wire: Wire, ports: { httpPort: number; tcpPort: number }): Promise<RawClient> {
    if (wire === "tcp") {
      const socket: Socket = netConnect(ports.tcpPort, "127.0.0.1");
      await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
      const client = new RawClient(
        (f) => socket.write(encodeFramed(f)),
        () => socket.destroy(),
      );
      const parser = new FrameParser({});
      socket.on("data", (chunk: Buffer) => {
        for (const body of parser.push(chunk)) client.received(parseServerFrame(decodeBinary(body)));
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
    const client = new RawClient(
      (f) => ws.send(binary ? encodeBinary(f) : encodeJson(f)),
      () => ws.terminate(),
    );
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      client.received(parseServerFrame(isBinary ? decodeBinary(data) : decodeJson(data.toString("utf8"))));
    });
    ws.on("close", (code: number) => client.closed(code));
    ws.on("error", () => {});
    return client;
  }

  /** Opens a connection and completes hello. */
  static async login(
    wire: Wire,
    ports: { httpPort: number; tcpPort: number },
    token: string,
  ): Promise<RawClient> {
    const c = await RawClient.open(wire, ports);
    c.send({ t: "hello", versions: [1], token });
    await c.waitFor((f) => f.t === "welcome");
    return c;
  }

  send(frame: ClientFrame): void {
    this.write(frame);
  }

  /** Sends a request with a fresh id and resolves with the frame that answers it. */
  async request(frame: Request, timeoutMs = 10_000): Promise<ServerFrame> {
    const id = this.nextId++;
    this.write({ ...frame, id });
    return this.waitFor((f) => "id" in f && f.id === id, timeoutMs);
  }

  async waitFor(pred: (f: ServerFrame) => boolean, timeoutMs = 10_000): Promise<ServerFrame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.frames.find(pred);
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`timed out; got ${this.frames.map((f) => f.t).join(",")}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  async waitClosed(timeoutMs = 10_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (this.closeCode === undefined) {
      if (Date.now() > deadline) throw new Error("connection not closed");
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.closeCode;
  }

  close(): void {
    this.end();
  }

  private received(f: ServerFrame): void {
    this.frames.push(f);
    for (const w of this.waiters.splice(0)) w();
  }

  private closed(code: number): void {
    this.closeCode ??= code;
    for (const w of this.waiters.splice(0)) w();
  }
}

/** REST helper: POST/GET JSON, throws with the error body on a non-2xx status. */
export async function api<T>(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  token?: string,
): Promise<T> {
  const res = await fetch(base + path, {
    method,
    headers: {
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const json = (await res.json()) as T;
  if (!res.ok)
    throw Object.assign(new Error(`${method} ${path}: ${res.status}`), { status: res.status, body: json });
  return json;
}

/** Registers and logs in a user; returns its token and ids. */
export async function newUser(
  base: string,
  name: string,
  device = "test",
): Promise<{ token: string; user: string; device: string }> {
  await api(base, "POST", "/v1/register", { name, password: "password-" + name });
  return api(base, "POST", "/v1/login", { name, password: "password-" + name, device });
}
