// What the server must do with one fuzz case, worked out locally with the same protocol code
// the server runs (FrameParser, decodeBinary/decodeJson, parseClientFrame) and the session rules
// of docs/protocol.md: which request ids get a reply, whether a welcome comes, and whether the
// connection must be closed, with which error code (or WebSocket close code).

import { isUtf8 } from "node:buffer";
import {
  FrameParser,
  ParleyError,
  SUPPORTED_VERSIONS,
  decodeBinary,
  decodeJson,
  parseClientFrame,
} from "@parley/protocol";
import type { ClientFrame, ErrorCode } from "@parley/protocol";
import type { FuzzCase, Unit } from "./generate.ts";

export type Outcome =
  /** The server must keep the connection open and answer every request. */
  | { kind: "open" }
  /** The server must close it: with one of `errors` (error frame, bye, close), or, on
   * WebSocket, with one of the standard close codes `wsCloses`. More than one is possible when
   * the order in which the server sees things depends on timing (see below). */
  | { kind: "close"; errors: ErrorCode[]; wsCloses: number[] };

export interface Prediction {
  outcome: Outcome;
  /** A valid hello reaches the server before anything that closes the connection (or the case
   * logs in first): welcome is allowed, and owed if the outcome is "open". */
  validHello: boolean;
  /** Request id -> the request types sent with it, each owed exactly one reply. */
  replies: Map<number, string[]>;
  /** Ping n -> pongs owed. */
  pongs: Map<number, number>;
  /** Second hellos on an authenticated connection: each gets E_ALREADY_AUTHENTICATED. */
  alreadyAuthenticated: number;
  /** The connection stays open, authenticated, and between frames after the last message: a
   * frame sent next is read as one (the driver sends a ping and waits for its pong). */
  endsReady: boolean;
}

export interface PredictContext {
  maxFrameBytes: number;
  /** Tokens the server accepts. */
  tokens: ReadonlySet<string>;
}

/** Something that closes the connection. `async`: found after an await in the server (the token
 * check), so input read meanwhile may close it first. `parser`: a TCP length prefix the
 * FrameParser refuses; it refuses it as soon as the chunk holding it is read, dropping the frames
 * before it in that chunk, so it may come first. `gateway`: found while reading bytes (parser,
 * decoder, ws), not by the session, so it does not wait for the token check. */
interface Doom {
  error?: ErrorCode;
  ws?: number;
  async: boolean;
  parser: boolean;
  gateway: boolean;
}

type Item = { frame: ClientFrame } | { doom: Doom };

/** Predicts the server's behaviour for `c`. Pure; used by the fuzzer and its tests. */
export function predict(c: FuzzCase, ctx: PredictContext): Prediction {
  const p: Prediction = {
    outcome: { kind: "open" },
    validHello: c.login,
    replies: new Map(),
    pongs: new Map(),
    alreadyAuthenticated: 0,
    endsReady: false,
  };
  let authed = c.login;
  const dooms: Doom[] = [];
  const tcp = c.transport === "tcp" ? tcpItems(c.units, ctx.maxFrameBytes) : undefined;
  const items = tcp?.items ?? c.units.map((unit) => wsItem(c.transport, unit, ctx.maxFrameBytes));
  for (const item of items) {
    if ("doom" in item) {
      dooms.push(item.doom);
      continue;
    }
    // After the first doom, frames the server still reads are queued or ignored: no replies.
    if (dooms.length > 0) continue;
    const f = item.frame;
    if (!authed) {
      if (f.t !== "hello") {
        dooms.push(sessionDoom("E_NOT_AUTHENTICATED"));
      } else if (!f.versions.some((v) => SUPPORTED_VERSIONS.includes(v))) {
        dooms.push(sessionDoom("E_UNSUPPORTED_VERSION"));
      } else if (!ctx.tokens.has(f.token)) {
        dooms.push({ ...sessionDoom("E_TOKEN_INVALID"), async: true });
      } else {
        authed = true;
        p.validHello = true;
      }
      continue;
    }
    if (f.t === "hello") p.alreadyAuthenticated++;
    else if (f.t === "ping") p.pongs.set(f.n, (p.pongs.get(f.n) ?? 0) + 1);
    else if ("id" in f) p.replies.set(f.id, [...(p.replies.get(f.id) ?? []), f.t]);
  }
  if (dooms.length > 0) p.outcome = closing(dooms, tcp !== undefined);
  p.endsReady = dooms.length === 0 && authed && (tcp === undefined || tcp.betweenFrames);
  return p;
}

