// The TCP stream parser: bytes in, frame bodies out. A two-state byte machine (HEADER: reading
// the 4-byte big-endian length; BODY: reading that many bytes) that does no I/O, so any transport
// (node:net, a test, a fuzzer) can drive it.

import { ParleyError } from "./errors.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "./frames.ts";

export type FrameParserState = "HEADER" | "BODY";

export interface FrameParserOptions {
  /** Largest body accepted, in bytes, excluding the length prefix. Default 64 KiB. */
  maxFrameBytes?: number;
}

/** Splits a length-prefixed byte stream into frame bodies. Memory held between pushes never
 * exceeds maxFrameBytes + 4 bytes. After it throws, the parser is dead: every later push throws
 * the same error (the connection must be closed). */
export class FrameParser {
  readonly maxFrameBytes: number;
  #state: FrameParserState = "HEADER";
  #failure: ParleyError | undefined;
  readonly #header = new Uint8Array(4);
  #headerFill = 0;
  #bodyLength = 0;
  #body: Uint8Array | undefined; // allocated only when a body spans pushes
  #bodyFill = 0;

  constructor(options: FrameParserOptions = {}) {
    const max = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    if (!Number.isInteger(max) || max < 1 || max > 0xffffffff) {
      throw new RangeError(`maxFrameBytes must be an integer in 1..2^32-1, got ${max}`);
    }
    this.maxFrameBytes = max;
  }

  get state(): FrameParserState {
    return this.#state;
  }

  /** Bytes held or reserved for the incomplete frame (header bytes, or 4 + the body's size once
   * a part of it has arrived). 0 between frames. */
  get bufferedBytes(): number {
    if (this.#state === "HEADER") return this.#headerFill;
    return this.#body === undefined ? 4 : 4 + this.#bodyLength;
  }

  /** Feeds the next chunk of the stream; returns the bodies it completed, in stream order.
   * A body contained in one chunk is a view into that chunk (no copy): the caller must not
   * overwrite a chunk while using bodies taken from it. Throws ParleyError: E_FRAME_TOO_LARGE as
   * soon as a header announces more than maxFrameBytes (before any of the body is buffered),
   * E_BAD_FRAME for a zero length. Bodies completed earlier in the same chunk are then dropped. */
  push(chunk: Uint8Array): Uint8Array[] {
    if (this.#failure !== undefined) throw this.#failure;
    const bodies: Uint8Array[] = [];
    const end = chunk.length;
    let pos = 0;
    while (pos < end) {
      if (this.#state === "HEADER") {
        let length: number;
        if (this.#headerFill === 0 && end - pos >= 4) {
          length = readUint32(chunk, pos);
          pos += 4;
        } else {
          while (this.#headerFill < 4 && pos < end) this.#header[this.#headerFill++] = chunk[pos++]!;
          if (this.#headerFill < 4) break;
          length = readUint32(this.#header, 0);
          this.#headerFill = 0;
        }
        this.#startBody(length);
      } else {
        const missing = this.#bodyLength - this.#bodyFill;
        if (this.#body === undefined && end - pos >= missing) {
          bodies.push(new Uint8Array(chunk.buffer, chunk.byteOffset + pos, missing));
          pos += missing;
          this.#state = "HEADER";
          continue;
        }
        this.#body ??= new Uint8Array(this.#bodyLength);
        const take = Math.min(missing, end - pos);
        this.#body.set(chunk.subarray(pos, pos + take), this.#bodyFill);
        this.#bodyFill += take;
        pos += take;
        if (this.#bodyFill === this.#bodyLength) {
          bodies.push(this.#body);
          this.#body = undefined;
          this.#bodyFill = 0;
          this.#state = "HEADER";
        }
      }
    }
    return bodies;
  }

  #startBody(length: number): void {
    if (length > this.maxFrameBytes) {
      this.#fail(
        new ParleyError(
          "E_FRAME_TOO_LARGE",
          `frame of ${length} bytes exceeds the maximum of ${this.maxFrameBytes}`,
        ),
      );
    }
    if (length === 0) this.#fail(new ParleyError("E_BAD_FRAME", "zero-length frame"));
    this.#bodyLength = length;
    this.#bodyFill = 0;
    this.#state = "BODY";
  }

  #fail(error: ParleyError): never {
    this.#failure = error;
    this.#body = undefined;
    throw error;
  }
}

function readUint32(bytes: Uint8Array, at: number): number {
  // Multiply the top byte: `<< 24` would go negative.
  return bytes[at]! * 0x1000000 + ((bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!);
}
