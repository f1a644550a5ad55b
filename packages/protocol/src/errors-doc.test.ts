// docs/errors.md lists every error and disconnect code, and nothing else: checked both ways, with
// the HTTP status, the retry column and the reconnect column.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DISCONNECT, ERROR_CODES, ERRORS, isErrorCode, mayReconnect } from "./errors.ts";

const doc = readFileSync(join(import.meta.dirname, "../../../docs/errors.md"), "utf8");

function section(title: string): string[][] {
  const start = doc.indexOf(`\n## ${title}\n`);
  expect(start, `docs/errors.md has a "## ${title}" section`).toBeGreaterThanOrEqual(0);
  const end = doc.indexOf("\n## ", start + 1);
  return doc
    .slice(start, end < 0 ? undefined : end)
    .split("\n")
    .filter((line) => line.startsWith("|") && !/^\|\s*:?-/.test(line))
    .slice(1) // the header row
    .map((line) =>
      line
        .split("|")
        .slice(1, -1)
        .map((cell) => cell.trim()),
    );
}

const yesNo = (cell: string | undefined): boolean => {
  expect(["yes", "no"]).toContain(cell);
  return cell === "yes";
};

describe("docs/errors.md", () => {
  const errorRows = section("Error codes").map(([code, meaning, http, retry]) => ({
    code: code!.replace(/`/g, ""),
    meaning: meaning!,
    http: Number(http),
    retry: yesNo(retry),
  }));

  it("lists every error code exactly once, and no other", () => {
    const documented = errorRows.map((row) => row.code);
    expect(new Set(documented).size).toBe(documented.length);
    expect([...documented].sort()).toStrictEqual([...ERROR_CODES].sort());
  });

  it.each(errorRows)("$code has the HTTP status, retry flag and a meaning from errors.ts", (row) => {
    expect(isErrorCode(row.code)).toBe(true);
    if (!isErrorCode(row.code)) return;
    expect(row.http).toBe(ERRORS[row.code].http);
    expect(row.retry).toBe(ERRORS[row.code].retry);
    expect(row.meaning.length).toBeGreaterThan(10);
  });

  const disconnectRows = section("Disconnect codes").map(([code, name, meaning, reconnect]) => ({
    code: Number(code),
    name: name!.replace(/`/g, ""),
    meaning: meaning!,
    reconnect: yesNo(reconnect),
  }));

  it("lists every disconnect code exactly once, and no other", () => {
    const documented = disconnectRows.map((row) => [row.name, row.code] as const);
    expect(new Set(documented.map(([name]) => name)).size).toBe(documented.length);
    expect(Object.fromEntries(documented)).toStrictEqual(DISCONNECT);
  });

  it.each(disconnectRows)("$name ($code) says whether to reconnect as mayReconnect does", (row) => {
    expect(row.reconnect).toBe(mayReconnect(row.code));
    expect(row.meaning.length).toBeGreaterThan(10);
  });
});
