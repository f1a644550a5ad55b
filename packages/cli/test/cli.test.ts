import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SERVER_NODE_FLAGS } from "../src/node-flags.ts";

// `parley` as a user runs it: a separate process, a real data directory, real ports (0).

const ROOT = resolve(import.meta.dirname, "../../..");
const MAIN = join(ROOT, "packages/cli/src/main.ts");
const BIN = join(ROOT, "packages/cli/bin/parley.js");

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(
  args: string[],
  opts: { input?: string; env?: Record<string, string>; bin?: boolean } = {},
): Promise<Run> {
  const argv = opts.bin ? [BIN, ...args] : ["--import", "tsx", MAIN, ...args];
  const child = spawn(process.execPath, argv, {
    cwd: ROOT,
    env: { ...process.env, PARLEY_PASSWORD: "", ...opts.env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  child.stdin.end(opts.input ?? "");
  return new Promise((resolveRun) => child.once("close", (code) => resolveRun({ code, stdout, stderr })));
}

describe("parley CLI", () => {
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "parley-cli-"));
  });

  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("prints help through the bin launcher", async () => {
    const r = await run(["help"], { bin: true });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Usage: parley <command>");
    expect(r.stdout).toContain("--tcp-port");
  });

  it("npm start runs the server with the server's Node.js flags", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
      scripts: { start: string };
    };
    expect(SERVER_NODE_FLAGS.length).toBeGreaterThan(0);
    expect(pkg.scripts.start).toBe(
      `node ${SERVER_NODE_FLAGS.join(" ")} --import tsx packages/cli/src/main.ts serve`,
    );
  });

  it("refuses an unknown command with status 2", async () => {
    const r = await run(["frobnicate"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown command "frobnicate"');
  });

  it("adds users with the password from the flag or stdin, and refuses a taken name", async () => {
    const first = await run(["user", "add", "alice", "--password", "password-alice", "--data", dir]);
    expect(first.stderr).toBe("");
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/^u_[a-z2-7]+\n$/);

    const second = await run(["user", "add", "bob"], { input: "password-bob\n", env: { PARLEY_DATA: dir } });
    expect(second.code).toBe(0);
    expect(second.stdout).toMatch(/^u_/);

    const again = await run(["user", "add", "ALICE", "--password=password-x", "--data", dir]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("taken");
  });

  it("serves until SIGTERM and exits 0; logs its addresses", async () => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", MAIN, "serve", "--data", dir, "--port", "0", "--tcp-port", "0"],
      { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
    );
    const lines = createInterface({ input: child.stdout });
    const listening = await new Promise<{ httpPort: number; tcpPort: number; ws: string }>(
      (resolveLine, reject) => {
        child.once("exit", (code) => reject(new Error(`exited early with ${code}`)));
        lines.on("line", (line) => {
          const rec = JSON.parse(line) as { msg?: string; httpPort: number; tcpPort: number; ws: string };
          if (rec.msg === "listening") resolveLine(rec);
        });
      },
    );
    expect(listening.ws).toBe(`ws://127.0.0.1:${listening.httpPort}/v1/ws`);
    const health = await fetch(`http://127.0.0.1:${listening.httpPort}/healthz`);
    expect(await health.json()).toEqual({ ok: true });
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });

  it("exits 1 with a clear message when the port is taken", async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const r = await run(["serve", "--data", dir, "--port", String(port), "--tcp-port", "0"]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(
        `cannot listen on 127.0.0.1:${port} (HTTP, --port): the address is already in use`,
      );
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  });

  it("exits 1 naming a damaged data file", async () => {
    writeFileSync(join(dir, "parley.db"), "this is not a database, just text that fills the header");
    const r = await run(["serve", "--data", dir, "--port", "0", "--tcp-port", "0"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("parley.db");
  });

  it("exits 2 on a bad flag, naming it", async () => {
    const r = await run(["serve", "--port", "http"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--port must be an integer");
  });
});
