import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

// The SDK's core is isomorphic (DESIGN.md, "Layers"): only the Node entry points may import
// node:* or ws, and nothing reachable from src/mod.ts may import those entry points.

const SRC = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "src");
const NODE_ONLY = new Set([
  "node.ts",
  "transport/tcp-transport.ts",
  "transport/node-ws.ts",
  "store/file-store.ts",
]);

function sources(dir = SRC): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return sources(full);
    return e.name.endsWith(".ts") && !e.name.endsWith(".test.ts") ? [path.relative(SRC, full)] : [];
  });
}

function imports(file: string): string[] {
  const text = fs.readFileSync(path.join(SRC, file), "utf8");
  return [...text.matchAll(/^(?:import|export)[^"';]*?from\s+"([^"]+)"/gm)].map((m) => m[1]!);
}

describe("SDK imports", () => {
  it("only the Node entry points import node:* or ws", () => {
    const offenders = sources()
      .filter((f) => !NODE_ONLY.has(f))
      .flatMap((f) =>
        imports(f)
          .filter((i) => i.startsWith("node:") || i === "ws")
          .map((i) => `${f} -> ${i}`),
      );
    expect(offenders).toEqual([]);
  });

  it("nothing reachable from mod.ts is Node-only", () => {
    const seen = new Set<string>();
    const visit = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      for (const i of imports(file)) {
        if (i.startsWith(".")) visit(path.normalize(path.join(path.dirname(file), i)));
      }
    };
    visit("mod.ts");
    expect([...seen].filter((f) => NODE_ONLY.has(f))).toEqual([]);
    expect(seen.has("client.ts")).toBe(true);
  });
});
