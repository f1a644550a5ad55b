// The fuzzer's oracle for one connection: what the server may send back and how it may close,
// judged against docs/errors.md and against the prediction of what it must do (predict.ts).
// Pure bookkeeping, no I/O: the connection driver feeds it decoded values and the close.

import { DISCONNECT, ERRORS, isErrorCode, parseServerFrame } from "@parley/protocol";
import type { ErrorCode, ServerFrame } from "@parley/protocol";
import type { Outcome, Prediction } from "./predict.ts";

/** Every disconnect code docs/errors.md documents (bye.code, and the WebSocket close code). */
export const DOCUMENTED_DISCONNECTS: ReadonlySet<number> = new Set(Object.values(DISCONNECT));

/** Standard WebSocket close codes (RFC 6455 section 7.4.1) the server may use, and why: the `ws`
 * library closes with them before the gateway sees the message, so no error frame or bye comes
 * first. The fuzzer accepts one only where predict.ts said so. */
export const WS_STANDARD_CLOSES: Readonly<Record<number, string>> = {
  1007: "a text message that is not valid UTF-8",
  1009: "a message beyond ws maxPayload (2 x maxFrameBytes)",
};

/** The disconnect code docs/errors.md gives each error code that closes the connection when it
 * comes without a request id. Codes missing here never close. */
export const CLOSING_ERRORS: Readonly<Partial<Record<ErrorCode, number>>> = {
  E_BAD_FRAME: DISCONNECT.PROTOCOL_ERROR,
  E_FRAME_TOO_LARGE: DISCONNECT.PROTOCOL_ERROR,
  E_UNKNOWN_FRAME: DISCONNECT.PROTOCOL_ERROR,
  E_NOT_AUTHENTICATED: DISCONNECT.PROTOCOL_ERROR,
  E_TOKEN_INVALID: DISCONNECT.AUTH_FAILED,
  E_UNSUPPORTED_VERSION: DISCONNECT.UNSUPPORTED_VERSION,
  E_TIMEOUT: DISCONNECT.HELLO_TIMEOUT,
  E_RATE_LIMITED: DISCONNECT.RATE_LIMITED,
  E_SHUTTING_DOWN: DISCONNECT.SHUTDOWN,
  E_INTERNAL: DISCONNECT.INTERNAL,
};

/** Closes that can happen to any connection for reasons outside the frames it sent (load,
 * limits): documented, and not a violation, but counted. */
export const BENIGN_CLOSES: ReadonlySet<number> = new Set([
  DISCONNECT.SLOW_CONSUMER,
  DISCONNECT.IDLE_TIMEOUT,
  DISCONNECT.HELLO_TIMEOUT,
  DISCONNECT.RATE_LIMITED,
]);

/** The reply each request type gets on success (docs/protocol.md, "Requests and replies"). */
const SUCCESS_REPLY: Readonly<Record<string, ServerFrame["t"]>> = {
  send: "sent",
  sync: "synced",
  history: "history",
  receipt: "ok",
  edit: "ok",
  delete: "ok",
  react: "ok",
};

/** Checks one value decoded from a server message: it must be a valid server frame, an error
 * must carry a documented code with its documented retry flag (and not be E_INTERNAL, which
 * means a server bug), and a bye a documented disconnect code (not 4005, likewise). Returns the
 * frame when it is one, and the problem if there is one. Never throws. */
export function checkServerFrame(value: unknown): { frame?: ServerFrame; problem?: string } {
  let frame: ServerFrame;
  try {
    frame = parseServerFrame(value);
  } catch (err) {
    return { problem: `invalid server frame (${(err as Error).message}): ${preview(value)}` };
  }
  return { frame, ...(frameProblem(frame) !== undefined ? { problem: frameProblem(frame) } : {}) };
}

function frameProblem(frame: ServerFrame): string | undefined {
  if (frame.t === "error") {
    if (!isErrorCode(frame.code)) return `undocumented error code ${JSON.stringify(frame.code)}`;
    if (frame.retry !== ERRORS[frame.code].retry) {
      return `error ${frame.code} with retry=${frame.retry}, documented ${ERRORS[frame.code].retry}`;
    }
    if (frame.code === "E_INTERNAL") return `E_INTERNAL (a server bug): ${frame.message}`;
  }
  if (frame.t === "bye" && !DOCUMENTED_DISCONNECTS.has(frame.code))
    return `undocumented disconnect code ${frame.code} in bye`;
  if (frame.t === "bye" && frame.code === DISCONNECT.INTERNAL)
    return `bye 4005 (internal error): ${frame.reason}`;
  return undefined;
}

