// Preloaded into `parley serve` by the test and benchmark harness (server-process.ts) when
// PARLEY_HEAP_PROFILE_DIR is set: V8's sampling heap profiler on the main thread, counting what
// is allocated, including what the young-generation and full collections have freed since (Node's
// own --heap-prof keeps only what is still live at the end, which hides the short-lived garbage a
// server makes per message). At exit the profile goes to <dir>/server-<pid>.heapprofile: open it
// in Chrome DevTools (Memory) or summarise it with bench/src/heap-summary.ts.
//
// Sampling starts after PARLEY_HEAP_PROFILE_DELAY_MS (default 0), to leave set-up out.

import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { join } from "node:path";
import { isMainThread } from "node:worker_threads";

const dir = process.env.PARLEY_HEAP_PROFILE_DIR;
if (dir && isMainThread) {
  const session = new Session();
  session.connect();
  const start = (): void =>
    session.post("HeapProfiler.startSampling", {
      samplingInterval: 4096,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  const delayMs = Number(process.env.PARLEY_HEAP_PROFILE_DELAY_MS ?? 0);
  if (delayMs > 0) setTimeout(start, delayMs).unref();
  else start();
  // The inspector answers a session of this thread synchronously, so this works in 'exit'.
  process.on("exit", () => {
    session.post("HeapProfiler.stopSampling", (err, result) => {
      if (err) return;
      writeFileSync(join(dir, `server-${process.pid}.heapprofile`), JSON.stringify(result.profile));
    });
  });
}
