import { describe, expect, it } from "vitest";
import type { DisconnectCode, ServerFrame } from "@parley/protocol";
import { DEFAULT_LIMITS, GatewayConnection } from "./gateway-connection.ts";

// corkForThisTurn: every connection written to in a turn is corked once and uncorked once when
// the turn is over, in the order they were corked, by one callback for all of them.

const events: string[] = [];

class FakeConnection extends GatewayConnection {
  readonly remoteAddress = "127.0.0.1";
  destroyed = false;
  failUncork = false;
  private readonly socket = {
    cork: () => events.push(`cork ${this.id}`),
    uncork: () => {
      if (this.failUncork) throw new Error("socket broke");
      events.push(`uncork ${this.id}`);
    },
  };
  constructor(
    readonly id: string,
    logged: string[],
  ) {
    super(
      {
        debug: () => {},
        info: () => {},
        warn: () => {},
        error: (obj, msg) => logged.push(`${id}: ${msg}`),
      },
      { ...DEFAULT_LIMITS, bytesPerSecond: 0 },
    );
  }
  protected queuedBytes(): number {
    return 0;
  }
  protected write(frame: ServerFrame): boolean {
    this.corkForThisTurn(this.socket);
    events.push(`write ${this.id} ${frame.t}`);
    return true;
  }
  protected end(_code: DisconnectCode, _reason: string): void {}
  protected destroy(): void {
    this.destroyed = true;
  }
  protected pauseReading(): void {}
  protected resumeReading(): void {}
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

describe("GatewayConnection.corkForThisTurn", () => {
  it("corks each connection once per turn and uncorks them all after it, in order", async () => {
    events.length = 0;
    const logged: string[] = [];
    const [a, b] = [new FakeConnection("a", logged), new FakeConnection("b", logged)];
    a.send({ t: "pong", n: 1 });
    b.send({ t: "pong", n: 1 });
    a.send({ t: "ok", id: 1 });
    expect(events).toStrictEqual(["cork a", "write a pong", "cork b", "write b pong", "write a ok"]);
    await turn();
    expect(events.slice(5)).toStrictEqual(["uncork a", "uncork b"]);
    // The next turn corks again.
    b.send({ t: "pong", n: 1 });
    await turn();
    expect(events.slice(7)).toStrictEqual(["cork b", "write b pong", "uncork b"]);
    expect(logged).toStrictEqual([]);
  });

  it("uncorks the others when one socket throws, and drops that one", async () => {
    events.length = 0;
    const logged: string[] = [];
    const [a, b] = [new FakeConnection("a", logged), new FakeConnection("b", logged)];
    a.failUncork = true;
    a.send({ t: "pong", n: 1 });
    b.send({ t: "pong", n: 1 });
    await turn();
    expect(events).toStrictEqual(["cork a", "write a pong", "cork b", "write b pong", "uncork b"]);
    expect(a.destroyed).toBe(true);
    expect(b.destroyed).toBe(false);
    expect(logged).toStrictEqual(["a: could not send on a connection"]);
    // A connection uncorked (or dropped) is corked afresh by its next write.
    a.failUncork = false;
    a.send({ t: "pong", n: 1 });
    await turn();
    expect(events.slice(5)).toStrictEqual(["cork a", "write a pong", "uncork a"]);
  });
});