/** Checks a close code the server chose: a documented disconnect code, or a standard WebSocket
 * code that `allowedWs` (the prediction) expects. Returns the problem, if any. */
export function checkCloseCode(code: number, allowedWs: ReadonlySet<number> = new Set()): string | undefined {
  if (DOCUMENTED_DISCONNECTS.has(code)) return undefined;
  if (code in WS_STANDARD_CLOSES && allowedWs.has(code)) return undefined;
  if (code in WS_STANDARD_CLOSES)
    return `close ${code} (${WS_STANDARD_CLOSES[code]}) that nothing sent called for`;
  return `undocumented close code ${code}`;
}

/** The oracle of one connection. `report` receives each violation (already prefixed). */
export class ConnectionOracle {
  /** Error frames received, by code. */
  readonly errors = new Map<string, number>();
  /** Server frames received, by `t`. */
  readonly frameTypes = new Map<string, number>();
  welcome = false;
  bye: number | undefined;
  /** Set once the socket is closed: the server's code (bye, or the WebSocket close code). */
  closedWith: number | "client" | undefined;
  /** The error code (no id) announcing a close, if one came. */
  private connectionError: ErrorCode | undefined;
  /** Per request id: the types of the requests with that id not yet matched by a success reply,
   * and how many error replies came for them (an error fits any type, so it stays unassigned:
   * two requests may share an id, and their replies come in any order). */
  private readonly replies: Map<number, { types: string[]; errors: number }>;
  private readonly pongs: Map<number, number>;
  private alreadyAuthenticated: number;
  private readonly outcome: Outcome;

  constructor(
    private readonly prediction: Prediction,
    private readonly report: (problem: string) => void,
  ) {
    this.outcome = prediction.outcome;
    this.replies = new Map(
      [...prediction.replies].map(([id, types]) => [id, { types: [...types], errors: 0 }]),
    );
    this.pongs = new Map(prediction.pongs);
    this.alreadyAuthenticated = prediction.alreadyAuthenticated;
  }

  /** True when the prediction says the server must close this connection. */
  get doomed(): boolean {
    return this.outcome.kind !== "open";
  }

  /** Replies still owed (only meaningful for a connection the server must keep open). */
  get owed(): number {
    let n = this.alreadyAuthenticated + (this.prediction.validHello && !this.welcome ? 1 : 0);
    for (const r of this.replies.values()) n += r.types.length - r.errors;
    for (const count of this.pongs.values()) n += count;
    return n;
  }

  /** Owes one more pong, for a ping the driver sends itself. */
  expectPong(n: number): void {
    this.pongs.set(n, (this.pongs.get(n) ?? 0) + 1);
  }

  /** One value decoded from a server message. */
  value(value: unknown): void {
    const { frame, problem } = checkServerFrame(value);
    if (problem !== undefined) this.report(problem);
    if (frame !== undefined) this.frame(frame);
  }

  /** Reports a message that could not even be decoded (bad msgpack/JSON, wrong message type). */
  undecodable(problem: string): void {
    this.report(problem);
  }

  private frame(f: ServerFrame): void {
    this.frameTypes.set(f.t, (this.frameTypes.get(f.t) ?? 0) + 1);
    if (this.bye !== undefined) this.report(`${f.t} after bye`);
    switch (f.t) {
      case "welcome":
        if (this.welcome) this.report("second welcome");
        if (!this.prediction.validHello) this.report("welcome without a valid hello");
        this.welcome = true;
        return;
      case "error":
        this.errors.set(f.code, (this.errors.get(f.code) ?? 0) + 1);
        if (f.id !== undefined) return this.reply(f.id, "error");
        return this.connectionLevelError(f.code as ErrorCode);
      case "bye":
        this.bye = f.code;
        return this.byeReceived(f.code);
      case "pong": {
        const left = this.pongs.get(f.n) ?? 0;
        if (left === 0) this.report(`pong ${f.n} to no ping`);
        else this.pongs.set(f.n, left - 1);
        return;
      }
      case "sent":
      case "synced":
      case "history":
      case "ok":
        return this.reply(f.id, f.t);
      default:
        return;
    }
  }

  private reply(id: number, t: string): void {
    const r = this.replies.get(id);
    if (t === "error") {
      if (r === undefined || r.errors >= r.types.length)
        this.report(`error reply with id ${id} that answers no request`);
      else r.errors++;
      return;
    }
    const at = r?.types.findIndex((req) => SUCCESS_REPLY[req] === t) ?? -1;
    if (r === undefined || at === -1)
      return this.report(`${t} reply with id ${id} that answers no request of that type`);
    r.types.splice(at, 1);
    if (r.errors > r.types.length) this.report(`more replies than requests with id ${id}`);
  }

