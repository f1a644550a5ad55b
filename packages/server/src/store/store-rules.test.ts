import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { compareText } from "./store-rules.ts";

// compareText must order ids exactly as SQLite's BINARY collation does (by UTF-8 bytes), or the
// memory store would page members differently from SQLite. JS `<` compares UTF-16 units, which
// disagrees above U+FFFF (a surrogate pair sorts before U+E000..U+FFFF).

const utf8Order = (a: string, b: string): number => Math.sign(Buffer.compare(Buffer.from(a), Buffer.from(b)));

describe("compareText", () => {
  it("orders like the UTF-8 bytes, for any strings of whole code points", () => {
    fc.assert(
      fc.property(fc.string({ unit: "grapheme" }), fc.string({ unit: "grapheme" }), (a, b) => {
        expect(Math.sign(compareText(a, b))).toBe(utf8Order(a, b));
      }),
      { numRuns: 2000 },
    );
  });

  it("puts a character above U+FFFF after U+FFFD, where UTF-16 order would not", () => {
    expect(compareText("\u{1F600}", "\uFFFD")).toBeGreaterThan(0);
    expect("\u{1F600}" < "\uFFFD").toBe(true);
    expect(compareText("ab", "abc")).toBeLessThan(0);
    expect(compareText("abc", "abc")).toBe(0);
  });
});
