import { describe, expect, it } from "vitest";
import { DEFAULT_CHAOS, runChaos, type ChaosReport } from "../src/chaos/run.ts";

// The short chaos run of `npm test` (docs/reliability.md has the long one): real client
// processes over TCP and WebSocket against a server process that is SIGKILLed and restarted,
// with sockets cut mid-frame, stalled and taken offline; the checker must find nothing. Then the
// same run against a deliberately broken server (sends acknowledged before they are committed):
// the checker must report the loss, which shows that it can fail.

const seed = Number(process.env.PARLEY_CHAOS_SEED ?? 7);

/** The checker found nothing, and the run did exercise what it claims to: at least one SIGKILL,
 * more than `minAcked` acknowledged sends, the final state of every one of `devices`. */
function expectClean({ summary, result }: ChaosReport, minAcked: number, devices = 8): void {
  expect(result.violations.slice(0, 5), JSON.stringify(summary)).toEqual([]);
  expect(result.ok).toBe(true);
  expect(summary.sigkills).toBeGreaterThanOrEqual(1);
  expect(summary.acked).toBeGreaterThan(minAcked);
  expect(summary.delivered).toBeGreaterThan(summary.acked as number);
  expect(summary.finals).toBe(devices);
}

describe("chaos", () => {
  it("keeps every guarantee through SIGKILLs, restarts and network faults", async () => {
    const report = await runChaos({
      ...DEFAULT_CHAOS,
      durationS: 30,
      users: 4,
      devicesPerUser: 2,
      groups: 2,
      directs: 2,
      opsPerSecond: 4,
      killEveryS: 5,
      restartEveryS: 15,
      netFaultEveryS: 1,
      seed,
    });
    expectClean(report, 100);
  }, 240_000);

  it("keeps them in large groups too, whose messages come from the groups' own logs", async () => {
    const report = await runChaos({
      ...DEFAULT_CHAOS,
      durationS: 20,
      users: 4,
      devicesPerUser: 2,
      groups: 2,
      directs: 1,
      opsPerSecond: 4,
      killEveryS: 3,
      restartEveryS: 10,
      netFaultEveryS: 1,
      // Groups have at least 3 members: every one is large.
      largeGroupMembers: 3,
      seed: seed + 1,
    });
    expectClean(report, 60);
  }, 240_000);

  /** The load and faults under which a server that acks before it commits is caught (below). */
  const ACK_BEFORE_COMMIT_RUN = {
    ...DEFAULT_CHAOS,
    // A SIGKILL shows the fault only when it lands while acknowledged appends are still
    // uncommitted (any other write commits them): with 5 kills, about 1 run in 10 saw none.
    // Twelve missed it once in a full `npm test` on a loaded machine (restarts are slower
    // there, so fewer kills land on traffic); eighteen. Even so, one run in a fresh-clone CI
    // (twentieth session) had 9 kills and no replay: kills that came soon after a restart found
    // the clients still reconnecting. So each kill now waits for a send acknowledged in the last
    // half second.
    killOnTraffic: true,
    durationS: 36,
    users: 3,
    devicesPerUser: 2,
    groups: 1,
    directs: 1,
    opsPerSecond: 8,
    killEveryS: 2,
    restartEveryS: 0,
    netFaultEveryS: 0,
    settleTimeoutS: 10,
    seed,
  };

  it("keeps them when SIGKILLs land on acknowledged sends that only the commit log holds", async () => {
    // The commit log acks before SQLite commits too, but only what it has fdatasynced: the same
    // run as the broken server's below, which loses messages, must lose none here, and the
    // server must have found acknowledged, uncommitted sends in its log at least once.
    const report = await runChaos({ ...ACK_BEFORE_COMMIT_RUN, commitIntervalMs: 1000 });
    expectClean(report, 100, 6);
    expect(report.summary.logReplays, JSON.stringify(report.summary)).toBeGreaterThanOrEqual(1);
  }, 240_000);

  it("reports acknowledged messages lost by a server that acks before it commits", async () => {
    const { summary, result } = await runChaos({
      ...ACK_BEFORE_COMMIT_RUN,
      serverFaults: "ack-before-commit=1000",
    });
    expect(result.ok, JSON.stringify(summary)).toBe(false);
    // An acknowledged message lost by the crash shows as "lost" on the devices that never got
    // it, and as "diverged" where some devices got it live and others got the message that
    // reused its seq after the restart. Which of the two a run shows depends on timing.
    const lossSymptoms = (summary.lost as number) + (summary.diverged as number);
    expect(lossSymptoms, JSON.stringify(summary)).toBeGreaterThan(0);
    expect(result.violations.some((v) => v.kind === "lost" || v.kind === "diverged")).toBe(true);
  }, 240_000);
});
