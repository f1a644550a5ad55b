import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import type { Conversation, Message } from "@parley/sdk/node";
import { FileLocalStore, ParleyClient, textOf } from "@parley/sdk/node";

// `parley chat`: a line-based terminal client on the SDK. Logs in as device "cli", lists the
// conversations with short ids, then reads commands and messages from stdin. Incoming messages
// print live as `[conv-name] sender: text`. Everything that decides what a line means is a pure
// function (parseChatArgs, parseChatLine, ...) so that it can be tested without a terminal.

const USAGE = `Usage: parley chat --user <name> [options]

Options:
  --server <url>       server's HTTP URL (PARLEY_SERVER, default http://127.0.0.1:8080)
  --user <name>        who to log in as (PARLEY_USER)
  --password <pw>      else PARLEY_PASSWORD
  --transport ws|tcp   default ws
  --tcp-port <n>       the server's TCP port, for --transport tcp (default 8081)
  --json               WebSocket JSON subprotocol instead of binary
  --state <dir>        keep the sync state in <dir>, so a restart only fetches what changed

Commands once connected:
`;

const HELP = `  /list                       conversations, with short ids
  /open <user | id | #group>  open the direct conversation with a user, or a conversation
  /group <name> <user> ...    create a group with these users and open it
  /history [n]                the last n (default 20) messages of the open conversation
  /quit                       leave (also Ctrl-D)
  anything else               sent to the open conversation (start with // to send a "/")`;

export interface ChatArgs {
  server: string;
  user: string;
  password: string;
  transport: "ws" | "tcp";
  tcpPort: number;
  json: boolean;
  state?: string;
}

/** Parses `parley chat` arguments; an error message for bad ones. */
export function parseChatArgs(args: readonly string[], env: NodeJS.ProcessEnv): ChatArgs | { error: string } {
  const values = new Map<string, string>();
  let json = false;
  const withValue = new Set(["--server", "--user", "--password", "--transport", "--tcp-port", "--state"]);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? "";
    const eq = arg.indexOf("=");
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (name === "--json" && eq < 0) {
      json = true;
      continue;
    }
    if (!withValue.has(name)) return { error: `unknown argument "${arg}"` };
    const value = eq > 0 ? arg.slice(eq + 1) : args[++i];
    if (value === undefined || value === "") return { error: `${name} needs a value` };
    values.set(name, value);
  }
  const server = values.get("--server") ?? env.PARLEY_SERVER ?? "http://127.0.0.1:8080";
  if (!/^https?:\/\//.test(server)) return { error: `--server must be an http(s) URL, got "${server}"` };
  const user = values.get("--user") ?? env.PARLEY_USER;
  if (!user) return { error: "--user is required" };
  const password = values.get("--password") ?? env.PARLEY_PASSWORD;
  if (!password) return { error: "no password: give --password or set PARLEY_PASSWORD" };
  const transport = values.get("--transport") ?? "ws";
  if (transport !== "ws" && transport !== "tcp") return { error: `--transport must be ws or tcp` };
  const tcpPortText = values.get("--tcp-port") ?? "8081";
  const tcpPort = Number(tcpPortText);
  if (!/^\d+$/.test(tcpPortText) || tcpPort < 1 || tcpPort > 65535) {
    return { error: `--tcp-port must be a port number, got "${tcpPortText}"` };
  }
  const state = values.get("--state");
  return { server, user, password, transport, tcpPort, json, ...(state !== undefined ? { state } : {}) };
}

export type ChatCommand =
  | { kind: "empty" }
  | { kind: "help" }
  | { kind: "list" }
  | { kind: "open"; target: string }
  | { kind: "group"; name: string; users: string[] }
  | { kind: "history"; limit: number }
  | { kind: "quit" }
  | { kind: "send"; text: string }
  | { kind: "error"; message: string };

/** What one input line asks for. */
export function parseChatLine(line: string): ChatCommand {
  const text = line.replace(/\r$/, "");
  if (text.trim() === "") return { kind: "empty" };
  if (text.startsWith("//")) return { kind: "send", text: text.slice(1) };
  if (!text.startsWith("/")) return { kind: "send", text };
  const [command = "", ...words] = text.trim().split(/\s+/);
  switch (command) {
    case "/help":
    case "/?":
      return { kind: "help" };
    case "/list":
    case "/ls":
      return words.length === 0 ? { kind: "list" } : { kind: "error", message: "usage: /list" };
    case "/open":
      return words.length === 1
        ? { kind: "open", target: words[0] ?? "" }
        : { kind: "error", message: "usage: /open <user | id | #group>" };
    case "/group": {
      const [name, ...users] = words;
      if (name === undefined || users.length === 0) {
        return { kind: "error", message: "usage: /group <name> <user> [<user> ...]" };
      }
      return { kind: "group", name, users };
    }
    case "/history": {
      if (words.length === 0) return { kind: "history", limit: 20 };
      const n = Number(words[0]);
      if (words.length > 1 || !Number.isInteger(n) || n < 1 || n > 500) {
        return { kind: "error", message: "usage: /history [1-500]" };
      }
      return { kind: "history", limit: n };
    }
    case "/quit":
    case "/exit":
    case "/q":
      return { kind: "quit" };
    default:
      return { kind: "error", message: `unknown command ${command} (try /help)` };
  }
}

