import { DEFAULT_MAX_FRAME_BYTES } from "@parley/protocol";
import type { CoreOptions } from "./core/options.ts";

// Server configuration from command-line flags and PARLEY_* environment variables. A flag wins
// over its variable, which wins over the default. docs/configuration.md lists every setting.

export type StoreKind = "sqlite" | "memory";
export type LogLevel = "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";

export interface ServerConfig {
  /** Directory holding parley.db (created at start when missing). */
  dataDir: string;
  /** Interface both listeners bind to. */
  host: string;
  /** HTTP port: REST API and WebSocket (/v1/ws). 0 picks a free port. */
  httpPort: number;
  /** TCP port of the binary protocol. 0 picks a free port. */
  tcpPort: number;
  /** Port of the Prometheus metrics listener (GET /metrics); undefined: no such listener.
   * 0 picks a free port. */
  metricsPort?: number | undefined;
  /** Interface the metrics listener binds to; undefined: 127.0.0.1 (metrics are not for the
   * public). */
  metricsHost?: string | undefined;
  /** PEM files; when set, the TCP listener speaks TLS. */
  tls?: { certFile: string; keyFile: string } | undefined;
  store: StoreKind;
  logLevel: LogLevel;
  /** Largest frame accepted or sent, in bytes (excluding the TCP length prefix). */
  maxFrameBytes: number;
  /** Core tunables; not settable from flags (tests and embedders only). */
  core?: Partial<CoreOptions> | undefined;
  /** Admission control target, core option maxCommitQueueMs (0: off); undefined: its default. */
  maxCommitQueueMs?: number | undefined;
  /** Memory bound in MiB, core option maxRssBytes (0: off); undefined: its default (off). */
  maxRssMb?: number | undefined;
  /** Core option largeGroupMembers: a group this big gets its own log (read diffusion);
   * undefined: its default (500). */
  largeGroupMembers?: number | undefined;
  /** SQLite page cache of the write connection, MiB; undefined: the store's default (64). */
  sqliteCacheMb?: number | undefined;
  /** SQLite commits message appends every this many ms, acknowledging them once they are in the
   * commit log (0: each batch is its own SQLite commit); undefined: DEFAULT_COMMIT_INTERVAL_MS. */
  commitIntervalMs?: number | undefined;
  /** Directory of the commit log's segments; undefined: the data directory. A disk of its own
   * keeps each acknowledgement's fdatasync from waiting behind SQLite's writes. */
  commitLogDir?: string | undefined;
  /** Open TCP + WebSocket connections per remote address (0: unlimited); undefined: 1000. */
  maxConnectionsPerIp?: number | undefined;
  /** Inbound bytes/s per connection, with a burst of 4x (0: unlimited); undefined: 1 MiB/s. */
  maxBytesPerSecond?: number | undefined;
  /** Output queued for one connection before it is dropped as a slow consumer (4001);
   * undefined: 8 MiB. */
  maxOutboundBytes?: number | undefined;
  /** Time for each step of a new connection: TLS handshake, WebSocket upgrade request, and
   * (unless `core` sets helloTimeoutMs) `hello`; undefined: 10 s. */
  handshakeTimeoutMs?: number | undefined;
  /** Faults injected on purpose, from PARLEY_TEST_FAULTS only (no flag): for the reliability
   * tests, never for production. See docs/reliability.md. */
  testFaults?: TestFaults | undefined;
}

export interface TestFaults {
  /** Acknowledge writes before committing them: commit every this many ms (loses acked data
   * on SIGKILL). */
  ackBeforeCommitMs?: number;
  /** Sleep this long before each group commit (a slow disk): caps the sustainable send rate. */
  commitDelayMs?: number;
  /** Core option commitBatchMax (largest group commit): with commitDelayMs, sets the rate. */
  commitBatchMax?: number;
}

/** See ServerConfig.commitIntervalMs (docs/configuration.md). */
export const DEFAULT_COMMIT_INTERVAL_MS = 500;

const STORES: readonly StoreKind[] = ["sqlite", "memory"];
const LOG_LEVELS: readonly LogLevel[] = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];
const MIN_FRAME_BYTES = 1024;
const MAX_FRAME_BYTES = 16 * 1024 * 1024;

interface Setting {
  flag: string;
  env: string;
}

