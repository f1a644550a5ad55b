// The fuzzed server: a `parley serve` child process (fresh data dir, durable SQLite) started with
// --expose-gc and gc-preload.ts, watched for an exit and for error-level log lines, and measured
// (VmRSS from /proc, after a full GC).

import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { type ServerProcess, startServerProcess } from "@parley/cli/src/testing/server-process.ts";

const PRELOAD = pathToFileURL(new URL("./gc-preload.ts", import.meta.url).pathname).href;

/** pino's level numbers: 50 error, 60 fatal. */
const ERROR_LEVEL = 50;

export class ServerWatch {
  /** Error-level log lines and the exit, as violations. */
  readonly problems: string[] = [];
  warnings = 0;
  exited = false;
  private stopping = false;
  /** heapUsed of the server after the last GC request, in MiB. */
  heapMb = NaN;
  private gcWaiters: Array<() => void> = [];

  private constructor(readonly server: ServerProcess) {
    const rl = createInterface({ input: server.child.stdout! });
    rl.on("line", (line) => this.line(line));
    server.child.once("exit", (code, signal) => {
      this.exited = true;
      if (!this.stopping)
        this.problems.push(`server exited during the run (code ${String(code)}, signal ${String(signal)})`);
    });
  }

  static async start(): Promise<ServerWatch> {
    const server = await startServerProcess([], undefined, {
      // tsx first, so that the preload (TypeScript) can load.
      nodeArgs: ["--expose-gc", "--import", "tsx", "--import", PRELOAD],
    });
    return new ServerWatch(server);
  }

  get pid(): number {
    return this.server.pid;
  }

  private line(line: string): void {
    let rec: {
      level?: number;
      msg?: string;
      fuzzGc?: boolean;
      heapUsed?: number;
      err?: { message?: string; stack?: string };
    };
    try {
      rec = JSON.parse(line) as typeof rec;
    } catch {
      return;
    }
    if (rec.fuzzGc !== undefined) {
      this.heapMb = (rec.heapUsed ?? NaN) / 2 ** 20;
      for (const w of this.gcWaiters.splice(0)) w();
      return;
    }
    if (typeof rec.level !== "number") return;
    if (rec.level >= ERROR_LEVEL) {
      this.problems.push(
        `server logged an error: ${rec.msg ?? "?"}${rec.err?.message ? ` (${rec.err.message})` : ""}` +
          // Where it came from: the first frames of the stack.
          (rec.err?.stack ? `\n${rec.err.stack.split("\n").slice(1, 5).join("\n")}` : ""),
      );
    } else if (rec.level >= 40) {
      this.warnings++;
    }
  }

  /** VmRSS of the server, in MiB; NaN once it has exited. */
  rssMb(): number {
    let status: string;
    try {
      status = readFileSync(`/proc/${this.pid}/status`, "utf8");
    } catch {
      return NaN;
    }
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) / 1024 : NaN;
  }

  /** RSS at rest: a full GC in the server, then samples 250 ms apart until two in a row agree
   * within 1 MiB (at most ~5 s); returns the last. */
  async restingRssMb(): Promise<number> {
    const collected = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 10_000);
      this.gcWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    this.server.child.kill("SIGUSR2");
    if (!(await collected)) this.problems.push("the server did not answer the GC request");
    let last = this.rssMb();
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 250));
      const now = this.rssMb();
      if (Math.abs(now - last) < 1) return now;
      last = now;
    }
    return last;
  }

  /** Graceful stop (SIGTERM); reports a non-zero exit. Removes the data dir. */
  async stop(): Promise<void> {
    if (this.exited) return this.server.stop(); // already reported; removes the data dir
    this.stopping = true;
    await this.server.stop();
    const { exitCode, signalCode } = this.server.child;
    if (exitCode !== 0) this.problems.push(`server exited with ${String(exitCode ?? signalCode)} on SIGTERM`);
  }
}
