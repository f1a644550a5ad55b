// Time and timers, injectable so that tests can drive them (vitest fake timers also work with
// the default). Milliseconds throughout.

export interface Timers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemTimers: Timers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

export interface BackoffOptions {
  /** First delay, before jitter. */
  baseMs: number;
  /** Largest delay. */
  capMs: number;
}

/** Exponential backoff with "equal jitter": for attempt n (from 0) a delay uniformly drawn from
 * [d/2, d] with d = min(cap, base * 2^n), so retries spread out but never come back at once. */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions,
  random: () => number = Math.random,
): number {
  const d = Math.min(options.capMs, options.baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(d / 2 + random() * (d / 2));
}
