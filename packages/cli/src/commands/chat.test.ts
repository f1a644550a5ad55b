import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import type { Conversation, Message } from "@parley/sdk/node";
import { ParleyClient, textOf } from "@parley/sdk/node";
import { loadConfig, startServer } from "@parley/server";
import { describe, expect, it } from "vitest";
import { parseChatLine } from "./chat-session.ts";
import {
  conversationLabel,
  conversationLine,
  findConversation,
  formatMessage,
  openingPage,
  shortId,
  unreadCount,
  unreadSummary,
} from "./chat-view.ts";
import { parseChatArgs, runChat } from "./chat.ts";

describe("parseChatLine", () => {
  it.each([
    ["", { kind: "empty" }],
    ["   ", { kind: "empty" }],
    ["hello there", { kind: "send", text: "hello there" }],
    ["  leading spaces kept", { kind: "send", text: "  leading spaces kept" }],
    ["//not a command", { kind: "send", text: "/not a command" }],
    ["/list", { kind: "list" }],
    ["/open bob", { kind: "open", target: "bob" }],
    ["/open   k3j5ab  ", { kind: "open", target: "k3j5ab" }],
    ["/group crew bob carol", { kind: "group", name: "crew", users: ["bob", "carol"] }],
    ["/history", { kind: "history", limit: 20 }],
    ["/history 5", { kind: "history", limit: 5 }],
    ["/members", { kind: "members", limit: 50 }],
    ["/members 100", { kind: "members", limit: 100 }],
    ["/quit", { kind: "quit" }],
    ["/q", { kind: "quit" }],
    ["/help", { kind: "help" }],
    ["text with CR\r", { kind: "send", text: "text with CR" }],
  ])("%j", (line, expected) => {
    expect(parseChatLine(line)).toEqual(expected);
  });

  it.each([
    "/open",
    "/open a b",
    "/group crew",
    "/group",
    "/history 0",
    "/history x",
    "/list x",
    "/members 0",
    "/members 101",
    "/members 2 3",
    "/nope",
  ])("%j is a usage error", (line) => {
    expect(parseChatLine(line).kind).toBe("error");
  });
});

describe("parseChatArgs", () => {
  it("reads flags, with defaults and environment fallbacks", () => {
    expect(parseChatArgs(["--user", "alice", "--password=pw"], {})).toEqual({
      server: "http://127.0.0.1:8080",
      user: "alice",
      password: "pw",
      transport: "ws",
      tcpPort: 8081,
      json: false,
    });
    expect(
      parseChatArgs(
        ["--server", "http://h:1", "--transport", "tcp", "--tcp-port", "9", "--json", "--state", "d"],
        {
          PARLEY_USER: "bob",
          PARLEY_PASSWORD: "secret",
        },
      ),
    ).toEqual({
      server: "http://h:1",
      user: "bob",
      password: "secret",
      transport: "tcp",
      tcpPort: 9,
      json: true,
      state: "d",
    });
  });

  it.each([
    [["--password", "x"], /--user/],
    [["--user", "a"], /password/],
    [["--user", "a", "--password", "x", "--transport", "udp"], /ws or tcp/],
    [["--user", "a", "--password", "x", "--tcp-port", "99999"], /port/],
    [["--user", "a", "--password", "x", "--server", "ftp://x"], /http/],
    [["--user"], /needs a value/],
    [["--bogus"], /unknown/],
  ])("%j is refused", (args, message) => {
    const r = parseChatArgs(args, {});
    expect("error" in r && r.error).toMatch(message);
  });
});

