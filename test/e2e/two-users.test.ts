import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Message, ServerFrame } from "@parley/protocol";
import { loadConfig } from "../../packages/server/src/config.ts";
import { startServer, type RunningServer } from "../../packages/server/src/main.ts";
import { RawClient, api, newUser, type Wire } from "../helpers/raw-client.ts";

// Two users exchange messages over each wire format against a real server (real sockets, a real
// SQLite file); a third user can neither read, send to, nor learn of their conversation.

const WIRES: Wire[] = ["tcp", "ws-binary", "ws-json"];
const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const pushedMessages = (c: RawClient): Message[] =>
  c.frames.flatMap((f) => (f.t === "push" && f.u.k === "msg" ? [f.u.msg] : []));

describe("two users and an outsider", () => {
  const dir = mkdtempSync(join(tmpdir(), "parley-two-"));
  let server: RunningServer;
  let base: string;

  beforeAll(async () => {
    server = await startServer(
      loadConfig(["--data", dir, "--port", "0", "--tcp-port", "0", "--log-level", "warn"], {}),
    );
    base = `http://127.0.0.1:${server.httpPort}`;
  });
  afterAll(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const [i, wire] of WIRES.entries()) {
    it(`exchange messages over ${wire}, and keep eve out`, async () => {
      const alice = await newUser(base, `alice${i}`);
      const bob = await newUser(base, `bob${i}`);
      const eve = await newUser(base, `eve${i}`);
      const conv = await api<{ id: string }>(
        base,
        "POST",
        "/v1/conversations",
        { kind: "direct", user: bob.user },
        alice.token,
      );
      const a = await RawClient.login(wire, server, alice.token);
      const b = await RawClient.login(wire, server, bob.token);
      const e = await RawClient.login(wire, server, eve.token);

      const sent = await a.request({
        t: "send",
        conv: conv.id,
        cid: "hello",
        type: "text/plain",
        body: text("hi bob"),
      });
      expect(sent).toMatchObject({ t: "sent", seq: 1 });
      const reply = await b.request({
        t: "send",
        conv: conv.id,
        cid: "reply",
        type: "text/plain",
        body: text("hi alice"),
        replyTo: 1,
      });
      expect(reply).toMatchObject({ t: "sent", seq: 2 });
      for (const c of [a, b]) {
        await c.waitFor(() => pushedMessages(c).length === 2);
        expect(pushedMessages(c).map((m) => [m.seq, new TextDecoder().decode(m.body)])).toEqual([
          [1, "hi bob"],
          [2, "hi alice"],
        ]);
      }
      // A resend with the same client id returns the same seq and stores nothing new.
      const again = await a.request({
        t: "send",
        conv: conv.id,
        cid: "hello",
        type: "text/plain",
        body: text("hi bob"),
      });
      expect(again).toMatchObject({ t: "sent", seq: 1 });
      const hist = await b.request({ t: "history", conv: conv.id });
      expect(hist.t === "history" && hist.messages.map((m) => m.seq)).toEqual([1, 2]);

      // Eve: every way in is refused exactly as for a conversation that does not exist.
      const notFound = (f: ServerFrame): void => expect(f).toMatchObject({ t: "error", code: "E_NOT_FOUND" });
      notFound(
        await e.request({ t: "send", conv: conv.id, cid: "x", type: "text/plain", body: text("let me in") }),
      );
      notFound(await e.request({ t: "history", conv: conv.id }));
      notFound(await e.request({ t: "history", conv: "c_doesnotexist" }));
      notFound(await e.request({ t: "receipt", conv: conv.id, kind: "read", seq: 1 }));
      notFound(await e.request({ t: "react", conv: conv.id, seq: 1, emoji: "+1", on: true }));
      notFound(await e.request({ t: "edit", conv: conv.id, seq: 1, type: "text/plain", body: text("x") }));
      notFound(await e.request({ t: "delete", conv: conv.id, seq: 1 }));
      const synced = await e.request({ t: "sync", cursor: 0 });
      expect(synced).toMatchObject({ t: "synced", updates: [], head: 0 });
      await expect(
        api(base, "GET", `/v1/conversations/${conv.id}`, undefined, eve.token),
      ).rejects.toMatchObject({ status: 404 });
      await expect(
        api(base, "GET", `/v1/conversations/${conv.id}/messages`, undefined, eve.token),
      ).rejects.toMatchObject({
        status: 404,
      });
      expect(await api(base, "GET", "/v1/conversations", undefined, eve.token)).toEqual({
        conversations: [],
      });
      e.send({ t: "typing", conv: conv.id });
      e.send({ t: "watch", users: [alice.user, bob.user] });
      const ping = await e.request({ t: "history", conv: conv.id }); // a round trip after the above
      notFound(ping);
      expect(e.frames.filter((f) => f.t === "push" || f.t === "presence" || f.t === "typing")).toEqual([]);
      expect(b.frames.filter((f) => f.t === "typing")).toEqual([]);
      // Nothing eve tried changed what alice and bob see.
      const after = await a.request({ t: "history", conv: conv.id });
      expect(
        after.t === "history" && after.messages.map((m) => [m.seq, m.editedAt, m.deleted, m.reactions]),
      ).toEqual([
        [1, undefined, undefined, undefined],
        [2, undefined, undefined, undefined],
      ]);
      for (const c of [a, b, e]) c.close();
    });
  }
});
