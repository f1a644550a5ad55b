import { createHash, randomBytes } from "node:crypto";

// Identifiers and secrets. Ids are random (not counters) so that several server processes can
// create them without coordination later; 16 base32 characters = 80 bits.

const ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";

/** A new random id such as "u_k3j5...". */
export function newId(prefix: string): string {
  const bytes = randomBytes(10);
  let out = "";
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += ALPHABET[(acc >> bits) & 31];
    }
  }
  return `${prefix}_${out}`;
}

/** A bearer token: 32 random bytes, base64url. Only its sha256 is ever stored. */
export function newToken(): string {
  return randomBytes(32).toString("base64url");
}

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