describe("display helpers", () => {
  const direct: Conversation = {
    id: "c_abcdefghijklmnop",
    kind: "direct",
    name: "",
    createdAt: 0,
    lastSeq: 0,
    members: [
      { user: "u_me", role: "member", delivered: 0, read: 0 },
      { user: "u_bobbobbob", role: "member", delivered: 0, read: 0 },
    ],
  };
  const group: Conversation = { ...direct, id: "c_zzzzzz1234", kind: "group", name: "Crew" };

  it("labels and finds conversations", () => {
    expect(shortId(direct.id)).toBe("abcdef");
    expect(conversationLabel(direct, "u_me", new Map([["u_bobbobbob", "bob"]]))).toBe("bob");
    expect(conversationLabel(direct, "u_me", new Map())).toBe("user:bobbob");
    expect(conversationLabel(group, "u_me", new Map())).toBe("#Crew");
    expect(findConversation("abcdef", [direct, group])).toBe(direct);
    expect(findConversation("#crew", [direct, group])).toBe(group);
    expect(findConversation(group.id, [direct, group])).toBe(group);
    expect(findConversation("bob", [direct, group])).toBeUndefined();
  });

  it("counts unread messages from the higher of the server's and the local read mark", () => {
    const c: Conversation = {
      ...direct,
      lastSeq: 7,
      members: [
        { user: "u_me", role: "member", delivered: 7, read: 3 },
        { user: "u_bobbobbob", role: "member", delivered: 7, read: 7 },
      ],
    };
    expect(unreadCount(c, "u_me")).toBe(4);
    expect(unreadCount(c, "u_me", 5)).toBe(2);
    expect(unreadCount(c, "u_me", 1)).toBe(4);
    expect(unreadCount(c, "u_me", 9)).toBe(0);
    expect(unreadCount(c, "u_outsider")).toBe(0);
    expect(conversationLine(c, "bob", 4, false)).toBe("   abcdef  bob  (direct, 7 messages, 4 unread)");
    expect(conversationLine({ ...group, lastSeq: 1 }, "#Crew", 0, true)).toBe(
      " * zzzzzz  #Crew  (group, 2 members, 1 message)",
    );
    // A large group lists only some members: the line counts them all.
    expect(conversationLine({ ...group, large: true, memberCount: 9000 }, "#Crew", 0, false)).toBe(
      "   zzzzzz  #Crew  (group, 9000 members, 0 messages)",
    );
    expect(unreadSummary(0, 0)).toBe("No unread messages.");
    expect(unreadSummary(1, 1)).toBe("1 unread message in 1 conversation.");
    expect(unreadSummary(5, 2)).toBe("5 unread messages in 2 conversations.");
  });

  it("opens on the unread messages, at most the last 50, else on the last 10", () => {
    expect(openingPage(7, 3)).toEqual({ unread: 4, query: { after: 3, limit: 50 } });
    expect(openingPage(130, 20)).toEqual({ unread: 110, query: { after: 80, limit: 50 } });
    expect(openingPage(7, 7)).toEqual({ unread: 0, query: { limit: 10 } });
    expect(openingPage(0, 0)).toEqual({ unread: 0, query: { limit: 10 } });
  });

  it("formats messages", () => {
    const m: Message = {
      conv: direct.id,
      seq: 1,
      from: "u_me",
      dev: "d",
      cid: "x",
      type: "text/plain",
      body: new TextEncoder().encode("hi"),
      ts: 0,
    };
    expect(formatMessage(m, "bob", "alice")).toBe("[bob] alice: hi");
    expect(formatMessage({ ...m, editedAt: 1 }, "bob", "alice")).toBe("[bob] alice: hi (edited)");
    expect(formatMessage({ ...m, type: "image/png" }, "bob", "alice")).toBe(
      "[bob] alice: <image/png, 2 bytes>",
    );
    expect(formatMessage({ ...m, deleted: true, body: new Uint8Array() }, "bob", "alice")).toBe(
      "[bob] alice: (deleted)",
    );
  });
});

describe("parley chat against a real server", () => {
  it("opens a direct conversation, sends, and prints incoming messages live", async () => {
    await withServer(async ({ url, alice, bob, password }) => {
      const bobClient = await ParleyClient.login({ url, name: bob, password, device: "test" });
      try {
        await bobClient.connect();
        const bobSeen: string[] = [];
        bobClient.on("message", (m) => bobSeen.push(textOf(m)));

        const chat = startChat(url, alice, password);
        await until(() => chat.printed().includes("No conversations yet"));
        chat.input.write(`/open ${bob}\n`);
        await until(() => chat.printed().includes(`Now in ${bob}`));
        chat.input.write("hello from the terminal\n");
        await until(() => bobSeen.includes("hello from the terminal"));
        const conv = (await bobClient.conversations())[0]!;
        await bobClient.send(conv.id, "hi alice");
        await until(() => chat.printed().includes(`[${bob}] ${bob}: hi alice`));
        chat.input.write("/list\n/history\n/members\n/quit\n");
        expect(await chat.exit).toBe(0);
        // /members: the count, then each member (ordered by id, so either may come first).
        expect(chat.printed()).toContain(`${bob}: 2 members\n`);
        for (const name of [alice, bob]) expect(chat.printed()).toContain(`\n  ${name}\n`);
        expect(chat.printed()).toContain(`[${bob}] ${alice}: hello from the terminal`);
        expect(chat.printed()).toMatch(new RegExp(`${shortId(conv.id)}  ${bob}  \\(direct, 2 messages\\)`));
      } finally {
        await bobClient.close();
      }
    });
  });
});

