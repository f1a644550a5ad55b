import { describe, expect, it } from "vitest";
import { Argon2Hasher } from "../src/auth/argon2-hasher.ts";

describe("Argon2Hasher", () => {
  const hasher = new Argon2Hasher();

  it("hashes with argon2id and a fresh salt, and verifies", async () => {
    const a = await hasher.hash("correct horse");
    const b = await hasher.hash("correct horse");
    expect(a).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(a).not.toBe(b);
    expect(await hasher.verify(a, "correct horse")).toBe(true);
    expect(await hasher.verify(a, "wrong horse")).toBe(false);
  });

  it("returns false, never throws, for a malformed hash", async () => {
    for (const bad of [
      "",
      "plain$pw",
      "$argon2id$v=19$m=19456,t=2,p=1$garbage",
      "$argon2id$",
      "$2b$10$abcdefghijk",
    ]) {
      expect(await hasher.verify(bad, "pw")).toBe(false);
    }
  });

  it("verifies hashes made with other parameters", async () => {
    const cheap = new Argon2Hasher({ memoryCostKiB: 1024, timeCost: 1 });
    const encoded = await cheap.hash("pw-12345");
    expect(encoded).toContain("m=1024,t=1");
    expect(await hasher.verify(encoded, "pw-12345")).toBe(true);
  });
});
