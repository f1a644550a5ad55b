import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { ClientFrame } from "@parley/protocol";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Message, ParleyClient } from "../src/node.ts";
import { FileLocalStore, textOf } from "../src/node.ts";
import type { TestServer } from "./helpers.ts";
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

// Large groups (read diffusion) end to end: a real server whose groups become large at 3 members,
// real clients over each transport. A large group's messages come from its own log; devices
// follow it from the moment their own log says so, live and across reconnects, and still see
// every message exactly once and in order.

let srv: TestServer;
const clients: ParleyClient[] = [];
const proxies: CutProxy[] = [];

beforeAll(async () => {
  srv = await startTestServer({ largeGroupMembers: 3 });
});
afterAll(async () => {
  await srv.stop();
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

const inGroup = (seen: Message[], conv: string): Array<[number, string]> =>
  seen.filter((m) => m.conv === conv).map((m) => [m.seq, textOf(m)]);

const variants = proxiedTransports(() => srv);

describe.each(variants)("a large group over %s", (_name, target, via, transportName) => {
  it("delivers each message once and in order: live, after a cut, and to a late device", async () => {
    const proxy = await CutProxy.start(target());
    proxies.push(proxy);
    const sent: ClientFrame[] = [];
    const alice = await newClient(srv.url, userName("alice"), {
      ...via(proxy),
      transport: recording(transportName, sent),
      syncLimit: 5,
    });
    const bob = await newClient(srv.url, userName("bob"));
    const carol = await newClient(srv.url, userName("carol"));
    clients.push(alice, bob, carol);
    await Promise.all([alice.connect(), bob.connect()]);
    const aliceSeen = collect(alice);
    const bobSeen = collect(bob);
    const carolSeen = collect(carol);

    // Two members: a plain group, its first message in each member's own log.
    const group = await alice.createGroup("crew", [bob.user]);
    expect(group.large).toBeUndefined();
    await alice.send(group.id, "small");
    // Carol joins while offline: the group reaches 3 and becomes large.
    const grown = await alice.addMembers(group.id, [carol.user]);
    expect(grown).toMatchObject({ large: true });
    await waitFor(() => alice.store.logCursor(group.id) !== undefined, "alice follows the group's log");
    await bob.send(group.id, "big 1");
    await alice.send(group.id, "big 2");
    const live: Array<[number, string]> = [
      [1, "small"],
      [2, "big 1"],
      [3, "big 2"],
    ];
    await waitFor(() => inGroup(aliceSeen, group.id).length === 3, "alice has 3");
    await waitFor(() => inGroup(bobSeen, group.id).length === 3, "bob has 3");
    expect(inGroup(aliceSeen, group.id)).toEqual(live);
    expect(inGroup(bobSeen, group.id)).toEqual(live);

    // Carol connects late: her own log says where the group's log starts; she syncs it.
    await carol.connect();
    await waitFor(
      () => inGroup(carolSeen, group.id).length === 2,
      "carol has the 2 messages since she joined",
    );
    expect(inGroup(carolSeen, group.id)).toEqual(live.slice(1));

    // Alice is cut off while 12 more arrive: she pages through the group's log on reconnect.
    const down = nextEvent(alice, "disconnected");
    proxy.refuse = true;
    proxy.cut();
    await down;
    for (let i = 3; i <= 14; i++) await bob.send(group.id, `big ${i}`);
    sent.length = 0;
    const up = nextEvent(alice, "connected");
    proxy.refuse = false;
    await up;
    await waitFor(() => inGroup(aliceSeen, group.id).length === 15, "alice has all 15");
    const expected = [
      ...live,
      ...Array.from({ length: 12 }, (_, i): [number, string] => [i + 4, `big ${i + 3}`]),
    ];
    expect(inGroup(aliceSeen, group.id)).toEqual(expected);
    const groupSyncs = sent.filter((f) => f.t === "sync" && f.log === group.id);
    expect(groupSyncs.length).toBeGreaterThanOrEqual(3); // 14 entries in pages of 5
    expect(alice.store.logCursor(group.id)).toBe(14);
    await waitFor(() => inGroup(carolSeen, group.id).length === 14, "carol has them too");
    expect(inGroup(carolSeen, group.id)).toEqual(expected.slice(1));

    // Bob leaves: his device stops following, and hears nothing more from the group.
    const left = nextEvent(bob, "left");
    await bob.removeMember(group.id, bob.user);
    expect((await left)[0]).toBe(group.id);
    expect(bob.store.logCursor(group.id)).toBeUndefined();
    // The others hear of it as a change (the count), not a new list: a large group's state lists
    // the owner, the admins and the device's own user only.
    for (const c of [alice, carol]) {
      await waitFor(() => c.store.getConversation(group.id)?.memberCount === 2, "bob no longer counted");
    }
    expect(alice.store.getConversation(group.id)?.members.map((m) => m.user)).toEqual([alice.user]);
    expect(carol.store.getConversation(group.id)?.members.map((m) => m.user)).toEqual([
      alice.user,
      carol.user,
    ]);
    // The whole list, page by page.
    const page1 = await carol.members(group.id, undefined, 1);
    const page2 = await carol.members(group.id, page1.members[0]!.user, 1);
    expect(page1.more).toBe(true);
    expect([...page1.members, ...page2.members].map((m) => m.user)).toEqual([alice.user, carol.user].sort());
    await alice.send(group.id, "after bob");
    await waitFor(() => inGroup(carolSeen, group.id).length === 15, "carol has the last one");
    expect(inGroup(bobSeen, group.id)).toHaveLength(15);
    expect(new Set(aliceSeen.map((m) => `${m.conv}#${m.seq}`)).size).toBe(aliceSeen.length);
  });
});

describe("a large group and a durable local store", () => {
  it("a restarted client goes on from its stored group cursor: the missed messages once, nothing again", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "parley-sdk-large-"));
    try {
      const aliceName = userName("alice");
      const bob = await newClient(srv.url, userName("bob"));
      const carol = await newClient(srv.url, userName("carol"));
      clients.push(bob, carol);
      await bob.connect();
      const store1 = await FileLocalStore.open(dir);
      const alice1 = await newClient(srv.url, aliceName, { store: store1 });
      await alice1.connect();
      const seen1 = collect(alice1);
      const group = await alice1.createGroup("crew", [bob.user, carol.user]);
      expect(group.large).toBe(true);
      for (const text of ["one", "two"]) await bob.send(group.id, text);
      await waitFor(() => inGroup(seen1, group.id).length === 2, "alice has 2");
      await alice1.close();
      await store1.close();

      for (const text of ["three", "four", "five"]) await bob.send(group.id, text);
      const store2 = await FileLocalStore.open(dir);
      expect(store2.logCursor(group.id)).toBe(2);
      const alice2 = await newClient(srv.url, aliceName, { store: store2 });
      clients.push(alice2);
      const seen2 = collect(alice2);
      await alice2.connect();
      await waitFor(() => inGroup(seen2, group.id).length === 3, "alice has the 3 she missed");
      await bob.send(group.id, "six");
      await waitFor(() => inGroup(seen2, group.id).length === 4, "and a live one");
      expect(inGroup(seen2, group.id)).toEqual([
        [3, "three"],
        [4, "four"],
        [5, "five"],
        [6, "six"],
      ]);
      expect(store2.logCursor(group.id)).toBe(6);
      await alice2.close();
      await store2.close();
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
