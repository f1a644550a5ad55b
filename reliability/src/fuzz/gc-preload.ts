// Loaded into the fuzz run's server process (node --expose-gc --import <this file>): on SIGUSR2
// it runs a full garbage collection and says so on stdout, so the fuzzer can read the server's
// RSS at rest, without garbage that has merely not been collected yet.

process.on("SIGUSR2", () => {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  process.stdout.write(
    JSON.stringify({ fuzzGc: gc !== undefined, heapUsed: process.memoryUsage().heapUsed }) + "\n",
  );
});
