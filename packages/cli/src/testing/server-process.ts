import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { SERVER_NODE_FLAGS } from "../node-flags.ts";

// Starts `parley serve` as a separate process (for end-to-end tests and the benchmark) on a fresh data dir (durable SQLite), and learns
// its ports from its log line "listening".

const ROOT = resolve(import.meta.dirname, "../../../..");

export interface ServerProcess {
  child: ChildProcess;
  pid: number;
  httpPort: number;
  tcpPort: number;
  /** The metrics listener's port, when started with --metrics-port. */
  metricsPort: number | undefined;
  dataDir: string;
  /** Graceful stop (SIGTERM); removes the data dir if this call created it. */
  stop(): Promise<void>;
  /** Kills the process with SIGKILL (no cleanup, the data dir stays). */
  kill(): Promise<void>;
}

export interface ServerProcessOptions {
  /** Environment of the server process (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** Extra node flags, before the script (e.g. --expose-gc). */
  nodeArgs?: string[];
  /** Receives every JSON log record the server prints. */
  onLog?: (rec: Record<string, unknown>) => void;
}

export async function startServerProcess(
  extraArgs: string[] = [],
  dataDir?: string,
  options: ServerProcessOptions = {},
): Promise<ServerProcess> {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), "parley-bench-"));
  const child = spawn(
    process.execPath,
    [
      ...SERVER_NODE_FLAGS,
      ...(options.nodeArgs ?? []),
      // PARLEY_PROFILE_DIR=<dir>: write a V8 CPU profile of the server there when it stops.
      ...(process.env.PARLEY_PROFILE_DIR
        ? ["--cpu-prof", `--cpu-prof-dir=${process.env.PARLEY_PROFILE_DIR}`]
        : []),
      "--import",
      "tsx",
      // PARLEY_HEAP_PROFILE_DIR=<dir>: sample what the server's main thread allocates
      // (heap-sampling.ts; a TypeScript preload, so after tsx).
      ...(process.env.PARLEY_HEAP_PROFILE_DIR
        ? ["--import", join(import.meta.dirname, "heap-sampling.ts")]
        : []),
      join(ROOT, "packages/cli/src/main.ts"),
      "serve",
      "--data",
      dir,
      "--port",
      "0",
      "--tcp-port",
      "0",
      "--log-level",
      "info",
      ...extraArgs,
    ],
    { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"], env: options.env ?? process.env },
  );
  const ports = await new Promise<{ httpPort: number; tcpPort: number; metricsPort: number | undefined }>(
    (resolvePorts, reject) => {
      const rl = createInterface({ input: child.stdout });
      const timer = setTimeout(() => {
        // No "listening" line (e.g. a --log-level above info): do not leave the process behind.
        child.kill("SIGKILL");
        reject(new Error("server did not start in 30 s"));
      }, 30_000);
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`server exited with ${String(code)}`));
      });
      rl.on("line", (line) => {
        try {
          const rec = JSON.parse(line) as { httpPort?: number; tcpPort?: number; metricsPort?: number };
          options.onLog?.(rec);
          if (rec.httpPort !== undefined && rec.tcpPort !== undefined) {
            clearTimeout(timer);
            resolvePorts({ httpPort: rec.httpPort, tcpPort: rec.tcpPort, metricsPort: rec.metricsPort });
          }
        } catch {
          // not a JSON log line
        }
      });
    },
  );
  return {
    child,
    pid: child.pid!,
    ...ports,
    dataDir: dir,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await exited;
      }
      if (!dataDir) rmSync(dir, { recursive: true, force: true });
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await exited;
    },
  };
}
