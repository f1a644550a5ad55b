import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { Message, ServerFrame } from "@parley/protocol";
import { startServerProcess, type ServerProcess } from "../../packages/cli/src/testing/server-process.ts";
import { RawClient, api, newUser } from "../helpers/raw-client.ts";

// DESIGN.md: "A killed server (SIGKILL) loses no acknowledged message and creates no duplicate on
// restart." The server runs as a real process on a real SQLite file; it is killed while sends are
// in flight, right after acknowledging some of them, before the recipient has synced.

const N = 300;

async function syncAll(c: RawClient): Promise<Message[]> {
  const out: Message[] = [];
  let cursor = 0;
  for (;;) {
    const r = await c.request({ t: "sync", cursor });
    if (r.t !== "synced") throw new Error(`sync failed: ${JSON.stringify(r)}`);
    for (const { useq, u } of r.updates) {
      expect(useq).toBe(cursor + 1);
      cursor = useq;
      if (u.k === "msg") out.push(u.msg);
    }
    if (!r.more) return out;
  }
}

describe("durability under SIGKILL", () => {
  const dir = mkdtempSync(join(tmpdir(), "parley-sigkill-"));
  let server: ServerProcess | undefined;
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("loses no acknowledged message and creates no duplicate", async () => {
    server = await startServerProcess([], dir);
    let base = `http://127.0.0.1:${server.httpPort}`;
    const alice = await newUser(base, "alice");
    const bob = await newUser(base, "bob");
    const conv = await api<{ id: string }>(
      base,
      "POST",
      "/v1/conversations",
      { kind: "direct", user: bob.user },
      alice.token,
    );

    const a = await RawClient.login("tcp", server, alice.token);
    const body = new TextEncoder().encode("payload");
    for (let i = 0; i < N; i++)
      a.send({ t: "send", id: i + 1, conv: conv.id, cid: `m${i}`, type: "text/plain", body });
    const isSent = (f: ServerFrame): boolean => f.t === "sent";
    await a.waitFor(() => a.frames.filter(isSent).length >= N / 3);
    await server.kill();
    const acked = new Map<string, number>();
    for (const f of a.frames) if (f.t === "sent") acked.set(f.cid, f.seq);
    expect(acked.size).toBeGreaterThanOrEqual(N / 3);
    a.close();

    server = await startServerProcess([], dir);
    base = `http://127.0.0.1:${server.httpPort}`;
    const b = await RawClient.login("ws-binary", server, bob.token);
    const got = await syncAll(b);
    // Every acknowledged message is there, with the seq that was acknowledged.
    const byCid = new Map(got.map((m) => [m.cid, m.seq]));
    for (const [cid, seq] of acked) expect(byCid.get(cid)).toBe(seq);
    // Gap-free seqs and no cid twice.
    expect(got.map((m) => m.seq)).toEqual(got.map((_, i) => i + 1));
    expect(new Set(got.map((m) => m.cid)).size).toBe(got.length);

    // Alice's SDK would now resend everything unacknowledged with the same cids: nothing is
    // stored twice, and what was stored keeps its seq.
    const a2 = await RawClient.login("tcp", server, alice.token);
    for (let i = 0; i < N; i++) {
      const r = await a2.request({ t: "send", conv: conv.id, cid: `m${i}`, type: "text/plain", body });
      expect(r.t).toBe("sent");
      if (r.t === "sent" && acked.has(`m${i}`)) expect(r.seq).toBe(acked.get(`m${i}`));
    }
    const b2 = await RawClient.login("ws-json", server, bob.token);
    const all = await syncAll(b2);
    expect(all).toHaveLength(N);
    expect(new Set(all.map((m) => m.cid)).size).toBe(N);
    for (const c of [a2, b, b2]) c.close();
  }, 90_000);
});
