// The protocol package runs in browsers too (DESIGN.md, "Layers"): its runtime files import no
// Node built-in and use no Buffer. Tests (*.test.ts) may use both.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const dir = import.meta.dirname;
const runtimeFiles = readdirSync(dir).filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts"));

describe("isomorphic", () => {
  it.each(runtimeFiles)("%s imports no Node built-in and uses no Buffer", (file) => {
    const source = readFileSync(join(dir, file), "utf8");
    const imports = [...source.matchAll(/from\s+["']([^"']+)["']/g)].map((m) => m[1]!);
    for (const spec of imports) {
      expect(
        spec.startsWith("node:") || /^(fs|path|net|os|crypto|buffer|stream|util)$/.test(spec),
        spec,
      ).toBe(false);
      // Relative imports name the .ts file (verbatimModuleSyntax, no bundler rewriting).
      if (spec.startsWith(".")) expect(spec.endsWith(".ts"), spec).toBe(true);
      else
        expect(["msgpackr", "typebox", "typebox/compile", "typebox/error", "fast-check"], spec).toContain(
          spec,
        );
    }
    expect(source).not.toMatch(
      /\bBuffer\s*\.\s*(from|alloc|allocUnsafe|concat|isBuffer|byteLength)\b|\bnew\s+Buffer\b/,
    );
    expect(source).not.toMatch(/\bprocess\s*\.|\brequire\s*\(/);
  });
});