const SETTINGS = {
  data: { flag: "--data", env: "PARLEY_DATA" },
  port: { flag: "--port", env: "PARLEY_PORT" },
  tcpPort: { flag: "--tcp-port", env: "PARLEY_TCP_PORT" },
  host: { flag: "--host", env: "PARLEY_HOST" },
  metricsPort: { flag: "--metrics-port", env: "PARLEY_METRICS_PORT" },
  metricsHost: { flag: "--metrics-host", env: "PARLEY_METRICS_HOST" },
  tlsCert: { flag: "--tls-cert", env: "PARLEY_TLS_CERT" },
  tlsKey: { flag: "--tls-key", env: "PARLEY_TLS_KEY" },
  store: { flag: "--store", env: "PARLEY_STORE" },
  logLevel: { flag: "--log-level", env: "PARLEY_LOG_LEVEL" },
  maxFrameBytes: { flag: "--max-frame-bytes", env: "PARLEY_MAX_FRAME_BYTES" },
  maxCommitQueueMs: { flag: "--max-commit-queue-ms", env: "PARLEY_MAX_COMMIT_QUEUE_MS" },
  maxRssMb: { flag: "--max-rss-mb", env: "PARLEY_MAX_RSS_MB" },
  sqliteCacheMb: { flag: "--sqlite-cache-mb", env: "PARLEY_SQLITE_CACHE_MB" },
  commitIntervalMs: { flag: "--commit-interval-ms", env: "PARLEY_COMMIT_INTERVAL_MS" },
  commitLogDir: { flag: "--commit-log-dir", env: "PARLEY_COMMIT_LOG_DIR" },
  largeGroupMembers: { flag: "--large-group-members", env: "PARLEY_LARGE_GROUP_MEMBERS" },
  maxConnectionsPerIp: { flag: "--max-connections-per-ip", env: "PARLEY_MAX_CONNECTIONS_PER_IP" },
  maxBytesPerSecond: { flag: "--max-bytes-per-second", env: "PARLEY_MAX_BYTES_PER_SECOND" },
  maxOutboundBytes: { flag: "--max-outbound-bytes", env: "PARLEY_MAX_OUTBOUND_BYTES" },
  handshakeTimeoutMs: { flag: "--handshake-timeout-ms", env: "PARLEY_HANDSHAKE_TIMEOUT_MS" },
} as const satisfies Record<string, Setting>;

type Key = keyof typeof SETTINGS;

/** Reads the configuration. `argv` holds only flags (`--name value` or `--name=value`);
 * throws an Error naming the flag (or variable) for an unknown flag or an invalid value. */
export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv): ServerConfig {
  const flags = parseFlags(argv);
  const raw = (key: Key): { value: string; source: string } | undefined => {
    const s: Setting = SETTINGS[key];
    const fromFlag = flags.get(s.flag);
    if (fromFlag !== undefined) return { value: fromFlag, source: s.flag };
    const fromEnv = env[s.env];
    if (fromEnv !== undefined && fromEnv !== "") return { value: fromEnv, source: s.env };
    return undefined;
  };

  const tlsCert = raw("tlsCert");
  const tlsKey = raw("tlsKey");
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    throw new Error("--tls-cert and --tls-key (PARLEY_TLS_CERT, PARLEY_TLS_KEY) must be given together");
  }

  return {
    dataDir: raw("data")?.value ?? "./data",
    host: raw("host")?.value ?? "127.0.0.1",
    httpPort: port(raw("port"), 8080),
    tcpPort: port(raw("tcpPort"), 8081),
    metricsPort: optionalInteger(raw("metricsPort"), 0, 65535),
    metricsHost: raw("metricsHost")?.value,
    tls: tlsCert && tlsKey ? { certFile: tlsCert.value, keyFile: tlsKey.value } : undefined,
    store: oneOf(raw("store"), STORES, "sqlite"),
    logLevel: oneOf(raw("logLevel"), LOG_LEVELS, "info"),
    maxFrameBytes: integer(raw("maxFrameBytes"), DEFAULT_MAX_FRAME_BYTES, MIN_FRAME_BYTES, MAX_FRAME_BYTES),
    maxCommitQueueMs: optionalInteger(raw("maxCommitQueueMs"), 0, 60_000),
    maxRssMb: optionalInteger(raw("maxRssMb"), 0, 1024 * 1024),
    sqliteCacheMb: optionalInteger(raw("sqliteCacheMb"), 1, 64 * 1024),
    // Below the 5 s another process's write waits for the lock the open transaction holds.
    commitIntervalMs: optionalInteger(raw("commitIntervalMs"), 0, 2_000),
    commitLogDir: raw("commitLogDir")?.value,
    largeGroupMembers: optionalInteger(raw("largeGroupMembers"), 2, 1_000_000),
    ...connectionLimits(raw),
    testFaults: parseTestFaults(env.PARLEY_TEST_FAULTS),
  };
}

