import { MemoryStore } from "./memory-store.ts";
import { runStoreConformance } from "../store-conformance.ts";

runStoreConformance("MemoryStore", () =>
  Promise.resolve({ store: new MemoryStore(), cleanup: () => Promise.resolve() }),
);
