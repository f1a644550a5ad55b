import type { Conversation, ConversationId, DeviceId, Message, UserId, WelcomeFrame } from "@parley/protocol";
import type { LocalStore } from "./local-store.ts";
import type { Fetch } from "./rest.ts";
import type { ReactionEvent, ReceiptEvent } from "./sync-engine.ts";
import type { Timers } from "./timers.ts";
import type { Encoding, TransportFactory } from "./transport/transport.ts";
import type { WebSocketConstructor } from "./transport/ws-transport.ts";

// The public types of ParleyClient: its options and the events it emits.

export interface TypingEvent {
  conv: ConversationId;
  user: UserId;
}

export interface PresenceEvent {
  user: UserId;
  online: boolean;
  lastSeen: number;
}

export interface ConnectedEvent {
  user: UserId;
  device: DeviceId;
  /** The cursor once caught up. */
  cursor: number;
  welcome: WelcomeFrame;
}

export interface DisconnectedEvent {
  /** The server's disconnect code, or 1000 (we closed), 1002 (undecodable frame), 1006
   * (connection lost), 4002 (heartbeat timeout, detected here). */
  code: number;
  reason: string;
  willReconnect: boolean;
}

export type ClientEvents = {
  /** A new message, exactly once, in seq order within its conversation. */
  message: [msg: Message];
  /** A message was edited; `msg` is its new state. */
  edit: [msg: Message];
  /** A message was deleted (recalled); `msg.deleted` is set and the body is empty. */
  delete: [msg: Message];
  reaction: [event: ReactionEvent];
  receipt: [event: ReceiptEvent];
  /** A conversation was created, renamed, or its membership changed. */
  conversation: [conv: Conversation];
  /** This user is no longer a member of the conversation. */
  left: [conv: ConversationId];
  typing: [event: TypingEvent];
  presence: [event: PresenceEvent];
  /** Connected and caught up (after each reconnect too). */
  connected: [event: ConnectedEvent];
  /** A connection that had been "connected" is gone. */
  disconnected: [event: DisconnectedEvent];
  /** Something the application should know: a connection-level error from the server, a
   * failed background request (read receipt), a listener that threw, a fatal disconnect. */
  error: [err: Error];
};

export type ClientState = "idle" | "connecting" | "ready" | "stopped" | "closed";

export interface ClientOptions {
  /** The server's HTTP base URL, e.g. "http://127.0.0.1:8080", for REST. */
  url: string;
  /** Base URL for the realtime connection when it differs from `url` (an access point handed
   * out by a dispatcher, a proxy). The WebSocket path and, for TCP, the host come from it. */
  endpoint?: string;
  token: string;
  user: UserId;
  device: DeviceId;
  /** "ws" (default), "tcp" (Node: import @parley/sdk/node), another registered name, or a factory. */
  transport?: string | TransportFactory;
  /** The server's TCP port, for the "tcp" transport. */
  tcpPort?: number;
  /** Default "binary". */
  encoding?: Encoding;
  /** Default: a MemoryLocalStore, closed by close(). A store passed in is flushed, not closed. */
  store?: LocalStore;
  WebSocket?: WebSocketConstructor;
  reconnectBaseMs?: number;
  reconnectCapMs?: number;
  /** Delayed ack: at most this long after an update (default 250) ... */
  ackDelayMs?: number;
  /** ... or at once after this many updates (default 100). */
  ackEvery?: number;
  /** Read receipts are coalesced per conversation and sent within this delay (default 250). */
  readDelayMs?: number;
  /** Time allowed for the socket to open and `welcome` to arrive (default 10000). */
  connectTimeoutMs?: number;
  /** Largest frame accepted from the server (default 16 MiB). */
  maxIncomingFrameBytes?: number;
  /** Updates asked for per `sync` round; by default as many as surely fit in
   * maxIncomingFrameBytes (10 to 500). */
  syncLimit?: number;
  /** Sync requests kept outstanding while catching up, for consecutive pages (default 4; 1 asks
   * for one page at a time). */
  syncPipeline?: number;
  /** At most one typing signal per conversation per this interval (default 2000). */
  typingIntervalMs?: number;
  agent?: string;
  fetch?: Fetch;
  timers?: Timers;
}

export interface LoginOptions extends Omit<ClientOptions, "token" | "user" | "device"> {
  name: string;
  password: string;
  /** Device name shown in the user's device list. */
  device: string;
}

export interface RegisterOptions {
  url: string;
  name: string;
  password: string;
  fetch?: Fetch;
}

export interface SendOptions {
  /** Content type; default "text/plain" for a string body, "application/octet-stream" else. */
  type?: string;
  replyTo?: number;
  /** Client id (idempotency key); generated when absent. */
  cid?: string;
}
