import { ParleyError } from "./errors.ts";

// Shared by this package's tests (not exported from mod.ts).

/** The ParleyError `fn` throws; fails if it throws anything else or nothing. */
export function thrownParleyError(fn: () => unknown): ParleyError {
  try {
    fn();
  } catch (error) {
    if (error instanceof ParleyError) return error;
    throw new Error(`expected a ParleyError, got ${String(error)}`, { cause: error });
  }
  throw new Error("expected a ParleyError, nothing was thrown");
}
