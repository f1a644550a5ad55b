// Validation of decoded frames against frame-schemas.ts: one compiled validator per frame type,
// picked by `t`, and errors that name the offending field.

import { Compile } from "typebox/compile";
import type { Validator } from "typebox/compile";
import type { TObject } from "typebox";
import type { TLocalizedValidationError } from "typebox/error";
import { ParleyError } from "./errors.ts";
import { clientVariants, isPlainObject, serverVariants } from "./frame-schemas.ts";
import type { ClientFrame, ServerFrame } from "./frames.ts";

// The schemas, for reuse (the variant lists and helpers stay internal).
export {
  LIMITS,
  BytesSchema,
  MessageSchema,
  MemberSchema,
  ConversationSchema,
  UpdateSchema,
  LoggedUpdateSchema,
  HelloFrameSchema,
  SendFrameSchema,
  AckFrameSchema,
  SyncFrameSchema,
  HistoryFrameSchema,
  ReceiptFrameSchema,
  EditFrameSchema,
  DeleteFrameSchema,
  ReactFrameSchema,
  TypingFrameSchema,
  WatchPresenceFrameSchema,
  PingFrameSchema,
  PongFrameSchema,
  ClientFrameSchema,
  WelcomeFrameSchema,
  SentFrameSchema,
  PushFrameSchema,
  SyncedFrameSchema,
  HistoryResultFrameSchema,
  OkFrameSchema,
  TypingEventFrameSchema,
  PresenceFrameSchema,
  ErrorFrameSchema,
  ByeFrameSchema,
  ServerFrameSchema,
} from "./frame-schemas.ts";

// ---------------------------------------------------------------- parsing

// Compiled once per frame type. typebox compiles to JavaScript with `new Function` and falls
// back to interpreting the schema where that is forbidden (CSP without unsafe-eval).
function compileAll(variants: TObject[]): Map<string, Validator> {
  return new Map(variants.map((v) => [(v.properties.t as { const: string }).const, Compile(v)]));
}
const clientValidators = compileAll(clientVariants);
const serverValidators = compileAll(serverVariants);

/** Returns `value` typed as a ClientFrame when it is one. Throws ParleyError: E_UNKNOWN_FRAME
 * for an object whose `t` is a string naming no client frame, E_BAD_FRAME (naming the field)
 * for anything else invalid. */
export function parseClientFrame(value: unknown): ClientFrame {
  return parseFrame(clientValidators, value) as ClientFrame;
}

/** As parseClientFrame, for frames a server sends. */
export function parseServerFrame(value: unknown): ServerFrame {
  return parseFrame(serverValidators, value) as ServerFrame;
}

function parseFrame(validators: Map<string, Validator>, value: unknown): unknown {
  if (!isPlainObject(value)) throw new ParleyError("E_BAD_FRAME", "frame: must be an object");
  const t = value.t;
  if (typeof t !== "string") throw new ParleyError("E_BAD_FRAME", "t: must be a string");
  const validator = validators.get(t);
  if (validator === undefined) {
    throw new ParleyError("E_UNKNOWN_FRAME", `unknown frame type ${JSON.stringify(t.slice(0, 32))}`);
  }
  if (validator.Check(value)) return value;
  throw new ParleyError("E_BAD_FRAME", describe(t, validator.Errors(value)));
}

/** "send.body: must be bytes (a Uint8Array)": the frame type, the path to the first offending
 * field, and what is wrong with it. */
function describe(t: string, errors: TLocalizedValidationError[]): string {
  const error = errors[0];
  if (error === undefined) return `${t}: invalid`;
  const path = t + error.instancePath.replace(/\/(\d+)(?=\/|$)/g, "[$1]").replaceAll("/", ".");
  switch (error.keyword) {
    case "boolean":
      return `${path}: unknown field`; // additionalProperties: false
    case "required":
      return `${path}.${error.params.requiredProperties[0] ?? "?"}: missing`;
    case "enum":
      return `${path}: must be one of ${error.params.allowedValues.map((v) => JSON.stringify(v)).join(", ")}`;
    case "const":
      return `${path}: must be ${JSON.stringify(error.params.allowedValue)}`;
    case "not":
      return `${path}: value not allowed`;
    case "propertyNames":
      return `${path}: invalid key`;
    default:
      return `${path}: ${error.message}`;
  }
}
