// The PasswordHasher port: slow, salted password hashing (argon2id in production, a fast fake
// only in tests that do not test hashing).

export interface PasswordHasher {
  /** A self-describing encoded hash (PHC string), salt included. */
  hash(password: string): Promise<string>;
  /** True if `password` matches `encoded`; false (never throws) for a malformed hash. */
  verify(encoded: string, password: string): Promise<boolean>;
}
