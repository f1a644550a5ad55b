import type { ClientFrame, ConversationId, WelcomeFrame } from "@parley/protocol";
import type { Timers } from "./timers.ts";
import type { Transport } from "./transport/transport.ts";

// The mechanics of ONE connection of the client: its transport, the connect timeout (socket open
// and `welcome` within connectTimeoutMs), the heartbeat after welcome, and why it ended. The
// client decides what to do about it (ParleyClient: reconnect, stop).

/** Reported when we close a connection because the server went silent for 2.5 heartbeats;
 * the same code the server uses for a silent client (DISCONNECT.IDLE_TIMEOUT). */
export const HEARTBEAT_TIMEOUT = 4002;

export class ClientConnection {
  welcome: WelcomeFrame | undefined;
  /** Request ids of the outstanding `sync`s, each with the large group whose log it reads
   * (undefined: the user's own log). */
  readonly syncIds = new Map<number, ConversationId | undefined>();
  /** Authenticated and caught up: requests may flow. */
  ready = false;
  /** Resolves once ended() was called. */
  readonly gone: Promise<void>;
  private markGone: () => void = () => {};
  private lastHeard: number;
  private lastPing: number;
  private pingN = 0;
  private timer: unknown;
  /** Why we closed it ourselves, reported instead of the transport's code. */
  private localClose: { code: number; reason: string } | undefined;

  constructor(
    readonly transport: Transport,
    private readonly timers: Timers,
    connectTimeoutMs: number,
  ) {
    this.gone = new Promise<void>((resolve) => (this.markGone = resolve));
    this.lastHeard = this.lastPing = timers.now();
    this.timer = timers.setTimeout(() => this.close(1006, "connect timeout"), connectTimeoutMs);
  }

  send(frame: ClientFrame): void {
    this.transport.send(frame);
  }

  /** Call on every frame from the server. */
  heard(): void {
    this.lastHeard = this.timers.now();
  }

  /** `welcome` arrived: the connect timeout ends, the heartbeat starts. */
  welcomed(welcome: WelcomeFrame): void {
    this.welcome = welcome;
    this.timers.clearTimeout(this.timer);
    const hb = welcome.heartbeatMs;
    const tick = (): void => {
      const now = this.timers.now();
      if (now - this.lastHeard >= 2.5 * hb)
        return this.close(HEARTBEAT_TIMEOUT, "nothing heard from the server");
      // The server pings us when it hears nothing from us; we ping when we hear nothing from it.
      if (now - this.lastHeard >= hb && now - this.lastPing >= hb) {
        this.lastPing = now;
        this.send({ t: "ping", n: ++this.pingN });
      }
      this.timer = this.timers.setTimeout(tick, Math.max(50, hb / 4));
    };
    this.timer = this.timers.setTimeout(tick, Math.max(50, hb / 4));
  }

  /** Closes it, reporting `code` and `reason` when it has ended. */
  close(code: number, reason: string): void {
    this.localClose ??= { code, reason };
    this.transport.close();
  }

  /** The transport is gone (or never opened): stops the timers; returns the code and reason to
   * report, ours if we closed it. Idempotent. */
  ended(code: number, reason: string): { code: number; reason: string } {
    this.timers.clearTimeout(this.timer);
    this.timer = undefined;
    this.markGone();
    return this.localClose ?? { code, reason };
  }
}