/** The first doom, plus those that may overtake it (see Doom). */
function closing(dooms: Doom[], tcp: boolean): Outcome {
  const first = dooms[0]!;
  const possible = [first];
  const rest = dooms.slice(1);
  if (first.async) {
    const next = rest.find((d) => d.gateway);
    if (next) possible.push(next);
  }
  if (tcp) {
    const parser = rest.find((d) => d.parser);
    if (parser) possible.push(parser);
  }
  return {
    kind: "close",
    errors: [...new Set(possible.flatMap((d) => (d.error ? [d.error] : [])))],
    wsCloses: [...new Set(possible.flatMap((d) => (d.ws ? [d.ws] : [])))],
  };
}

function sessionDoom(error: ErrorCode): Doom {
  return { error, async: false, parser: false, gateway: false };
}

function gatewayDoom(err: unknown): Doom {
  const error = err instanceof ParleyError ? err.code : "E_BAD_FRAME";
  return { error, async: false, parser: false, gateway: true };
}

/** What the server's FrameParser and decoder make of a TCP stream, in stream order, read as
 * finely as a server might read it: FrameParser.push drops the frames it completed before a bad
 * length prefix in the same chunk, but a server whose reads end before that prefix decodes them
 * first, so the message holding the bad prefix is read again byte by byte. (A coarser read lets
 * the bad prefix overtake them; closing() allows for that.) `betweenFrames`: the stream ends on
 * a frame boundary. */
function tcpItems(units: readonly Unit[], max: number): { items: Item[]; betweenFrames: boolean } {
  const parser = new FrameParser({ maxFrameBytes: max });
  const items: Item[] = [];
  for (const [i, unit] of units.entries()) {
    try {
      // The parser may keep a view into its input: give it a copy, as a socket would.
      items.push(...parser.push(new Uint8Array(unit.bytes)).map(decoded));
    } catch {
      const fine = new FrameParser({ maxFrameBytes: max });
      for (const before of units.slice(0, i)) fine.push(new Uint8Array(before.bytes));
      for (const byte of unit.bytes) {
        try {
          items.push(...fine.push(Uint8Array.of(byte)).map(decoded));
        } catch (err) {
          items.push({ doom: { ...gatewayDoom(err), parser: true } });
          break;
        }
      }
      return { items, betweenFrames: false }; // the server reads nothing more
    }
  }
  return { items, betweenFrames: parser.bufferedBytes === 0 };
}

function decoded(body: Uint8Array): Item {
  try {
    return { frame: parseClientFrame(decodeBinary(body)) };
  } catch (err) {
    return { doom: gatewayDoom(err) };
  }
}

/** What the `ws` library and then the WebSocket gateway make of one message. */
function wsItem(transport: FuzzCase["transport"], unit: Unit, max: number): Item {
  const bytes = unit.bytes;
  // ws refuses a message beyond maxPayload from its header, and invalid UTF-8 in a text message
  // at its end, each with its own close code and no error frame.
  if (bytes.length > 2 * max) return { doom: { ws: 1009, async: false, parser: false, gateway: true } };
  if (unit.text && !isUtf8(bytes)) return { doom: { ws: 1007, async: false, parser: false, gateway: true } };
  try {
    if (bytes.length > max) throw new ParleyError("E_FRAME_TOO_LARGE");
    const binary = transport === "ws-binary";
    if (unit.text === binary) throw new ParleyError("E_BAD_FRAME", "message type");
    const value = binary ? decodeBinary(bytes) : decodeJson(Buffer.from(bytes).toString("utf8"));
    return { frame: parseClientFrame(value) };
  } catch (err) {
    return { doom: gatewayDoom(err) };
  }
}
