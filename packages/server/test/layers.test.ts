import { readFileSync, readdirSync } from "node:fs";
import { builtinModules } from "node:module";
import { dirname, join, relative, resolve, sep } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";

// DESIGN.md's dependency rule, checked on the import statements of the source files:
// protocol <- core <- adapters <- composition root; protocol <- sdk. Test files may import
// anything (they assemble real adapters around the core).

const ROOT = resolve(import.meta.dirname, "../../..");
const SERVER_SRC = join(ROOT, "packages/server/src");
const CORE = join(SERVER_SRC, "core");
const COMPOSITION_ROOT = join(SERVER_SRC, "main.ts");

/** Folders under an adapter group that hold test support, not an adapter. */
const NOT_ADAPTERS = new Set(["conformance", "testing"]);

/** Drivers, sockets and frameworks the core must not know about. */
const FORBIDDEN_IN_CORE = [
  /^node:(net|http|https|http2|tls|dgram)$/,
  /^(net|http|https|http2|tls|dgram)$/,
  /^ws$/,
  /^fastify($|\/)/,
  /^@fastify\//,
  /^better-sqlite3$/,
  /^pino($|\/)/,
];

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const path = join(dir, e.name);
    if (e.isDirectory()) out.push(...sourceFiles(path));
    else if (/\.(ts|tsx|mts)$/.test(e.name) && !/\.test\.tsx?$/.test(e.name) && !e.name.endsWith(".d.ts"))
      out.push(path);
  }
  return out;
}

/** Every module specifier a file imports or re-exports, type-only and dynamic ones included. */
function importsOf(file: string): string[] {
  const info = ts.preProcessFile(readFileSync(file, "utf8"), true, true);
  return info.importedFiles.map((f) => f.fileName);
}

/** "store/sqlite" for a path inside packages/server/src/store/sqlite/, else undefined. */
function adapterOf(path: string): string | undefined {
  const rel = relative(SERVER_SRC, path);
  if (rel.startsWith("..")) return undefined;
  const parts = rel.split(sep);
  if (parts.length < 3 || parts[0] === "core" || NOT_ADAPTERS.has(parts[1]!)) return undefined;
  return `${parts[0]}/${parts[1]}`;
}

const isRelative = (spec: string): boolean => spec.startsWith("./") || spec.startsWith("../");
const show = (file: string): string => relative(ROOT, file);

describe("dependency rule", () => {
  const serverFiles = sourceFiles(SERVER_SRC);

  it("finds the sources it checks", () => {
    expect(serverFiles).toContain(COMPOSITION_ROOT);
    expect(serverFiles.some((f) => f.startsWith(CORE + sep))).toBe(true);
  });

  it("core imports no driver, socket, framework or adapter", () => {
    const violations: string[] = [];
    for (const file of serverFiles.filter((f) => f.startsWith(CORE + sep))) {
      for (const spec of importsOf(file)) {
        if (FORBIDDEN_IN_CORE.some((re) => re.test(spec))) violations.push(`${show(file)} imports ${spec}`);
        if (isRelative(spec)) {
          const target = resolve(dirname(file), spec);
          if (!target.startsWith(CORE + sep)) violations.push(`${show(file)} imports ${spec} (outside core)`);
        }
        if (spec.startsWith("@parley/") && spec !== "@parley/protocol")
          violations.push(`${show(file)} imports ${spec}`);
      }
    }
    expect(violations).toEqual([]);
  });

  it("adapters never import each other", () => {
    const violations: string[] = [];
    for (const file of serverFiles) {
      const own = adapterOf(file);
      if (own === undefined) continue;
      for (const spec of importsOf(file).filter(isRelative)) {
        const other = adapterOf(resolve(dirname(file), spec));
        if (other !== undefined && other !== own)
          violations.push(`${show(file)} (${own}) imports ${spec} (${other})`);
      }
    }
    expect(violations).toEqual([]);
  });

  it("only the composition root imports more than one adapter", () => {
    const violations: string[] = [];
    for (const file of serverFiles) {
      if (file === COMPOSITION_ROOT) continue;
      const adapters = new Set<string>();
      for (const spec of importsOf(file).filter(isRelative)) {
        const a = adapterOf(resolve(dirname(file), spec));
        if (a !== undefined) adapters.add(a);
      }
      if (adapters.size > 1) violations.push(`${show(file)} imports ${[...adapters].join(", ")}`);
    }
    expect(violations).toEqual([]);
  });

  it("the CLI reaches the server only through @parley/server", () => {
    const violations: string[] = [];
    for (const file of sourceFiles(join(ROOT, "packages/cli/src"))) {
      for (const spec of importsOf(file)) {
        const deep = spec.startsWith("@parley/server/");
        const intoServer = isRelative(spec) && resolve(dirname(file), spec).startsWith(SERVER_SRC + sep);
        if (deep || intoServer) violations.push(`${show(file)} imports ${spec}`);
      }
    }
    expect(violations).toEqual([]);
  });

  it("protocol and sdk import no Node module (except the SDK's Node entry and TCP transport)", () => {
    const builtins = new Set(builtinModules);
    const isNode = (spec: string): boolean => spec.startsWith("node:") || builtins.has(spec.split("/")[0]!);
    const allowed = (file: string): boolean => {
      const rel = relative(ROOT, file).split(sep).join("/");
      return (
        rel === "packages/sdk/src/node.ts" ||
        rel === "packages/sdk/src/store/file-store.ts" ||
        rel === "packages/sdk/src/transport/node-ws.ts" ||
        /^packages\/sdk\/src\/transport\/tcp[^/]*\.ts$/.test(rel)
      );
    };
    const violations: string[] = [];
    for (const pkg of ["packages/protocol/src", "packages/sdk/src"]) {
      for (const file of sourceFiles(join(ROOT, pkg))) {
        if (allowed(file)) continue;
        for (const spec of importsOf(file))
          if (isNode(spec)) violations.push(`${show(file)} imports ${spec}`);
      }
    }
    expect(violations).toEqual([]);
  });
});
