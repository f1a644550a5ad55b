// The control clients: two legitimate SDK users (ParleyClient over WebSocket, one binary, one
// JSON) who keep chatting while the fuzzer runs. Every message A sends must be acknowledged and
// delivered to B exactly once, intact; neither may be disconnected or see an error.

import { ParleyClient, textOf } from "@parley/sdk/node";
import type { World } from "./world.ts";

export class ControlClients {
  sent = 0;
  acked = 0;
  delivered = 0;
  /** Sent, not yet delivered to B. */
  private readonly undelivered = new Set<string>();
  private running = true;
  private stopping = false;
  private loop: Promise<void> = Promise.resolve();
  private stopped: Promise<void> | undefined;

  private constructor(
    private readonly a: ParleyClient,
    private readonly b: ParleyClient,
    private readonly conv: string,
    private readonly report: (problem: string) => void,
  ) {}

  /** Logs both in, connects them, and starts A sending one message every `intervalMs` (the next
   * one once the previous is acknowledged). */
  static async start(
    world: World,
    report: (problem: string) => void,
    intervalMs = 20,
  ): Promise<ControlClients> {
    const login = (name: string, password: string, encoding: "binary" | "json"): Promise<ParleyClient> =>
      ParleyClient.login({ url: world.url, name, password, device: "control", transport: "ws", encoding });
    const a = await login(world.controlA.name, world.controlA.password, "binary");
    const b = await login(world.controlB.name, world.controlB.password, "json");
    const control = new ControlClients(a, b, world.controlConv, (p) => report(`control: ${p}`));
    control.watch(a, "A");
    control.watch(b, "B");
    b.on("message", (m) => {
      if (m.conv !== world.controlConv) return; // the fuzz group's traffic
      if (m.from !== world.controlA.user) return control.report(`B got a message from ${m.from}`);
      if (!control.undelivered.delete(m.cid)) return control.report(`B got ${m.cid} twice or unsent`);
      if (textOf(m) !== bodyOf(m.cid))
        control.report(`B got ${m.cid} with body ${JSON.stringify(textOf(m))}`);
      control.delivered++;
    });
    await a.connect();
    await b.connect();
    control.loop = control.run(intervalMs);
    return control;
  }

  private watch(client: ParleyClient, who: string): void {
    client.on("disconnected", (e) => {
      if (!this.stopping) this.report(`${who} disconnected: ${e.code} ${e.reason}`);
    });
    client.on("error", (err) => {
      if (!this.stopping) this.report(`${who} error: ${err.message}`);
    });
  }

  private async run(intervalMs: number): Promise<void> {
    for (let n = 1; this.running; n++) {
      const cid = `ctl-${n}`;
      this.undelivered.add(cid);
      this.sent++;
      try {
        await this.a.send(this.conv, bodyOf(cid), { cid });
        this.acked++;
      } catch (err) {
        this.report(`send ${cid} failed: ${(err as Error).message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  }

  /** Stops sending, waits up to `timeoutMs` for the last acknowledgement and for every delivery,
   * reports what is missing, and closes both clients. Idempotent. */
  stop(timeoutMs: number): Promise<void> {
    this.stopped ??= this.shutdown(timeoutMs);
    return this.stopped;
  }

  private async shutdown(timeoutMs: number): Promise<void> {
    this.running = false;
    const deadline = Date.now() + timeoutMs;
    const acked = await Promise.race([
      this.loop.then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), timeoutMs).unref()),
    ]);
    if (!acked) this.report(`send ${this.sent} not acknowledged within ${timeoutMs} ms`);
    while (this.undelivered.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (this.undelivered.size > 0) {
      this.report(
        `${this.undelivered.size} messages never delivered: ${[...this.undelivered].slice(0, 5).join(", ")}`,
      );
    }
    this.stopping = true;
    await Promise.all([this.a.close(), this.b.close()]);
  }
}

function bodyOf(cid: string): string {
  return `control message ${cid}`;
}