/** A short, readable form of an id: "c_k3j5ab7x..." -> "k3j5ab". */
export function shortId(id: string): string {
  return id.replace(/^[a-z]+_/, "").slice(0, 6);
}

/** "#name" for a group; the other member's name (or short id) for a direct conversation. */
export function conversationLabel(
  conv: Conversation,
  me: string,
  names: ReadonlyMap<string, string>,
): string {
  if (conv.kind === "group") return `#${conv.name}`;
  const other = conv.members.find((m) => m.user !== me)?.user ?? me;
  return names.get(other) ?? `user:${shortId(other)}`;
}

/** The conversation `target` names: a full id, a short id, or "#group" (case-insensitive). */
export function findConversation(target: string, convs: Iterable<Conversation>): Conversation | undefined {
  const list = [...convs];
  const t = target.toLowerCase();
  return (
    list.find((c) => c.id === target) ??
    list.find((c) => shortId(c.id) === t) ??
    (t.startsWith("#")
      ? list.find((c) => c.kind === "group" && c.name.toLowerCase() === t.slice(1))
      : undefined)
  );
}

/** One message as a line: `[label] sender: text`. */
export function formatMessage(msg: Message, label: string, sender: string): string {
  let body: string;
  if (msg.deleted) body = "(deleted)";
  else if (msg.type.startsWith("text/")) body = textOf(msg);
  else body = `<${msg.type}, ${msg.body.byteLength} bytes>`;
  return `[${label}] ${sender}: ${body}${msg.editedAt !== undefined && !msg.deleted ? " (edited)" : ""}`;
}

export interface ChatIo {
  input: Readable;
  output: Writable;
  /** Usage and fatal errors. */
  errors: Writable;
  env: NodeJS.ProcessEnv;
}

/** Runs `parley chat`; resolves with the exit code (0 ok, 1 failure, 2 usage error). */
export async function runChat(
  args: string[],
  io: ChatIo = { input: process.stdin, output: process.stdout, errors: process.stderr, env: process.env },
): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    io.output.write(`${USAGE}${HELP}\n`);
    return 0;
  }
  const parsed = parseChatArgs(args, io.env);
  if ("error" in parsed) {
    io.errors.write(`parley chat: ${parsed.error}\n\n${USAGE}${HELP}\n`);
    return 2;
  }
  const store = parsed.state !== undefined ? await FileLocalStore.open(parsed.state) : undefined;
  let client: ParleyClient;
  try {
    client = await ParleyClient.login({
      url: parsed.server,
      name: parsed.user,
      password: parsed.password,
      device: "cli",
      transport: parsed.transport,
      tcpPort: parsed.tcpPort,
      encoding: parsed.json ? "json" : "binary",
      agent: "parley-cli/0.1",
      ...(store ? { store } : {}),
    });
    await client.connect();
  } catch (err) {
    io.errors.write(`parley chat: ${describe(err)}\n`);
    await store?.close();
    return 1;
  }
  try {
    return await new ChatSession(client, parsed.user, io).run();
  } finally {
    await client.close();
    await store?.close();
  }
}

/** The interactive part: one logged-in, connected client and a readline. */
class ChatSession {
  private readonly names = new Map<string, string>();
  private readonly convs = new Map<string, Conversation>();
  private open: Conversation | undefined;
  private readonly terminal: boolean;

  constructor(
    private readonly client: ParleyClient,
    me: string,
    private readonly io: ChatIo,
  ) {
    this.names.set(client.user, me);
    this.terminal = (io.output as { isTTY?: boolean }).isTTY === true;
  }

  async run(): Promise<number> {
    const rl = createInterface({ input: this.io.input, output: this.io.output, terminal: this.terminal });
    this.print = (line) => {
      if (!this.terminal) return void this.io.output.write(`${line}\n`);
      // Print above the prompt without eating what the user is typing.
      this.io.output.write(`\r\x1b[K${line}\n`);
      rl.prompt(true);
    };
    this.listen();
    this.print(`Logged in as ${this.names.get(this.client.user) ?? ""}. /help for commands.`);
    await this.list();
    rl.setPrompt(this.terminal ? "> " : "");
    rl.prompt();
    let chain = Promise.resolve(false);
    return new Promise<number>((resolve) => {
      rl.on("line", (line) => {
        chain = chain.then(async (done) => {
          if (done) return true;
          const quit = await this.handle(parseChatLine(line)).catch((err: unknown) => {
            this.print(`error: ${(err as Error).message}`);
            return false;
          });
          if (quit) rl.close();
          else rl.prompt();
          return quit;
        });
      });
      rl.on("close", () => void chain.then(() => resolve(0)));
    });
  }

