import type BetterSqlite3 from "better-sqlite3";
import type { Logger } from "../../core/ports/logger.ts";

// SqliteStore's schema and how a file gets to it. The schema version lives in
// PRAGMA user_version: migration i (0-based) takes a database from version i to i + 1, in one
// transaction. Never edit a shipped migration; append a new one. A migration is SQL, or a function
// for what SQL alone cannot do.

/** A migration SQL alone cannot express; runs in migrate()'s transaction. */
export type MigrationFn = (db: BetterSqlite3.Database) => void;

/** Marks the file as Parley's (PRAGMA application_id), so another program's database is refused. */
export const APPLICATION_ID = 0x50726c79; // "Prly"

/** The kinds of an updates entry, and the table's CHECK on them as migration 1 wrote it (a list)
 * and as migration 6 rewrites it (comparisons). */
const UPDATE_KINDS = ["msg", "edit", "del", "react", "receipt", "conv", "left"];
const KIND_CHECK_V1 = `kind IN (${UPDATE_KINDS.map((k) => `'${k}'`).join(", ")})`;
const KIND_CHECK_V6 = UPDATE_KINDS.map((k) => `kind = '${k}'`).join(" OR ");

export const MIGRATIONS: readonly (string | MigrationFn)[] = [
  // 1: the initial schema.
  `
  CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
  ) STRICT;

  -- Head (highest useq) of each user's update log; a narrow row, rewritten on every fan-out.
  CREATE TABLE user_heads (
    user_id TEXT PRIMARY KEY REFERENCES users (id),
    head    INTEGER NOT NULL
  ) STRICT, WITHOUT ROWID;

  CREATE TABLE devices (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    cursor       INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    revoked_at   INTEGER
  ) STRICT;
  CREATE INDEX devices_by_user ON devices (user_id);

  CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    device_id  TEXT NOT NULL REFERENCES devices (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
  ) STRICT;
  CREATE INDEX tokens_by_device ON tokens (device_id);

  CREATE TABLE conversations (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('direct', 'group')),
    name          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    direct_key    TEXT UNIQUE,
    last_seq      INTEGER NOT NULL DEFAULT 0,
    last_activity INTEGER NOT NULL
  ) STRICT;

  -- pos is the join order (Conversation.members is listed in it). An explicit INTEGER PRIMARY
  -- KEY, because VACUUM may renumber an implicit rowid.
  CREATE TABLE members (
    pos       INTEGER PRIMARY KEY,
    conv_id   TEXT NOT NULL REFERENCES conversations (id),
    user_id   TEXT NOT NULL REFERENCES users (id),
    role      TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    delivered INTEGER NOT NULL DEFAULT 0,
    read      INTEGER NOT NULL DEFAULT 0,
    UNIQUE (conv_id, user_id)
  ) STRICT;
  CREATE INDEX members_by_user ON members (user_id);

  CREATE TABLE messages (
    conv_id    TEXT NOT NULL REFERENCES conversations (id),
    seq        INTEGER NOT NULL,
    from_user  TEXT NOT NULL REFERENCES users (id),
    from_dev   TEXT NOT NULL,
    cid        TEXT NOT NULL,
    type       TEXT NOT NULL,
    body       BLOB NOT NULL,
    ts         INTEGER NOT NULL,
    reply_to   INTEGER,
    edited_at  INTEGER,
    deleted_at INTEGER,
    PRIMARY KEY (conv_id, seq),
    UNIQUE (from_user, cid)
  ) STRICT, WITHOUT ROWID;

  -- id is the order reactions were added (Message.reactions lists users in it).
  CREATE TABLE reactions (
    id      INTEGER PRIMARY KEY,
    conv_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    emoji   TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    UNIQUE (conv_id, seq, emoji, user_id),
    FOREIGN KEY (conv_id, seq) REFERENCES messages (conv_id, seq)
  ) STRICT;

  -- A conversation's state as a "conv" update carried it. Stored once per change and referenced
  -- by every member's entry: a copy per member would cost members^2 for a large group.
  CREATE TABLE snapshots (
    id   INTEGER PRIMARY KEY,
    data TEXT NOT NULL
  ) STRICT;

  -- Each user's update log. msg/edit/del/react entries name the message (conv_id, seq) and are
  -- read joined to its current state; react keeps {user, emoji, on} in data, receipt keeps its
  -- payload in data, conv points at a snapshot, left needs only conv_id.
  CREATE TABLE updates (
    user_id  TEXT NOT NULL,
    useq     INTEGER NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('msg', 'edit', 'del', 'react', 'receipt', 'conv', 'left')),
    conv_id  TEXT NOT NULL,
    seq      INTEGER,
    snapshot INTEGER REFERENCES snapshots (id),
    data     TEXT,
    PRIMARY KEY (user_id, useq)
  ) STRICT, WITHOUT ROWID;

  PRAGMA application_id = ${APPLICATION_ID};
  `,
  // 2: a user's head is max(useq) of their updates (entries are never deleted); the head row was
  // rewritten for every entry appended.
  `
  DROP TABLE user_heads;
  `,
  // 3: the resend key is (cid, from_user), not (from_user, cid). Keyed by sender, a batch of
  // sends from a thousand senders dirtied a thousand pages of it; keyed by cid first, the
  // time-ordered cids the SDK makes (UUIDv7) all land at the end of the index: a few pages per
  // batch. Random cids cost what they did. SQLite cannot change a table's UNIQUE constraint, so
  // the table is rebuilt (foreign keys are off while migrating, and checked after).
  `
  CREATE TABLE messages_v3 (
    conv_id    TEXT NOT NULL REFERENCES conversations (id),
    seq        INTEGER NOT NULL,
    from_user  TEXT NOT NULL REFERENCES users (id),
    from_dev   TEXT NOT NULL,
    cid        TEXT NOT NULL,
    type       TEXT NOT NULL,
    body       BLOB NOT NULL,
    ts         INTEGER NOT NULL,
    reply_to   INTEGER,
    edited_at  INTEGER,
    deleted_at INTEGER,
    PRIMARY KEY (conv_id, seq),
    UNIQUE (cid, from_user)
  ) STRICT, WITHOUT ROWID;
  INSERT INTO messages_v3 SELECT conv_id, seq, from_user, from_dev, cid, type, body, ts, reply_to,
    edited_at, deleted_at FROM messages;
  DROP TABLE messages;
  ALTER TABLE messages_v3 RENAME TO messages;
  `,
  // 4: large groups (read diffusion). A large group's changes are entries of its own log, kept in
  // the updates table under the key '#' || conv_id (user ids never start with '#'), so both kinds
  // of log share one table, one statement set and one way of reading entries. A group log's
  // "members" entries (what changed in its membership) are kept as kind 'conv' with the change in
  // data and no snapshot: the kind CHECK above cannot change without rebuilding updates.
  `
  ALTER TABLE conversations ADD COLUMN large INTEGER NOT NULL DEFAULT 0 CHECK (large IN (0, 1));
  `,
  // 5: a large group's state lists only its owner and admins: find them without reading every
  // member row.
  `
  CREATE INDEX members_staff ON members (conv_id, pos) WHERE role != 'member';
  `,
  // 6: the updates table's CHECK on kind as comparisons, not a list. For a constant IN list of
  // more than two values SQLite builds a temporary B-tree each time the statement runs, and an
  // INSERT runs once per row: every log entry paid for one (2-4 us of SQLite's work, two
  // entries per direct message; docs/benchmarks.md, twelfth session). The same set of kinds, so
  // every row still satisfies it: SQLite's documented way to change a CHECK constraint in place
  // (https://sqlite.org/lang_altertable.html, "Making Other Kinds Of Table Schema Changes")
  // instead of rebuilding the largest table.
  (db) => replaceInTableSql(db, "updates", KIND_CHECK_V1, KIND_CHECK_V6),
  // 7: the hot tables keyed by integers. Every direct message inserts a messages row and an
  // updates row per member, and their keys held text ids (18 characters each, compared byte by
  // byte): with numbers in their place the applier spends a fifth less CPU per message, writes a
  // quarter fewer bytes and keeps a file 40% smaller (docs/benchmarks.md, sixteenth and
  // seventeenth sessions). Users and conversations get an explicit number, `num` (an implicit
  // rowid may change in a VACUUM), given at insert as max + 1; the rows that exist are numbered
  // in rowid order. A new table `logs` numbers each update log (a user's, or a large group's
  // '#' || conv_id). messages, reactions and updates are rebuilt (foreign keys are off while
  // migrating, and checked after), and every row must come across.
  migrateToIntegerKeys,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

function migrateToIntegerKeys(db: BetterSqlite3.Database): void {
  const count = (table: string) => db.prepare(`SELECT count(*) FROM ${table}`).pluck().get() as number;
  const tables = ["messages", "reactions", "updates"];
  const before = tables.map(count);
  db.exec(`
  -- Nullable, as ALTER TABLE must add it; every insert gives one (sqlite-statements.ts), and the
  -- messages rows that name it are NOT NULL.
  ALTER TABLE users ADD COLUMN num INTEGER;
  UPDATE users SET num = rowid;
  CREATE UNIQUE INDEX users_by_num ON users (num);
  ALTER TABLE conversations ADD COLUMN num INTEGER;
  UPDATE conversations SET num = rowid;
  CREATE UNIQUE INDEX conversations_by_num ON conversations (num);

  CREATE TABLE messages_v7 (
    conv_num   INTEGER NOT NULL REFERENCES conversations (num),
    seq        INTEGER NOT NULL,
    from_num   INTEGER NOT NULL REFERENCES users (num),
    from_dev   TEXT NOT NULL,
    cid        TEXT NOT NULL,
    type       TEXT NOT NULL,
    body       BLOB NOT NULL,
    ts         INTEGER NOT NULL,
    reply_to   INTEGER,
    edited_at  INTEGER,
    deleted_at INTEGER,
    PRIMARY KEY (conv_num, seq),
    UNIQUE (cid, from_num)
  ) STRICT, WITHOUT ROWID;
  INSERT INTO messages_v7
    SELECT c.num, m.seq, u.num, m.from_dev, m.cid, m.type, m.body, m.ts, m.reply_to, m.edited_at,
      m.deleted_at
    FROM messages m JOIN conversations c ON c.id = m.conv_id JOIN users u ON u.id = m.from_user
    ORDER BY c.num, m.seq;

  -- id is still the order reactions were added.
  CREATE TABLE reactions_v7 (
    id       INTEGER PRIMARY KEY,
    conv_num INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    emoji    TEXT NOT NULL,
    user_id  TEXT NOT NULL REFERENCES users (id),
    UNIQUE (conv_num, seq, emoji, user_id),
    FOREIGN KEY (conv_num, seq) REFERENCES messages (conv_num, seq)
  ) STRICT;
  INSERT INTO reactions_v7
    SELECT r.id, c.num, r.seq, r.emoji, r.user_id
    FROM reactions r JOIN conversations c ON c.id = r.conv_id
    ORDER BY r.id;

  DROP TABLE reactions;
  DROP TABLE messages;
  ALTER TABLE messages_v7 RENAME TO messages;
  ALTER TABLE reactions_v7 RENAME TO reactions;

  -- Every update log by number: key is the user id, or '#' || conv_id for a large group's.
  CREATE TABLE logs (
    num INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE
  ) STRICT;
  INSERT INTO logs (key) SELECT DISTINCT user_id FROM updates ORDER BY user_id;

  CREATE TABLE updates_v7 (
    log_num  INTEGER NOT NULL REFERENCES logs (num),
    useq     INTEGER NOT NULL,
    kind     TEXT NOT NULL CHECK (${KIND_CHECK_V6}),
    conv_num INTEGER NOT NULL,
    seq      INTEGER,
    snapshot INTEGER REFERENCES snapshots (id),
    data     TEXT,
    PRIMARY KEY (log_num, useq)
  ) STRICT, WITHOUT ROWID;
  INSERT INTO updates_v7
    SELECT l.num, u.useq, u.kind, c.num, u.seq, u.snapshot, u.data
    FROM updates u JOIN logs l ON l.key = u.user_id JOIN conversations c ON c.id = u.conv_id
    ORDER BY l.num, u.useq;
  DROP TABLE updates;
  ALTER TABLE updates_v7 RENAME TO updates;
  `);
  // The joins drop a row whose conversation or sender is missing, which version 6 never wrote
  // (its foreign keys, and conversations are never deleted): refuse to go on rather than lose one.
  const after = tables.map(count);
  const lost = tables.flatMap((t, i) =>
    after[i] === before[i] ? [] : [`${t} (${after[i]} of ${before[i]} kept)`],
  );
  if (lost.length > 0) {
    throw new Error(
      `migration 7 would lose rows of ${lost.join(", ")}, naming a conversation or user that does ` +
        "not exist; nothing was changed",
    );
  }
}

/** Logged when an existing file starts migrating: all steps run in one transaction, so stopping
 * the server meanwhile leaves the file as it was. */
export const MIGRATION_STARTED =
  "sqlite schema: migrating (one transaction: stopping now leaves the file as it was)";
/** Logged after each step of migrating an existing file, with its version and duration. */
export const MIGRATION_STEP_DONE = "sqlite schema: migration step done";

/** Brings the database to SCHEMA_VERSION. Refuses a file written by a newer Parley (its schema is
 * unknown here) and a SQLite file that belongs to another program. */
export function migrate(db: BetterSqlite3.Database, path: string, logger: Logger): void {
  // IMMEDIATE: a second process opening the same file waits here instead of migrating twice.
  db.transaction(() => {
    const from = db.pragma("user_version", { simple: true }) as number;
    const appId = db.pragma("application_id", { simple: true }) as number;
    if (from > SCHEMA_VERSION) {
      throw new Error(
        `${path} has schema version ${from}, newer than this Parley knows (${SCHEMA_VERSION}); ` +
          "it was written by a newer version: upgrade Parley instead of opening it with this one",
      );
    }
    if (from === 0) {
      const objects = db.prepare("SELECT count(*) FROM sqlite_schema").pluck().get() as number;
      if (objects > 0)
        throw new Error(`${path} is a SQLite database but not a Parley one; refusing to use it`);
    } else if (appId !== APPLICATION_ID) {
      throw new Error(
        `${path} is a SQLite database but not a Parley one (application_id ${appId}); refusing to use it`,
      );
    }
    // An existing file may be large and a step may rebuild a table (migration 3): say what runs,
    // so that a start that takes minutes is not taken for a hang. A new file is not logged step
    // by step.
    const existing = from > 0 && from < SCHEMA_VERSION;
    if (existing) logger.info({ path, from, to: SCHEMA_VERSION }, MIGRATION_STARTED);
    for (let v = from; v < SCHEMA_VERSION; v++) {
      const t0 = performance.now();
      const step = MIGRATIONS[v]!;
      if (typeof step === "string") db.exec(step);
      else step(db);
      db.pragma(`user_version = ${v + 1}`);
      if (existing)
        logger.info({ path, version: v + 1, ms: Math.round(performance.now() - t0) }, MIGRATION_STEP_DONE);
    }
    // The caller turns foreign keys off while migrating: check them all before committing.
    if (from < SCHEMA_VERSION) {
      const broken = db.pragma("foreign_key_check") as unknown[];
      if (broken.length > 0) {
        throw new Error(`${path}: migration left ${broken.length} broken foreign keys; nothing was changed`);
      }
    }
    if (from < SCHEMA_VERSION) logger.info({ path, from, to: SCHEMA_VERSION }, "sqlite schema migrated");
  }).immediate();
}

/** Replaces `from` by `to` in the CREATE TABLE statement SQLite keeps for `table`, for a change
 * that no row can notice (a CHECK constraint every row satisfies either way). In the caller's
 * transaction: writes sqlite_schema (better-sqlite3 forbids it unless unsafe mode is on, for this
 * statement only), bumps the schema cookie so that other connections read the new schema, and
 * makes this one read it too. */
function replaceInTableSql(db: BetterSqlite3.Database, table: string, from: string, to: string): void {
  const sql = db
    .prepare("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?")
    .pluck()
    .get(table) as string | undefined;
  if (sql === undefined || !sql.includes(from)) {
    throw new Error(`table ${table} is not as the migration expects: ${from} not found in its schema`);
  }
  const cookie = db.pragma("schema_version", { simple: true }) as number;
  db.unsafeMode(true);
  try {
    db.pragma("writable_schema = ON");
    db.prepare("UPDATE sqlite_schema SET sql = ? WHERE type = 'table' AND name = ?").run(
      sql.replace(from, to),
      table,
    );
    db.pragma(`schema_version = ${cookie + 1}`);
  } finally {
    // RESET: off, and this connection parses the schema again (a new cookie alone makes only
    // other connections do so; this one would go on with the old CHECK until some later commit).
    db.pragma("writable_schema = RESET");
    db.unsafeMode(false);
  }
}
