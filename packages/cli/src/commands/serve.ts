import { loadConfig, startServer } from "@parley/server";
import type { RunningServer } from "@parley/server";

// `parley serve [flags]`: runs the server until SIGTERM or SIGINT, then stops gracefully (see
// docs/operations.md). A second signal exits at once with status 1.

/** Resolves with the exit code once the server has stopped (or failed to start). */
export async function runServe(args: string[]): Promise<number> {
  let server: RunningServer;
  try {
    const config = loadConfig(args, process.env);
    try {
      server = await startServer(config);
    } catch (err) {
      process.stderr.write(`parley serve: ${describe(err)}\n`);
      return 1;
    }
  } catch (err) {
    process.stderr.write(`parley serve: ${describe(err)}\n(see "parley help")\n`);
    return 2;
  }

  return new Promise<number>((resolve) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (++signals > 1) {
        process.stderr.write(`parley serve: ${signal} again, exiting without a graceful stop\n`);
        process.exit(1);
      }
      server.stop().then(
        () => resolve(0),
        (err: unknown) => {
          process.stderr.write(`parley serve: error while stopping: ${describe(err)}\n`);
          resolve(1);
        },
      );
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
