import { hash, verify } from "@node-rs/argon2";
import type { Algorithm } from "@node-rs/argon2";
import type { PasswordHasher } from "../core/ports/password-hasher.ts";

// argon2id through @node-rs/argon2 (native, off the event loop). The parameters default to
// OWASP's second recommended set (19 MiB, 2 passes, 1 lane); each hash embeds its parameters
// (PHC string), so raising them later still verifies old hashes.

export interface Argon2Options {
  /** Memory per hash, in KiB. */
  memoryCostKiB: number;
  timeCost: number;
  parallelism: number;
}

const DEFAULTS: Argon2Options = { memoryCostKiB: 19_456, timeCost: 2, parallelism: 1 };

// `Algorithm` is a const enum in the typings, which isolatedModules cannot inline: 2 is Argon2id.
const ARGON2ID = 2 as Algorithm;

/** PasswordHasher producing argon2id PHC strings. verify() never throws: a malformed or
 * foreign hash is simply a mismatch. */
export class Argon2Hasher implements PasswordHasher {
  private readonly options: Argon2Options;

  constructor(options: Partial<Argon2Options> = {}) {
    this.options = { ...DEFAULTS, ...options };
  }

  hash(password: string): Promise<string> {
    return hash(password, {
      algorithm: ARGON2ID,
      memoryCost: this.options.memoryCostKiB,
      timeCost: this.options.timeCost,
      parallelism: this.options.parallelism,
    });
  }

  async verify(encoded: string, password: string): Promise<boolean> {
    if (typeof encoded !== "string" || !encoded.startsWith("$argon2")) return false;
    try {
      return await verify(encoded, password);
    } catch {
      return false;
    }
  }
}
