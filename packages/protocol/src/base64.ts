// Base64 (RFC 4648 section 4, standard alphabet) without Node's Buffer and without atob/btoa's
// binary-string round trip. Used by the JSON encoding for byte fields.

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const ENCODE = new Uint8Array(64);
const DECODE = new Int8Array(128).fill(-1);
for (let i = 0; i < 64; i++) {
  const code = ALPHABET.charCodeAt(i);
  ENCODE[i] = code;
  DECODE[code] = i;
}
const PAD = 0x3d; // "="
const ascii = new TextDecoder();

/** Encodes bytes as padded base64. */
export function encodeBase64(bytes: Uint8Array): string {
  const n = bytes.length;
  const out = new Uint8Array(Math.ceil(n / 3) * 4);
  let o = 0;
  let i = 0;
  for (; i + 2 < n; i += 3) {
    const v = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out[o++] = ENCODE[v >> 18]!;
    out[o++] = ENCODE[(v >> 12) & 63]!;
    out[o++] = ENCODE[(v >> 6) & 63]!;
    out[o++] = ENCODE[v & 63]!;
  }
  if (i < n) {
    const two = i + 1 < n;
    const v = (bytes[i]! << 16) | (two ? bytes[i + 1]! << 8 : 0);
    out[o++] = ENCODE[v >> 18]!;
    out[o++] = ENCODE[(v >> 12) & 63]!;
    out[o++] = two ? ENCODE[(v >> 6) & 63]! : PAD;
    out[o++] = PAD;
  }
  return ascii.decode(out);
}

/** Decodes base64, padded or not. Returns undefined for anything that is not canonical base64:
 * characters outside the alphabet, misplaced padding, an impossible length, or non-zero bits
 * after the last byte (RFC 4648 section 3.5), so each byte string has exactly one text form. */
export function decodeBase64(text: string): Uint8Array | undefined {
  let len = text.length;
  if (len % 4 === 0 && len > 0 && text.charCodeAt(len - 1) === PAD) {
    len--;
    if (text.charCodeAt(len - 1) === PAD) len--;
  }
  const tail = len % 4;
  if (tail === 1) return undefined;
  const out = new Uint8Array(((len - tail) / 4) * 3 + (tail === 0 ? 0 : tail - 1));
  let o = 0;
  let i = 0;
  for (; i + 3 < len; i += 4) {
    const v =
      (sextet(text, i) << 18) |
      (sextet(text, i + 1) << 12) |
      (sextet(text, i + 2) << 6) |
      sextet(text, i + 3);
    if (v < 0) return undefined;
    out[o++] = v >> 16;
    out[o++] = (v >> 8) & 0xff;
    out[o++] = v & 0xff;
  }
  if (tail === 2) {
    const a = sextet(text, i);
    const b = sextet(text, i + 1);
    if (a < 0 || b < 0 || (b & 0x0f) !== 0) return undefined;
    out[o++] = (a << 2) | (b >> 4);
  } else if (tail === 3) {
    const a = sextet(text, i);
    const b = sextet(text, i + 1);
    const c = sextet(text, i + 2);
    if (a < 0 || b < 0 || c < 0 || (c & 0x03) !== 0) return undefined;
    out[o++] = (a << 2) | (b >> 4);
    out[o++] = ((b & 0x0f) << 4) | (c >> 2);
  }
  return out;
}

// -1 (which poisons the combined value negative) for a character outside the alphabet.
function sextet(text: string, i: number): number {
  const code = text.charCodeAt(i);
  return code < 128 ? DECODE[code]! : -1;
}
