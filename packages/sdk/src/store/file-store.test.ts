import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { FileLocalStore } from "./file-store.ts";
import { conversation, describeLocalStore, message, pending } from "./local-store-conformance.ts";

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "parley-file-store-"));
  dirs.push(dir);
  return dir;
}
afterEach(async () => {
  for (const dir of dirs.splice(0)) await fs.rm(dir, { recursive: true, force: true });
});

describeLocalStore("FileLocalStore", async () =>
  FileLocalStore.open(await tempDir(), { maxMessagesPerConversation: 3 }),
);

describe("FileLocalStore durability", () => {
  it("survives close and reopen", async () => {
    const dir = await tempDir();
    const a = await FileLocalStore.open(dir);
    a.setMeta({ user: "u_a", server: "http://x" });
    a.putConversation(conversation("c1"));
    a.putMessage(message("c1", 1, "héllo"));
    a.setReceived("c1", 1);
    a.putOutbox(pending("p1"));
    a.putOutbox(pending("p2"));
    a.removeOutbox("p1");
    a.setLogCursor("g1", 4);
    a.setCursor(9);
    await a.close();

    const b = await FileLocalStore.open(dir);
    expect(b.meta()).toEqual({ user: "u_a", server: "http://x" });
    expect(b.cursor()).toBe(9);
    expect(b.logCursor("g1")).toBe(4);
    expect(b.received("c1")).toBe(1);
    expect(b.getConversation("c1")?.name).toBe("c1");
    expect(new TextDecoder().decode(b.getMessage("c1", 1)?.body)).toBe("héllo");
    expect(b.outbox().map((p) => p.cid)).toEqual(["p2"]);
    expect(b.outbox()[0]?.body).toBeInstanceOf(Uint8Array);
    await b.close();
  });

  it("compacts into a snapshot and reopens from it", async () => {
    const dir = await tempDir();
    const a = await FileLocalStore.open(dir, { compactAfterLines: 5 });
    for (let seq = 1; seq <= 20; seq++) {
      a.putMessage(message("c1", seq));
      a.setReceived("c1", seq);
      a.setLogCursor("g1", seq * 2);
      a.setCursor(seq);
      await a.flush();
    }
    await a.close();
    const files = (await fs.readdir(dir)).sort();
    expect(files).toContain("snapshot.json");
    expect(files.filter((f) => f.startsWith("log-"))).toHaveLength(1);
    const b = await FileLocalStore.open(dir);
    expect(b.cursor()).toBe(20);
    expect(b.logCursor("g1")).toBe(40);
    expect(b.messages("c1", { limit: 100 }).map((m) => m.seq)).toEqual(
      Array.from({ length: 20 }, (_, i) => i + 1),
    );
    await b.close();
  });

  it("drops a torn last line and keeps appending cleanly", async () => {
    const dir = await tempDir();
    const a = await FileLocalStore.open(dir);
    a.setCursor(1);
    await a.close();
    await fs.appendFile(path.join(dir, "log-0.jsonl"), '{"o":"cur","v":2');
    const b = await FileLocalStore.open(dir);
    expect(b.cursor()).toBe(1);
    b.setCursor(3);
    await b.close();
    const c = await FileLocalStore.open(dir);
    expect(c.cursor()).toBe(3);
    await c.close();
  });

  it("clear() persists: a cursor set before it does not come back on reopen", async () => {
    const dir = await tempDir();
    const a = await FileLocalStore.open(dir);
    a.setMeta({ user: "u_a", server: "http://x" });
    a.setReceived("c1", 3);
    a.setCursor(5);
    a.clear();
    a.setMeta({ user: "u_b", server: "http://x" });
    expect(a.cursor()).toBe(0);
    await a.close();
    const b = await FileLocalStore.open(dir);
    expect(b.meta()).toEqual({ user: "u_b", server: "http://x" });
    expect(b.received("c1")).toBe(0);
    expect(b.cursor()).toBe(0);
    await b.close();
  });

  it("writes a group log's cursor once per flush, after the batch, and never past a leave", async () => {
    const dir = await tempDir();
    const a = await FileLocalStore.open(dir);
    a.putConversation(conversation("g1"));
    a.putConversation(conversation("g2"));
    for (let useq = 1; useq <= 5; useq++) {
      a.putMessage(message("g1", useq));
      a.setLogCursor("g1", useq);
      a.setLogCursor("g2", useq * 10);
    }
    // Left g2 within the same batch: its cursor must not come back after the rmconv line.
    a.removeConversation("g2");
    await a.flush();
    const lines = (await fs.readFile(path.join(dir, "log-0.jsonl"), "utf8")).trim().split("\n");
    const cursorLines = lines.filter((l) => l.includes('"lcur"'));
    expect(cursorLines).toEqual(['{"o":"lcur","c":"g1","v":5}']);
    expect(lines.indexOf(cursorLines[0]!)).toBeGreaterThan(lines.findIndex((l) => l.includes('"msg"')));
    await a.close();
    const b = await FileLocalStore.open(dir);
    expect(b.logCursors()).toEqual([["g1", 5]]);
    await b.close();
  });

  it("a torn append after a compaction never rolls state back behind the snapshot", async () => {
    const dir = await tempDir();
    const a = await FileLocalStore.open(dir, { compactAfterLines: 4 });
    a.putConversation(conversation("c1"));
    a.putMessage(message("c1", 1, "v1"));
    a.setReceived("c1", 1);
    a.setCursor(1);
    const flushing = a.flush(); // four lines: compacts once they are written
    for (let i = 0; i < 10; i++) await Promise.resolve(); // its lines are taken; the write is under way
    // Changes made during that write: the snapshot taken after it holds them.
    a.putMessage(message("c1", 1, "v2"));
    a.putMessage(message("c1", 1, "v3"));
    a.setCursor(2);
    await flushing;
    expect(await fs.readdir(dir)).toContain("snapshot.json");
    await a.close();
    // A crash in the middle of the next append leaves only its first line.
    const log = path.join(dir, "log-1.jsonl");
    const text = await fs.readFile(log, "utf8").catch(() => "");
    const firstLine = text.indexOf("\n");
    await fs.writeFile(log, firstLine < 0 ? "" : text.slice(0, firstLine + 1));
    const b = await FileLocalStore.open(dir);
    expect(b.cursor()).toBe(2);
    expect(new TextDecoder().decode(b.getMessage("c1", 1)?.body)).toBe("v3");
    await b.close();
  });

  it("refuses a damaged line in the middle of the log", async () => {
    const dir = await tempDir();
    const a = await FileLocalStore.open(dir);
    a.setCursor(1);
    await a.close();
    await fs.appendFile(path.join(dir, "log-0.jsonl"), 'garbage\n{"o":"cur","v":2}\n');
    await expect(FileLocalStore.open(dir)).rejects.toThrow(/line 2 is damaged/);
  });

  it("refuses a damaged snapshot instead of starting empty", async () => {
    const dir = await tempDir();
    await fs.writeFile(path.join(dir, "snapshot.json"), "{not json");
    await expect(FileLocalStore.open(dir)).rejects.toThrow(/damaged/);
  });

  it("keeps a second opener out while the first is open", async () => {
    const dir = await tempDir();
    const a = await FileLocalStore.open(dir);
    await expect(FileLocalStore.open(dir)).rejects.toThrow(/in use/);
    await a.close();
    const b = await FileLocalStore.open(dir);
    await b.close();
  });

  it("survives a process killed with SIGKILL after a flush", async () => {
    const dir = await tempDir();
    const storeModule = path.join(path.dirname(fileURLToPath(import.meta.url)), "file-store.ts");
    const script = `
      const { FileLocalStore } = await import(${JSON.stringify(storeModule)});
      const s = await FileLocalStore.open(${JSON.stringify(dir)});
      s.putOutbox({ cid: "k1", conv: "c1", type: "text/plain", body: new Uint8Array([104, 105]), createdAt: 1 });
      s.setCursor(42);
      await s.flush();
      s.setCursor(43); // never flushed: lost with the process
      process.stdout.write("flushed\\n");
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => {
        if (d.toString().includes("flushed")) resolve();
      });
      child.on("exit", (code) => reject(new Error(`child exited early (${code})`)));
    });
    child.kill("SIGKILL");
    await new Promise((resolve) => child.once("exit", resolve));

    const s = await FileLocalStore.open(dir); // the dead process's lock is taken over
    expect(s.cursor()).toBe(42);
    expect(s.outbox()).toEqual([
      { cid: "k1", conv: "c1", type: "text/plain", body: new Uint8Array([104, 105]), createdAt: 1 },
    ]);
    await s.close();
  });
});
