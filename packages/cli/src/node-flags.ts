// Node.js flags the server runs with: `npm start` (package.json) and the harness that starts
// `parley serve` for end-to-end tests, the chaos runs and the benchmarks (testing/server-process.ts).
// They cannot be set once the process runs, so a deployment that starts `parley serve` some other
// way passes them itself (docs/operations.md, "Starting").

/** Semi-spaces of 64 MiB instead of V8's 16: under load every send allocates short-lived frames,
 * messages and promises, and a young generation four times larger scavenges a quarter as often,
 * so far fewer of them live long enough to be copied. direct-max, alternating runs: server GC
 * 135-158 -> 30-42 ms per second, 28.4k -> 33.0k msg/s on average (32 MiB: 30.5k;
 * docs/benchmarks.md, eighth session). Idle RSS per connection is unchanged (the young generation
 * grows only under allocation); under full load the server's RSS is about 60 MB higher. */
export const SERVER_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=64"];
