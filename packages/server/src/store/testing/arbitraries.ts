import fc from "fast-check";
import type { NewMessage } from "../../core/ports/store.ts";

// fast-check arbitraries for the store's own types, shared by the property tests of the ways a
// batch of sends travels (append-wire.ts) and is kept (commit-log.ts).

/** Any send as the core hands it to the store, odd strings and all. */
export const arbitraryNewMessage: fc.Arbitrary<NewMessage> = fc
  .record({
    conv: fc.string({ minLength: 1, unit: "grapheme" }),
    from: fc.string({ minLength: 1, unit: "grapheme" }),
    dev: fc.string({ minLength: 1 }),
    cid: fc.string({ minLength: 1 }),
    type: fc.string({ minLength: 1 }),
    body: fc.uint8Array({ maxLength: 64 }),
    ts: fc.integer({ min: 0, max: 2 ** 52 }),
    replyTo: fc.option(fc.integer({ min: 1, max: 2 ** 40 }), { nil: undefined }),
  })
  .map(({ replyTo, ...m }) => (replyTo === undefined ? m : { ...m, replyTo }));
