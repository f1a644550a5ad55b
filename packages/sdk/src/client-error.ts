import { isErrorCode, ParleyError } from "@parley/protocol";

// Errors the SDK raises itself. Errors the server reports (error frames, HTTP error bodies) are
// ParleyError with the server's code, from @parley/protocol.

export const CLIENT_ERRORS = {
  /** close() was called; a pending send stays in the store's outbox for the next session. */
  E_CLIENT_CLOSED: "the client was closed",
  /** The server ended the session with a disconnect code in 4100-4199 (bad token, revoked
   * device, protocol violation, no common version): the client stops; log in again. */
  E_DISCONNECTED: "the server refused the connection for good",
  /** An HTTP response that is not the API's JSON (proxy error page, wrong URL). */
  E_HTTP: "unexpected HTTP response",
  /** The local store belongs to another user or server. */
  E_STORE_MISMATCH: "the local store belongs to another user or server",
} as const;

export type ClientErrorCode = keyof typeof CLIENT_ERRORS;

export class ClientError extends Error {
  readonly code: ClientErrorCode;
  /** For E_DISCONNECTED: the server's disconnect code. For E_HTTP: the HTTP status. */
  readonly detail: number | undefined;

  constructor(code: ClientErrorCode, message?: string, options?: { cause?: unknown; detail?: number }) {
    super(
      message ?? CLIENT_ERRORS[code],
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "ClientError";
    this.code = code;
    this.detail = options?.detail;
  }
}

/** A ParleyError for an error the server reported; unknown codes (a newer server) become
 * E_INTERNAL with the code in the message. */
export function serverError(e: {
  code: string;
  message: string;
  retryAfterMs?: number | undefined;
}): ParleyError {
  const opts = e.retryAfterMs === undefined ? undefined : { retryAfterMs: e.retryAfterMs };
  if (isErrorCode(e.code)) return new ParleyError(e.code, e.message, opts);
  return new ParleyError("E_INTERNAL", `${e.code}: ${e.message}`, opts);
}
