import { afterEach, beforeEach, describe } from "vitest";
import type { Store } from "../core/ports/store.ts";
import { accountCases } from "./conformance/accounts.ts";
import { conversationCases } from "./conformance/conversations.ts";
import { largeGroupCases } from "./conformance/large-groups.ts";
import { messageCases } from "./conformance/messages.ts";
import { propertyCases } from "./conformance/property.ts";
import { syncCases } from "./conformance/sync.ts";

// The Store conformance suite: every Store implementation runs exactly these tests (hono's
// common.case.test.ts pattern), so MemoryStore, SqliteStore and the server stores cannot disagree
// on semantics. `open` returns a fresh, empty store; `cleanup` runs after the suite has closed it
// and removes whatever the store left behind (files, schemas).

export type OpenStore = () => Promise<{ store: Store; cleanup: () => Promise<void> }>;

export function runStoreConformance(name: string, open: OpenStore): void {
  describe(`Store conformance: ${name}`, () => {
    let current: { store: Store; cleanup: () => Promise<void> } | undefined;

    beforeEach(async () => {
      current = await open();
    });

    afterEach(async () => {
      if (!current) return;
      await current.store.close();
      await current.cleanup();
      current = undefined;
    });

    const store = (): Store => {
      if (!current) throw new Error("no store open");
      return current.store;
    };

    accountCases(store);
    conversationCases(store);
    messageCases(store);
    syncCases(store);
    largeGroupCases(store);
    propertyCases(open);
  });
}
