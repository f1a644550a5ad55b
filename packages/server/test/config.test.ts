import { describe, expect, it } from "vitest";
import { DEFAULT_MAX_FRAME_BYTES } from "@parley/protocol";
import { loadConfig, parseTestFaults } from "../src/config.ts";

describe("loadConfig", () => {
  it("has defaults", () => {
    expect(loadConfig([], {})).toEqual({
      dataDir: "./data",
      host: "127.0.0.1",
      httpPort: 8080,
      tcpPort: 8081,
      tls: undefined,
      store: "sqlite",
      logLevel: "info",
      maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
    });
  });

  it("reads every PARLEY_* variable", () => {
    const c = loadConfig([], {
      PARLEY_DATA: "/var/lib/parley",
      PARLEY_PORT: "9000",
      PARLEY_TCP_PORT: "9001",
      PARLEY_HOST: "0.0.0.0",
      PARLEY_TLS_CERT: "/etc/cert.pem",
      PARLEY_TLS_KEY: "/etc/key.pem",
      PARLEY_STORE: "memory",
      PARLEY_LOG_LEVEL: "debug",
      PARLEY_MAX_FRAME_BYTES: "131072",
    });
    expect(c).toEqual({
      dataDir: "/var/lib/parley",
      host: "0.0.0.0",
      httpPort: 9000,
      tcpPort: 9001,
      tls: { certFile: "/etc/cert.pem", keyFile: "/etc/key.pem" },
      store: "memory",
      logLevel: "debug",
      maxFrameBytes: 131072,
    });
  });

  it("lets flags override variables, in both spellings", () => {
    const env = { PARLEY_PORT: "9000", PARLEY_DATA: "/env", PARLEY_STORE: "memory" };
    const c = loadConfig(["--port", "7000", "--data=/flag", "--tcp-port", "0"], env);
    expect(c.httpPort).toBe(7000);
    expect(c.dataDir).toBe("/flag");
    expect(c.tcpPort).toBe(0);
    expect(c.store).toBe("memory");
  });

  it("reads the overload settings, leaving them to the core's defaults when unset", () => {
    const unset = loadConfig([], {});
    expect(unset.maxCommitQueueMs).toBeUndefined();
    expect(unset.maxRssMb).toBeUndefined();
    const env = loadConfig([], { PARLEY_MAX_COMMIT_QUEUE_MS: "400", PARLEY_MAX_RSS_MB: "512" });
    expect([env.maxCommitQueueMs, env.maxRssMb]).toEqual([400, 512]);
    const flags = loadConfig(["--max-commit-queue-ms=0", "--max-rss-mb", "0"], { PARLEY_MAX_RSS_MB: "512" });
    expect([flags.maxCommitQueueMs, flags.maxRssMb]).toEqual([0, 0]);
    expect(parseTestFaults("commit-delay=20,commit-batch-max=25")).toEqual({
      commitDelayMs: 20,
      commitBatchMax: 25,
    });
  });

  it("reads the SQLite cache size in MiB, refusing 0 and nonsense", () => {
    expect(loadConfig([], {}).sqliteCacheMb).toBeUndefined();
    expect(loadConfig([], { PARLEY_SQLITE_CACHE_MB: "16" }).sqliteCacheMb).toBe(16);
    expect(loadConfig(["--sqlite-cache-mb", "2"], { PARLEY_SQLITE_CACHE_MB: "16" }).sqliteCacheMb).toBe(2);
    for (const bad of ["0", "-1", "1.5", "lots", "65537"]) {
      expect(() => loadConfig(["--sqlite-cache-mb", bad], {})).toThrow(/sqlite-cache-mb/);
    }
  });

  it("reads the commit interval in ms: 0 turns the commit log off; above 2 s is refused", () => {
    expect(loadConfig([], {}).commitIntervalMs).toBeUndefined();
    expect(loadConfig([], { PARLEY_COMMIT_INTERVAL_MS: "0" }).commitIntervalMs).toBe(0);
    expect(
      loadConfig(["--commit-interval-ms", "250"], { PARLEY_COMMIT_INTERVAL_MS: "0" }).commitIntervalMs,
    ).toBe(250);
    for (const bad of ["-1", "1.5", "soon", "2001"]) {
      expect(() => loadConfig(["--commit-interval-ms", bad], {})).toThrow(/commit-interval-ms/);
    }
  });

  it("reads the commit log's directory, the data directory unless given", () => {
    expect(loadConfig([], {}).commitLogDir).toBeUndefined();
    expect(loadConfig([], { PARLEY_COMMIT_LOG_DIR: "/disk2/log" }).commitLogDir).toBe("/disk2/log");
    expect(
      loadConfig(["--commit-log-dir", "log"], { PARLEY_COMMIT_LOG_DIR: "/disk2/log" }).commitLogDir,
    ).toBe("log");
  });

  it("reads the large-group threshold, refusing groups of fewer than 2 and nonsense", () => {
    expect(loadConfig([], {}).largeGroupMembers).toBeUndefined();
    expect(loadConfig([], { PARLEY_LARGE_GROUP_MEMBERS: "100" }).largeGroupMembers).toBe(100);
    expect(
      loadConfig(["--large-group-members=3"], { PARLEY_LARGE_GROUP_MEMBERS: "100" }).largeGroupMembers,
    ).toBe(3);
    for (const bad of ["0", "1", "-5", "2.5", "many"]) {
      expect(() => loadConfig(["--large-group-members", bad], {})).toThrow(/large-group-members/);
    }
  });

  it("reads the connection limits, leaving them to the gateways' defaults when unset", () => {
    const unset = loadConfig([], {});
    expect([
      unset.maxConnectionsPerIp,
      unset.maxBytesPerSecond,
      unset.maxOutboundBytes,
      unset.handshakeTimeoutMs,
    ]).toEqual([undefined, undefined, undefined, undefined]);
    const env = loadConfig([], {
      PARLEY_MAX_CONNECTIONS_PER_IP: "50000",
      PARLEY_MAX_BYTES_PER_SECOND: "0",
      PARLEY_MAX_OUTBOUND_BYTES: "1048576",
      PARLEY_HANDSHAKE_TIMEOUT_MS: "5000",
    });
    expect(env).toMatchObject({
      maxConnectionsPerIp: 50000,
      maxBytesPerSecond: 0,
      maxOutboundBytes: 1048576,
      handshakeTimeoutMs: 5000,
    });
    const flags = loadConfig(
      [
        "--max-connections-per-ip",
        "0",
        "--max-bytes-per-second=1024",
        "--max-outbound-bytes",
        "65536",
        "--handshake-timeout-ms=100",
      ],
      { PARLEY_MAX_CONNECTIONS_PER_IP: "7", PARLEY_HANDSHAKE_TIMEOUT_MS: "5000" },
    );
    expect(flags).toMatchObject({
      maxConnectionsPerIp: 0,
      maxBytesPerSecond: 1024,
      maxOutboundBytes: 65536,
      handshakeTimeoutMs: 100,
    });
  });

  it("reads the metrics listener, off unless a port is given", () => {
    expect(loadConfig([], {}).metricsPort).toBeUndefined();
    const c = loadConfig(["--metrics-port", "9464"], { PARLEY_METRICS_HOST: "0.0.0.0" });
    expect([c.metricsPort, c.metricsHost]).toEqual([9464, "0.0.0.0"]);
    expect(loadConfig([], { PARLEY_METRICS_PORT: "0" }).metricsPort).toBe(0);
    expect(() => loadConfig(["--metrics-port", "65536"], {})).toThrow(/--metrics-port/);
    expect(() => loadConfig([], { PARLEY_METRICS_PORT: "x" })).toThrow(/PARLEY_METRICS_PORT/);
  });

  it("ignores empty variables", () => {
    expect(loadConfig([], { PARLEY_PORT: "" }).httpPort).toBe(8080);
  });

  it.each([
    [["--port", "70000"], {}, /--port must be an integer from 0 to 65535/],
    [["--port", "-1"], {}, /--port/],
    [["--port", "80x"], {}, /--port/],
    [[], { PARLEY_TCP_PORT: "1.5" }, /PARLEY_TCP_PORT must be an integer/],
    [["--store", "postgres"], {}, /--store must be one of sqlite, memory/],
    [[], { PARLEY_LOG_LEVEL: "loud" }, /PARLEY_LOG_LEVEL must be one of/],
    [["--max-frame-bytes", "10"], {}, /--max-frame-bytes must be an integer from 1024/],
    [["--max-commit-queue-ms", "60001"], {}, /--max-commit-queue-ms must be an integer from 0 to 60000/],
    [["--max-commit-queue-ms", "-5"], {}, /--max-commit-queue-ms must be an integer/],
    [[], { PARLEY_MAX_COMMIT_QUEUE_MS: "250ms" }, /PARLEY_MAX_COMMIT_QUEUE_MS must be an integer/],
    [["--max-rss-mb", "1.5"], {}, /--max-rss-mb must be an integer from 0 to 1048576/],
    [["--max-rss-mb", "1048577"], {}, /--max-rss-mb must be an integer/],
    [[], { PARLEY_MAX_RSS_MB: "2G" }, /PARLEY_MAX_RSS_MB must be an integer/],
    [["--max-rss-mb"], {}, /--max-rss-mb needs a value/],
    [["--max-connections-per-ip", "-1"], {}, /--max-connections-per-ip must be an integer from 0 to 1000000/],
    [["--max-connections-per-ip", "1000001"], {}, /--max-connections-per-ip must be an integer/],
    [[], { PARLEY_MAX_CONNECTIONS_PER_IP: "lots" }, /PARLEY_MAX_CONNECTIONS_PER_IP must be an integer/],
    [
      ["--max-bytes-per-second", "1023"],
      {},
      /--max-bytes-per-second must be 0 \(unlimited\) or at least 1024/,
    ],
    [[], { PARLEY_MAX_BYTES_PER_SECOND: "1" }, /PARLEY_MAX_BYTES_PER_SECOND must be 0 \(unlimited\) or at/],
    [["--max-bytes-per-second", "1MiB"], {}, /--max-bytes-per-second must be an integer/],
    [["--max-bytes-per-second", "1073741825"], {}, /--max-bytes-per-second must be an integer from 0/],
    [
      ["--max-outbound-bytes", "65535"],
      {},
      /--max-outbound-bytes must be an integer from 65536 to 1073741824/,
    ],
    [[], { PARLEY_MAX_OUTBOUND_BYTES: "8M" }, /PARLEY_MAX_OUTBOUND_BYTES must be an integer/],
    [["--handshake-timeout-ms", "99"], {}, /--handshake-timeout-ms must be an integer from 100 to 600000/],
    [["--handshake-timeout-ms", "600001"], {}, /--handshake-timeout-ms must be an integer/],
    [[], { PARLEY_HANDSHAKE_TIMEOUT_MS: "10s" }, /PARLEY_HANDSHAKE_TIMEOUT_MS must be an integer/],
    [["--handshake-timeout-ms"], {}, /--handshake-timeout-ms needs a value/],
    [["--tls-cert", "c.pem"], {}, /--tls-cert and --tls-key/],
    [["--nope", "1"], {}, /unknown flag --nope/],
    [["--port"], {}, /--port needs a value/],
    [["--port", "--host", "x"], {}, /--port needs a value/],
    [["serve"], {}, /unexpected argument "serve"/],
  ])("refuses %j %j", (argv, env, message) => {
    expect(() => loadConfig(argv, env)).toThrow(message);
  });

  it.each(["commit-batch-max", "commit-batch-max=0", "commit-batch-max=ten"])(
    "refuses PARLEY_TEST_FAULTS=%s",
    (spec) => {
      expect(() => parseTestFaults(spec)).toThrow(/commit-batch-max/);
    },
  );
});
