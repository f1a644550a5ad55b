import type { Store } from "../../core/ports/store.ts";

// A test fault (PARLEY_TEST_FAULTS=commit-delay=ms): a Store whose group commits take `ms`
// longer, like a slow disk. With the committer's batch limit it caps the sustainable send rate
// at about commitBatchMax * 1000 / ms messages per second, low enough for a test to overload.

export function withCommitDelay(store: Store, ms: number): Store {
  return new Proxy(store, {
    get(target, prop) {
      if (prop === "appendMessages") {
        const append: Store["appendMessages"] = async (batch) => {
          await new Promise((resolve) => setTimeout(resolve, ms));
          return target.appendMessages(batch);
        };
        return append;
      }
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}
