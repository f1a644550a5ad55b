import type { ServerFrame } from "@parley/protocol";
import { MemoryBus } from "../src/bus/memory/memory-bus.ts";
import { SystemClock } from "../src/clock/system-clock.ts";
import { Core } from "../src/core/core.ts";
import type { CoreOptions } from "../src/core/options.ts";
import type { Clock } from "../src/core/ports/clock.ts";
import { silentLogger } from "../src/core/ports/logger.ts";
import type { Store } from "../src/core/ports/store.ts";
import { plainHasher } from "../src/core/testing/test-connection.ts";
import { MemorySessionDirectory } from "../src/session/memory/memory-session-directory.ts";
import { MemoryStore } from "../src/store/memory/memory-store.ts";

/** A Core on in-memory adapters with a fast password hasher, for tests. Defaults: a fresh
 * MemoryStore and the system clock. */
export function newTestCore(
  deps: { store?: Store; clock?: Clock; options?: Partial<CoreOptions> } = {},
): Core {
  return new Core({
    store: deps.store ?? new MemoryStore(),
    bus: new MemoryBus<ServerFrame>(),
    sessions: new MemorySessionDirectory(),
    clock: deps.clock ?? new SystemClock(),
    hasher: plainHasher,
    logger: silentLogger,
    options: deps.options ?? {},
  });
}
