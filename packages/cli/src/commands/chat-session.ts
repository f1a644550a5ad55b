import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import type { Conversation, ConversationId, Message, ParleyClient, UserId } from "@parley/sdk/node";
import {
  conversationLabel,
  conversationLine,
  directPeer,
  findConversation,
  formatMessage,
  openingPage,
  shortId,
  unreadCount,
  unreadSummary,
  userLabel,
} from "./chat-view.ts";

// The interactive part of `parley chat`: one logged-in, connected client, commands from a
// readline. Every line that shows messages (live ones, the page printed on /open, /history) is
// produced by one task queue, so they print in arrival order and a message that history has
// already printed is not printed again when it also arrives live.

export const HELP = `  /list                       conversations, with short ids and unread counts
  /open <user | id | #group>  open a conversation (a user: the direct one) and print its
                              unread messages (else its last 10), marking them read
  /group <name> <user> ...    create a group with these users and open it
  /history [n]                the last n (default 20) messages of the open conversation
  /members [n]                who is in the open conversation (the first n, default 50)
  /quit                       leave (also Ctrl-D)
  anything else               sent to the open conversation (start with // to send a "/")`;

/** Most members /members shows: their names are looked up in one call (at most 100 ids). */
const MEMBERS_SHOWN_MAX = 100;

export type ChatCommand =
  | { kind: "empty" }
  | { kind: "help" }
  | { kind: "list" }
  | { kind: "open"; target: string }
  | { kind: "group"; name: string; users: string[] }
  | { kind: "history"; limit: number }
  | { kind: "members"; limit: number }
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
    case "/members": {
      if (words.length === 0) return { kind: "members", limit: 50 };
      const n = Number(words[0]);
      if (words.length > 1 || !Number.isInteger(n) || n < 1 || n > MEMBERS_SHOWN_MAX) {
        return { kind: "error", message: `usage: /members [1-${MEMBERS_SHOWN_MAX}]` };
      }
      return { kind: "members", limit: n };
    }
    case "/quit":
    case "/exit":
    case "/q":
      return { kind: "quit" };
    default:
      return { kind: "error", message: `unknown command ${command} (try /help)` };
  }
}

export interface ChatIo {
  input: Readable;
  output: Writable;
  /** Usage and fatal errors. */
  errors: Writable;
  env: NodeJS.ProcessEnv;
}

/** A chat over a connected client; run() resolves with the exit code once input ends or /quit.
 * The caller closes the client. */
