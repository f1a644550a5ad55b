import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { ConversationId, ServerFrame } from "@parley/protocol";
import { MemoryBus } from "../../packages/server/src/bus/memory/memory-bus.ts";
import { SystemClock } from "../../packages/server/src/clock/system-clock.ts";
import type { Principal } from "../../packages/server/src/core/api.ts";
import { Core } from "../../packages/server/src/core/core.ts";
import type { CoreOptions } from "../../packages/server/src/core/options.ts";
import { silentLogger } from "../../packages/server/src/core/ports/logger.ts";
import { plainHasher } from "../../packages/server/src/core/testing/test-connection.ts";
import { DB_FILE } from "../../packages/server/src/main.ts";
import { MemorySessionDirectory } from "../../packages/server/src/session/memory/memory-session-directory.ts";
import { SqliteStore } from "../../packages/server/src/store/sqlite/sqlite-store.ts";

// Bulk set-up for benchmarks: writes users, devices with tokens, conversations and messages
// straight into a data directory through the Core (with a trivial password hasher: registering
// 10,000 users over REST would spend minutes in argon2), before the server process is started on
// that directory. Nothing here is measured. Passwords do not work with the real server's argon2
// verifier; benchmarks connect with the tokens.

export interface BenchUser {
  id: string;
  name: string;
  device: string;
  token: string;
  principal: Principal;
}

export class Provisioner {
  private constructor(
    readonly core: Core,
    private readonly tag: string,
  ) {}

  /** `options`: core options that must match the server's (largeGroupMembers). */
  static async open(dataDir: string, options: Partial<CoreOptions> = {}): Promise<Provisioner> {
    mkdirSync(dataDir, { recursive: true });
    const store = await SqliteStore.open(join(dataDir, DB_FILE));
    const core = new Core({
      store,
      bus: new MemoryBus<ServerFrame>(),
      sessions: new MemorySessionDirectory(),
      clock: new SystemClock(),
      hasher: plainHasher,
      logger: silentLogger,
      options: { maxPendingSends: 1_000_000, maxCommitQueueMs: 0, ...options },
    });
    return new Provisioner(core, Math.random().toString(36).slice(2, 7));
  }

  /** `n` users named `<prefix><tag><i>`, each with one logged-in device. Runs `concurrency`
   * at once (each is its own transaction). */
  async users(n: number, prefix = "u", concurrency = 64): Promise<BenchUser[]> {
    const out: BenchUser[] = new Array<BenchUser>(n);
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < n; i = next++) {
        const name = `${prefix}${this.tag}${i}`;
        await this.core.register(name, "bench-password");
        const login = await this.core.login(name, "bench-password", "bench");
        const principal = await this.core.authenticate(login.token);
        out[i] = { id: login.user, name, device: login.device, token: login.token, principal };
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
    return out;
  }

  async direct(a: BenchUser, b: BenchUser): Promise<ConversationId> {
    return (await this.core.createDirect(a.principal, b.id)).id;
  }

  /** A group owned by `owner` with `members` (added in chunks within the group size limit). */
  async group(owner: BenchUser, members: BenchUser[], name = "bench group"): Promise<ConversationId> {
    const ids = members.filter((m) => m.id !== owner.id).map((m) => m.id);
    const conv = await this.core.createGroup(owner.principal, name, ids.slice(0, 500));
    for (let i = 500; i < ids.length; i += 500) {
      await this.core.addMembers(owner.principal, conv.id, ids.slice(i, i + 500));
    }
    return conv.id;
  }

  /** `n` messages of `bytes` bytes from `from` into `conv` (group-committed, `window` at once). */
  async messages(from: BenchUser, conv: ConversationId, n: number, bytes = 32, window = 1000): Promise<void> {
    const body = new Uint8Array(bytes);
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < n; i = next++) {
        await this.core.send(from.principal, { conv, cid: `p${this.tag}-${conv}-${i}`, type: "bench", body });
      }
    };
    await Promise.all(Array.from({ length: Math.min(window, n) }, worker));
  }

  close(): Promise<void> {
    return this.core.shutdown();
  }
}
