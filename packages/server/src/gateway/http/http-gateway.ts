import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import Fastify, { LogController } from "fastify";
import type { FastifyBaseLogger, FastifyError, FastifyReply, FastifyRequest } from "fastify";
import swagger from "@fastify/swagger";
import { TypeBoxValidatorCompiler } from "@fastify/type-provider-typebox";
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import Type from "typebox";
import { ERRORS, ParleyError } from "@parley/protocol";
import { DEFAULT_HANDSHAKE_TIMEOUT_MS, LISTEN_BACKLOG } from "../gateway-connection.ts";
import { registerRoutes, responses } from "./http-routes.ts";
import type { ErrorBody } from "./http-routes.ts";
import type { RestCore, TypedFastify } from "./http-routes.ts";

// The HTTP gateway: the REST API (fastify + typebox), /healthz and the OpenAPI document at
// /openapi.json. The WebSocket gateway attaches to the same http.Server (`server`).

export interface HttpGatewayOptions {
  /** A pino logger; none when absent. */
  logger?: FastifyBaseLogger | undefined;
  /** Largest request body, in bytes. Default 256 KiB. */
  bodyLimit?: number;
  /** `version` of the OpenAPI document. */
  version?: string;
  /** A request head (a REST request's, or the WebSocket upgrade request) must arrive whole within
   * this, counted from the connection's opening for its first request; else 408 and the
   * connection is closed (slow or half-open clients, slowloris). Default 10 s. */
  headersTimeoutMs?: number;
}

const DEFAULT_BODY_LIMIT = 256 * 1024;

/** Serves the REST API for `core`. Construct, attach other gateways to `server`, then listen. */
export class HttpGateway {
  readonly app: TypedFastify;
  private closing: Promise<void> | undefined;
  private draining = false;
  /** Requests admitted and not yet answered (or abandoned by their client). */
  private inFlight = 0;
  private settledWaiters: Array<() => void> = [];

  constructor(core: RestCore, options: HttpGatewayOptions = {}) {
    const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
    const headersTimeout = options.headersTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.app = Fastify({
      bodyLimit,
      // Node checks the timeout every connectionsCheckingInterval (30 s by default), so a stalled
      // request would live up to that much longer; checking a pending-request list once a
      // second is cheap (upgraded sockets are no longer in it).
      http: {
        headersTimeout,
        // What fastify sets anyway (no limit on a whole request); said here too because Node
        // refuses a headersTimeout above its default requestTimeout of 300 s.
        requestTimeout: 0,
        connectionsCheckingInterval: Math.max(10, Math.min(1000, headersTimeout)),
      },
      ...(options.logger ? { loggerInstance: options.logger } : { logger: false }),
      // Per-request lines are noise at this scale; failures are logged by the error handler.
      logController: new LogController({ disableRequestLogging: true }),
      // Clients put ids in paths; a 128-character id plus prefix fits comfortably.
      routerOptions: { maxParamLength: 200 },
      // While stopping, requests get our own E_SHUTTING_DOWN body (the hook below), not fastify's.
      return503OnClosing: false,
    }).withTypeProvider<TypeBoxTypeProvider>();
    const app = this.app;
    app.setValidatorCompiler(TypeBoxValidatorCompiler);
    app.setErrorHandler((err: FastifyError, req, reply) =>
      sendError(req, reply, toParleyError(err, bodyLimit)),
    );
    app.addHook("onRequest", (_req, reply, done) => {
      if (!this.draining) {
        // Counted until the response is done or its connection closed: exactly one "close".
        this.inFlight++;
        reply.raw.once("close", () => this.requestEnded());
        return done();
      }
      void reply.header("connection", "close");
      done(new ParleyError("E_SHUTTING_DOWN", undefined, { retryAfterMs: 1000 }));
    });
    // A response finished while stopping closes its connection: a request that was in progress
    // when close() began would otherwise leave a kept-alive socket holding the server open.
    app.addHook("onSend", (_req, reply, payload, done) => {
      if (this.draining) void reply.header("connection", "close");
      done(null, payload);
    });
    app.setNotFoundHandler((req, reply) =>
      sendError(
        req,
        reply,
        new ParleyError("E_NOT_FOUND", `no route ${req.method} ${req.url.split("?", 1)[0]}`),
      ),
    );

    void app.register(swagger, {
      openapi: {
        openapi: "3.1.0",
        info: {
          title: "Parley REST API",
          version: options.version ?? "1",
          description:
            "Accounts, conversations and messages over HTTP. Live traffic uses the socket protocol.",
        },
        components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
      },
    });
    void app.register((scoped, _opts, done) => {
      const typed = scoped.withTypeProvider<TypeBoxTypeProvider>();
      typed.get(
        "/healthz",
        {
          schema: {
            operationId: "health",
            summary: "Liveness",
            tags: ["operations"],
            response: responses({ 200: Type.Object({ ok: Type.Boolean() }) }),
          },
        },
        () => ({ ok: true }),
      );
      typed.get("/openapi.json", { schema: { hide: true } }, () => scoped.swagger());
      registerRoutes(typed, core);
      done();
    });
  }