export class ChatSession {
  /** User names by id, looked up in batches (client.users) as conversations and senders appear. */
  private readonly names = new Map<UserId, string>();
  /** Ids the server does not know: not asked about again. */
  private readonly unknownUsers = new Set<UserId>();
  private readonly convs = new Map<ConversationId, Conversation>();
  /** This user's read marks set here or reported by its other devices: the conversations' own
   * marks lag behind until the next /list. */
  private readonly readMarks = new Map<ConversationId, number>();
  /** Per conversation, the highest seq printed. */
  private readonly printed = new Map<ConversationId, number>();
  private queue: Promise<void> = Promise.resolve();
  private openId: ConversationId | undefined;
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
    rl.setPrompt(this.terminal ? "> " : "");
    // Lines that come during the first listing (piped input) wait for it rather than being lost.
    let chain = this.list(true)
      .catch((err: unknown) => this.print(`error: ${(err as Error).message}`))
      .then(() => {
        rl.prompt();
        return false;
      });
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
    // The first sync replays history; only what arrives once connected is printed (what was
    // missed shows as unread, and /open prints it).
    let live = client.state === "ready";
    client.on("connected", () => (live = true));
    client.on("disconnected", (e) => {
      if (e.willReconnect) this.print(`(connection lost: ${e.reason || e.code}; reconnecting)`);
    });
    client.on("error", (err) => this.print(`(error: ${err.message})`));
    client.on("conversation", (c) => {
      const known = this.convs.has(c.id);
      this.remember(c);
      if (!live || known) return;
      this.inTurn(async () => {
        await this.lookUpNames(peers([c], client.user));
        this.print(`(new conversation ${shortId(c.id)} ${this.label(c)})`);
      });
    });
    client.on("receipt", (e) => {
      if (e.user === client.user && e.kind === "read") this.raiseRead(e.conv, e.seq);
    });
    client.on("message", (msg) => {
      const conv = this.convs.get(msg.conv);
      if (conv && msg.seq > conv.lastSeq) this.convs.set(conv.id, { ...conv, lastSeq: msg.seq });
      if (!live) return;
      this.inTurn(async () => {
        // Already printed from history, fetched while this message was on its way.
        if (msg.seq > (this.printed.get(msg.conv) ?? 0)) {
          await this.lookUpNames([msg.from, ...peers(conv ? [conv] : [], client.user)]);
          this.show(msg);
        }
        if (this.openId === msg.conv) this.markRead(msg.conv, msg.seq);
      });
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
        await this.list(false);
        return false;
      case "open":
        await this.openTarget(cmd.target);
        return false;
      case "group": {
        const ids = [];
        for (const name of cmd.users) ids.push(await this.userId(name));
        const group = await this.client.createGroup(cmd.name, ids);
        await this.serially(() => this.enter(group));
        return false;
      }
      case "history":
        await this.serially(() => this.history(cmd.limit));
        return false;
      case "members":
        await this.members(cmd.limit);
        return false;
      case "send": {
        const open = this.openId;
        if (open === undefined) {
          this.print("no open conversation: /open <user> first");
          return false;
        }
        // Not awaited: the line is queued (and survives reconnects); the echo comes back as a
        // message. A refusal is printed when it arrives.
        this.client.send(open, cmd.text).catch((err: unknown) => {
          this.print(`not sent: ${(err as Error).message}`);
        });
        return false;
      }
    }
  }

  /** Runs `task` after every printing task queued before it; rejects with its error. */
  private serially(task: () => Promise<void>): Promise<void> {
    const run = this.queue.then(task);
    this.queue = run.catch(() => {});
    return run;
  }

  /** `serially`, for event handlers: a failure is printed. */
  private inTurn(task: () => Promise<void>): void {
    this.serially(task).catch((err: unknown) => this.print(`(error: ${(err as Error).message})`));
  }

  /** Stores a conversation's new state, keeping the highest lastSeq seen (a live message can be
   * newer than a state fetched a moment ago). */
  private remember(conv: Conversation): Conversation {
    const known = this.convs.get(conv.id);
    let c = known && known.lastSeq > conv.lastSeq ? { ...conv, lastSeq: known.lastSeq } : conv;
    // A large group's state from the log may not list this user (only the owner and admins):
    // keep the record (read mark) a reply to this user gave.
    const me = known?.members.find((m) => m.user === this.client.user);
    if (c.large && me && !c.members.some((m) => m.user === me.user))
      c = { ...c, members: [...c.members, me] };
    this.convs.set(c.id, c);
    return c;
  }

  private async refresh(): Promise<Conversation[]> {
    return (await this.client.conversations()).map((c) => this.remember(c));
  }

  /** Prints the conversations with their unread counts; with `summary`, then the total. */
  private async list(summary: boolean): Promise<void> {
    const convs = await this.refresh();
    if (convs.length === 0) {
      this.print("No conversations yet: /open <user> to start one.");
      return;
    }
    await this.lookUpNames(peers(convs, this.client.user));
    this.print("Conversations:");
    let total = 0;
    let withUnread = 0;
    for (const c of convs) {
      const unread = this.unread(c);
      total += unread;
      if (unread > 0) withUnread++;
      this.print(conversationLine(c, this.label(c), unread, this.openId === c.id));
    }
    if (summary) this.print(unreadSummary(total, withUnread));
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
    const found = conv;
    await this.serially(() => this.enter(found));
  }

