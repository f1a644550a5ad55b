import { FileLocalStore, ParleyClient } from "@parley/sdk/node";
import type { ChatIo } from "./chat-session.ts";
import { ChatSession, HELP } from "./chat-session.ts";

// `parley chat`: a line-based terminal client on the SDK. Logs in as device "cli", lists the
// conversations with short ids and unread counts, then reads commands and messages from stdin.
// Incoming messages print live as `[conv-name] sender: text`; those that came while offline show
// as unread, and /open prints them. This file parses the arguments and runs the session
// (chat-session.ts); what is shown is computed by pure functions (chat-view.ts), so that it can
// be tested without a terminal.

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

/** An error's message with its causes ("fetch failed: connect ECONNREFUSED 127.0.0.1:1"). */
function describe(err: unknown): string {
  const parts: string[] = [];
  for (let e = err; e instanceof Error && parts.length < 4; e = e.cause) parts.push(e.message);
  return parts.length > 0 ? parts.join(": ") : String(err);
}
