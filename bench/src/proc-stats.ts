import { readFileSync } from "node:fs";

// CPU and memory of a process from /proc (Linux), for the benchmark's server_cpu_pct and RSS.

const TICKS_PER_S = 100; // USER_HZ on Linux x86_64

/** PARLEY_LOAD_PROFILE_DIR=<dir>: node flags for a V8 CPU profile of a load process (and of the
 * raw relay) in that directory; none otherwise. */
export function profileArgs(): string[] {
  const dir = process.env.PARLEY_LOAD_PROFILE_DIR;
  return dir ? ["--cpu-prof", `--cpu-prof-dir=${dir}`] : [];
}

export interface CpuSample {
  at: number;
  ticks: number;
}

export function cpuSample(pid: number): CpuSample {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may contain spaces) start after the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return { at: performance.now(), ticks: utime + stime };
}

/** CPU use between two samples, in percent of one core. */
export function cpuPct(a: CpuSample, b: CpuSample): number {
  const seconds = (b.at - a.at) / 1000;
  return seconds > 0 ? ((b.ticks - a.ticks) / TICKS_PER_S / seconds) * 100 : 0;
}

export function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) / 1024 : 0;
}