  private print: (line: string) => void = () => {};

  private listen(): void {
    const { client } = this;
    // The first sync replays history; only what arrives once connected is printed.
    let live = client.state === "ready";
    client.on("connected", () => (live = true));
    client.on("disconnected", (e) => {
      if (e.willReconnect) this.print(`(connection lost: ${e.reason || e.code}; reconnecting)`);
    });
    client.on("error", (err) => this.print(`(error: ${err.message})`));
    client.on("conversation", (c) => {
      const known = this.convs.has(c.id);
      this.convs.set(c.id, c);
      if (live && !known) this.print(`(new conversation ${shortId(c.id)} ${this.label(c)})`);
    });
    client.on("message", (msg) => {
      if (!live) return;
      const conv = this.convs.get(msg.conv);
      this.print(formatMessage(msg, conv ? this.label(conv) : shortId(msg.conv), this.sender(msg)));
      if (this.open?.id === msg.conv) client.markRead(msg.conv, msg.seq);
    });
  }

  /** True when the session should end. */
  private async handle(cmd: ChatCommand): Promise<boolean> {
    switch (cmd.kind) {
      case "empty":
        return false;
      case "help":
        this.print(HELP);
        return false;
      case "error":
        this.print(cmd.message);
        return false;
      case "quit":
        return true;
      case "list":
        await this.list();
        return false;
      case "open":
        await this.openTarget(cmd.target);
        return false;
      case "group": {
        const ids = [];
        for (const name of cmd.users) ids.push(await this.userId(name));
        this.select(await this.client.createGroup(cmd.name, ids));
        return false;
      }
      case "history":
        await this.history(cmd.limit);
        return false;
      case "send":
        if (!this.open) {
          this.print("no open conversation: /open <user> first");
          return false;
        }
        // Not awaited: the line is queued (and survives reconnects); the echo comes back as a
        // message. A refusal is printed when it arrives.
        this.client.send(this.open.id, cmd.text).catch((err: unknown) => {
          this.print(`not sent: ${(err as Error).message}`);
        });
        return false;
    }
  }

  private async refresh(): Promise<Conversation[]> {
    const convs = await this.client.conversations();
    for (const c of convs) this.convs.set(c.id, c);
    return convs;
  }

  private async list(): Promise<void> {
    const convs = await this.refresh();
    if (convs.length === 0) {
      this.print("No conversations yet: /open <user> to start one.");
      return;
    }
    this.print("Conversations:");
    for (const c of convs) {
      const what = c.kind === "group" ? `group, ${c.members.length} members` : "direct";
      const mark = this.open?.id === c.id ? "*" : " ";
      const count = `${c.lastSeq} message${c.lastSeq === 1 ? "" : "s"}`;
      this.print(` ${mark} ${shortId(c.id)}  ${this.label(c)}  (${what}, ${count})`);
    }
  }

  private async openTarget(target: string): Promise<void> {
    let conv = findConversation(target, this.convs.values());
    if (!conv) {
      await this.refresh();
      conv = findConversation(target, this.convs.values());
    }
    if (!conv && !target.startsWith("#")) conv = await this.client.createDirect(await this.userId(target));
    if (!conv) {
      this.print(`no conversation ${target}`);
      return;
    }
    this.select(conv);
  }

  private select(conv: Conversation): void {
    this.convs.set(conv.id, conv);
    this.open = conv;
    this.print(`Now in ${this.label(conv)} (${shortId(conv.id)}). /history shows earlier messages.`);
  }

  private async history(limit: number): Promise<void> {
    if (!this.open) {
      this.print("no open conversation");
      return;
    }
    const page = await this.client.history(this.open.id, { limit });
    const label = this.label(this.open);
    if (page.messages.length === 0) this.print("(no messages yet)");
    for (const m of page.messages) this.print(formatMessage(m, label, this.sender(m)));
    const last = page.messages[page.messages.length - 1];
    if (last) this.client.markRead(this.open.id, last.seq);
  }

  private async userId(name: string): Promise<string> {
    const user = await this.client.findUser(name);
    this.names.set(user.id, user.name);
    return user.id;
  }

  private label(conv: Conversation): string {
    return conversationLabel(conv, this.client.user, this.names);
  }

  private sender(msg: Message): string {
    // The API has no lookup by id: names we have not looked up show as short ids.
    return this.names.get(msg.from) ?? `user:${shortId(msg.from)}`;
  }
}

/** An error's message with its causes ("fetch failed: connect ECONNREFUSED 127.0.0.1:1"). */
function describe(err: unknown): string {
  const parts: string[] = [];
  for (let e = err; e instanceof Error && parts.length < 4; e = e.cause) parts.push(e.message);
  return parts.length > 0 ? parts.join(": ") : String(err);
}
