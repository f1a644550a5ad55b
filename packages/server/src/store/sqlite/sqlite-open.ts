import Database from "better-sqlite3";
import type BetterSqlite3 from "better-sqlite3";
import type { Logger } from "../../core/ports/logger.ts";
import { migrate } from "./sqlite-schema.ts";

// Opening the SQLite file: integrity first, then durability settings, then the schema. A file
// that is not a database, is damaged, or is not ours is refused with an Error naming it, never
// served as if it were empty.

/** How long a statement waits for another process's lock before failing with SQLITE_BUSY. */
const BUSY_TIMEOUT_MS = 5_000;

/** Page cache of the write connection, KiB, unless the caller sets it. */
export const DEFAULT_CACHE_KIB = 64 * 1024;
/** WAL frames after which a commit checkpoints (about 80 MiB of 4 KiB pages). */
const WAL_AUTOCHECKPOINT_PAGES = 20_000;
/** The WAL file is truncated to this after a checkpoint, so its disk use stays bounded. */
const JOURNAL_SIZE_LIMIT_BYTES = 128 * 1024 * 1024;

/** Opens `path` (created if absent), checks it and migrates it. The caller closes the result. */
export function openDatabase(
  path: string,
  logger: Logger,
  cacheKib = DEFAULT_CACHE_KIB,
): BetterSqlite3.Database {
  let db: BetterSqlite3.Database;
  try {
    db = new Database(path);
  } catch (cause) {
    throw new Error(`cannot open database file ${path}: ${message(cause)}`, { cause });
  }
  try {
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    checkIntegrity(db, path);
    // WAL: readers do not block the writer, and a commit appends to the log instead of rewriting
    // pages in place.
    const mode = db.pragma("journal_mode = WAL", { simple: true }) as string;
    if (mode !== "wal" && !db.memory) throw new Error(`${path}: could not switch to WAL mode (got ${mode})`);
    // FULL, not NORMAL: in WAL mode NORMAL does not fsync the log at each commit, so a power loss
    // can undo the last commits after they were acknowledged. A send is acked only once durable
    // (DESIGN.md), and group commit keeps the cost to one fsync per batch.
    db.pragma("synchronous = FULL");
    // Under load a commit dirties about one page per conversation and per member's log it
    // touches (1:1: ~3 pages per message, spread over the file), and SQLite's default cache
    // (2 MiB) and checkpoint interval (1,000 pages) made every batch re-read pages and copy them
    // back into the database file. A larger cache keeps the hot pages, and a checkpoint every
    // WAL_AUTOCHECKPOINT_PAGES copies a page dirtied by many commits once: 7.5k -> 10.4-12.6k
    // appends/s in `npm run bench -- store-append` (docs/benchmarks.md).
    db.pragma(`cache_size = -${Math.max(1, Math.floor(cacheKib))}`);
    db.pragma(`wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`);
    db.pragma(`journal_size_limit = ${JOURNAL_SIZE_LIMIT_BYTES}`);
    // Off while migrating (a migration may rebuild a table others reference: SQLite's documented
    // procedure); migrate() checks every foreign key before it commits.
    db.pragma("foreign_keys = OFF");
    migrate(db, path, logger);
    db.pragma("foreign_keys = ON");
    logger.info({ path }, "sqlite store opened");
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

/** PRAGMA quick_check: page structure, record formats, NOT NULL and CHECK constraints (not the
 * indexes' content, which integrity_check would read the whole file for). */
function checkIntegrity(db: BetterSqlite3.Database, path: string): void {
  let problems: string[];
  try {
    problems = db.prepare("PRAGMA quick_check").pluck().all() as string[];
  } catch (cause) {
    // SQLITE_NOTADB ("file is not a database") or SQLITE_CORRUPT reading the header or schema.
    throw new Error(
      `${path} is not a usable SQLite database (${message(cause)}); refusing to open it. ` +
        "Restore it from a backup or move it away to start empty.",
      { cause },
    );
  }
  if (problems.length !== 1 || problems[0] !== "ok") {
    throw new Error(
      `${path} is damaged; PRAGMA quick_check reported: ${problems.slice(0, 5).join("; ")}` +
        (problems.length > 5 ? ` (and ${problems.length - 5} more)` : "") +
        ". Refusing to open it. Restore it from a backup.",
    );
  }
}

/** Opens a second, read-only connection to a database that another connection (the writer,
 * which checked and migrated it) holds open in WAL mode. Each read transaction sees the last
 * commit; a commit is visible only once it is durable (synchronous=FULL syncs the log first). */
export function openReader(path: string): BetterSqlite3.Database {
  let db: BetterSqlite3.Database;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
  } catch (cause) {
    throw new Error(`cannot open database file ${path} for reading: ${message(cause)}`, { cause });
  }
  db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
  return db;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
