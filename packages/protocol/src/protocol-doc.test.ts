// Every JSON example in docs/protocol.md is a valid frame (or object) of the section it is in,
// and every frame type has its own heading there.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Compile } from "typebox/compile";
import { describe, expect, it } from "vitest";
import { clientFrames, serverFrames } from "./arbitraries.ts";
import { decodeJson } from "./json-codec.ts";
import {
  ConversationSchema,
  MessageSchema,
  parseClientFrame,
  parseServerFrame,
  UpdateSchema,
} from "./validate.ts";

const doc = readFileSync(join(import.meta.dirname, "../../../docs/protocol.md"), "utf8");

function section(title: string): string {
  const start = doc.indexOf(`\n## ${title}\n`);
  expect(start, `docs/protocol.md has "## ${title}"`).toBeGreaterThanOrEqual(0);
  const end = doc.indexOf("\n## ", start + 1);
  return doc.slice(start, end < 0 ? undefined : end);
}

/** [heading of the enclosing ### subsection, JSON text] for every ```json block. */
function examples(text: string): Array<[string, string]> {
  const found: Array<[string, string]> = [];
  let heading = "";
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.startsWith("### ")) heading = line.slice(4);
    if (line !== "```json") continue;
    const end = lines.indexOf("```", i + 1);
    found.push([heading, lines.slice(i + 1, end).join("\n")]);
    i = end;
  }
  return found;
}

describe("docs/protocol.md", () => {
  it.each(examples(section("Frames from the client")))(
    "client example under %s is valid",
    (heading, json) => {
      const frame = parseClientFrame(decodeJson(json));
      expect(frame.t).toBe(heading);
    },
  );

  it.each(examples(section("Frames from the server")))(
    "server example under %s is valid",
    (heading, json) => {
      const frame = parseServerFrame(decodeJson(json));
      expect(heading.split(", ")).toContain(frame.t);
    },
  );

  const schemas = { Message: MessageSchema, Conversation: ConversationSchema, Update: UpdateSchema };
  it.each(examples(section("Shared objects")))("%s example is valid", (heading, json) => {
    const schema = schemas[heading as keyof typeof schemas];
    expect(schema, heading).toBeDefined();
    expect(Compile(schema).Check(decodeJson(json))).toBe(true);
  });

  it("has a heading for every frame type", () => {
    const headings = (title: string) =>
      new Set([...section(title).matchAll(/^### (.+)$/gm)].flatMap((m) => m[1]!.split(", ")));
    expect([...headings("Frames from the client")].sort()).toStrictEqual(Object.keys(clientFrames).sort());
    expect([...headings("Frames from the server")].sort()).toStrictEqual(Object.keys(serverFrames).sort());
  });
});
