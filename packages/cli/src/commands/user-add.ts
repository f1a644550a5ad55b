import { createInterface } from "node:readline";
import { loadConfig, openOfflineCore } from "@parley/server";

// `parley user add <name> [--password <pw>] [server flags]`: creates an account directly in
// the data directory's store (the server may be running: SQLite allows a second writer to
// wait its turn). Prints the new user's id on stdout.

/** Resolves with the exit code. */
export async function runUserAdd(args: string[]): Promise<number> {
  let name: string | undefined;
  let password: string | undefined;
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--password") {
      password = args[++i];
      if (password === undefined) return usage("--password needs a value");
    } else if (arg.startsWith("--password=")) {
      password = arg.slice("--password=".length);
    } else if (arg.startsWith("--")) {
      rest.push(arg);
      // Values of the server flags travel with them.
      if (!arg.includes("=") && args[i + 1] !== undefined && !args[i + 1]!.startsWith("--"))
        rest.push(args[++i]!);
    } else if (name === undefined) {
      name = arg;
    } else {
      return usage(`unexpected argument "${arg}"`);
    }
  }
  if (name === undefined) return usage("missing <name>");

  let config;
  try {
    config = loadConfig(rest, process.env);
  } catch (err) {
    return usage((err as Error).message);
  }
  if (config.store !== "sqlite")
    return usage("user add needs the sqlite store (an in-memory store is gone at exit)");

  password ??= process.env.PARLEY_PASSWORD || (await readPassword());
  if (password === undefined) {
    process.stderr.write("parley user add: no password given (--password, PARLEY_PASSWORD or stdin)\n");
    return 1;
  }

  let offline;
  try {
    offline = await openOfflineCore({ ...config, logLevel: "silent" });
  } catch (err) {
    process.stderr.write(`parley user add: ${(err as Error).message}\n`);
    return 1;
  }
  try {
    const user = await offline.core.register(name, password);
    process.stdout.write(`${user.id}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`parley user add: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await offline.close();
  }
}

function usage(message: string): number {
  process.stderr.write(
    `parley user add: ${message}\nUsage: parley user add <name> [--password <pw>] [--data <dir>]\n`,
  );
  return 2;
}

/** One line of stdin; on a terminal, prompts on stderr and does not echo what is typed. */
function readPassword(): Promise<string | undefined> {
  const { stdin, stderr } = process;
  if (stdin.isTTY) {
    stderr.write("Password: ");
    return new Promise((resolve) => {
      let line = "";
      stdin.setRawMode(true);
      stdin.resume();
      stdin.setEncoding("utf8");
      const onData = (chunk: string): void => {
        for (const ch of chunk) {
          if (ch === "\r" || ch === "\n" || ch === "\u0004" || ch === "\u0003") {
            stdin.setRawMode(false);
            stdin.pause();
            stdin.off("data", onData);
            stderr.write("\n");
            return resolve(ch === "\u0003" ? undefined : line);
          }
          if (ch === "\u007f") line = line.slice(0, -1);
          else line += ch;
        }
      };
      stdin.on("data", onData);
    });
  }
  return new Promise((resolve) => {
    const rl = createInterface({ input: stdin });
    let done = false;
    rl.once("line", (line) => {
      done = true;
      rl.close();
      resolve(line);
    });
    rl.once("close", () => {
      if (!done) resolve(undefined);
    });
  });
}
