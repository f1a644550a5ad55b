import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import type { Logger as PinoLogger } from "pino";
import type { ServerFrame } from "@parley/protocol";
import { Argon2Hasher } from "./auth/argon2-hasher.ts";
import { MemoryBus } from "./bus/memory/memory-bus.ts";
import { SystemClock } from "./clock/system-clock.ts";
import { DEFAULT_COMMIT_INTERVAL_MS, type ServerConfig } from "./config.ts";
import { Core } from "./core/core.ts";
import type { Metrics } from "./core/ports/metrics.ts";
import type { Store } from "./core/ports/store.ts";
import { ConnectionsPerIp, DEFAULT_MAX_CONNECTIONS_PER_IP } from "./gateway/connections-per-ip.ts";
import { HttpGateway } from "./gateway/http/http-gateway.ts";
import { TcpGateway } from "./gateway/tcp/tcp-gateway.ts";
import { WsGateway } from "./gateway/ws/ws-gateway.ts";
import { PrometheusMetrics } from "./metrics/prometheus/prometheus-metrics.ts";
import { MemorySessionDirectory } from "./session/memory/memory-session-directory.ts";
import { MemoryStore } from "./store/memory/memory-store.ts";
import { ThreadedSqliteStore } from "./store/sqlite/threaded-sqlite-store.ts";
import { withCommitDelay } from "./store/testing/commit-delay.ts";

// The composition root: the one place that picks adapters (DESIGN.md, "Layers and the
// dependency rule"). Everything else receives its collaborators.

/** How long stopping waits for REST requests in progress before it shuts the core down. */
const REST_SETTLE_MS = 5000;

/** The metrics listener's interface unless --metrics-host says otherwise: not for the public. */
const DEFAULT_METRICS_HOST = "127.0.0.1";

/** The database file inside the data directory. */
export const DB_FILE = "parley.db";

export interface RunningServer {
  /** Bound ports (the real ones when the config said 0). */
  httpPort: number;
  tcpPort: number;
  /** Bound port of the metrics listener; undefined when there is none (no --metrics-port). */
  metricsPort: number | undefined;
  core: Core;
  /** Graceful stop: stop accepting on every listener, Core.shutdown() (commits everything
   * accepted, bye 4000 to every connection, closes the store), then close the HTTP server.
   * Idempotent. */
  stop(): Promise<void>;
}

/** A Core over the configured store, with no listener: for offline administration
 * (`parley user add`). close() shuts the core down, which closes the store. */
export interface OfflineCore {
  core: Core;
  close(): Promise<void>;
}

/** Opens the configured store. A damaged or foreign data file rejects with an Error naming it
 * (the SQLite writer checks the file before serving it; writes run on its own thread). */
async function openStore(
  config: ServerConfig,
  logger: PinoLogger,
  owner = true,
  onLogSync?: (seconds: number) => void,
): Promise<Store> {
  if (config.testFaults) {
    logger.warn(
      { testFaults: config.testFaults },
      "TEST FAULTS ARE ON (PARLEY_TEST_FAULTS): not for production",
    );
  }
  if (config.store === "memory") return new MemoryStore();
  createDir(config.dataDir, "the data directory");
  if (config.commitLogDir !== undefined) createDir(config.commitLogDir, "the commit log directory");
  const faults = config.testFaults;
  const store = await ThreadedSqliteStore.open(join(config.dataDir, DB_FILE), {
    logger: logger.child({ component: "store" }),
    ...(config.sqliteCacheMb !== undefined ? { cacheKib: config.sqliteCacheMb * 1024 } : {}),
    // Not the server (`parley user add`, which may run beside it): the commit log is the
    // server's, and this store only applies it (SqliteStoreOptions.commitIntervalMs).
    ...(owner ? { commitIntervalMs: config.commitIntervalMs ?? DEFAULT_COMMIT_INTERVAL_MS } : {}),
    ...(owner && faults?.ackBeforeCommitMs !== undefined
      ? { unsafeDeferCommitMs: faults.ackBeforeCommitMs }
      : {}),
    ...(onLogSync !== undefined ? { onLogSync } : {}),
    ...(config.commitLogDir !== undefined ? { numberedLogDir: config.commitLogDir } : {}),
  });
  return faults?.commitDelayMs !== undefined ? withCommitDelay(store, faults.commitDelayMs) : store;
}

