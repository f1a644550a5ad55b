// Tunables of the core, with their defaults. Units are in the names.

export interface CoreOptions {
  /** Lifetime of a login token. */
  tokenTtlMs: number;
  /** A connection that has not completed hello by then is closed (E_TIMEOUT, 4003). `parley
   * serve` sets it from --handshake-timeout-ms. */
  helloTimeoutMs: number;
  /** The server pings after this much silence and closes after 2.5x (4002). */
  heartbeatMs: number;
  /** Largest encoded frame, in bytes; told to clients in `welcome`. */
  maxFrameBytes: number;
  /** Per-connection request rate (token bucket: rate and burst). */
  framesPerSecond: number;
  frameBurst: number;
  /** Connections one user may hold at once. */
  maxConnectionsPerUser: number;
  /** Largest group. */
  maxGroupMembers: number;
  /** A group that reaches this many members becomes large (read diffusion, docs/architecture.md):
   * one log entry per change instead of one per member. It stays large. */
  largeGroupMembers: number;
  /** At most one typing signal per user and conversation per this interval. */
  typingThrottleMs: number;
  /** At most one presence change per user per this interval is published to watchers. */
  presenceThrottleMs: number;
  /** Updates per `synced` reply at most. */
  syncBatchMax: number;
  /** Messages per history page at most. */
  historyPageMax: number;
  /** Group commit: most messages written in one transaction. */
  commitBatchMax: number;
  /** Group commit: a batch takes no more messages once their bodies reach this many bytes (it
   * always takes at least one), so that a batch of large messages stays a bounded copy. */
  commitBatchBytes: number;
  /** Sends waiting for commit beyond which new sends are refused with E_OVERLOADED. */
  maxPendingSends: number;
  /** Pushes of large groups waiting to go out (sent a slice per event-loop turn) beyond which new
   * sends are refused with E_OVERLOADED: each is a few hundred bytes until sent. */
  maxFanOutBacklog: number;
  /** Admission control: a send that would wait longer than this for its commit (estimated from
   * the queue and the measured commit throughput) is refused with E_OVERLOADED. 0: off. */
  maxCommitQueueMs: number;
  /** Resident set size limit in bytes: above 90% of it sends are refused with E_OVERLOADED
   * (needs CoreDeps.rssBytes). 0: off. */
  maxRssBytes: number;
  /** Approximate byte size a `synced` or `history` reply aims to stay under (message bodies
   * plus ~256 bytes per entry); at least one entry is always sent. */
  replyBudgetBytes: number;
  /** How often a connection's device cursor is persisted while it changes. */
  cursorFlushMs: number;
}

export const DEFAULT_CORE_OPTIONS: CoreOptions = {
  tokenTtlMs: 30 * 24 * 3600 * 1000,
  helloTimeoutMs: 10_000,
  heartbeatMs: 30_000,
  maxFrameBytes: 64 * 1024,
  framesPerSecond: 500,
  frameBurst: 1000,
  maxConnectionsPerUser: 32,
  maxGroupMembers: 10_000,
  // One entry per member per message costs a B-tree page per member on every commit; from a few
  // hundred members up that dominates the writer (docs/benchmarks.md, group-fanout).
  largeGroupMembers: 500,
  typingThrottleMs: 2_000,
  presenceThrottleMs: 1_000,
  syncBatchMax: 1000,
  historyPageMax: 500,
  // Larger batches share more of the B-tree pages each commit writes: direct-max at 1000 pairs
  // 15.2-15.4k -> 16.3-17.4k msg/s from 1,000 to 4,000 (docs/benchmarks.md). Admission keeps the
  // wait they add under maxCommitQueueMs.
  commitBatchMax: 4000,
  commitBatchBytes: 8 * 1024 * 1024,
  maxPendingSends: 20_000,
  // 20 messages to a group with 10,000 members online.
  maxFanOutBacklog: 200_000,
  maxCommitQueueMs: 250,
  maxRssBytes: 0,
  cursorFlushMs: 10_000,
  replyBudgetBytes: 1024 * 1024,
};
