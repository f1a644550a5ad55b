// The public entry of @parley/protocol: frame types, error codes, both codecs, the TCP frame
// parser and validation. Isomorphic: runs unchanged in Node and browsers.

import { decodeBinary } from "./binary-codec.ts";
import type { ClientFrame, ServerFrame } from "./frames.ts";
import { decodeJson } from "./json-codec.ts";
import { parseClientFrame, parseServerFrame } from "./validate.ts";

export * from "./frames.ts";
export * from "./errors.ts";
export { encodeBinary, encodeFramed, decodeBinary, lengthPrefixed } from "./binary-codec.ts";
export { encodeJson, decodeJson } from "./json-codec.ts";
export { FrameParser } from "./frame-parser.ts";
export type { FrameParserOptions, FrameParserState } from "./frame-parser.ts";
export { MAX_NESTING, plainValueEnd } from "./msgpack-check.ts";
export { encodeBase64, decodeBase64 } from "./base64.ts";
export * from "./validate.ts";

/** Decodes and validates one binary frame from a client. Throws ParleyError (E_BAD_FRAME,
 * E_UNKNOWN_FRAME) and nothing else. */
export function decodeClientBinary(bytes: Uint8Array): ClientFrame {
  return parseClientFrame(decodeBinary(bytes));
}

/** Decodes and validates one JSON frame from a client. Throws as decodeClientBinary. */
export function decodeClientJson(text: string): ClientFrame {
  return parseClientFrame(decodeJson(text));
}

/** Decodes and validates one binary frame from a server. Throws as decodeClientBinary. */
export function decodeServerBinary(bytes: Uint8Array): ServerFrame {
  return parseServerFrame(decodeBinary(bytes));
}

/** Decodes and validates one JSON frame from a server. Throws as decodeClientBinary. */
export function decodeServerJson(text: string): ServerFrame {
  return parseServerFrame(decodeJson(text));
}
