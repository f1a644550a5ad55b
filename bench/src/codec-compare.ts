import protobuf from "protobufjs";
import { decodeClientBinary, decodeServerBinary, encodeBinary } from "@parley/protocol";
import type { PushFrame, SendFrame } from "@parley/protocol";

// `npm run bench:codec`: msgpackr (what Parley uses) against protobufjs on the two hottest
// frames, a send and the push that delivers it. Both sides include what a real decode needs:
// for msgpack, the structural check and schema validation that parse untrusted input; for
// protobuf, its own wire-type checks (schema-shaped by construction). Prints one JSON line.

const schema = protobuf.parse(`
syntax = "proto3";
message Send { uint32 id = 1; string conv = 2; string cid = 3; string type = 4; bytes body = 5; uint32 reply_to = 6; }
message Msg { string conv = 1; uint64 seq = 2; string from = 3; string dev = 4; string cid = 5; string type = 6; bytes body = 7; uint64 ts = 8; }
message Push { uint64 useq = 1; Msg msg = 2; }
`).root;
const SendT = schema.lookupType("Send");
const PushT = schema.lookupType("Push");

const body = new TextEncoder().encode("Hello there, this is a typical short chat message. 👋");
const send: SendFrame = {
  t: "send",
  id: 42,
  conv: "c_k3j5h2m4n6p7q8r9",
  cid: "0b9e6c1e-8f0e-4c53-9a57-6a1f3c2d4e5f",
  type: "text/plain",
  body,
};
const push: PushFrame = {
  t: "push",
  useq: 1234,
  u: {
    k: "msg",
    msg: {
      conv: send.conv,
      seq: 9876,
      from: "u_a2b3c4d5e6f7g8h9",
      dev: "d_a2b3c4d5e6f7g8h9",
      cid: send.cid,
      type: "text/plain",
      body,
      ts: 1_764_200_000_000,
    },
  },
};

function rate(fn: () => void, ms = 1000): number {
  for (let i = 0; i < 10_000; i++) fn();
  let n = 0;
  const start = performance.now();
  while (performance.now() - start < ms) {
    for (let i = 0; i < 1000; i++) fn();
    n += 1000;
  }
  return Math.round(n / ((performance.now() - start) / 1000));
}

const sendPb = { id: send.id, conv: send.conv, cid: send.cid, type: send.type, body };
const pushPb = { useq: push.useq, msg: { ...(push.u as { msg: object }).msg } };
const mpSend = encodeBinary(send);
const mpPush = encodeBinary(push);
const pbSend = SendT.encode(SendT.fromObject(sendPb)).finish();
const pbPush = PushT.encode(PushT.fromObject(pushPb)).finish();

process.stdout.write(
  JSON.stringify({
    scenario: "codec-compare",
    msgpackr: {
      send_bytes: mpSend.byteLength,
      push_bytes: mpPush.byteLength,
      send_encode_per_s: rate(() => encodeBinary(send)),
      send_decode_validate_per_s: rate(() => decodeClientBinary(mpSend)),
      push_encode_per_s: rate(() => encodeBinary(push)),
      push_decode_validate_per_s: rate(() => decodeServerBinary(mpPush)),
    },
    protobufjs: {
      send_bytes: pbSend.byteLength,
      push_bytes: pbPush.byteLength,
      send_encode_per_s: rate(() => SendT.encode(sendPb).finish()),
      send_decode_per_s: rate(() => SendT.toObject(SendT.decode(pbSend))),
      push_encode_per_s: rate(() => PushT.encode(pushPb).finish()),
      push_decode_per_s: rate(() => PushT.toObject(PushT.decode(pbPush), { longs: Number })),
    },
  }) + "\n",
);
