import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { loadConfig, startServer } from "@parley/server";
import type { RunningServer, ServerConfig } from "@parley/server";
import type { ClientFrame, ServerFrame } from "@parley/protocol";
import type { ClientEvents, LoginOptions, Message, TransportFactory } from "../src/node.ts";
import { ParleyClient, getTransport } from "../src/node.ts";

// Integration-test helpers: a real Parley server in-process on port 0 (SQLite in a temp
// directory), fresh users per test, and a TCP proxy that can cut or stall connections.

/** Frames both ways, in the order the client sent and received them. */
export type Wire = Array<{ out: ClientFrame } | { in: ServerFrame }>;

/** Wraps a registered transport to record every frame the client sends and, when `wire` is
 * given, every frame both ways. */
export function recording(name: string, sent: ClientFrame[], wire?: Wire): TransportFactory {
  return (options) => {
    const inner = getTransport(name);
    if (!inner) throw new Error(`no transport ${name}`);
    const t = inner(options);
    const send = t.send.bind(t);
    t.send = (frame) => {
      sent.push(frame);
      wire?.push({ out: frame });
      send(frame);
    };
    if (wire) t.events.on("frame", (f) => wire.push({ in: f }));
    return t;
  };
}

export interface TestServer {
  server: RunningServer;
  url: string;
  httpPort: number;
  tcpPort: number;
  /** Stops the server and starts it again on the same data (new ports). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export async function startTestServer(core: ServerConfig["core"] = undefined): Promise<TestServer> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "parley-sdk-it-"));
  const start = (): Promise<RunningServer> =>
    startServer({
      ...loadConfig(["--data", dataDir, "--port", "0", "--tcp-port", "0", "--log-level", "silent"], {}),
      core,
    });
  const t: TestServer = {
    server: await start(),
    get url() {
      return `http://127.0.0.1:${this.server.httpPort}`;
    },
    get httpPort() {
      return this.server.httpPort;
    },
    get tcpPort() {
      return this.server.tcpPort;
    },
    async restart() {
      await this.server.stop();
      this.server = await start();
    },
    async stop() {
      await this.server.stop();
      await fs.rm(dataDir, { recursive: true, force: true });
    },
  };
  return t;
}

export const PASSWORD = "correct horse battery";

/** A fresh user name (names are unique per server). */
export function userName(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString("hex")}`;
}

/** Registers `name` and logs in as a client (not yet connected). */
export async function newClient(
  url: string,
  name: string,
  options: Partial<LoginOptions> = {},
): Promise<ParleyClient> {
  await ParleyClient.register({ url, name, password: PASSWORD }).catch((err: unknown) => {
    if ((err as { code?: string }).code !== "E_CONFLICT") throw err;
  });
  return ParleyClient.login({ url, name, password: PASSWORD, device: "test", ...options });
}

/** Resolves once `check()` is true; polls every 10 ms. */
/** Every message the client emits, in emission order. */
export function collect(client: ParleyClient): Message[] {
  const seen: Message[] = [];
  client.on("message", (m) => seen.push(m));
  return seen;
}

export async function waitFor(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Resolves with the next `event` emitted by `client` that satisfies `match`. */
export function nextEvent<K extends keyof ClientEvents>(
  client: ParleyClient,
  event: K,
  match: (...args: ClientEvents[K]) => boolean = () => true,
  timeoutMs = 10_000,
): Promise<ClientEvents[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for "${String(event)}"`));
    }, timeoutMs);
    const off = client.on(event, (...args) => {
      if (!match(...args)) return;
      clearTimeout(timer);
      off();
      resolve(args);
    });
  });
}

/** A TCP proxy in front of a port: `cut()` destroys every proxied connection (both sides, no
 * goodbye), `stallDownstream` drops server-to-client bytes, `refuse` rejects new connections. */
export class CutProxy {
  stallDownstream = false;
  refuse = false;
  private readonly sockets = new Set<net.Socket>();
  private readonly server: net.Server;
  connections = 0;

  /** Where new connections go; may change (server restarted on another port). */
  target: number;

  private constructor(target: number) {
    this.target = target;
    this.server = net.createServer((client) => this.accept(client));
  }

  static async start(target: number): Promise<CutProxy> {
    const proxy = new CutProxy(target);
    await new Promise<void>((resolve) => proxy.server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  cut(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    if (this.refuse) {
      client.destroy();
      return;
    }
    this.connections++;
    const upstream = net.connect(this.target, "127.0.0.1");
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.on("data", (d: Buffer) => upstream.write(d));
    upstream.on("data", (d: Buffer) => {
      if (!this.stallDownstream) client.write(d);
    });
  }
}

/** How a client reaches the server through a CutProxy: its login options for the proxy. */
export type Via = (proxy: CutProxy) => Partial<LoginOptions>;

/** The two transports through a CutProxy, for describe.each: [name, the server port the proxy
 * forwards to, the login options, the transport's name]. `srv` is read when a test runs. */
export function proxiedTransports(srv: () => TestServer): Array<[string, () => number, Via, string]> {
  return [
    ["WebSocket", () => srv().httpPort, (p) => ({ endpoint: `http://127.0.0.1:${p.port}` }), "ws"],
    ["TCP", () => srv().tcpPort, (p) => ({ transport: "tcp", tcpPort: p.port }), "tcp"],
  ];
}