  private connectionLevelError(code: ErrorCode): void {
    if (code === "E_ALREADY_AUTHENTICATED") {
      if (this.alreadyAuthenticated > 0) this.alreadyAuthenticated--;
      else this.report("E_ALREADY_AUTHENTICATED without a second hello");
      return;
    }
    if (CLOSING_ERRORS[code] === undefined) return; // a failed id-less request (ack, watch): stays open
    if (this.connectionError !== undefined) this.report(`second connection error ${code}`);
    this.connectionError ??= code;
    const bye = CLOSING_ERRORS[code];
    if (BENIGN_CLOSES.has(bye)) return;
    if (this.outcome.kind !== "close" || !this.outcome.errors.includes(code)) {
      this.report(`error ${code}; predicted to ${describe(this.outcome)}`);
    }
  }

  private byeReceived(code: number): void {
    const expected = this.connectionError === undefined ? undefined : CLOSING_ERRORS[this.connectionError];
    if (expected !== undefined && code !== expected) {
      this.report(`bye ${code} after ${this.connectionError}, documented ${expected}`);
    }
    // Slow consumer and idle timeout close without an error frame; everything else has one.
    if (expected === undefined && code !== DISCONNECT.SLOW_CONSUMER && code !== DISCONNECT.IDLE_TIMEOUT) {
      this.report(`bye ${code} without a connection error first`);
    }
  }

  /** The socket closed. `wsCode`: the WebSocket close code (undefined on TCP); `byClient`: we
   * had started closing it ourselves. */
  closed(wsCode: number | undefined, byClient: boolean): void {
    if (this.closedWith !== undefined) return;
    const serverCode = wsCode ?? this.bye;
    if (byClient && (serverCode === undefined || wsCode === 1000 || wsCode === 1005 || wsCode === 1006)) {
      this.closedWith = "client";
      return;
    }
    if (serverCode === undefined) {
      this.closedWith = -1;
      return this.report("the server closed the connection without a bye");
    }
    this.closedWith = serverCode;
    const allowedWs = new Set(this.outcome.kind === "close" ? this.outcome.wsCloses : []);
    const problem = checkCloseCode(serverCode, allowedWs);
    if (problem !== undefined) return this.report(problem);
    if (wsCode !== undefined && wsCode in WS_STANDARD_CLOSES) return;
    if (wsCode !== undefined && this.bye !== undefined && wsCode !== this.bye) {
      this.report(`WebSocket close ${wsCode} differs from bye ${this.bye}`);
    }
    if (wsCode !== undefined && this.bye === undefined)
      this.report(`WebSocket close ${wsCode} without a bye`);
    if (BENIGN_CLOSES.has(serverCode)) return;
    if (this.outcome.kind === "open") this.report(`closed with ${serverCode}; predicted to stay open`);
    else if (this.connectionError === undefined)
      this.report(`closed with ${serverCode}; predicted to ${describe(this.outcome)}`);
  }

  /** After the case, once the socket is closed: reports what the server still owed. Nothing is
   * owed on a connection the server closed (replies in flight are lost, as documented). */
  finish(): void {
    if (this.outcome.kind !== "open" && this.closedWith === undefined) {
      this.report(`the server did not close the connection; predicted ${describe(this.outcome)}`);
    }
    if (this.outcome.kind !== "open" || typeof this.closedWith === "number") return;
    if (this.prediction.validHello && !this.welcome) this.report("no welcome after a valid hello");
    for (const [id, r] of this.replies) {
      if (r.types.length > r.errors) this.report(`no reply to ${r.types.join(" or ")} id ${id}`);
    }
    for (const [n, count] of this.pongs) if (count > 0) this.report(`no pong to ping ${n}`);
    if (this.alreadyAuthenticated > 0) this.report("no E_ALREADY_AUTHENTICATED for a second hello");
  }
}

function describe(outcome: Outcome): string {
  if (outcome.kind === "open") return "stay open";
  return `close with ${[...outcome.errors, ...outcome.wsCloses].join(" or ")}`;
}

function preview(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value, (_k, v: unknown) => (v instanceof Uint8Array ? `<${v.length} bytes>` : v));
  } catch {
    text = String(value);
  }
  return (text ?? String(value)).slice(0, 200);
}
