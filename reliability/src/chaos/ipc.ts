import type { ChaosEvent } from "./events.ts";

// Messages between the orchestrator and a client process (one process per user, hosting all of
// that user's devices), over the child-process IPC channel.

export interface DeviceSpec {
  /** "<user name>/<n>", the device's name in the history. */
  key: string;
  /** The device's HTTP base URL (through its own fault proxy). */
  url: string;
  /** The device's TCP port (through its own fault proxy), for the tcp transport. */
  tcpPort: number;
  transport: "ws" | "tcp";
  encoding: "binary" | "json";
}

export interface WorkerSpec {
  user: string;
  name: string;
  password: string;
  seed: number;
  /** Conversations this user is a member of. */
  convs: string[];
  devices: DeviceSpec[];
  /** Mean operations per second per device (sends, edits, deletes, reads). */
  opsPerSecond: number;
  /** How long the quiet and final phases may wait for operations and catch-up. */
  settleTimeoutMs: number;
}

export type ToWorker =
  | { type: "start"; spec: WorkerSpec }
  /** Stop starting operations; settle every send, edit and delete; publish final read marks. */
  | { type: "quiesce" }
  /** Answer "armed", then report "final" for every device once it has reconnected after this
   * message (the orchestrator drops every connection), is caught up to `targets` (conversation
   * -> highest acknowledged seq) and sees its user's highest read marks. */
  | { type: "final"; targets: Record<string, number> };

export type FromWorker =
  | { type: "ready" }
  | { type: "events"; events: ChaosEvent[] }
  | { type: "quiet" }
  | { type: "armed" }
  | { type: "done" }
  | { type: "log"; msg: string };
