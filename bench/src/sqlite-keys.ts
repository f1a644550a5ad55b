import type BetterSqlite3 from "better-sqlite3";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { newId } from "../../packages/server/src/core/ids.ts";
import { silentLogger } from "../../packages/server/src/core/ports/logger.ts";
import { openDatabase } from "../../packages/server/src/store/sqlite/sqlite-open.ts";
import { prepareStatements } from "../../packages/server/src/store/sqlite/sqlite-statements.ts";
import { newCid } from "../../packages/sdk/src/client.ts";

// `npm run bench:sqlite-keys`: what the applier's inserts would cost with integer keys. The
// applier's CPU is SQLite's B-tree inserts, three rows per 1:1 message (the message, and an entry
// in each member's log), keyed today by text ids (`u_` / `c_` and 16 characters). This writes the
// same rows with the server's statements into the two tables as the migrations leave them (foreign
// keys off: switching them off changed nothing measurable in `store-append`), and into the same
// tables with the id columns INTEGER, on a file opened as the server opens its own (WAL,
// synchronous=FULL, its cache size), 1,000 pairs, a commit every --commit-every messages (5,000:
// what the applier's 500 ms commit holds at 10,000 msg/s). Prints one JSON line per variant and
// round: CPU per message, bytes written per message (/proc/self/io) and the file's size per
// message. The variants alternate, so that a machine that changes speed mid-run shows in both.

/** The text-id columns of the two tables. */
const ID_COLUMNS = /\b(conv_id|from_user|user_id)(\s+)TEXT\b/g;

interface Variant {
  name: "text" | "integer";
  user: (i: number) => string | number;
  conv: (i: number) => string | number;
}

/** Rebuilds `messages` and `updates`, empty, as the migrations left them but with the id columns
 * INTEGER. */
function withIntegerKeys(db: BetterSqlite3.Database): void {
  const tables = db
    .prepare<[], { name: string; sql: string }>(
      "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name IN ('messages', 'updates')",
    )
    .all();
  for (const t of tables) {
    db.exec(`DROP TABLE ${t.name}`);
    db.exec(t.sql.replace(ID_COLUMNS, "$1$2INTEGER"));
  }
}

function flag(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  if (at < 0) return fallback;
  const v = Number(process.argv[at + 1]);
  if (!Number.isSafeInteger(v) || v < 1) throw new Error(`--${name} must be a positive integer`);
  return v;
}

function writtenBytes(): number {
  const m = /^write_bytes: (\d+)$/m.exec(readFileSync("/proc/self/io", "utf8"));
  return m ? Number(m[1]) : NaN;
}

function run(v: Variant, pairs: number, total: number, commitEvery: number): Record<string, unknown> {
  const dir = mkdtempSync(join(tmpdir(), "parley-sqlite-keys-"));
  try {
    const path = join(dir, "keys.db");
    // The server's own settings (WAL, synchronous=FULL, its cache and checkpoint sizes) and schema.
    const db = openDatabase(path, silentLogger);
    // No users or conversations rows here for the ids to reference.
    db.pragma("foreign_keys = OFF");
    if (v.name === "integer") withIntegerKeys(db);
    const { insertMessage, insertUpdate } = prepareStatements(db);
    const convs = Array.from({ length: pairs }, (_, i) => v.conv(i));
    const users = Array.from({ length: 2 * pairs }, (_, i) => v.user(i));
    const seqs = new Array<number>(pairs).fill(0);
    const useqs = new Array<number>(2 * pairs).fill(0);
    const body = new Uint8Array(32).fill(1);
    const ts = Date.now();
    // A fixed pseudo-random order of conversations, the same for both variants.
    let x = 12345;
    const nextConv = (): number => {
      x = (x * 1103515245 + 12345) & 0x7fffffff;
      return x % pairs;
    };
    const cids = Array.from({ length: total }, () => newCid());
    const written0 = writtenBytes();
    const cpu0 = process.cpuUsage();
    for (let n = 0; n < total;) {
      db.exec("BEGIN");
      for (const end = Math.min(total, n + commitEvery); n < end; n++) {
        const c = nextConv();
        const from = 2 * c;
        const to = from + 1;
        const seq = ++seqs[c]!;
        // The statements are typed for text ids; SQLite takes the integers as they are.
        const conv = convs[c] as string;
        insertMessage.run(conv, seq, users[from] as string, "d_bench", cids[n]!, "text", body, ts, null);
        insertUpdate.run(users[to] as string, ++useqs[to]!, "msg", conv, seq, null, null);
        insertUpdate.run(users[from] as string, ++useqs[from]!, "msg", conv, seq, null, null);
      }
      db.exec("COMMIT");
    }
    const cpu = process.cpuUsage(cpu0);
    db.pragma("wal_checkpoint(TRUNCATE)");
    const written = writtenBytes() - written0;
    db.close();
    return {
      bench: "sqlite-keys",
      keys: v.name,
      messages: total,
      pairs,
      commit_every: commitEvery,
      cpu_us_per_msg: Math.round(((cpu.user + cpu.system) / total) * 100) / 100,
      written_bytes_per_msg: Math.round(written / total),
      file_bytes_per_msg: Math.round(statSync(path).size / total),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const pairs = flag("pairs", 1000);
const total = flag("messages", 200_000);
const commitEvery = flag("commit-every", 5000);
const rounds = flag("rounds", 3);
const variants: Variant[] = [
  { name: "text", user: () => newId("u"), conv: () => newId("c") },
  { name: "integer", user: (i) => i + 1, conv: (i) => i + 1 },
];
for (let r = 0; r < rounds; r++) {
  for (const v of variants) process.stdout.write(JSON.stringify(run(v, pairs, total, commitEvery)) + "\n");
}
