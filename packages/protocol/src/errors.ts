// Every error code Parley returns, on the wire (`error` frames) and over HTTP. One list, kept in
// sync with docs/errors.md by a test. `retry` says whether the same request may succeed later
// unchanged; `http` is the status the REST API uses for it.

export interface ErrorSpec {
  readonly message: string;
  readonly retry: boolean;
  readonly http: number;
}

export const ERRORS = {
  E_BAD_FRAME: { message: "frame could not be decoded or failed validation", retry: false, http: 400 },
  E_FRAME_TOO_LARGE: { message: "frame exceeds the maximum frame size", retry: false, http: 413 },
  E_UNKNOWN_FRAME: { message: "unknown frame type", retry: false, http: 400 },
  E_NOT_AUTHENTICATED: { message: "the first frame must be hello", retry: false, http: 401 },
  E_ALREADY_AUTHENTICATED: {
    message: "hello was already accepted on this connection",
    retry: false,
    http: 400,
  },
  E_UNSUPPORTED_VERSION: { message: "no protocol version in common", retry: false, http: 400 },
  E_TOKEN_INVALID: { message: "token is unknown, malformed, expired or revoked", retry: false, http: 401 },
  E_BAD_CREDENTIALS: { message: "wrong user name or password", retry: false, http: 401 },
  E_INVALID: { message: "a request field is missing or out of range", retry: false, http: 400 },
  E_NOT_FOUND: {
    message: "no such conversation, message, user or device (or not visible to you)",
    retry: false,
    http: 404,
  },
  E_FORBIDDEN: { message: "your role does not allow this operation", retry: false, http: 403 },
  E_CONFLICT: {
    message: "the name is already taken or the state does not allow this",
    retry: false,
    http: 409,
  },
  E_RATE_LIMITED: { message: "too many requests; wait retryAfterMs", retry: true, http: 429 },
  E_OVERLOADED: { message: "server is overloaded; wait retryAfterMs", retry: true, http: 503 },
  E_SHUTTING_DOWN: { message: "server is shutting down; reconnect", retry: true, http: 503 },
  E_TIMEOUT: { message: "the connection did not complete hello in time", retry: true, http: 408 },
  E_INTERNAL: { message: "unexpected server error", retry: true, http: 500 },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export const ERROR_CODES = Object.keys(ERRORS) as ErrorCode[];

export function isErrorCode(code: string): code is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERRORS, code);
}

/** An error with a stable code. Thrown by the core, turned into `error` frames and HTTP bodies. */
export class ParleyError extends Error {
  readonly code: ErrorCode;
  readonly retry: boolean;
  readonly retryAfterMs: number | undefined;

  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown; retryAfterMs?: number }) {
    super(
      message ?? ERRORS[code].message,
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "ParleyError";
    this.code = code;
    this.retry = ERRORS[code].retry;
    this.retryAfterMs = options?.retryAfterMs;
  }
}

// Disconnect codes: sent in a `bye` frame before the server closes a TCP connection, and as the
// WebSocket close code. 4000-4099: the client should reconnect (with backoff). 4100-4199: it
// must not reconnect with the same credentials.
export const DISCONNECT = {
  /** Server shutting down or restarting: reconnect with backoff. */
  SHUTDOWN: 4000,
  /** Client did not keep up with its output (slow reader): reconnect and sync. */
  SLOW_CONSUMER: 4001,
  /** No frame for too long (missed heartbeats). */
  IDLE_TIMEOUT: 4002,
  /** Hello did not arrive in time. */
  HELLO_TIMEOUT: 4003,
  /** Per-connection rate limit exceeded repeatedly. */
  RATE_LIMITED: 4004,
  /** Internal server error on this connection. */
  INTERNAL: 4005,
  /** Protocol violation (malformed, oversized or unknown frame, frame before hello). */
  PROTOCOL_ERROR: 4100,
  /** Token invalid, expired or revoked; or the device was revoked. */
  AUTH_FAILED: 4101,
  /** No protocol version in common. */
  UNSUPPORTED_VERSION: 4102,
} as const;

export type DisconnectCode = (typeof DISCONNECT)[keyof typeof DISCONNECT];

/** True when a client may reconnect after this disconnect code. */
export function mayReconnect(code: number): boolean {
  return code >= 4000 && code < 4100;
}
