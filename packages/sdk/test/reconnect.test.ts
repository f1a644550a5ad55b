import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { ClientFrame } from "@parley/protocol";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { LoginOptions, ParleyClient } from "../src/node.ts";
import { FileLocalStore, textOf } from "../src/node.ts";
import type { TestServer, Wire } from "./helpers.ts";
import {
  collect,
  CutProxy,
  newClient,
  nextEvent,
  proxiedTransports,
  recording,
  startTestServer,
  userName,
  waitFor,
} from "./helpers.ts";

// Faults between a client and a real server: connections cut without a goodbye, replies that
// never arrive, a client restarted with a durable store, a server restart, a silent server.

let srv: TestServer;
const clients: ParleyClient[] = [];
const proxies: CutProxy[] = [];

beforeAll(async () => {
  srv = await startTestServer();
});
afterAll(async () => {
  await srv.stop();
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

const variants = proxiedTransports(() => srv);

describe.each(variants)("over %s through a proxy", (_name, target, via, transportName) => {
  async function setup(record?: ClientFrame[], options: Partial<LoginOptions> = {}, wire?: Wire) {
    const proxy = await CutProxy.start(target());
    proxies.push(proxy);
    const bobName = userName("bob");
    // REST goes to the server directly, the realtime connection through the proxy.
    const alice = await newClient(srv.url, userName("alice"), {
      ...via(proxy),
      ...(record ? { transport: recording(transportName, record, wire) } : {}),
      ...options,
    });
    const bob = await newClient(srv.url, bobName);
    clients.push(alice, bob);
    await Promise.all([alice.connect(), bob.connect()]);
    const conv = await bob.createDirect(alice.user);
    return { proxy, alice, bob, conv };
  }

  /** Cuts `client` off at the proxy (reconnects refused), runs `meanwhile`, lets it reconnect
   * and waits until it is connected again. Resolves with its `disconnected` event. */
  async function away(proxy: CutProxy, client: ParleyClient, meanwhile: () => Promise<void>) {
    const down = nextEvent(client, "disconnected");
    proxy.refuse = true;
    proxy.cut();
    const [event] = await down;
    await meanwhile();
    const up = nextEvent(client, "connected");
    proxy.refuse = false;
    await up;
    return event;
  }

  it("a cut client reconnects, syncs what it missed, and sees each message once", async () => {
    const { proxy, alice, bob, conv } = await setup();
    const seen = collect(alice);
    await bob.send(conv.id, "before");
    await waitFor(() => seen.length === 1, "the first message");

    const down = await away(proxy, alice, async () => {
      for (const text of ["while", "you", "were", "away"]) await bob.send(conv.id, text);
      expect(seen).toHaveLength(1);
    });
    expect(down).toMatchObject({ willReconnect: true });
    await waitFor(() => seen.length >= 5, "the missed messages");
    await bob.send(conv.id, "after");
    await waitFor(() => seen.length >= 6, "a live message after the reconnect");
    expect(seen.map((m) => [m.seq, textOf(m)])).toEqual([
      [1, "before"],
      [2, "while"],
      [3, "you"],
      [4, "were"],
      [5, "away"],
      [6, "after"],
    ]);
    expect(proxy.connections).toBeGreaterThanOrEqual(2);
  });

  it("a client far behind catches up with pipelined syncs, each message once and in order", async () => {
    const sent: ClientFrame[] = [];
    const wire: Wire = [];
    const { proxy, alice, bob, conv } = await setup(sent, { syncLimit: 10, syncPipeline: 3 }, wire);
    const seen = collect(alice);
    await bob.send(conv.id, "m1");
    await waitFor(() => seen.length === 1, "the first message");

    await away(proxy, alice, async () => {
      await Promise.all(Array.from({ length: 60 }, (_, i) => bob.send(conv.id, `m${i + 2}`)));
      sent.length = 0;
      wire.length = 0;
    });
    await waitFor(() => seen.length >= 61, "the missed messages");
    expect(seen.map((m) => [m.seq, textOf(m)])).toEqual(
      Array.from({ length: 61 }, (_, i) => [i + 1, `m${i + 1}`]),
    );

    // Pages of 10 asked for ahead of their replies: more than one outstanding, never over 3.
    const syncs = sent.flatMap((f) => (f.t === "sync" ? [f] : []));
    expect(syncs.length).toBeGreaterThanOrEqual(6);
    expect(syncs.every((f) => f.limit === 10)).toBe(true);
    let outstanding = 0;
    let most = 0;
    for (const f of wire) {
      if ("out" in f && f.out.t === "sync") most = Math.max(most, ++outstanding);
      if ("in" in f && f.in.t === "synced") outstanding--;
    }
    expect(most).toBeGreaterThan(1);
    expect(most).toBeLessThanOrEqual(3);
  });

  it("a send whose reply was lost is resent with the same cid and committed once", async () => {
    const frames: ClientFrame[] = [];
    const { proxy, alice, bob, conv } = await setup(frames);
    const aliceSeen = collect(alice);
    const bobSeen = collect(bob);

    proxy.stallDownstream = true; // the server gets the send, alice never hears back
    const result = alice.send(conv.id, "exactly once");
    await waitFor(() => bobSeen.length === 1, "bob receiving the committed message");
    const [pending] = alice.pendingSends();
    expect(pending?.conv).toBe(conv.id);

    proxy.stallDownstream = false;
    proxy.cut();
    const { seq } = await result;
    expect(seq).toBe(bobSeen[0]!.seq);

    const sends = frames.filter((f) => f.t === "send");
    expect(sends.length).toBeGreaterThanOrEqual(2);
    expect(new Set(sends.map((f) => f.cid))).toEqual(new Set([pending!.cid]));
    expect(alice.pendingSends()).toEqual([]);

    await bob.send(conv.id, "next");
    await waitFor(() => aliceSeen.length === 2 && bobSeen.length === 2, "the next message");
    expect(bobSeen.map((m) => [m.seq, textOf(m)])).toEqual([
      [1, "exactly once"],
      [2, "next"],
    ]);
    expect(aliceSeen.map((m) => m.seq)).toEqual([1, 2]);
    const history = await bob.history(conv.id);
    expect(history.messages.map((m) => textOf(m))).toEqual(["exactly once", "next"]);
  });
});

describe("durability and server faults", () => {
  it("a send made offline survives a client restart with a FileLocalStore", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "parley-sdk-store-"));
    try {
      const proxy = await CutProxy.start(srv.httpPort);
      proxies.push(proxy);
      const aliceName = userName("alice");
      const bob = await newClient(srv.url, userName("bob"));
      clients.push(bob);
      await bob.connect();
      const bobSeen = collect(bob);

      const store1 = await FileLocalStore.open(dir);
      const alice1 = await newClient(srv.url, aliceName, {
        store: store1,
        endpoint: `http://127.0.0.1:${proxy.port}`,
      });
      await alice1.connect();
      const conv = await alice1.createDirect(bob.user);
      await waitFor(() => store1.getConversation(conv.id) !== undefined, "the conversation update");
      proxy.refuse = true;
      proxy.cut();
      const lost = alice1.send(conv.id, "written offline");
      await waitFor(() => alice1.pendingSends().length === 1, "the pending send");
      await alice1.close();
      await expect(lost).rejects.toMatchObject({ code: "E_CLIENT_CLOSED" });
      const cursor = store1.cursor();
      await store1.close();

      const store2 = await FileLocalStore.open(dir);
      expect(store2.cursor()).toBe(cursor);
      const alice2 = await newClient(srv.url, aliceName, { store: store2 });
      clients.push(alice2);
      await alice2.connect();
      await waitFor(() => bobSeen.length === 1 && alice2.pendingSends().length === 0, "the resent message");
      expect(textOf(bobSeen[0]!)).toBe("written offline");
      await alice2.close();
      await store2.close();
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it("reconnects after a server restart and resumes from its cursor", async () => {
    // Each client reaches the server through its own proxy, retargeted after the restart.
    const [pa, pb] = await Promise.all([CutProxy.start(srv.httpPort), CutProxy.start(srv.httpPort)]);
    proxies.push(pa, pb);
    const alice = await newClient(`http://127.0.0.1:${pa.port}`, userName("alice"));
    const bob = await newClient(`http://127.0.0.1:${pb.port}`, userName("bob"));
    clients.push(alice, bob);
    await Promise.all([alice.connect(), bob.connect()]);
    const seen = collect(alice);
    const conv = await alice.createDirect(bob.user);
    await alice.send(conv.id, "before the restart");

    pa.refuse = true; // keep alice away until bob has written on the new server
    const down = nextEvent(alice, "disconnected");
    const bobBack = nextEvent(bob, "connected");
    await srv.restart();
    expect((await down)[0]).toMatchObject({ code: 4000, willReconnect: true });
    pa.target = pb.target = srv.httpPort;
    await bobBack;
    await bob.send(conv.id, "after the restart");

    pa.refuse = false;
    await waitFor(() => seen.length === 2, "both messages");
    expect(seen.map((m) => textOf(m))).toEqual(["before the restart", "after the restart"]);
  });

  it("reconnects when the server goes silent for 2.5 heartbeats", async () => {
    const quick = await startTestServer({ heartbeatMs: 200 });
    try {
      const proxy = await CutProxy.start(quick.httpPort);
      proxies.push(proxy);
      const alice = await newClient(quick.url, userName("alice"), {
        endpoint: `http://127.0.0.1:${proxy.port}`,
      });
      await alice.connect();
      const down = nextEvent(alice, "disconnected");
      proxy.stallDownstream = true;
      expect((await down)[0]).toMatchObject({ code: 4002, willReconnect: true });
      proxy.stallDownstream = false;
      proxy.cut(); // the stalled connection's bytes are gone; start clean
      await nextEvent(alice, "connected");
      await alice.close();
    } finally {
      await quick.stop();
    }
  });
});
