import { readFileSync } from "node:fs";
import type { ChaosEvent } from "./events.ts";

// Reads a chaos history file (JSON lines, events.ts) and checks each event's shape, so the
// checker can trust the types. Blank lines are skipped; anything else that is not a well-formed
// event is an error naming the file and line.

type Shape = "string" | "number" | "boolean" | "object" | "string?" | "strings" | "numbers";

const FIELDS: Record<ChaosEvent["e"], Record<string, Shape>> = {
  setup: { t: "number", seed: "number", convs: "object", devices: "strings" },
  send: { t: "number", dev: "string", user: "string", conv: "string", cid: "string" },
  ack: { t: "number", dev: "string", user: "string", conv: "string", cid: "string", seq: "number" },
  "send-failed": { t: "number", dev: "string", conv: "string", cid: "string", code: "string" },
  recv: {
    t: "number",
    dev: "string",
    conv: "string",
    seq: "number",
    from: "string",
    cid: "string",
    body: "string",
  },
  edit: { t: "number", dev: "string", conv: "string", seq: "number", body: "string" },
  "edit-ack": { t: "number", dev: "string", conv: "string", seq: "number", body: "string" },
  delete: { t: "number", dev: "string", conv: "string", seq: "number" },
  "delete-ack": { t: "number", dev: "string", conv: "string", seq: "number" },
  read: { t: "number", dev: "string", user: "string", conv: "string", seq: "number" },
  final: { t: "number", dev: "string", user: "string", reads: "numbers", messages: "object" },
  fault: { t: "number", kind: "string", target: "string?" },
  end: { t: "number" },
};

const FINAL_MESSAGE: Record<string, Shape> = {
  seq: "number",
  from: "string",
  cid: "string",
  body: "string",
  deleted: "boolean",
};

/** Reads a whole history file. Throws on the first malformed line, naming it. */
export function readHistory(path: string): ChaosEvent[] {
  const lines = readFileSync(path, "utf8").split("\n");
  const events: ChaosEvent[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === "") continue;
    try {
      events.push(parseEvent(line));
    } catch (err) {
      throw new Error(`${path}:${i + 1}: ${(err as Error).message}`, { cause: err });
    }
  }
  return events;
}

/** Parses one history line; throws an Error saying what is wrong with it. */
export function parseEvent(line: string): ChaosEvent {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    throw new Error(`not JSON (${(err as Error).message})`, { cause: err });
  }
  if (!isObject(value)) throw new Error("not a JSON object");
  const kind = value.e;
  if (typeof kind !== "string" || !Object.hasOwn(FIELDS, kind)) {
    throw new Error(`unknown event ${JSON.stringify(kind)}`);
  }
  requireShape(value, FIELDS[kind as ChaosEvent["e"]], `"${kind}"`);
  if (kind === "setup") {
    for (const [conv, members] of Object.entries(value.convs as object)) {
      if (!Array.isArray(members) || !members.every((m) => typeof m === "string")) {
        throw new Error(`"setup": convs.${conv} is not a list of user ids`);
      }
    }
  }
  if (kind === "final") {
    for (const [conv, list] of Object.entries(value.messages as object)) {
      if (!Array.isArray(list)) throw new Error(`"final": messages.${conv} is not a list`);
      list.forEach((m: unknown, i) => {
        if (!isObject(m)) throw new Error(`"final": messages.${conv}[${i}] is not an object`);
        requireShape(m, FINAL_MESSAGE, `"final": messages.${conv}[${i}]`);
      });
    }
  }
  return value as ChaosEvent;
}

function requireShape(value: Record<string, unknown>, fields: Record<string, Shape>, what: string): void {
  for (const [field, shape] of Object.entries(fields)) {
    const v = value[field];
    if (!hasShape(v, shape)) throw new Error(`${what}: field "${field}" is not ${describe(shape)}`);
  }
}

function hasShape(v: unknown, shape: Shape): boolean {
  switch (shape) {
    case "string?":
      return v === undefined || typeof v === "string";
    case "number":
      return typeof v === "number" && Number.isFinite(v);
    case "object":
      return isObject(v);
    case "strings":
      return isObject(v) && Object.values(v).every((x) => typeof x === "string");
    case "numbers":
      return isObject(v) && Object.values(v).every((x) => typeof x === "number" && Number.isFinite(x));
    default:
      return typeof v === shape;
  }
}

function describe(shape: Shape): string {
  switch (shape) {
    case "string?":
      return "a string or absent";
    case "strings":
      return "an object of strings";
    case "numbers":
      return "an object of numbers";
    default:
      return `a ${shape}`;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
