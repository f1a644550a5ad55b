import { WebSocket } from "ws";
import { decodeBinary, encodeBinary, parseServerFrame } from "@parley/protocol";
import type { ClientFrame, ServerFrame } from "@parley/protocol";

// The load client for 1:1 scenarios, run as its own process: `pairs` sender/receiver pairs over
// WebSocket (binary), each sender keeping `window` sends in flight (closed loop). Latency is from
// the send's start to the receiver's push callback; both ends read the same wall clock
// (performance.timeOrigin + now), so the figure spans processes. Prints one JSON line.

export interface DirectLoadConfig {
  wsUrl: string;
  pairs: Array<{ senderToken: string; receiverToken: string; conv: string }>;
  window: number;
  warmupS: number;
  durationS: number;
}

const now = (): number => performance.timeOrigin + performance.now();

function open(
  url: string,
  token: string,
  onFrame: (f: ServerFrame, ws: WebSocket) => void,
): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, "parley.v1.binary", { perMessageDeflate: false });
    ws.binaryType = "nodebuffer";
    ws.on("error", reject);
    ws.on("open", () => ws.send(encodeBinary({ t: "hello", versions: [1], token })));
    ws.on("message", (data: Buffer) => {
      const f = parseServerFrame(decodeBinary(data));
      if (f.t === "welcome") resolve(ws);
      else onFrame(f, ws);
    });
  });
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? "{}") as DirectLoadConfig;
  let measuring = false;
  let stopping = false;
  let sent = 0;
  let delivered = 0;
  let errors = 0;
  const latencies: number[] = [];
  const sockets: WebSocket[] = [];

  for (const [i, pair] of cfg.pairs.entries()) {
    let cursor = 0;
    const receiver = await open(cfg.wsUrl, pair.receiverToken, (f, ws) => {
      if (f.t !== "push") return;
      cursor = f.useq;
      if (f.u.k !== "msg") return;
      const body = f.u.msg.body;
      const t0 = new DataView(body.buffer, body.byteOffset, body.byteLength).getFloat64(0);
      if (measuring) {
        delivered++;
        latencies.push(now() - t0);
      }
      if (delivered % 64 === 0) ws.send(encodeBinary({ t: "ack", cursor }));
    });
    let seqId = 0;
    let cid = 0;
    const sendOne = (ws: WebSocket): void => {
      const body = new Uint8Array(32);
      new DataView(body.buffer).setFloat64(0, now());
      const frame: ClientFrame = {
        t: "send",
        id: ++seqId,
        conv: pair.conv,
        cid: `${i}-${++cid}`,
        type: "bench",
        body,
      };
      ws.send(encodeBinary(frame));
    };
    const sender = await open(cfg.wsUrl, pair.senderToken, (f, ws) => {
      if (f.t === "sent") {
        if (measuring) sent++;
        if (!stopping) sendOne(ws);
      } else if (f.t === "error") {
        errors++;
        if (!stopping) setTimeout(() => sendOne(ws), f.retryAfterMs ?? 100);
      }
    });
    sockets.push(receiver, sender);
    // Start the window once every socket is open, below.
    (sender as WebSocket & { start?: () => void }).start = () => {
      for (let k = 0; k < cfg.window; k++) sendOne(sender);
    };
  }
  for (const s of sockets) (s as WebSocket & { start?: () => void }).start?.();
  await new Promise((r) => setTimeout(r, cfg.warmupS * 1000));
  measuring = true;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await new Promise((r) => setTimeout(r, cfg.durationS * 1000));
  measuring = false;
  stopping = true;
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  latencies.sort((a, b) => a - b);
  const pct = (q: number): number =>
    Number((latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0).toFixed(3));
  process.stdout.write(
    JSON.stringify({
      sent_per_s: Math.round(sent / elapsed),
      delivered_per_s: Math.round(delivered / elapsed),
      p50_ms: pct(0.5),
      p99_ms: pct(0.99),
      p999_ms: pct(0.999),
      errors,
      client_cpu_pct: Math.round(((cpu.user + cpu.system) / 1000 / (elapsed * 1000)) * 100),
    }) + "\n",
  );
  for (const s of sockets) s.terminate();
  process.exit(0);
}

void main();