/** Creates `dir` (and its parents) if missing; throws an Error naming it and `what` it is for. */
function createDir(dir: string, what: string): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new Error(`cannot create ${what} ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

function createLogger(config: ServerConfig): PinoLogger {
  // pino's default destination is stdout; logs are one JSON object per line.
  return pino({ level: config.logLevel, base: { service: "parley", pid: process.pid } });
}

function createCore(config: ServerConfig, store: Store, logger: PinoLogger, metrics?: Metrics): Core {
  return new Core({
    store,
    bus: new MemoryBus<ServerFrame>({
      onError: (err, topic) => logger.error({ err, topic }, "a bus subscriber threw"),
    }),
    sessions: new MemorySessionDirectory(),
    clock: new SystemClock(),
    hasher: new Argon2Hasher(),
    logger,
    options: {
      ...(config.handshakeTimeoutMs !== undefined ? { helloTimeoutMs: config.handshakeTimeoutMs } : {}),
      ...config.core,
      maxFrameBytes: config.maxFrameBytes,
      ...(config.maxCommitQueueMs !== undefined ? { maxCommitQueueMs: config.maxCommitQueueMs } : {}),
      ...(config.maxRssMb !== undefined ? { maxRssBytes: config.maxRssMb * 1024 * 1024 } : {}),
      ...(config.largeGroupMembers !== undefined ? { largeGroupMembers: config.largeGroupMembers } : {}),
      ...(config.testFaults?.commitBatchMax !== undefined
        ? { commitBatchMax: config.testFaults.commitBatchMax }
        : {}),
    },
    rssBytes: () => process.memoryUsage.rss(),
    ...(metrics !== undefined ? { metrics } : {}),
  });
}

/** Opens a Core on the configured data without listening anywhere. */
export async function openOfflineCore(config: ServerConfig): Promise<OfflineCore> {
  const logger = createLogger(config);
  const store = await openStore(config, logger, false);
  const core = createCore(config, store, logger);
  return { core, close: () => core.shutdown() };
}

/** Starts Parley: store, core, HTTP (REST + WebSocket) and TCP listeners. Rejects with an Error
 * naming the port or the data file when either is unusable; nothing is left open then. */
export async function startServer(config: ServerConfig): Promise<RunningServer> {
  const tls = config.tls
    ? { cert: readPem(config.tls.certFile, "--tls-cert"), key: readPem(config.tls.keyFile, "--tls-key") }
    : undefined;
  const logger = createLogger(config);
  // Scraped only once listening, after `core` exists.
  const metrics =
    config.metricsPort !== undefined
      ? new PrometheusMetrics(
          () => core.connections,
          () => core.fanOutBacklog,
        )
      : undefined;
  const store = await openStore(config, logger, true, metrics && ((s) => metrics.logSync(s)));
  const core = createCore(config, store, logger, metrics);
  let gateways: Gateways;
  try {
    gateways = createGateways(core, config, logger, tls);
  } catch (err) {
    await core.shutdown();
    throw err;
  }
  const { http, ws, tcp } = gateways;
  let httpPort: number;
  let tcpPort: number;
  let metricsListener: { port: number; close(): Promise<void> } | undefined;
  const metricsHost = config.metricsHost ?? DEFAULT_METRICS_HOST;
  try {
    httpPort = await listening(
      http.listen(config.httpPort, config.host),
      config.host,
      config.httpPort,
      "HTTP, --port",
    );
    tcpPort = await listening(
      tcp.listen(config.tcpPort, config.host),
      config.host,
      config.tcpPort,
      "TCP, --tcp-port",
    );
    if (metrics !== undefined && config.metricsPort !== undefined) {
      metricsListener = await listening(
        metrics.listen(metricsHost, config.metricsPort),
        metricsHost,
        config.metricsPort,
        "metrics, --metrics-port",
      );
    }
  } catch (err) {
    await tcp.close();
    await core.shutdown();
    await http.close();
    throw err;
  }

  const host = urlHost(config.host);
  logger.info(
    {
      httpPort,
      tcpPort,
      http: `http://${host}:${httpPort}`,
      ws: `ws://${host}:${httpPort}/v1/ws`,
      tcp: `${config.tls ? "tls" : "tcp"}://${host}:${tcpPort}`,
      store: config.store === "sqlite" ? join(config.dataDir, DB_FILE) : "memory",
      ...(metricsListener
        ? {
            metricsPort: metricsListener.port,
            metrics: `http://${urlHost(metricsHost)}:${metricsListener.port}/metrics`,
          }
        : {}),
    },
    "listening",
  );

  let stopping: Promise<void> | undefined;
  const stop = async (): Promise<void> => {
    logger.info({}, "stopping");
    // 1. No new connections or requests on any listener.
    await Promise.all([tcp.close(), ws.close()]);
    const httpClosed = http.close();
    // REST requests in progress finish first (at most REST_SETTLE_MS): the store stays open
    // for them.
    let settleTimer: NodeJS.Timeout | undefined;
    await Promise.race([
      http.requestsSettled(),
      new Promise((resolve) => (settleTimer = setTimeout(resolve, REST_SETTLE_MS))),
    ]);
    clearTimeout(settleTimer);
    // 2. Commit what was accepted, bye 4000 to every connection, close the store.
    await core.shutdown();
    // 3. Sockets close as clients answer (or after the gateways' grace period); then HTTP.
    await Promise.all([tcp.connectionsClosed(), ws.connectionsClosed()]);
    await httpClosed;
    await metricsListener?.close();
    logger.info({}, "stopped");
    logger.flush();
  };
  return {
    httpPort,
    tcpPort,
    metricsPort: metricsListener?.port,
    core,
    stop: () => (stopping ??= stop()),
  };
}