describe("parley chat catching up", () => {
  it("shows what came while offline as unread, and prints it once on /open, in order", async () => {
    await withServer(async ({ url, alice, bob, password }) => {
      // Bob is offline: alice writes three messages.
      const aliceClient = await ParleyClient.login({ url, name: alice, password, device: "test" });
      try {
        await aliceClient.connect();
        const conv = await aliceClient.createDirect(bob);
        let bobRead = 0;
        aliceClient.on("receipt", (e) => {
          if (e.conv === conv.id && e.kind === "read" && e.user !== aliceClient.user) bobRead = e.seq;
        });
        for (const text of ["one", "two", "three"]) await aliceClient.send(conv.id, text);

        const chat = startChat(url, bob, password);
        await until(() => chat.printed().includes("unread message"));
        expect(chat.printed()).toContain(`${shortId(conv.id)}  ${alice}  (direct, 3 messages, 3 unread)`);
        expect(chat.printed()).toContain("3 unread messages in 1 conversation.");
        // Missed messages are not printed before they are asked for.
        expect(chat.printed()).not.toContain(": one");

        chat.input.write("/list\n");
        await until(() => count(chat.printed(), "3 unread)") === 2);
        chat.input.write(`/open ${alice}\n`);
        await until(() => chat.printed().includes(`: three`));
        const opened = chat.printed().slice(chat.printed().indexOf(`Now in ${alice}`));
        expect(opened.split("\n").slice(0, 4)).toEqual([
          `Now in ${alice} (${shortId(conv.id)}): 3 unread messages.`,
          `[${alice}] ${alice}: one`,
          `[${alice}] ${alice}: two`,
          `[${alice}] ${alice}: three`,
        ]);

        // Live messages keep coming, once each; what was printed is read.
        await aliceClient.send(conv.id, "four");
        await until(() => chat.printed().includes(`[${alice}] ${alice}: four`));
        chat.input.write("/list\n/quit\n");
        expect(await chat.exit).toBe(0);
        expect(chat.printed()).toContain(`${shortId(conv.id)}  ${alice}  (direct, 4 messages)`);
        for (const text of ["one", "two", "three", "four"])
          expect(count(chat.printed(), `: ${text}\n`)).toBe(1);

        // Read on the server too: the next start has nothing unread and opens on the last ones.
        await until(() => bobRead === 4);
        // Piped input, there before the first listing is done: it waits for it.
        const again = startChat(url, bob, password);
        again.input.end(`/open ${alice}\n`);
        expect(await again.exit).toBe(0);
        const lines = again.printed().split("\n");
        const listed = lines.indexOf("No unread messages.");
        expect(listed).toBeGreaterThan(0);
        expect(lines.slice(listed + 1, listed + 6)).toEqual([
          `Now in ${alice} (${shortId(conv.id)}). /history shows earlier messages.`,
          `[${alice}] ${alice}: one`,
          `[${alice}] ${alice}: two`,
          `[${alice}] ${alice}: three`,
          `[${alice}] ${alice}: four`,
        ]);
      } finally {
        await aliceClient.close();
      }
    });
  });
});

/** A real server (SQLite in a temp dir, port 0) with two registered users, stopped afterwards. */
async function withServer(
  fn: (env: { url: string; alice: string; bob: string; password: string }) => Promise<void>,
): Promise<void> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "parley-chat-"));
  const server = await startServer(
    loadConfig(["--data", dataDir, "--port", "0", "--tcp-port", "0", "--log-level", "silent"], {}),
  );
  try {
    const url = `http://127.0.0.1:${server.httpPort}`;
    const suffix = randomBytes(3).toString("hex");
    const [alice, bob] = [`alice_${suffix}`, `bob_${suffix}`];
    const password = "correct horse battery";
    await ParleyClient.register({ url, name: alice, password });
    await ParleyClient.register({ url, name: bob, password });
    await fn({ url, alice, bob, password });
  } finally {
    await server.stop();
    await fs.rm(dataDir, { recursive: true, force: true });
  }
}

/** `parley chat` as `user`, with its input and everything it printed so far. */
function startChat(url: string, user: string, password: string) {
  const input = new PassThrough();
  const output = new PassThrough();
  let printed = "";
  output.on("data", (d: Buffer) => (printed += d.toString()));
  const exit = runChat(["--server", url, "--user", user], {
    input,
    output,
    errors: output,
    env: { PARLEY_PASSWORD: password },
  });
  return { input, exit, printed: () => printed };
}

function count(text: string, part: string): number {
  return text.split(part).length - 1;
}

async function until(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
