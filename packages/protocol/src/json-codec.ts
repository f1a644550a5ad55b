// The JSON encoding (WebSocket subprotocol parley.v1.json): one frame per text message. JSON has
// no bytes, so every Uint8Array, in any field, travels as {"$bytes": "<base64>"}.

import { decodeBase64, encodeBase64 } from "./base64.ts";
import { ParleyError } from "./errors.ts";
import type { Frame } from "./frames.ts";
import { MAX_NESTING } from "./msgpack-check.ts";

function replacer(this: unknown, key: string, value: unknown): unknown {
  // `value` has been through toJSON already (a Node Buffer becomes {type, data}); the holder
  // still has the original.
  const raw = (this as Record<string, unknown>)[key];
  return raw instanceof Uint8Array ? { $bytes: encodeBase64(raw) } : value;
}

/** Encodes a frame as one JSON text. Undefined optional fields are omitted. */
export function encodeJson(frame: Frame): string {
  return JSON.stringify(frame, replacer);
}

/** Decodes one JSON text into plain data, turning {"$bytes": base64} objects back into
 * Uint8Array. Does not validate the frame's shape (see validate.ts). Throws only
 * ParleyError("E_BAD_FRAME"): bad JSON, bad base64, nesting deeper than MAX_NESTING, or a
 * "__proto__" key (refused in both encodings, so they accept the same frames). */
export function decodeJson(text: string): unknown {
  if (typeof text !== "string") throw new ParleyError("E_BAD_FRAME", "json: not text");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new ParleyError("E_BAD_FRAME", "json: invalid JSON", { cause });
  }
  return revive(value, 0);
}

// `depth` counts the containers around `value`; JSON.parse builds any depth, this stops at
// MAX_NESTING before recursing further.
function revive(value: unknown, depth: number): unknown {
  if (typeof value !== "object" || value === null) return value;
  if (Array.isArray(value)) {
    if (depth === MAX_NESTING) throw tooDeep();
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i];
      if (typeof item === "object" && item !== null) value[i] = revive(item, depth + 1);
    }
    return value;
  }
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record);
  if (keys.length === 1 && keys[0] === "$bytes" && typeof record.$bytes === "string") {
    const bytes = decodeBase64(record.$bytes);
    if (bytes === undefined) throw new ParleyError("E_BAD_FRAME", "json: invalid base64 in $bytes");
    return bytes;
  }
  if (depth === MAX_NESTING) throw tooDeep();
  for (const key of keys) {
    if (key === "__proto__") throw new ParleyError("E_BAD_FRAME", 'json: key "__proto__" is not allowed');
    const item = record[key];
    if (typeof item === "object" && item !== null) record[key] = revive(item, depth + 1);
  }
  return record;
}

function tooDeep(): ParleyError {
  return new ParleyError("E_BAD_FRAME", `json: nested deeper than ${MAX_NESTING}`);
}
