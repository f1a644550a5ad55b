import { createServer as createHttpServer } from "node:http";
import { createServer as createTcpServer, type AddressInfo } from "node:net";
import { WebSocketServer, type WebSocket } from "ws";
import { FrameParser, decodeBinary, encodeBinary, encodeFramed } from "@parley/protocol";
import type { ClientFrame, ServerFrame } from "@parley/protocol";

// The raw-relay benchmark's target (bench/src/scenarios/raw-relay.ts): a minimal relay process
// that speaks just enough of the protocol to stand in for `parley serve` in front of the direct
// load client, over the same transports (TCP length-prefixed, WebSocket binary with the `ws`
// library) and the same codec (decodeBinary / encodeBinary, without the schema validation). No
// auth, no storage, no rate limits, no routing beyond one map from conversation to the receiver's
// connection:
// - `hello` -> `welcome`, whatever the token; a token `recv:<conv>` makes this connection the
//   receiver of <conv>;
// - `send` -> `sent` to the sender, and the message as a `push` to the receiver of its conv (not
//   echoed to the sender, unlike the server);
// - `ping` -> `pong`; anything else (`ack`) is read, decoded and dropped.
// Prints {"tcpPort", "httpPort"} once listening; stops on SIGTERM.

interface Peer {
  send(frame: ServerFrame): void;
  /** useq of the last push to this connection, also the seq of its conversation's last message. */
  useq: number;
}

const RECEIVER = "recv:";
// Same shape and id lengths as the server's ("u_" + 16 base32 characters).
const USER = "u_relayrelayrelayre";
const DEVICE = "d_relayrelayrelayre";
const receivers = new Map<string, Peer>();
let sentSeq = 0;

function onFrame(peer: Peer, bytes: Uint8Array): void {
  const f = decodeBinary(bytes) as ClientFrame;
  switch (f.t) {
    case "hello":
      if (f.token.startsWith(RECEIVER)) receivers.set(f.token.slice(RECEIVER.length), peer);
      peer.send({
        t: "welcome",
        version: 1,
        user: USER,
        device: DEVICE,
        heartbeatMs: 30_000,
        maxFrameBytes: 65_536,
        serverTime: Date.now(),
        head: 0,
      });
      return;
    case "send": {
      const ts = Date.now();
      const to = receivers.get(f.conv);
      const seq = to ? to.useq + 1 : ++sentSeq;
      peer.send({ t: "sent", id: f.id, conv: f.conv, cid: f.cid, seq, ts });
      if (!to) return;
      to.useq = seq;
      to.send({
        t: "push",
        useq: seq,
        u: {
          k: "msg",
          msg: { conv: f.conv, seq, from: USER, dev: DEVICE, cid: f.cid, type: f.type, body: f.body, ts },
        },
      });
      return;
    }
    case "ping":
      peer.send({ t: "pong", n: f.n });
      return;
    default:
      return;
  }
}

function forget(peer: Peer): void {
  for (const [conv, p] of receivers) if (p === peer) receivers.delete(conv);
}

const tcp = createTcpServer((socket) => {
  socket.setNoDelay(true);
  const parser = new FrameParser();
  const peer: Peer = {
    useq: 0,
    send: (frame) => {
      if (socket.writable) socket.write(encodeFramed(frame));
    },
  };
  socket.on("data", (chunk: Buffer) => {
    try {
      for (const body of parser.push(chunk)) onFrame(peer, body);
    } catch {
      socket.destroy();
    }
  });
  socket.on("error", () => {});
  socket.once("close", () => forget(peer));
});

const http = createHttpServer((_req, res) => res.writeHead(404).end());
const wss = new WebSocketServer({
  server: http,
  path: "/v1/ws",
  clientTracking: false,
  perMessageDeflate: false,
  maxPayload: 2 * 65_536,
  handleProtocols: (offered) => (offered.has("parley.v1.binary") ? "parley.v1.binary" : false),
});
wss.on("connection", (ws: WebSocket) => {
  const peer: Peer = {
    useq: 0,
    send: (frame) => ws.send(encodeBinary(frame)),
  };
  ws.on("message", (data: Buffer) => {
    try {
      onFrame(peer, data);
    } catch {
      ws.terminate();
    }
  });
  ws.on("error", () => {});
  ws.once("close", () => forget(peer));
});

const listen = (server: { listen(port: number, host: string, cb: () => void): unknown }): Promise<void> =>
  new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
await Promise.all([listen(tcp), listen(http)]);
process.stdout.write(
  JSON.stringify({
    tcpPort: (tcp.address() as AddressInfo).port,
    httpPort: (http.address() as AddressInfo).port,
  }) + "\n",
);
process.on("SIGTERM", () => process.exit(0));
