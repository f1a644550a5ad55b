// The chaos run's history: one JSON object per line, written by the orchestrator as events arrive
// from the client processes (and for its own faults). The checker reads nothing else.
//
// Every device is one ParleyClient of one user. Message bodies are `bodyOf(cid)` when sent and
// `editBodyOf(cid, n)` after the n-th edit, so the checker can tell a corrupted or phantom body.

/** A device's name in the run: "<user>/<n>". */
export type DeviceKey = string;

export type ChaosEvent =
  /** First line: who is in which conversation (membership does not change during a run). */
  | {
      e: "setup";
      t: number;
      seed: number;
      /** conversation id -> member user ids */
      convs: Record<string, string[]>;
      /** device -> its user id */
      devices: Record<DeviceKey, string>;
    }
  /** A send was started (client id chosen; the SDK outbox retries it with the same cid). */
  | { e: "send"; t: number; dev: DeviceKey; user: string; conv: string; cid: string }
  /** The server acknowledged the send: committed with this seq. */
  | { e: "ack"; t: number; dev: DeviceKey; user: string; conv: string; cid: string; seq: number }
  /** The send was refused for good (a non-retryable error). */
  | { e: "send-failed"; t: number; dev: DeviceKey; conv: string; cid: string; code: string }
  /** The SDK emitted "message" on this device. */
  | {
      e: "recv";
      t: number;
      dev: DeviceKey;
      conv: string;
      seq: number;
      from: string;
      cid: string;
      body: string;
    }
  /** An edit of one's own message was started / acknowledged. */
  | { e: "edit"; t: number; dev: DeviceKey; conv: string; seq: number; body: string }
  | { e: "edit-ack"; t: number; dev: DeviceKey; conv: string; seq: number; body: string }
  /** A delete of one's own message was started / acknowledged. */
  | { e: "delete"; t: number; dev: DeviceKey; conv: string; seq: number }
  | { e: "delete-ack"; t: number; dev: DeviceKey; conv: string; seq: number }
  /** markRead(conv, seq) was called on this device. */
  | { e: "read"; t: number; dev: DeviceKey; user: string; conv: string; seq: number }
  /** After the quiet phase: what this device shows. `reads` is its user's read mark per
   * conversation as this device knows it; `messages` every message it holds, by conversation,
   * in seq order. */
  | {
      e: "final";
      t: number;
      dev: DeviceKey;
      user: string;
      reads: Record<string, number>;
      messages: Record<string, FinalMessage[]>;
    }
  /** A fault the orchestrator injected. */
  | { e: "fault"; t: number; kind: FaultKind; target?: string }
  /** The run's end (written by the orchestrator before checking). */
  | { e: "end"; t: number };

export type FaultKind = "sigkill" | "restart" | "cut" | "stall" | "offline";

export interface FinalMessage {
  seq: number;
  from: string;
  cid: string;
  body: string;
  deleted: boolean;
}

export function bodyOf(cid: string): string {
  return `m:${cid}`;
}

export function editBodyOf(cid: string, n: number): string {
  return `e${n}:${cid}`;
}
