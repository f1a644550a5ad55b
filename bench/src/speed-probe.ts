import { Packr } from "msgpackr";

// How fast this machine is today, in one figure: the machines here are shared, and on some days
// everything runs at half speed or less (docs/benchmarks.md, ninth and tenth sessions), which a
// comparison across days must know. The probe is fixed work like the server's, encoding and
// decoding 50,000 push frames with msgpackr itself (not our codec: the probe must not change when
// our code does) on one thread, timed three times; the best of the three is kept (the others are
// what the machine's neighbours took). Lower is faster.

const FRAMES = 50_000;

export function speedProbeMs(): number {
  const packr = new Packr({ useRecords: false, variableMapSize: true });
  const body = new Uint8Array(32);
  const frame = (i: number) => ({
    t: "push",
    useq: 100_000 + i,
    u: {
      k: "msg",
      msg: {
        conv: "c_probe0000000000000000000",
        seq: 5_000 + i,
        from: "u_probe0000000000000000000",
        dev: "d_probe0000000000000000000",
        cid: `probe-${i}`,
        type: "text/plain",
        body,
        ts: 1_764_300_000_000 + i,
      },
    },
  });
  let best = Number.POSITIVE_INFINITY;
  let check = 0;
  for (let round = 0; round < 3; round++) {
    const t0 = performance.now();
    for (let i = 0; i < FRAMES; i++) check += (packr.unpack(packr.pack(frame(i))) as { useq: number }).useq;
    best = Math.min(best, performance.now() - t0);
  }
  if (check === 0) throw new Error("speed probe: nothing decoded");
  return Math.round(best);
}