  /** Makes `conv` the open conversation and prints its unread messages (else its last ones),
   * then marks them read. Runs in the queue: live messages of `conv` arriving meanwhile print
   * after these, unless these include them. */
  private async enter(fresh: Conversation): Promise<void> {
    const conv = this.remember(fresh);
    this.openId = conv.id;
    const me = conv.members.find((m) => m.user === this.client.user);
    const { unread, query } = openingPage(conv.lastSeq, Math.max(me?.read ?? 0, this.readMark(conv.id)));
    const page = await this.client.history(conv.id, query);
    await this.lookUpNames([...page.messages.map((m) => m.from), ...peers([conv], this.client.user)]);
    const where = `${this.label(conv)} (${shortId(conv.id)})`;
    if (unread === 0) {
      this.print(`Now in ${where}. /history shows earlier messages.`);
      if (page.messages.length === 0) this.print("(no messages yet)");
    } else {
      const shown = Math.min(unread, query.limit);
      const last = shown < unread ? `, the last ${shown} below` : "";
      this.print(`Now in ${where}: ${unread} unread message${unread === 1 ? "" : "s"}${last}.`);
    }
    this.showPage(conv.id, page.messages);
  }

  private async history(limit: number): Promise<void> {
    const open = this.openId;
    if (open === undefined) {
      this.print("no open conversation");
      return;
    }
    const page = await this.client.history(open, { limit });
    await this.lookUpNames(page.messages.map((m) => m.from));
    if (page.messages.length === 0) this.print("(no messages yet)");
    this.showPage(open, page.messages);
  }

  /** The first `limit` members of the open conversation by id, with their roles, from the
   * server: a large group's state lists only its owner and admins. */
  private async members(limit: number): Promise<void> {
    const conv = this.openId === undefined ? undefined : this.convs.get(this.openId);
    if (!conv) {
      this.print("no open conversation");
      return;
    }
    const page = await this.client.members(conv.id, undefined, limit);
    await this.lookUpNames(page.members.map((m) => m.user));
    const total = conv.memberCount ?? conv.members.length;
    this.print(`${this.label(conv)}: ${total} member${total === 1 ? "" : "s"}`);
    for (const m of page.members) {
      this.print(`  ${userLabel(m.user, this.names)}${m.role === "member" ? "" : ` (${m.role})`}`);
    }
    if (page.more) this.print(`  (the first ${page.members.length} by id)`);
  }

  /** Prints messages of `conv` (ascending seq) and marks them read. */
  private showPage(conv: ConversationId, messages: readonly Message[]): void {
    for (const m of messages) this.show(m);
    const last = messages[messages.length - 1];
    if (last) this.markRead(conv, last.seq);
  }

  private show(msg: Message): void {
    const conv = this.convs.get(msg.conv);
    this.print(formatMessage(msg, conv ? this.label(conv) : shortId(msg.conv), this.sender(msg)));
    this.printed.set(msg.conv, Math.max(msg.seq, this.printed.get(msg.conv) ?? 0));
  }

  private markRead(conv: ConversationId, seq: number): void {
    this.client.markRead(conv, seq);
    this.raiseRead(conv, seq);
  }

  private raiseRead(conv: ConversationId, seq: number): void {
    if (seq > this.readMark(conv)) this.readMarks.set(conv, seq);
  }

  private readMark(conv: ConversationId): number {
    return this.readMarks.get(conv) ?? 0;
  }

  private unread(conv: Conversation): number {
    return unreadCount(conv, this.client.user, this.readMark(conv.id));
  }

  /** Learns the names of the users among `ids` not known yet. A failure is printed, not thrown:
   * the ids then show as short ids. */
  private async lookUpNames(ids: readonly UserId[]): Promise<void> {
    const missing = [...new Set(ids)].filter((id) => !this.names.has(id) && !this.unknownUsers.has(id));
    if (missing.length === 0) return;
    try {
      for (const u of await this.client.users(missing)) this.names.set(u.id, u.name);
      for (const id of missing) if (!this.names.has(id)) this.unknownUsers.add(id);
    } catch (err) {
      this.print(`(could not look up user names: ${(err as Error).message})`);
    }
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
    return userLabel(msg.from, this.names);
  }
}

/** The other members of the direct conversations among `convs`: the users their labels name. */
function peers(convs: readonly Conversation[], me: UserId): UserId[] {
  return convs.flatMap((c) => directPeer(c, me) ?? []);
}
