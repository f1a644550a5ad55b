import { decodeBinary, encodeBinary } from "@parley/protocol";
import type { ClientFrame, ServerFrame } from "@parley/protocol";
import { WsClient } from "./ws-client.ts";

// The load client of the group-fanout scenario, run as its own process (several at once; the
// scenario, group-fanout.ts, starts them). It is driven over the IPC channel: the parent sends
// `config`, the process opens its connections and answers `ready`, the parent sends `go` with a
// common wall-clock start, and the process answers `result` after the run and exits.
//
// A process can hold any of three roles, all over WebSocket (binary subprotocol):
// - online group members: connections that only read pushes and ack their cursor (once a
//   second, staggered), optionally with delivery receipts (`receipts`, off by default: every
//   receipt is fanned out to every member of the group, see the scenario);
// - the group's sender: one group message every 1/groupRate s, open loop;
// - 1:1 pairs: `directRate` messages/s in total, open loop, spread evenly over the pairs; their
//   senders speak protocol version 2 (DIRECT_VERSIONS), as the SDK and the direct scenarios do.
// Every body carries its intended send time (float64, wall clock: performance.timeOrigin +
// now(), the same clock in every process) and, for group messages, its index. Latency runs from
// the intended send time to the receive callback, so a late send (a slow client, a refused
// send resent after retryAfterMs) counts against the server, not in its favour.
// Frames from the server are decoded (decodeBinary) but not schema-validated: the server is
// what is measured, and validating 10,000 pushes/s would only load the client.

export interface FanoutLoadConfig {
  /** For diagnostics on stderr. */
  name: string;
  wsUrl: string;
  /** Source addresses, used round-robin (127.0.0.x: all route to loopback). */
  localAddresses: string[];
  /** The group conversation. */
  group: string;
  /** Tokens of the online group members this process connects (readers only). */
  members: string[];
  /** Token of the group's sender (also an online member: its own push counts), if here. */
  groupSender?: string;
  groupRate: number;
  pairs: Array<{ senderToken: string; receiverToken: string; conv: string }>;
  /** Messages per second over all pairs of this process. */
  directRate: number;
  receipts: boolean;
  warmupS: number;
  durationS: number;
  /** After the last send, how long to wait for deliveries still under way. */
  drainS: number;
  /** Membership churn: the group's owner adds these users one at a time over REST, at `rate`
   * per second from the start (open loop). */
  joins?: { httpUrl: string; ownerToken: string; users: string[]; rate: number };
}

export type ToLoad = { t: "config"; config: FanoutLoadConfig } | { t: "go"; startAt: number };

export interface FanoutLoadResult {
  connections: number;
  /** Per group message index: deliveries to this process's connections, and the first and last
   * receive time (wall clock ms; 0 when none). */
  groupCount: number[];
  groupFirst: number[];
  groupLast: number[];
  /** Group sends committed (`sent`) whose intended time is in the measured window. */
  groupSent: number;
  directSent: number;
  directDelivered: number;
  /** 1:1 messages of the window never delivered (in directLatencies with their wait so far). */
  directUndelivered: number;
  /** 1:1 latencies (ms) of the messages whose intended time is in the measured window. */
  directLatencies: number[];
  /** Error frames by code (refused sends are resent with the same cid after retryAfterMs). */
  errors: Record<string, number>;
  /** Connections closed by the server during the run. */
  disconnects: number;
  /** Adds of the window that succeeded, and the latency of every add of the window (from its
   * intended time to the response; one never answered counts until the end). */
  joinsDone: number;
  joinLatencies: number[];
  /** CPU time of this process during the measured window, in ms, and the window's length. */
  cpuMs: number;
  windowMs: number;
  connectMs: number;
}

export type FromLoad =
  { t: "ready"; connections: number; connectMs: number } | { t: "result"; result: FanoutLoadResult };

const now = (): number => performance.timeOrigin + performance.now();
const BODY_BYTES = 32;
const CONNECT_CONCURRENCY = 64;
const ACK_INTERVAL_MS = 1000;
const ACK_SLICES = 10;
/** Every connection's reads, one buffer for all (see direct-load.ts). */
const READ_BUFFER = new Uint8Array(64 * 1024);
/** Protocol versions the 1:1 senders offer: 2, as the SDK does, unless PARLEY_BENCH_PROTOCOL=1
 * (A/B against version 1, as in the direct scenarios). Group members only read, and the group's
 * sender stays on 1 so that its own push counts in the fan-out as every other member's does. */
const DIRECT_VERSIONS: readonly number[] = process.env.PARLEY_BENCH_PROTOCOL === "1" ? [1] : [1, 2];

interface Conn {
  ws: WsClient;
  cursor: number;
  acked: number;
  /** Highest seq seen per conversation (delivery receipts, and duplicate detection). */
  seen: Map<string, number>;
  receiptSent: Map<string, number>;
}

