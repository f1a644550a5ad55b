import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FileLocalStore, ParleyClient, textOf } from "@parley/sdk/node";
import type { Message } from "@parley/sdk/node";
import type { ReceiptEvent } from "@parley/sdk";
import { loadConfig } from "../../packages/server/src/config.ts";
import { startServer, type RunningServer } from "../../packages/server/src/main.ts";
import { api } from "../helpers/raw-client.ts";

// The catch-up contract, through the SDK against a real server on a real SQLite file:
// device B is offline while A sends 1,000 messages; B comes back and the application sees all
// 1,000 exactly once, in order; so does B's second device; B's read receipt reaches A's devices
// and B's other device.

const N = 1000;

function collect(client: ParleyClient): Message[] {
  const got: Message[] = [];
  client.on("message", (m) => got.push(m));
  return got;
}

async function until(pred: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("offline catch-up through the SDK", () => {
  const dir = mkdtempSync(join(tmpdir(), "parley-catchup-"));
  let server: RunningServer;
  let url: string;
  const clients: ParleyClient[] = [];

  beforeAll(async () => {
    server = await startServer(
      loadConfig(
        ["--data", join(dir, "server"), "--port", "0", "--tcp-port", "0", "--log-level", "warn"],
        {},
      ),
    );
    url = `http://127.0.0.1:${server.httpPort}`;
    for (const name of ["alice", "bob"])
      await ParleyClient.register({ url, name, password: `password-${name}` });
  });

  afterAll(async () => {
    for (const c of clients) await c.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function login(
    name: string,
    device: string,
    extra: Partial<Parameters<typeof ParleyClient.login>[0]> = {},
  ) {
    const c = await ParleyClient.login({ url, name, password: `password-${name}`, device, ...extra });
    clients.push(c);
    return c;
  }

  it("B gets all 1,000 missed messages exactly once, in order; so does B's second device; receipts reach A", async () => {
    const a1 = await login("alice", "laptop");
    const a2 = await login("alice", "phone", { transport: "tcp", tcpPort: server.tcpPort });
    await a1.connect();
    await a2.connect();
    const bobStore = await FileLocalStore.open(join(dir, "bob-laptop"));
    const bobLogin = await api<{ token: string; user: string; device: string }>(url, "POST", "/v1/login", {
      name: "bob",
      password: "password-bob",
      device: "laptop",
    });
    const bobDevice = {
      url,
      token: bobLogin.token,
      user: bobLogin.user,
      device: bobLogin.device,
      store: bobStore,
    };
    const b1 = new ParleyClient(bobDevice);
    clients.push(b1);
    await b1.connect();
    const conv = await a1.createDirect("bob");
    await until(() => b1.cursor >= 1, "bob's device to learn of the conversation");
    await b1.close();

    // B is offline: A sends 1,000 messages, all acknowledged.
    const sent = await Promise.all(Array.from({ length: N }, (_, i) => a1.send(conv.id, `message ${i}`)));
    expect(sent.map((s) => s.seq).sort((x, y) => x - y)).toEqual(sent.map((_, i) => i + 1));

    // B comes back (same device, same local store): exactly once, in order.
    const b1again = new ParleyClient(bobDevice);
    clients.push(b1again);
    const gotB1 = collect(b1again);
    await b1again.connect();
    await until(() => gotB1.length >= N, "bob's first device to catch up");
    // B's second device, never connected before, over TCP.
    const b2 = await login("bob", "tablet", {
      transport: "tcp",
      tcpPort: server.tcpPort,
      encoding: "binary",
    });
    const gotB2 = collect(b2);
    await b2.connect();
    await until(() => gotB2.length >= N, "bob's second device to catch up");
    await new Promise((r) => setTimeout(r, 300)); // anything extra would show up now
    for (const got of [gotB1, gotB2]) {
      expect(got).toHaveLength(N);
      expect(got.map((m) => m.seq)).toEqual(got.map((_, i) => i + 1));
      expect(got.map((m) => textOf(m))).toEqual(got.map((_, i) => `message ${i}`));
    }

    // B reads: the receipt reaches both of A's devices and B's other device.
    const receipts = new Map<ParleyClient, ReceiptEvent[]>();
    for (const c of [a1, a2, b2]) {
      const list: ReceiptEvent[] = [];
      receipts.set(c, list);
      c.on("receipt", (r) => list.push(r));
    }
    b1again.markRead(conv.id, N);
    for (const c of [a1, a2, b2]) {
      await until(
        () => receipts.get(c)!.some((r) => r.kind === "read" && r.seq === N && r.user === b1.user),
        "the read receipt",
      );
    }
  }, 120_000);
});
