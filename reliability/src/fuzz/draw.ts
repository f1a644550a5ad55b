// Seeded random choices for the generator, all drawn through one fast-check generator (fc.gen)
// per fuzz case, so that (run seed, case index) alone determines a case.

import fc from "fast-check";

/** Draws one value of an arbitrary. */
export type Draw = <T>(arb: fc.Arbitrary<T>) => T;

/** The generator of case `index` of the run seeded with `seed`. */
export function drawFor(seed: number, index: number): Draw {
  const [g] = fc.sample(fc.gen(), { seed: caseSeed(seed, index), numRuns: 1 });
  return <T>(arb: fc.Arbitrary<T>): T => g!(() => arb);
}

/** A 32-bit seed per case (murmur3's finaliser over the run seed and the index). */
export function caseSeed(seed: number, index: number): number {
  let h = (Math.imul(seed | 0, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) | 0;
}

/** Uniform in min..max (no bias: the choices of the generator must keep their weights). */
export function int(draw: Draw, min: number, max: number): number {
  return draw(fc.noBias(fc.integer({ min, max })));
}

/** True with probability `percent` / 100. */
export function chance(draw: Draw, percent: number): boolean {
  return int(draw, 0, 9999) < percent * 100;
}

export function oneOf<T>(draw: Draw, items: readonly T[]): T {
  return items[int(draw, 0, items.length - 1)]!;
}

/** One of the values, with probability proportional to its weight. */
export function weighted<T>(draw: Draw, table: ReadonlyArray<readonly [number, T]>): T {
  const total = table.reduce((n, [w]) => n + w, 0);
  let x = (int(draw, 0, 999_999) / 1_000_000) * total;
  for (const [w, value] of table) {
    if (x < w) return value;
    x -= w;
  }
  return table[table.length - 1]![1];
}
