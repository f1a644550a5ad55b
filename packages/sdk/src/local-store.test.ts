import { MemoryLocalStore } from "./local-store.ts";
import { describeLocalStore } from "./store/local-store-conformance.ts";

describeLocalStore("MemoryLocalStore", () =>
  Promise.resolve(new MemoryLocalStore({ maxMessagesPerConversation: 3 })),
);