  /** The underlying http.Server (exists before listen), for the WebSocket gateway. */
  get server(): Server {
    return this.app.server;
  }

  /** Resolves with the bound port (useful with port 0); rejects on e.g. EADDRINUSE. */
  async listen(port: number, host: string): Promise<number> {
    await this.app.listen({ port, host, backlog: LISTEN_BACKLOG });
    return (this.app.server.address() as AddressInfo).port;
  }

  /** Resolves once no admitted request is in progress. Stopping awaits it (with a bound) after
   * close() and before the core shuts down, so that a request in progress is not cut off by the
   * store closing under it. */
  requestsSettled(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.settledWaiters.push(resolve));
  }

  private requestEnded(): void {
    if (--this.inFlight > 0) return;
    const waiters = this.settledWaiters;
    this.settledWaiters = [];
    for (const w of waiters) w();
  }

  /** Stops accepting connections and answers 503 E_SHUTTING_DOWN to new requests at once;
   * resolves when every connection (WebSockets included) has closed. Idempotent. */
  close(): Promise<void> {
    this.draining = true;
    this.closing ??= this.app.close();
    return this.closing;
  }
}

/** The one mapping from a thrown value to a ParleyError. */
function toParleyError(err: FastifyError, bodyLimit: number): ParleyError {
  if (err instanceof ParleyError) return err;
  if (err.validation) return new ParleyError("E_INVALID", err.message, { cause: err });
  if (err.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
    return new ParleyError("E_FRAME_TOO_LARGE", `request body exceeds ${bodyLimit} bytes`, { cause: err });
  }
  const status = err.statusCode ?? 500;
  if (status === 404) return new ParleyError("E_NOT_FOUND", err.message, { cause: err });
  // Fastify's own client errors: malformed JSON, wrong content type, bad URL...
  if (status >= 400 && status < 500) return new ParleyError("E_INVALID", err.message, { cause: err });
  return new ParleyError("E_INTERNAL", undefined, { cause: err });
}

function sendError(req: FastifyRequest, reply: FastifyReply, e: ParleyError): FastifyReply {
  if (e.code === "E_INTERNAL") req.log.error({ err: e.cause ?? e, url: req.url }, "request failed");
  const status = ERRORS[e.code].http;
  if (status === 401) void reply.header("www-authenticate", "Bearer");
  if (e.retryAfterMs !== undefined) void reply.header("retry-after", Math.ceil(e.retryAfterMs / 1000));
  const body: Type.Static<typeof ErrorBody> = {
    error: {
      code: e.code,
      message: e.message,
      retry: e.retry,
      ...(e.retryAfterMs !== undefined ? { retryAfterMs: e.retryAfterMs } : {}),
    },
  };
  return reply.code(status).send(body);
}
