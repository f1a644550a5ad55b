// Runs one fuzz case over a real socket: connect (TCP, or WebSocket with the case's subprotocol),
// optionally log in, send the case's messages, then wait for what the prediction says (the close,
// or every reply owed) and close. Everything the server sends goes through the oracle.

import net from "node:net";
import { setImmediate as nextTurn } from "node:timers/promises";
import { WebSocket } from "ws";
import { FrameParser, decodeBinary, decodeJson } from "@parley/protocol";
import type { ClientFrame } from "@parley/protocol";
import type { FuzzCase } from "./generate.ts";
import { ConnectionOracle } from "./oracle.ts";
import type { Prediction } from "./predict.ts";
import { type Encoded, encodeFor } from "./wire.ts";

export interface CaseEnv {
  httpPort: number;
  tcpPort: number;
  /** The tokens Targets.tokens lists, for the login. */
  tokens: readonly string[];
  /** How long the server gets to answer, close, or finish a close. */
  timeoutMs: number;
}

export interface CaseResult {
  oracle: ConnectionOracle;
  /** Messages written to the socket (all of a message's bytes). */
  framesSent: number;
}

/** Wakes whoever waits for the next event of a connection. */
class Signal {
  private waiters: Array<() => void> = [];

  notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves when `check()` holds (checked after each event), or false after `timeoutMs`. */
  async until(check: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return true;
  }
}

/** One socket, whatever the transport. */
interface Link {
  /** Sends one message (TCP: bytes of the stream). False once the socket is closed. */
  send(message: Encoded): boolean;
  isClosed(): boolean;
  close(mode: FuzzCase["end"]): void;
}

/** Sentinel ping: its pong proves the server has read everything sent before it. */
const SENTINEL_N = Number.MAX_SAFE_INTEGER - 7;

export async function runCase(
  c: FuzzCase,
  prediction: Prediction,
  env: CaseEnv,
  report: (problem: string) => void,
): Promise<CaseResult> {
  const oracle = new ConnectionOracle(prediction, report);
  const signal = new Signal();
  const result: CaseResult = { oracle, framesSent: 0 };
  let link: Link;
  try {
    link = c.transport === "tcp" ? await openTcp(env, oracle, signal) : await openWs(c, env, oracle, signal);
  } catch (err) {
    report(`could not connect: ${(err as Error).message}`);
    return result;
  }
  const frame = (f: ClientFrame): Encoded => encodeFor(c.transport, f);
  if (c.login) {
    link.send(frame({ t: "hello", versions: [1], token: env.tokens[c.account]! }));
    if (!(await signal.until(() => oracle.welcome || link.isClosed(), env.timeoutMs))) {
      report("no welcome (nor close) after the login hello");
    }
  }
  if (!link.isClosed()) result.framesSent = await sendUnits(c, link);
  if (oracle.doomed) {
    if (!(await signal.until(() => link.isClosed(), env.timeoutMs))) link.close("reset");
  } else {
    if (prediction.endsReady && !link.isClosed()) {
      oracle.expectPong(SENTINEL_N);
      link.send(frame({ t: "ping", n: SENTINEL_N }));
    }
    await signal.until(() => oracle.owed === 0 || link.isClosed(), env.timeoutMs);
    if (!link.isClosed()) {
      link.close(c.end);
      if (!(await signal.until(() => link.isClosed(), env.timeoutMs))) {
        report("the server did not complete our close");
        link.close("reset");
      }
    }
  }
  oracle.finish();
  return result;
}

/** Writes the units; TCP as one stream cut at the case's cut points, each cut a separate write
 * a turn of the event loop apart. Returns how many units were written whole. */
async function sendUnits(c: FuzzCase, link: Link): Promise<number> {
  if (c.transport !== "tcp") {
    let n = 0;
    for (const unit of c.units) {
      if (!link.send(unit)) break;
      n++;
    }
    return n;
  }
  const ends: number[] = [];
  let total = 0;
  for (const unit of c.units) ends.push((total += unit.bytes.length));
  const stream = new Uint8Array(total);
  c.units.reduce((at, u) => (stream.set(u.bytes, at), at + u.bytes.length), 0);
  let written = 0;
  for (const cut of [...c.cuts, total]) {
    if (cut <= written) continue;
    if (!link.send({ bytes: stream.subarray(written, cut), text: false })) break;
    written = cut;
    if (cut < total) await nextTurn();
  }
  return ends.filter((end) => end <= written).length;
}

async function openTcp(env: CaseEnv, oracle: ConnectionOracle, signal: Signal): Promise<Link> {
  const socket = net.connect(env.tcpPort, "127.0.0.1");
  socket.setNoDelay(true);
  await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  let closed = false;
  let byClient = false;
  const parser = new FrameParser({ maxFrameBytes: 16 * 1024 * 1024 });
  socket.on("data", (chunk: Buffer) => {
    try {
      for (const body of parser.push(chunk)) {
        let value: unknown;
        try {
          value = decodeBinary(body);
        } catch (err) {
          oracle.undecodable(`undecodable binary frame: ${(err as Error).message}`);
          continue;
        }
        oracle.value(value);
      }
    } catch (err) {
      oracle.undecodable(`bad length prefix from the server: ${(err as Error).message}`);
      socket.destroy();
    }
    signal.notify();
  });
  socket.on("error", () => {}); // EPIPE/ECONNRESET once the server has closed: 'close' follows
  socket.once("close", () => {
    closed = true;
    oracle.closed(undefined, byClient);
    signal.notify();
  });
  return {
    send(m) {
      if (closed || socket.destroyed) return false;
      socket.write(m.bytes);
      return true;
    },
    isClosed: () => closed,
    close(mode) {
      byClient = true;
      if (mode === "reset") socket.resetAndDestroy();
      else socket.end();
    },
  };
}

async function openWs(c: FuzzCase, env: CaseEnv, oracle: ConnectionOracle, signal: Signal): Promise<Link> {
  const binary = c.transport === "ws-binary";
  const subprotocol = binary ? "parley.v1.binary" : "parley.v1.json";
  const ws = new WebSocket(`ws://127.0.0.1:${env.httpPort}/v1/ws`, subprotocol, {
    perMessageDeflate: false,
    maxPayload: 16 * 1024 * 1024,
  });
  await new Promise<void>((resolve, reject) => {
    ws.once("open", resolve).once("error", reject);
    ws.once("unexpected-response", (_req, res) => reject(new Error(`handshake refused: ${res.statusCode}`)));
  });
  if (ws.protocol !== subprotocol) oracle.undecodable(`server chose subprotocol "${ws.protocol}"`);
  let closed = false;
  let byClient = false;
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    if (isBinary !== binary) {
      oracle.undecodable(`${isBinary ? "binary" : "text"} message on ${subprotocol}`);
    } else {
      let value: unknown;
      try {
        value = binary ? decodeBinary(data) : decodeJson(data.toString("utf8"));
      } catch (err) {
        oracle.undecodable(`undecodable server message: ${(err as Error).message}`);
        return signal.notify();
      }
      oracle.value(value);
    }
    signal.notify();
  });
  ws.on("error", () => {}); // protocol errors end in 'close' with their code
  ws.once("close", (code: number) => {
    closed = true;
    oracle.closed(code, byClient);
    signal.notify();
  });
  return {
    send(m) {
      if (closed || ws.readyState !== WebSocket.OPEN) return false;
      ws.send(m.bytes, { binary: !m.text });
      return true;
    },
    isClosed: () => closed,
    close(mode) {
      byClient = true;
      if (mode === "reset") ws.terminate();
      else ws.close(1000);
    },
  };
}