interface Gateways {
  http: HttpGateway;
  ws: WsGateway;
  tcp: TcpGateway;
}

function createGateways(
  core: Core,
  config: ServerConfig,
  logger: PinoLogger,
  tls: { cert: string; key: string } | undefined,
): Gateways {
  const gatewayLogger = logger.child({ component: "gateway" });
  const handshake = config.handshakeTimeoutMs;
  const http = new HttpGateway(core, {
    logger: logger.child({ component: "http" }),
    ...(handshake !== undefined ? { headersTimeoutMs: handshake } : {}),
  });
  // One count per address across both socket gateways.
  const limits = {
    maxFrameBytes: config.maxFrameBytes,
    logger: gatewayLogger,
    perIp: new ConnectionsPerIp(config.maxConnectionsPerIp ?? DEFAULT_MAX_CONNECTIONS_PER_IP),
    ...(config.maxOutboundBytes !== undefined ? { maxOutboundBytes: config.maxOutboundBytes } : {}),
    ...(config.maxBytesPerSecond !== undefined
      ? { bytesPerSecond: config.maxBytesPerSecond, bytesBurst: 4 * config.maxBytesPerSecond }
      : {}),
  };
  const ws = new WsGateway(core, limits);
  ws.attach(http.server);
  const tcp = new TcpGateway(core, {
    ...limits,
    tls,
    ...(handshake !== undefined ? { handshakeTimeoutMs: handshake } : {}),
  });
  return { http, ws, tcp };
}

function readPem(path: string, flag: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(`${flag}: cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** A host as it goes into a URL (IPv6 in brackets). */
function urlHost(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/** What `p` (a listener starting on host:port) resolves to; its failure as an Error that names
 * the address and the flag. */
async function listening<T>(p: Promise<T>, host: string, port: number, what: string): Promise<T> {
  try {
    return await p;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "EADDRINUSE" ? "the address is already in use" : (err as Error).message;
    throw new Error(`cannot listen on ${host}:${port} (${what}): ${why}`, { cause: err });
  }
}
