import type { Scenario } from "../harness.ts";
import { directWs } from "./direct-ws.ts";
import { directMax, directRate } from "./direct.ts";
import { rawRelay } from "./raw-relay.ts";
import { groupFanout } from "./group-fanout.ts";
import { catchUp } from "./catch-up.ts";
import { idle } from "./idle.ts";
import { loginStorm } from "./login-storm.ts";
import { storeAppend } from "./store-append.ts";
import { logSync } from "./log-sync.ts";

// Every scenario of `npm run bench`, in the order `npm run bench -- all` runs them.

export const SCENARIOS: Scenario[] = [
  directWs,
  groupFanout,
  rawRelay,
  directMax,
  directRate,
  idle,
  catchUp,
  loginStorm,
  storeAppend,
  logSync,
];
