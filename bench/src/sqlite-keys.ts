import Database from "better-sqlite3";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { newId } from "../../packages/server/src/core/ids.ts";
import { newCid } from "../../packages/sdk/src/client.ts";

// `npm run bench:sqlite-keys`: what the applier's inserts would cost with integer keys. The
// applier's CPU is SQLite's B-tree inserts, three rows per 1:1 message (the message, and an entry
// in each member's log), keyed today by text ids (`u_` / `c_` and 16 characters). This writes the
// same rows into the two tables as the migrations leave them (sqlite-schema.ts, without the
// foreign keys: switching them off changed nothing measurable in `store-append`), and into the
// same tables keyed by integers instead, with the server's settings (WAL, synchronous=FULL, its
// cache size), 1,000 pairs, a commit every --commit-every messages (5,000: what the applier's 500
// ms commit holds at 10,000 msg/s). Prints one JSON line per variant and round: CPU per message,
// bytes written per message (/proc/self/io) and the file's size per message. The variants
// alternate, so that a machine that changes speed mid-run shows in both.

const TEXT_SCHEMA = `
  CREATE TABLE messages (
    conv_id TEXT NOT NULL, seq INTEGER NOT NULL, from_user TEXT NOT NULL, from_dev TEXT NOT NULL,
    cid TEXT NOT NULL, type TEXT NOT NULL, body BLOB NOT NULL, ts INTEGER NOT NULL,
    reply_to INTEGER, edited_at INTEGER, deleted_at INTEGER,
    PRIMARY KEY (conv_id, seq), UNIQUE (cid, from_user)
  ) STRICT, WITHOUT ROWID;
  CREATE TABLE updates (
    user_id TEXT NOT NULL, useq INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind = 'msg' OR kind = 'edit' OR kind = 'del' OR kind = 'react' OR
      kind = 'receipt' OR kind = 'conv' OR kind = 'left'),
    conv_id TEXT NOT NULL, seq INTEGER, snapshot INTEGER, data TEXT,
    PRIMARY KEY (user_id, useq)
  ) STRICT, WITHOUT ROWID;`;

/** The same tables with the conversation and user columns as integers. */
const INTEGER_SCHEMA = TEXT_SCHEMA.replaceAll("conv_id TEXT", "conv_id INTEGER")
  .replace("from_user TEXT", "from_user INTEGER")
  .replace("user_id TEXT", "user_id INTEGER");

interface Variant {
  name: "text" | "integer";
  schema: string;
  user: (i: number) => string | number;
  conv: (i: number) => string | number;
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
    const db = new Database(path);
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    db.pragma("cache_size = -65536");
    db.pragma("wal_autocheckpoint = 20000");
    db.exec(v.schema);
    const insertMessage = db.prepare(
      "INSERT INTO messages (conv_id, seq, from_user, from_dev, cid, type, body, ts, reply_to) " +
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
    );
    const insertUpdate = db.prepare(
      "INSERT INTO updates (user_id, useq, kind, conv_id, seq, snapshot, data) VALUES (?, ?, 'msg', ?, ?, NULL, NULL)",
    );
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
        insertMessage.run(convs[c], seq, users[from], "d_bench", cids[n], "text", body, ts);
        insertUpdate.run(users[to], ++useqs[to]!, convs[c], seq);
        insertUpdate.run(users[from], ++useqs[from]!, convs[c], seq);
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
  { name: "text", schema: TEXT_SCHEMA, user: () => newId("u"), conv: () => newId("c") },
  { name: "integer", schema: INTEGER_SCHEMA, user: (i) => i + 1, conv: (i) => i + 1 },
];
for (let r = 0; r < rounds; r++) {
  for (const v of variants) process.stdout.write(JSON.stringify(run(v, pairs, total, commitEvery)) + "\n");
}
