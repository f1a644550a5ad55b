import * as net from "node:net";

// A TCP proxy in front of the server for one device, through which the orchestrator injects
// network faults: cut (mid-frame: half of the next chunk is forwarded, then both sides are
// destroyed), stall (the server's output is not read for a while: a slow consumer), offline
// (connections refused for a while). It follows the server across restarts on new ports.

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  cutNext: boolean;
  stalled: boolean;
}

export class FaultProxy {
  private readonly pairs = new Set<Pair>();
  private readonly server: net.Server;
  private offlineUntil = 0;

  private constructor(private readonly target: () => number | undefined) {
    this.server = net.createServer((client) => this.accept(client));
  }

  /** `target` gives the server's current port (undefined while it is down). */
  static async start(target: () => number | undefined): Promise<FaultProxy> {
    const proxy = new FaultProxy(target);
    await new Promise<void>((resolve, reject) => {
      proxy.server.once("error", reject);
      proxy.server.listen(0, "127.0.0.1", resolve);
    });
    return proxy;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  get connections(): number {
    return this.pairs.size;
  }

  /** Cuts every connection in the middle of its next chunk (or within 200 ms if idle). */
  cut(): void {
    for (const pair of this.pairs) {
      pair.cutNext = true;
      setTimeout(() => this.drop(pair), 200).unref();
    }
  }

  /** Stops reading the server's output for `ms` (the server sees a slow reader). */
  stall(ms: number): void {
    for (const pair of this.pairs) {
      pair.stalled = true;
      pair.upstream.pause();
      setTimeout(() => {
        pair.stalled = false;
        pair.upstream.resume();
      }, ms).unref();
    }
  }

  /** Drops every connection and refuses new ones for `ms`. */
  offline(ms: number): void {
    this.offlineUntil = Date.now() + ms;
    for (const pair of this.pairs) this.drop(pair);
  }

  /** Ends an offline period early. */
  online(): void {
    this.offlineUntil = 0;
  }

  /** Drops every connection now (clients reconnect at once). */
  dropAll(): void {
    for (const pair of this.pairs) this.drop(pair);
  }

  async close(): Promise<void> {
    this.dropAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    const port = this.target();
    if (port === undefined || Date.now() < this.offlineUntil) {
      client.destroy();
      return;
    }
    const upstream = net.connect(port, "127.0.0.1");
    const pair: Pair = { client, upstream, cutNext: false, stalled: false };
    this.pairs.add(pair);
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      s.on("error", () => {});
      s.on("close", () => this.drop(pair));
    }
    this.pipe(pair, client, upstream);
    this.pipe(pair, upstream, client);
  }

  private pipe(pair: Pair, from: net.Socket, to: net.Socket): void {
    from.on("data", (chunk: Buffer) => {
      if (pair.cutNext) {
        if (chunk.length > 1) to.write(chunk.subarray(0, chunk.length >> 1));
        this.drop(pair);
        return;
      }
      // Backpressure: a stalled reader stalls the writer behind it.
      if (!to.write(chunk)) {
        from.pause();
        to.once("drain", () => {
          if (!(from === pair.upstream && pair.stalled)) from.resume();
        });
      }
    });
  }

  private drop(pair: Pair): void {
    if (!this.pairs.delete(pair)) return;
    pair.client.destroy();
    pair.upstream.destroy();
  }
}
