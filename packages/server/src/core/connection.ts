import type { ClientFrame, DisconnectCode, ServerFrame } from "@parley/protocol";

// The seam between gateways (TCP, WebSocket, later MQTT) and the core. A gateway turns bytes into
// validated ClientFrames and ServerFrames into bytes; everything else (hello, auth, limits on
// requests, routing) is the core's, so every transport behaves the same.

/** What the core needs from one client connection. Implemented by each gateway. */
export interface Connection {
  /** Unique within this process. */
  readonly id: string;
  /** Remote address, for logs and per-IP limits. */
  readonly remoteAddress: string;
  /** Queues a frame for the client. Never throws; if the client cannot keep up, the gateway drops
   * the connection (slow consumer) and the client catches up by sync. */
  send(frame: ServerFrame): void;
  /** Sends a `bye` frame, then closes (on WebSocket with the same code as the close code). Idempotent. The gateway calls
   * Session.closed() once the socket is gone. */
  close(code: DisconnectCode, reason: string): void;
}

/** The core's side of one connection. Created by Core.open(); the gateway feeds it. */
export interface Session {
  /** One decoded, validated frame from the client, in arrival order. Never throws. */
  receive(frame: ClientFrame): void;
  /** The socket is closed (by either side). Called exactly once. */
  closed(): void;
}
