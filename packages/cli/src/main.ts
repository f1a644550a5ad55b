// `parley`: the command-line entry. Each command lives in commands/<name>.ts, is loaded only
// when used, and resolves with the process exit code (0 ok, 1 failure, 2 usage error).

const USAGE = `Usage: parley <command> [options]

Commands:
  serve [flags]                     run the server (HTTP + WebSocket, TCP)
  user add <name> [--password <pw>] create an account in the data directory
  chat [options]                    interactive client
  help                              show this help

Server flags (environment variable, default):
  --data <dir>             PARLEY_DATA             ./data
  --port <n>               PARLEY_PORT             8080   HTTP API and WebSocket (/v1/ws)
  --tcp-port <n>           PARLEY_TCP_PORT         8081   binary protocol over TCP
  --host <addr>            PARLEY_HOST             127.0.0.1
  --tls-cert <file>        PARLEY_TLS_CERT                PEM certificate: TLS on the TCP port
  --tls-key <file>         PARLEY_TLS_KEY                 PEM private key
  --store sqlite|memory    PARLEY_STORE            sqlite
  --log-level <level>      PARLEY_LOG_LEVEL        info   fatal|error|warn|info|debug|trace|silent
  --max-frame-bytes <n>    PARLEY_MAX_FRAME_BYTES  65536

user add reads the password from --password, else PARLEY_PASSWORD, else one line of stdin.
See docs/configuration.md and docs/operations.md.
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve": {
      const { runServe } = await import("./commands/serve.ts");
      return runServe(rest);
    }
    case "user": {
      if (rest[0] === "add") {
        const { runUserAdd } = await import("./commands/user-add.ts");
        return runUserAdd(rest.slice(1));
      }
      process.stderr.write(
        `parley user: unknown subcommand${rest[0] ? ` "${rest[0]}"` : ""}; try "parley user add <name>"\n`,
      );
      return 2;
    }
    case "chat": {
      const { runChat } = await import("./commands/chat.ts");
      return runChat(rest);
    }
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE);
      return 0;
    case undefined:
      process.stderr.write(USAGE);
      return 2;
    default:
      process.stderr.write(`parley: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

try {
  // Exit explicitly: a command that has finished must not be kept alive by a stray handle.
  process.exit(await main(process.argv.slice(2)));
} catch (err) {
  process.stderr.write(`parley: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
}