function post(msg: FromLoad): Promise<void> {
  return new Promise((resolve) => process.send!(msg, undefined, {}, () => resolve()));
}

function nextMessage(): Promise<ToLoad> {
  return new Promise((resolve) => process.once("message", (m) => resolve(m as ToLoad)));
}

async function main(): Promise<void> {
  const first = await nextMessage();
  if (first.t !== "config") throw new Error("expected config first");
  const cfg = first.config;
  const totalS = cfg.warmupS + cfg.durationS;
  const nGroup = cfg.groupSender !== undefined ? Math.floor(totalS * cfg.groupRate) : 0;
  const groupCount: number[] = [];
  const groupFirst: number[] = [];
  const groupLast: number[] = [];
  const errors: Record<string, number> = {};
  const directLatencies: number[] = [];
  let groupSent = 0;
  let directSent = 0;
  let directDelivered = 0;
  // 1:1 messages of the measured window not yet delivered, by cid, with their intended time.
  const outstanding = new Map<string, number>();
  let disconnects = 0;
  let stopping = false;
  // Set by `go`: the measured window of intended send times.
  let startAt = Infinity;
  let windowStart = Infinity;
  let windowEnd = -Infinity;
  const inWindow = (t: number): boolean => t >= windowStart && t < windowEnd;
  const countError = (code: string): void => {
    errors[code] = (errors[code] ?? 0) + 1;
  };

  const conns: Conn[] = [];
  let opened = 0;
  const open = (
    token: string,
    onFrame: (f: ServerFrame, c: Conn) => void,
    versions: readonly number[] = [1],
  ): Promise<Conn> =>
    new Promise((resolve, reject) => {
      const localAddress = cfg.localAddresses[opened++ % cfg.localAddresses.length]!;
      let ready = false;
      // ws-client.ts, as in the direct scenarios. Reads share READ_BUFFER: decodeBinary copies
      // what it keeps before the read's callback returns.
      const ws: WsClient = new WsClient(
        { url: cfg.wsUrl, protocol: "parley.v1.binary", localAddress, readBuffer: READ_BUFFER },
        {
          open: () =>
            ws.send(encodeBinary({ t: "hello", versions: [...versions], token, agent: "bench-fanout" })),
          message: (data) => receive(data),
          close: (err) => {
            if (!ready) {
              reject(err ?? new Error("closed before welcome"));
            } else if (!stopping) {
              if (err) countError(`socket: ${err.message}`);
              disconnects++;
              if (disconnects === 1)
                process.stderr.write(`[${cfg.name}] a connection was closed by the server\n`);
            }
          },
        },
      );
      const c: Conn = { ws, cursor: 0, acked: 0, seen: new Map(), receiptSent: new Map() };
      const receive = (data: Uint8Array): void => {
        const f = decodeBinary(data) as ServerFrame;
        switch (f.t) {
          case "welcome":
            ready = true;
            c.cursor = c.acked = f.head;
            conns.push(c);
            return resolve(c);
          case "push":
            // A large group's entries have positions in its own log (not acknowledged).
            if (f.log === undefined && f.useq > c.cursor) c.cursor = f.useq;
            return onFrame(f, c);
          case "sent":
            // Protocol 2: the sender's own entry comes in its `sent`, not as a push.
            if (f.useq !== undefined && f.log === undefined && f.useq > c.cursor) c.cursor = f.useq;
            return onFrame(f, c);
          case "ping":
            return ws.send(encodeBinary({ t: "pong", n: f.n }));
          case "error":
            if (!ready) return reject(new Error(`hello refused: ${f.code}`));
            return onFrame(f, c);
          default:
            return onFrame(f, c);
        }
      };
    });

  /** A new message in `conv` for this connection (not seen before), for receipts and dedup. */
  const fresh = (c: Conn, conv: string, seq: number): boolean => {
    if (seq <= (c.seen.get(conv) ?? 0)) return false;
    c.seen.set(conv, seq);
    return true;
  };
  const stamp = (body: Uint8Array): { t0: number; index: number } => {
    const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
    return { t0: v.getFloat64(0), index: v.getUint32(8) };
  };

  const onGroupPush = (f: ServerFrame, c: Conn): void => {
    if (f.t !== "push" || f.u.k !== "msg" || f.u.msg.conv !== cfg.group) return;
    if (!fresh(c, cfg.group, f.u.msg.seq)) return;
    const at = now();
    const { index } = stamp(f.u.msg.body);
    groupCount[index] = (groupCount[index] ?? 0) + 1;
    if (!(groupFirst[index]! <= at)) groupFirst[index] = at;
    if (!(groupLast[index]! >= at)) groupLast[index] = at;
  };

  // Requests waiting for their reply, per connection (to resend refused sends with the same cid).
  interface Pending {
    frame: ClientFrame & { t: "send" };
    t0: number;
    onSent: () => void;
  }
  const sender = (): ((f: ServerFrame, c: Conn) => void) & { pending: Map<number, Pending> } => {
    const pending = new Map<number, Pending>();
    const handle = (f: ServerFrame, c: Conn): void => {
      if (f.t === "sent") {
        const p = pending.get(f.id);
        pending.delete(f.id);
        if (p && inWindow(p.t0)) p.onSent();
      } else if (f.t === "error") {
        countError(f.code);
        const p = f.id !== undefined ? pending.get(f.id) : undefined;
        if (p && f.retry && !stopping) {
          setTimeout(() => {
            if (!stopping && c.ws.isOpen) c.ws.send(encodeBinary(p.frame));
          }, f.retryAfterMs ?? 100);
        } else if (p) pending.delete(f.id!);
      }
    };
    return Object.assign(handle, { pending });
  };

  const t0Connect = now();
  // Members, in parallel with bounded concurrency.
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(CONNECT_CONCURRENCY, cfg.members.length) }, async () => {
      for (let i = next++; i < cfg.members.length; i = next++) await open(cfg.members[i]!, onGroupPush);
    }),
  );
  let groupConn: Conn | undefined;
  const groupHandler = sender();
  if (cfg.groupSender !== undefined) {
    groupConn = await open(cfg.groupSender, (f, c) => {
      onGroupPush(f, c);
      groupHandler(f, c);
    });
  }
  const pairConns: Array<{ s: Conn; conv: string; handler: ReturnType<typeof sender> }> = [];
  for (const pair of cfg.pairs) {
    await open(pair.receiverToken, (f, c) => {
      if (f.t !== "push" || f.u.k !== "msg" || f.u.msg.conv !== pair.conv) return;
      if (!fresh(c, pair.conv, f.u.msg.seq)) return;
      const { t0 } = stamp(f.u.msg.body);
      if (!inWindow(t0) || !outstanding.delete(f.u.msg.cid)) return;
      directDelivered++;
      directLatencies.push(now() - t0);
    });
    const handler = sender();
    pairConns.push({ s: await open(pair.senderToken, handler, DIRECT_VERSIONS), conv: pair.conv, handler });
  }
  const connectMs = Math.round(now() - t0Connect);

  // Acks: each connection once a second when its cursor moved, spread over ACK_SLICES ticks.
  let slice = 0;
  const ackTimer = setInterval(() => {
    for (let i = slice; i < conns.length; i += ACK_SLICES) {
      const c = conns[i]!;
      if (c.cursor <= c.acked || !c.ws.isOpen) continue;
      const convs: Array<{ conv: string; seq: number }> = [];
      if (cfg.receipts) {
        for (const [conv, seq] of c.seen) {
          if (seq > (c.receiptSent.get(conv) ?? 0)) {
            convs.push({ conv, seq });
            c.receiptSent.set(conv, seq);
          }
        }
      }
      c.ws.send(encodeBinary({ t: "ack", cursor: c.cursor, ...(convs.length > 0 ? { convs } : {}) }));
      c.acked = c.cursor;
    }
    slice = (slice + 1) % ACK_SLICES;
  }, ACK_INTERVAL_MS / ACK_SLICES);

  await post({ t: "ready", connections: conns.length, connectMs });
  const go = await nextMessage();
  if (go.t !== "go") throw new Error("expected go");
  startAt = go.startAt;
  windowStart = startAt + cfg.warmupS * 1000;
  windowEnd = windowStart + cfg.durationS * 1000;

  // Open-loop schedules: group message i is due at startAt + i/groupRate, direct message k at
  // startAt + k/directRate on pair k mod pairs. Every due message is sent on each tick.
  const groupAt = (i: number): number => startAt + (i * 1000) / cfg.groupRate;
  const directAt = (k: number): number =>
    cfg.pairs.length > 0 && cfg.directRate > 0 ? startAt + (k * 1000) / cfg.directRate : Infinity;
  let nextGroup = 0;
  let nextDirect = 0;
  let reqId = 0;
  const send = (
    c: Conn,
    handler: ReturnType<typeof sender>,
    conv: string,
    cid: string,
    t0: number,
    index: number,
    onSent: () => void,
  ): void => {
    const body = new Uint8Array(BODY_BYTES);
    const v = new DataView(body.buffer);
    v.setFloat64(0, t0);
    v.setUint32(8, index);
    const frame = { t: "send" as const, id: ++reqId, conv, cid, type: "bench", body };
    handler.pending.set(frame.id, { frame, t0, onSent });
    c.ws.send(encodeBinary(frame));
  };
  const sendDone = new Promise<void>((resolve) => {
    const tick = (): void => {
      const t = now();
      for (; nextGroup < nGroup && groupAt(nextGroup) <= t; nextGroup++) {
        send(
          groupConn!,
          groupHandler,
          cfg.group,
          `g${nextGroup}`,
          groupAt(nextGroup),
          nextGroup,
          () => groupSent++,
        );
      }
      for (; directAt(nextDirect) <= t && directAt(nextDirect) < windowEnd; nextDirect++) {
        const p = pairConns[nextDirect % pairConns.length]!;
        if (inWindow(directAt(nextDirect))) outstanding.set(`d${nextDirect}`, directAt(nextDirect));
        send(p.s, p.handler, p.conv, `d${nextDirect}`, directAt(nextDirect), 0, () => directSent++);
      }
      const due = Math.min(nextGroup < nGroup ? groupAt(nextGroup) : Infinity, directAt(nextDirect));
      if (due >= windowEnd) return resolve();
      setTimeout(tick, Math.max(0, due - now()));
    };
    setTimeout(tick, Math.max(0, startAt - now()));
  });

  // Membership churn, open loop: add i is due at startAt + i / rate.
  let joinsDone = 0;
  const joinLatencies: number[] = [];
  const joinsUnanswered = new Map<number, number>();
  const joinsDoneP = (async () => {
    const j = cfg.joins;
    if (!j || j.rate <= 0) return;
    const addAt = (i: number): number => startAt + (i * 1000) / j.rate;
    const adds: Array<Promise<void>> = [];
    for (let i = 0; i < j.users.length && addAt(i) < windowEnd; i++) {
      await new Promise((r) => setTimeout(r, Math.max(0, addAt(i) - now())));
      const t0 = addAt(i);
      if (inWindow(t0)) joinsUnanswered.set(i, t0);
      adds.push(
        fetch(`${j.httpUrl}/v1/conversations/${encodeURIComponent(cfg.group)}/members`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${j.ownerToken}` },
          body: JSON.stringify({ users: [j.users[i]] }),
        })
          .then(async (res) => {
            await res.arrayBuffer();
            if (!inWindow(t0)) return;
            joinsUnanswered.delete(i);
            joinLatencies.push(now() - t0);
            if (res.ok) joinsDone++;
            else errors[`HTTP_${res.status}`] = (errors[`HTTP_${res.status}`] ?? 0) + 1;
          })
          .catch(() => {
            errors.JOIN_FAILED = (errors.JOIN_FAILED ?? 0) + 1;
          }),
      );
    }
    await Promise.all(adds);
  })();

  let cpu0 = process.cpuUsage();
  let cpuMs = 0;
  setTimeout(() => (cpu0 = process.cpuUsage()), Math.max(0, windowStart - now()));
  await new Promise((r) => setTimeout(r, Math.max(0, windowEnd - now())));
  const cpu = process.cpuUsage(cpu0);
  cpuMs = (cpu.user + cpu.system) / 1000;
  await sendDone;
  // Stragglers: up to drainS, or until everything this process awaits has come (every group
  // message to each of its members, its own push to the sender among them, and every 1:1 message
  // of the window). Every process sends or expects the same group messages, 0..n-1.
  const groupMessages = Math.floor(totalS * cfg.groupRate);
  const perMessage = cfg.members.length + (cfg.groupSender !== undefined ? 1 : 0);
  const allIn = (): boolean =>
    outstanding.size === 0 &&
    (perMessage === 0 ||
      Array.from({ length: groupMessages }, (_, i) => groupCount[i] ?? 0).every((n) => n >= perMessage));
  const drainEnd = now() + cfg.drainS * 1000;
  while (!allIn() && now() < drainEnd) await new Promise((r) => setTimeout(r, 20));
  await Promise.race([joinsDoneP, new Promise((r) => setTimeout(r, 1000))]);
  stopping = true;
  clearInterval(ackTimer);
  // A message never delivered counts with its wait until now (a lower bound), so that losses
  // cannot make the percentiles look better.
  const end = now();
  for (const t0 of outstanding.values()) directLatencies.push(end - t0);
  for (const t0 of joinsUnanswered.values()) joinLatencies.push(end - t0);

  const fill = (a: number[]): number[] => Array.from({ length: a.length }, (_, i) => a[i] ?? 0);
  await post({
    t: "result",
    result: {
      connections: conns.length,
      groupCount: fill(groupCount),
      groupFirst: fill(groupFirst),
      groupLast: fill(groupLast),
      groupSent,
      directSent,
      directDelivered,
      directUndelivered: outstanding.size,
      directLatencies,
      joinsDone,
      joinLatencies,
      errors,
      disconnects,
      cpuMs: Math.round(cpuMs),
      windowMs: cfg.durationS * 1000,
      connectMs,
    },
  });
  for (const c of conns) c.ws.terminate();
  process.exit(0);
}

main().catch((err: unknown) => {
  process.stderr.write(`fanout-load: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
