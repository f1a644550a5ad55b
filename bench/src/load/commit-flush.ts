import { closeSync, fdatasyncSync, openSync, unlinkSync, writeSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";

// A thread for log-sync's --beside: what the applier's commit does to the disk beside the
// numbered log. Every intervalMs it overwrites `mib` MiB of a file written full of zeros
// beforehand, 4 KiB at a time where the last round stopped (SQLite's WAL is reused in place
// after each checkpoint), then fdatasyncs it: about the bytes and the flush of one commit of the
// applier (store-append's written_bytes_per_msg times the messages of an interval). Posts
// "ready" once the file is made, and { flushMs } (each fdatasync's time) once told "stop".

export interface CommitFlushConfig {
  path: string;
  mib: number;
  intervalMs: number;
}

const cfg = workerData as CommitFlushConfig;
const port = parentPort!;
const PAGE = 4096;
const size = Math.max(64, 4 * Math.ceil(cfg.mib)) * 1024 * 1024;
const fd = openSync(cfg.path, "wx", 0o600);
const zeros = Buffer.alloc(1024 * 1024);
for (let at = 0; at < size; at += zeros.length) writeSync(fd, zeros, 0, zeros.length, at);
fdatasyncSync(fd);

let stopped = false;
port.on("message", (msg) => {
  if (msg === "stop") stopped = true;
});
port.postMessage("ready");

const page = Buffer.alloc(PAGE, 0x5a);
const pages = Math.round((cfg.mib * 1024 * 1024) / PAGE);
const flushMs: number[] = [];
let at = 0;
while (!stopped) {
  const round = performance.now();
  for (let i = 0; i < pages; i++) {
    writeSync(fd, page, 0, PAGE, at);
    at = (at + PAGE) % size;
  }
  const t0 = performance.now();
  fdatasyncSync(fd);
  flushMs.push(performance.now() - t0);
  // A timer, not a busy wait: "stop" arrives through the event loop.
  const wait = cfg.intervalMs - (performance.now() - round);
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, wait)));
}
closeSync(fd);
unlinkSync(cfg.path);
port.postMessage({ flushMs });