/** The per-connection limits (docs/configuration.md, "Connection limits"). */
function connectionLimits(
  raw: (key: Key) => { value: string; source: string } | undefined,
): Pick<
  ServerConfig,
  "maxConnectionsPerIp" | "maxBytesPerSecond" | "maxOutboundBytes" | "handshakeTimeoutMs"
> {
  const bytesPerSecond = optionalInteger(raw("maxBytesPerSecond"), 0, 1024 ** 3);
  // A budget below one KiB/s would take minutes to admit one frame: surely a typo.
  if (bytesPerSecond !== undefined && bytesPerSecond > 0 && bytesPerSecond < 1024) {
    const { source, value } = raw("maxBytesPerSecond")!;
    throw new Error(`${source} must be 0 (unlimited) or at least 1024, got "${value}"`);
  }
  return {
    maxConnectionsPerIp: optionalInteger(raw("maxConnectionsPerIp"), 0, 1_000_000),
    maxBytesPerSecond: bytesPerSecond,
    maxOutboundBytes: optionalInteger(raw("maxOutboundBytes"), 64 * 1024, 1024 ** 3),
    handshakeTimeoutMs: optionalInteger(raw("handshakeTimeoutMs"), 100, 600_000),
  };
}

/** PARLEY_TEST_FAULTS: a comma-separated list of `ack-before-commit[=ms]` (default 500),
 * `commit-delay=ms` and `commit-batch-max=n`. */
export function parseTestFaults(spec: string | undefined): TestFaults | undefined {
  if (spec === undefined || spec.trim() === "") return undefined;
  const faults: TestFaults = {};
  for (const item of spec.split(",")) {
    const [name, value] = item.trim().split("=", 2) as [string, string | undefined];
    const source = `PARLEY_TEST_FAULTS ${name}`;
    const ms = (fallback?: number) =>
      value === undefined && fallback !== undefined
        ? fallback
        : integer(value === undefined ? { value: "", source } : { value, source }, 0, 1, 60_000);
    if (name === "ack-before-commit") faults.ackBeforeCommitMs = ms(500);
    else if (name === "commit-delay") faults.commitDelayMs = ms();
    else if (name === "commit-batch-max") faults.commitBatchMax = ms();
    else
      throw new Error(
        `PARLEY_TEST_FAULTS: unknown fault "${name}" (ack-before-commit, commit-delay, commit-batch-max)`,
      );
  }
  return faults;
}

/** Flag names loadConfig understands, for commands that pass the rest through. */
export const CONFIG_FLAGS: readonly string[] = Object.values(SETTINGS).map((s) => s.flag);

function parseFlags(argv: readonly string[]): Map<string, string> {
  const known = new Set(CONFIG_FLAGS);
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("--")) throw new Error(`unexpected argument "${arg}"`);
    const eq = arg.indexOf("=");
    const name = eq === -1 ? arg : arg.slice(0, eq);
    if (!known.has(name)) throw new Error(`unknown flag ${name}`);
    let value: string | undefined;
    if (eq !== -1) value = arg.slice(eq + 1);
    else {
      value = argv[i + 1];
      if (value === undefined || value.startsWith("--")) throw new Error(`${name} needs a value`);
      i++;
    }
    if (value === "") throw new Error(`${name} needs a value`);
    out.set(name, value);
  }
  return out;
}

function integer(
  input: { value: string; source: string } | undefined,
  fallback: number,
  min: number,
  max: number,
): number {
  if (input === undefined) return fallback;
  const n = /^\d+$/.test(input.value) ? Number(input.value) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new Error(`${input.source} must be an integer from ${min} to ${max}, got "${input.value}"`);
  }
  return n;
}

function optionalInteger(
  input: { value: string; source: string } | undefined,
  min: number,
  max: number,
): number | undefined {
  return input === undefined ? undefined : integer(input, 0, min, max);
}

function port(input: { value: string; source: string } | undefined, fallback: number): number {
  return integer(input, fallback, 0, 65535);
}

function oneOf<T extends string>(
  input: { value: string; source: string } | undefined,
  allowed: readonly T[],
  fallback: T,
): T {
  if (input === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(input.value)) {
    throw new Error(`${input.source} must be one of ${allowed.join(", ")}, got "${input.value}"`);
  }
  return input.value as T;
}
