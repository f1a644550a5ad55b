import type { Scenario } from "../harness.ts";
import { directWs } from "./direct-ws.ts";

// Every scenario of `npm run bench`, in the order `npm run bench -- all` runs them.

export const SCENARIOS: Scenario[] = [directWs];
