import { Worker, type WorkerOptions } from "node:worker_threads";

/** A worker thread running the TypeScript module at `entry`. A loader given by --import to the
 * main thread does not apply to a worker's entry, so a small bootstrap registers tsx's loader in
 * the thread, then imports the module. `options.eval` is set here. */
export function typeScriptWorker(entry: URL, options: WorkerOptions = {}): Worker {
  const tsx = import.meta.resolve("tsx/esm/api");
  const boot =
    `import(${JSON.stringify(tsx)})` +
    `.then((api) => { api.register(); return import(${JSON.stringify(entry.href)}); })`;
  return new Worker(boot, { ...options, eval: true });
}
