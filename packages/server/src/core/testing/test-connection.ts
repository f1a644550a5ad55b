import type { ClientFrame, DisconnectCode, ServerFrame } from "@parley/protocol";
import type { Connection, Session } from "../connection.ts";
import type { Core } from "../core.ts";

let nextId = 0;

/** An in-process Connection for core tests: records what the core sends, and lets the test
 * feed frames. Gateways are tested separately over real sockets. */
export class TestConnection implements Connection {
  readonly id = `test-${++nextId}`;
  readonly remoteAddress = "127.0.0.1";
  readonly frames: ServerFrame[] = [];
  closedWith: { code: DisconnectCode; reason: string } | undefined;
  readonly session: Session;
  private waiters: Array<() => void> = [];

  constructor(core: Core) {
    this.session = core.open(this);
  }

  send(frame: ServerFrame): void {
    if (this.closedWith) return;
    this.frames.push(frame);
    for (const w of this.waiters.splice(0)) w();
  }

  close(code: DisconnectCode, reason: string): void {
    if (this.closedWith) return;
    this.closedWith = { code, reason };
    this.session.closed();
    for (const w of this.waiters.splice(0)) w();
  }

  receive(frame: ClientFrame): void {
    this.session.receive(frame);
  }

  /** Waits until a frame matching `pred` has been sent (searching from the start), or fails. */
  async waitFor<T extends ServerFrame>(pred: (f: ServerFrame) => f is T, timeoutMs?: number): Promise<T>;
  async waitFor(pred: (f: ServerFrame) => boolean, timeoutMs?: number): Promise<ServerFrame>;
  async waitFor(pred: (f: ServerFrame) => boolean, timeoutMs = 2000): Promise<ServerFrame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.frames.find(pred);
      if (hit) return hit;
      if (Date.now() > deadline) {
        throw new Error(`timed out; frames so far: ${JSON.stringify(this.frames.map((f) => f.t))}`);
      }
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 20);
      });
    }
  }

  /** Feeds a request and waits for its reply. */
  request(frame: Extract<ClientFrame, { id: number }>): Promise<ServerFrame> {
    this.receive(frame);
    return this.reply(frame.id);
  }

  /** Waits for the reply (any frame carrying `id`). */
  reply(id: number): Promise<ServerFrame> {
    return this.waitFor((f) => "id" in f && f.id === id);
  }
}

/** A fast, insecure PasswordHasher for tests that do not test hashing. */
export const plainHasher = {
  hash: (pw: string): Promise<string> => Promise.resolve(`plain$${pw}`),
  verify: (encoded: string, pw: string): Promise<boolean> => Promise.resolve(encoded === `plain$${pw}`),
};
