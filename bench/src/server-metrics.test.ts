import { describe, expect, it } from "vitest";
import { PrometheusMetrics } from "../../packages/server/src/metrics/prometheus/prometheus-metrics.ts";
import { ServerMetricsWindow, loopDelayMs, parsePrometheus } from "./server-metrics.ts";

describe("ServerMetricsWindow", () => {
  it("parses the text format, keeping labels in the key", () => {
    const s = parsePrometheus('# HELP x y\n# TYPE x counter\nx 3\ny_bucket{le="0.5",kind="a"} 2\n\nbad\n');
    expect([...s]).toEqual([
      ["x", 3],
      ['y_bucket{le="0.5",kind="a"}', 2],
    ]);
  });

  it("takes the sampling interval off the event-loop lag (an idle loop reads about 10 ms)", () => {
    expect(loopDelayMs(0.0123)).toBe(2.3);
    expect(loopDelayMs(0.0101)).toBe(0.1);
    expect(loopDelayMs(0.009)).toBe(0); // a sample that came early is not negative delay
    expect(loopDelayMs(undefined)).toBeUndefined();
  });

  it("reports only what happened between start() and stop(), from a real metrics listener", async () => {
    const metrics = new PrometheusMetrics(() => 7);
    const listener = await metrics.listen("127.0.0.1", 0);
    try {
      metrics.commit(500, 0.3, true); // before the window: not counted
      const window = await ServerMetricsWindow.open(listener.port);
      await window.start();
      for (let i = 0; i < 98; i++) metrics.commit(10, 0.0008, true);
      metrics.commit(10, 0.03, true);
      metrics.commit(10, 0.03, true);
      metrics.commit(10, 0.03, false); // a rolled-back commit is not a commit
      for (let i = 0; i < 97; i++) metrics.logSync(0.0004);
      for (let i = 0; i < 3; i++) metrics.logSync(0.03);
      await window.stop();
      const r = await window.result();
      expect(r.server_msgs_per_commit).toBe(10);
      expect(r.server_commit_p50_ms_at_most).toBe(1);
      expect(r.server_commit_p99_ms_at_most).toBe(50);
      expect(r.server_commits_over_10ms_per_s).toBeGreaterThan(0);
      expect(r.server_commits_per_s).toBeGreaterThan(0);
      expect(r.server_loop_delay_max_ms).toBeGreaterThanOrEqual(0);
      // 3 of 100 log syncs over 10 ms: the p99 falls in the 20-50 ms bucket.
      expect(r.server_log_sync_p99_ms_at_most).toBe(50);
      expect(r.server_log_syncs_over_10ms_per_s).toBeGreaterThan(0);
      expect(r.server_log_syncs_per_s).toBeGreaterThan(0);
      // 97 x 0.4 + 3 x 30 = 128.8 ms in the window, which lasted well under the 128.8 s that
      // would bring it under 1 ms per second.
      expect(r.server_log_sync_ms_per_s).toBeGreaterThan(1);
    } finally {
      await listener.close();
    }
  });

  it("reports no log sync figures for a server without a numbered log", async () => {
    const metrics = new PrometheusMetrics(() => 0);
    const listener = await metrics.listen("127.0.0.1", 0);
    try {
      const window = await ServerMetricsWindow.open(listener.port);
      await window.start();
      metrics.commit(10, 0.001, true);
      await window.stop();
      const r = await window.result();
      expect(r.server_commits_per_s).toBeGreaterThan(0);
      expect(r).not.toHaveProperty("server_log_syncs_per_s");
      expect(r).not.toHaveProperty("server_log_sync_ms_per_s");
    } finally {
      await listener.close();
    }
  });
});
