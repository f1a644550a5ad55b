// The number of open connections per remote address, shared by every gateway that it is given
// to (main.ts gives one to TCP and WebSocket), so that one address cannot hold more than `max`
// sockets across all of them. Checked at accept time, before a connection costs anything more
// than its socket.

export class ConnectionsPerIp {
  private readonly open = new Map<string, number>();

  /** `max` connections per address at most; 0 = unlimited (still counted). */
  constructor(readonly max: number) {}

  /** Counts one more connection from `address`. Returns the function that uncounts it (call it
   * when the socket closes; later calls do nothing), or undefined, counting nothing, when the
   * address already holds `max`. */
  acquire(address: string): (() => void) | undefined {
    const key = normalize(address);
    const n = this.open.get(key) ?? 0;
    if (this.max > 0 && n >= this.max) return undefined;
    this.open.set(key, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.open.get(key) ?? 1) - 1;
      if (left <= 0) this.open.delete(key);
      else this.open.set(key, left);
    };
  }

  /** Open connections from `address`. */
  count(address: string): number {
    return this.open.get(normalize(address)) ?? 0;
  }

  /** Addresses with at least one open connection. */
  get addresses(): number {
    return this.open.size;
  }
}

/** An IPv4 client of a dual-stack listener appears as ::ffff:a.b.c.d; it is the same host as
 * a.b.c.d on an IPv4 listener. */
function normalize(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

/** High enough for a NAT of a few hundred users with several devices each; a server behind a
 * reverse proxy (all WebSockets from one address) or a benchmark sets it to 0. */
export const DEFAULT_MAX_CONNECTIONS_PER_IP = 1000;
