// The public entry of @parley/server: start a server from a configuration, or embed the Core.

export { startServer, openOfflineCore, DB_FILE } from "./main.ts";
export { COMMIT_LOG_APPLIED, NUMBERED_LOG_APPLIED } from "./store/sqlite/sqlite-store.ts";
export type { RunningServer, OfflineCore } from "./main.ts";
export { loadConfig, CONFIG_FLAGS } from "./config.ts";
export type { ServerConfig, StoreKind, LogLevel } from "./config.ts";
export { Core } from "./core/core.ts";
export type { CoreDeps } from "./core/core.ts";
export type { CoreOptions } from "./core/options.ts";
export { DEFAULT_CORE_OPTIONS } from "./core/options.ts";
export type * from "./core/api.ts";
export type { Connection, Session } from "./core/connection.ts";
