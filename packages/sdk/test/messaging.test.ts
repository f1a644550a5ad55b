import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { LoginOptions, ParleyClient } from "../src/node.ts";
import { ClientError, textOf } from "../src/node.ts";
import type { TestServer } from "./helpers.ts";
import { collect, newClient, nextEvent, startTestServer, userName, waitFor } from "./helpers.ts";

// Two real clients talk through a real server (SQLite, in-process, port 0) over each transport.

let srv: TestServer;
const clients: ParleyClient[] = [];

beforeAll(async () => {
  srv = await startTestServer();
});
afterAll(async () => {
  await srv.stop();
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

const variants: Array<[string, () => Partial<LoginOptions>]> = [
  ["WebSocket binary", () => ({ transport: "ws", encoding: "binary" })],
  ["WebSocket JSON", () => ({ transport: "ws", encoding: "json" })],
  ["TCP", () => ({ transport: "tcp", tcpPort: srv.tcpPort })],
];

describe.each(variants)("two clients over %s", (_name, options) => {
  async function pair(): Promise<[ParleyClient, ParleyClient, string]> {
    const bobName = userName("bob");
    const alice = await newClient(srv.url, userName("alice"), options());
    const bob = await newClient(srv.url, bobName, options());
    clients.push(alice, bob);
    await Promise.all([alice.connect(), bob.connect()]);
    return [alice, bob, bobName];
  }

  it("exchange messages exactly once, in order, on both sides", async () => {
    const [alice, bob, bobName] = await pair();
    const aliceSeen = collect(alice);
    const bobSeen = collect(bob);
    const conv = await alice.createDirect(bobName);
    const results = [];
    for (const text of ["one", "two", "three"]) results.push(await alice.send(conv.id, text));
    expect(results.map((r) => r.seq)).toEqual([1, 2, 3]);
    const reply = await bob.send(conv.id, "four", { replyTo: 3 });
    expect(reply.seq).toBe(4);

    await waitFor(() => bobSeen.length === 4 && aliceSeen.length === 4, "4 messages on both sides");
    for (const seen of [aliceSeen, bobSeen]) {
      expect(seen.map((m) => [m.seq, textOf(m)])).toEqual([
        [1, "one"],
        [2, "two"],
        [3, "three"],
        [4, "four"],
      ]);
    }
    expect(bobSeen[3]).toMatchObject({ from: bob.user, replyTo: 3, type: "text/plain" });
    expect(bob.messages(conv.id).map((m) => m.seq)).toEqual([1, 2, 3, 4]);
    // Each sender built its own messages from its sends (protocol version 2: `sent` in place of
    // the push); they must be what the other side was pushed, field for field.
    expect(aliceSeen).toEqual(bobSeen);
    expect(alice.messages(conv.id)).toEqual(bob.messages(conv.id));

    const page = await bob.history(conv.id, { limit: 2 });
    expect(page.messages.map((m) => textOf(m))).toEqual(["three", "four"]);
    expect(page.more).toBe(true);
  });

  it("edits, reacts, deletes, marks read and relays typing", async () => {
    const [alice, bob] = await pair();
    const conv = await alice.createDirect(bob.user); // by id this time
    const { seq } = await alice.send(conv.id, "typo");
    await waitFor(() => bob.messages(conv.id).length === 1, "bob has the message");

    const edited = nextEvent(bob, "edit");
    await alice.edit(conv.id, seq, "fixed");
    const [msg] = await edited;
    expect(textOf(msg)).toBe("fixed");
    expect(msg.editedAt).toBeGreaterThan(0);

    const reacted = nextEvent(alice, "reaction");
    await bob.react(conv.id, seq, "👍");
    const [reaction] = await reacted;
    expect(reaction).toMatchObject({ user: bob.user, emoji: "👍", on: true });
    expect(reaction.msg.reactions).toEqual({ "👍": [bob.user] });

    const read = nextEvent(alice, "receipt", (r) => r.kind === "read" && r.user === bob.user);
    bob.markRead(conv.id, seq);
    const [receipt] = await read;
    expect(receipt).toMatchObject({ conv: conv.id, seq });

    const typing = nextEvent(bob, "typing");
    alice.typing(conv.id);
    expect((await typing)[0]).toEqual({ conv: conv.id, user: alice.user });

    const deleted = nextEvent(bob, "delete");
    await alice.delete(conv.id, seq);
    const [gone] = await deleted;
    expect(gone.deleted).toBe(true);
    expect(gone.body.byteLength).toBe(0);
  });

  it("creates a group and reports presence", async () => {
    const [alice, bob] = await pair();
    const announced = nextEvent(bob, "conversation", (c) => c.kind === "group");
    const group = await alice.createGroup("crew", [bob.user]);
    expect((await announced)[0].id).toBe(group.id);
    const convs = await bob.conversations();
    expect(convs.map((c) => c.id)).toContain(group.id);

    const presence = nextEvent(alice, "presence", (p) => p.user === bob.user);
    alice.watchPresence([bob.user]);
    expect((await presence)[0].online).toBe(true);

    await expect(alice.send("c_doesnotexist", "x")).rejects.toMatchObject({ code: "E_NOT_FOUND" });
    expect(alice.pendingSends()).toEqual([]);
  });
});

describe("REST lookups", () => {
  it("names users by id, over several requests past 100 ids, leaving unknown ids out", async () => {
    const aliceName = userName("alice");
    const bobName = userName("bob");
    const alice = await newClient(srv.url, aliceName);
    const bob = await newClient(srv.url, bobName);
    clients.push(alice, bob);
    expect(await alice.users([])).toEqual([]);
    const unknown = Array.from({ length: 150 }, (_, i) => `u_unknown${i}`);
    const ids = [bob.user, ...unknown, alice.user, bob.user];
    expect(await alice.users(ids)).toEqual([
      { id: bob.user, name: bobName },
      { id: alice.user, name: aliceName },
    ]);
  });
});

describe("refusals", () => {
  it("stops for good when its device is revoked (4101) and rejects connect()", async () => {
    const alice = await newClient(srv.url, userName("alice"));
    clients.push(alice);
    await alice.connect();
    const error = nextEvent(alice, "error");
    const disconnected = nextEvent(alice, "disconnected");
    await alice.logout();
    const [err] = await error;
    expect(err).toBeInstanceOf(ClientError);
    expect((err as ClientError).detail).toBe(4101);
    expect((await disconnected)[0]).toMatchObject({ code: 4101, willReconnect: false });
    expect(alice.state).toBe("stopped");
    await expect(alice.connect()).rejects.toBeInstanceOf(ClientError);
  });

  it("refuses a message larger than the server's frame limit before sending it", async () => {
    const alice = await newClient(srv.url, userName("alice"));
    clients.push(alice);
    await alice.connect();
    await expect(alice.send("c_x", new Uint8Array(70_000))).rejects.toMatchObject({
      code: "E_FRAME_TOO_LARGE",
    });
    expect(alice.state).toBe("ready");
  });
});
