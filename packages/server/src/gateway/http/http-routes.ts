import type { FastifyInstance, FastifyRequest, RawServerDefault } from "fastify";
import type { FastifyBaseLogger, RawReplyDefaultExpression, RawRequestDefaultExpression } from "fastify";
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import Type from "typebox";
import type { TSchema } from "typebox";
import { ParleyError } from "@parley/protocol";
import type { Conversation as ConversationT, Message as MessageT } from "@parley/protocol";
import { MAX_USER_ID_LENGTH, MAX_USER_LOOKUP } from "../../core/accounts.ts";
import type { Principal } from "../../core/api.ts";
import { MEMBERS_PAGE_MAX } from "../../core/conversations.ts";
import type { Core } from "../../core/core.ts";

// The REST API: one route per Core method that a bot, a script or the web app's sign-in needs.
// Schemas validate requests, serialize responses and generate the OpenAPI document. Byte fields
// (message bodies) are standard base64 strings. docs/rest.md has an example of each route.

const Id = Type.String({ minLength: 1, maxLength: 128 });
const Millis = Type.Integer({ minimum: 0, description: "milliseconds since the epoch" });
const Seq = Type.Integer({ minimum: 0 });
const Role = Type.Union([Type.Literal("owner"), Type.Literal("admin"), Type.Literal("member")]);

/** Standard base64 with padding (RFC 4648 section 4). */
const BASE64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";
const Base64 = Type.String({ pattern: BASE64, contentEncoding: "base64" });

export const ErrorBody = Type.Object({
  error: Type.Object({
    code: Type.String(),
    message: Type.String(),
    retry: Type.Boolean(),
    retryAfterMs: Type.Optional(Type.Integer()),
  }),
});

export const UserInfo = Type.Object({ id: Id, name: Type.String() });

export const Login = Type.Object({
  token: Type.String({ description: "bearer token for Authorization and the socket hello" }),
  user: Id,
  device: Id,
  expiresAt: Millis,
});

export const Device = Type.Object({
  id: Id,
  name: Type.String(),
  createdAt: Millis,
  lastSeenAt: Millis,
  cursor: Seq,
  current: Type.Boolean(),
  revoked: Type.Boolean(),
});

export const Member = Type.Object({ user: Id, role: Role, delivered: Seq, read: Seq });

export const Conversation = Type.Object({
  id: Id,
  kind: Type.Union([Type.Literal("direct"), Type.Literal("group")]),
  name: Type.String(),
  createdAt: Millis,
  lastSeq: Seq,
  members: Type.Array(Member, {
    description: "every member; of a large group only the owner, the admins and the caller (see memberCount)",
  }),
  memberCount: Type.Optional(
    Type.Integer({ minimum: 0, description: "large groups: how many members; page them with listMembers" }),
  ),
  large: Type.Optional(
    Type.Literal(true, {
      description: "a large group: its changes are entries of its own log (protocol.md, Large groups)",
    }),
  ),
  logHead: Type.Optional(Type.Integer({ minimum: 0, description: "large groups: head of the group's log" })),
});

export const Message = Type.Object({
  conv: Id,
  seq: Seq,
  from: Id,
  dev: Id,
  cid: Type.String(),
  type: Type.String(),
  body: Type.String({ contentEncoding: "base64" }),
  ts: Millis,
  replyTo: Type.Optional(Seq),
  editedAt: Type.Optional(Millis),
  deleted: Type.Optional(Type.Boolean()),
  reactions: Type.Optional(Type.Record(Type.String(), Type.Array(Id))),
});

export const NoContent = Type.Null({ description: "no content" });

export const Sent = Type.Object({ seq: Seq, ts: Millis, duplicate: Type.Boolean() });

// ------------------------------------------------------------------ requests

export const RegisterBody = Type.Object({
  name: Type.String({ maxLength: 64 }),
  password: Type.String({ maxLength: 256 }),
});

export const LoginBody = Type.Object({
  name: Type.String({ maxLength: 64 }),
  password: Type.String({ maxLength: 256 }),
  device: Type.String({ minLength: 1, maxLength: 128, description: "a name for this login, e.g. 'laptop'" }),
});

export const CreateConversationBody = Type.Union([
  Type.Object({ kind: Type.Literal("direct"), user: Id }),
  Type.Object({
    kind: Type.Literal("group"),
    name: Type.String({ maxLength: 256 }),
    members: Type.Array(Id, { description: "user ids besides the caller" }),
  }),
]);

export const RenameBody = Type.Object({ name: Type.String({ maxLength: 256 }) });
export const MembersBody = Type.Object({ users: Type.Array(Id, { minItems: 1 }) });
export const RoleBody = Type.Object({ role: Role });

export const SendBody = Type.Object({
  cid: Type.String({ minLength: 1, maxLength: 64, description: "client message id: the idempotency key" }),
  type: Type.String({ minLength: 1, maxLength: 128, description: "content type, e.g. text/plain" }),
  body: Base64,
  replyTo: Type.Optional(Type.Integer({ minimum: 1 })),
});

export const HistoryQuery = Type.Object({
  before: Type.Optional(Type.Integer({ minimum: 0, description: "exclusive upper bound" })),
  after: Type.Optional(Type.Integer({ minimum: 0, description: "exclusive lower bound" })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
});

export const MembersQuery = Type.Object({
  after: Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: MAX_USER_ID_LENGTH,
      description: "exclusive: the last user id of the previous page",
    }),
  ),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MEMBERS_PAGE_MAX, default: 100 })),
});

const MemberPage = Type.Object({
  members: Type.Array(Member),
  more: Type.Boolean({
    description: "true when a page after this one may hold more (pass after = its last user)",
  }),
});

const USER_ID = `[^,]{1,${MAX_USER_ID_LENGTH}}`;
export const UsersQuery = Type.Object({
  ids: Type.String({
    maxLength: MAX_USER_LOOKUP * (MAX_USER_ID_LENGTH + 1) - 1,
    pattern: `^${USER_ID}(?:,${USER_ID}){0,${MAX_USER_LOOKUP - 1}}$`,
    description: `1-${MAX_USER_LOOKUP} comma-separated user ids, each 1-${MAX_USER_ID_LENGTH} characters`,
  }),
});

export const IdParams = Type.Object({ id: Id });
export const NameParams = Type.Object({ name: Type.String({ minLength: 1, maxLength: 64 }) });
export const MemberParams = Type.Object({ id: Id, user: Id });

/** The route's success responses plus the shared error body for 4xx and 5xx. */
export function responses<R extends Record<number, TSchema>>(
  ok: R,
): R & { "4xx": typeof ErrorBody; "5xx": typeof ErrorBody } {
  return { ...ok, "4xx": ErrorBody, "5xx": ErrorBody };
}

/** The security requirement of routes that need `Authorization: Bearer <token>`. */
export const bearer = [{ bearer: [] as string[] }];

// ------------------------------------------------------------------ routes

/** The Core methods the REST API calls. */
export type RestCore = Pick<
  Core,
  | "register"
  | "login"
  | "authenticate"
  | "logout"
  | "findUser"
  | "getUsers"
  | "listDevices"
  | "revokeDevice"
  | "createDirect"
  | "createGroup"
  | "listConversations"
  | "getConversation"
  | "listMembers"
  | "renameGroup"
  | "addMembers"
  | "removeMember"
  | "setRole"
  | "send"
  | "history"
>;

export type TypedFastify = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

const BEARER_RE = /^Bearer[ ]+([^\s]+)[ ]*$/i;

/** The principal of the request's bearer token; rejects E_TOKEN_INVALID without one. */
function principal(core: RestCore, req: FastifyRequest): Promise<Principal> {
  const header = req.headers.authorization;
  const match = header === undefined ? null : BEARER_RE.exec(header);
  if (!match) {
    return Promise.reject(
      new ParleyError("E_TOKEN_INVALID", "missing or malformed Authorization: Bearer header"),
    );
  }
  return core.authenticate(match[1]!);
}

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

function messageOut(m: MessageT): Type.Static<typeof Message> {
  return { ...m, body: base64(m.body) };
}

function conversationOut(c: ConversationT): Type.Static<typeof Conversation> {
  return c;
}

interface Doc {
  /** OpenAPI operationId. */
  id: string;
  summary: string;
  tag: "accounts" | "conversations" | "messages";
  /** No bearer token needed. */
  open?: boolean;
}

/** Route options: OpenAPI metadata, the schemas, and unless `open`, the bearer requirement with
 * `authenticate` as the first hook, so an unauthenticated request learns nothing else. */
function routeOptions<S extends object>(
  doc: Doc,
  schemas: S,
  authenticate: (req: FastifyRequest) => Promise<void>,
) {
  return {
    ...(doc.open ? {} : { onRequest: authenticate }),
    schema: {
      operationId: doc.id,
      summary: doc.summary,
      tags: [doc.tag],
      ...(doc.open ? {} : { security: bearer }),
      ...schemas,
    },
  };
}

const ConversationList = Type.Object({ conversations: Type.Array(Conversation) });
const DeviceList = Type.Object({ devices: Type.Array(Device) });
const UserList = Type.Object({ users: Type.Array(UserInfo) });
const MessagePage = Type.Object({ messages: Type.Array(Message), more: Type.Boolean() });

/** Registers every /v1 route on `app`. */
export function registerRoutes(app: TypedFastify, core: RestCore): void {
  const principals = new WeakMap<FastifyRequest, Principal>();
  const authenticate = async (req: FastifyRequest): Promise<void> => {
    principals.set(req, await principal(core, req));
  };
  /** The caller, set by `authenticate` before the handler runs. */
  const auth = (req: FastifyRequest): Principal => {
    const p = principals.get(req);
    if (!p) throw new Error(`route ${req.routeOptions.url ?? "?"} has no authenticate hook`);
    return p;
  };
  const route = <S extends object>(doc: Doc, schemas: S) => routeOptions(doc, schemas, authenticate);

  // --- accounts
  app.post(
    "/v1/register",
    route(
      { id: "register", summary: "Create an account", tag: "accounts", open: true },
      { body: RegisterBody, response: responses({ 201: UserInfo }) },
    ),
    async (req, reply) => reply.code(201).send(await core.register(req.body.name, req.body.password)),
  );

  app.post(
    "/v1/login",
    route(
      {
        id: "login",
        summary: "Log in: creates a device and returns its bearer token",
        tag: "accounts",
        open: true,
      },
      { body: LoginBody, response: responses({ 200: Login }) },
    ),
    (req) => core.login(req.body.name, req.body.password, req.body.device),
  );

  app.post(
    "/v1/logout",
    route(
      {
        id: "logout",
        summary: "Revoke the calling device and its token, closing its connections",
        tag: "accounts",
      },
      { response: responses({ 204: NoContent }) },
    ),
    async (req, reply) => {
      await core.logout(auth(req));
      return reply.code(204).send(null);
    },
  );

  app.get(
    "/v1/devices",
    route(
      { id: "listDevices", summary: "The caller's devices (one per login)", tag: "accounts" },
      { response: responses({ 200: DeviceList }) },
    ),
    async (req) => ({ devices: await core.listDevices(auth(req)) }),
  );

  app.delete(
    "/v1/devices/:id",
    route(
      {
        id: "revokeDevice",
        summary: "Revoke one of the caller's devices, closing its connections",
        tag: "accounts",
      },
      { params: IdParams, response: responses({ 204: NoContent }) },
    ),
    async (req, reply) => {
      await core.revokeDevice(auth(req), req.params.id);
      return reply.code(204).send(null);
    },
  );

  app.get(
    "/v1/users/:name",
    route(
      { id: "findUser", summary: "Look a user up by name", tag: "accounts" },
      { params: NameParams, response: responses({ 200: UserInfo }) },
    ),
    async (req) => core.findUser(auth(req), req.params.name),
  );

  app.get(
    "/v1/users",
    route(
      {
        id: "getUsers",
        summary: "Names of users by id; ids that do not exist are left out",
        tag: "accounts",
      },
      { querystring: UsersQuery, response: responses({ 200: UserList }) },
    ),
    async (req) => ({ users: await core.getUsers(auth(req), req.query.ids.split(",")) }),
  );

  // --- conversations
  app.get(
    "/v1/conversations",
    route(
      {
        id: "listConversations",
        summary: "The caller's conversations, most recent first",
        tag: "conversations",
      },
      { response: responses({ 200: ConversationList }) },
    ),
    async (req) => ({ conversations: (await core.listConversations(auth(req))).map(conversationOut) }),
  );

  app.post(
    "/v1/conversations",
    route(
      {
        id: "createConversation",
        summary: "Create a group, or get-or-create the direct conversation with a user",
        tag: "conversations",
      },
      { body: CreateConversationBody, response: responses({ 201: Conversation }) },
    ),
    async (req, reply) => {
      const p = auth(req);
      const body = req.body;
      const conv =
        body.kind === "direct"
          ? await core.createDirect(p, body.user)
          : await core.createGroup(p, body.name, body.members);
      return reply.code(201).send(conversationOut(conv));
    },
  );

  app.get(
    "/v1/conversations/:id",
    route(
      { id: "getConversation", summary: "One conversation the caller is a member of", tag: "conversations" },
      { params: IdParams, response: responses({ 200: Conversation }) },
    ),
    async (req) => conversationOut(await core.getConversation(auth(req), req.params.id)),
  );

  app.get(
    "/v1/conversations/:id/members",
    route(
      {
        id: "listMembers",
        summary:
          "A page of a conversation's members, ordered by user id (a large group's state lists only some)",
        tag: "conversations",
      },
      { params: IdParams, querystring: MembersQuery, response: responses({ 200: MemberPage }) },
    ),
    async (req) => {
      const limit = req.query.limit ?? 100;
      const members = await core.listMembers(auth(req), req.params.id, req.query.after, limit);
      return { members, more: members.length === limit };
    },
  );

  app.patch(
    "/v1/conversations/:id",
    route(
      { id: "renameGroup", summary: "Rename a group (owner or admin)", tag: "conversations" },
      { params: IdParams, body: RenameBody, response: responses({ 200: Conversation }) },
    ),
    async (req) => conversationOut(await core.renameGroup(auth(req), req.params.id, req.body.name)),
  );

  app.post(
    "/v1/conversations/:id/members",
    route(
      { id: "addMembers", summary: "Add users to a group (owner or admin)", tag: "conversations" },
      { params: IdParams, body: MembersBody, response: responses({ 200: Conversation }) },
    ),
    async (req) => conversationOut(await core.addMembers(auth(req), req.params.id, req.body.users)),
  );

  app.delete(
    "/v1/conversations/:id/members/:user",
    route(
      {
        id: "removeMember",
        summary: "Remove a member (owner or admin); removing oneself leaves the group (204)",
        tag: "conversations",
      },
      { params: MemberParams, response: responses({ 200: Conversation, 204: NoContent }) },
    ),
    async (req, reply) => {
      const conv = await core.removeMember(auth(req), req.params.id, req.params.user);
      if (conv === undefined) return reply.code(204).send(null);
      return reply.code(200).send(conversationOut(conv));
    },
  );

  app.put(
    "/v1/conversations/:id/members/:user/role",
    route(
      { id: "setRole", summary: "Change a member's role (owner)", tag: "conversations" },
      { params: MemberParams, body: RoleBody, response: responses({ 200: Conversation }) },
    ),
    async (req) =>
      conversationOut(await core.setRole(auth(req), req.params.id, req.params.user, req.body.role)),
  );

  // --- messages
  app.get(
    "/v1/conversations/:id/messages",
    route(
      {
        id: "history",
        summary: "A page of messages in ascending seq order (newest by default)",
        tag: "messages",
      },
      { params: IdParams, querystring: HistoryQuery, response: responses({ 200: MessagePage }) },
    ),
    async (req) => {
      const page = await core.history(auth(req), req.params.id, req.query);
      return { messages: page.messages.map(messageOut), more: page.more };
    },
  );

  app.post(
    "/v1/conversations/:id/messages",
    route(
      {
        id: "send",
        summary: "Send a message; a resend with the same cid returns the original (200)",
        tag: "messages",
      },
      { params: IdParams, body: SendBody, response: responses({ 200: Sent, 201: Sent }) },
    ),
    async (req, reply) => {
      const p = auth(req);
      const { cid, type, body, replyTo } = req.body;
      const r = await core.send(p, {
        conv: req.params.id,
        cid,
        type,
        // A copy, so the store never keeps a slice of Buffer's shared pool alive.
        body: new Uint8Array(Buffer.from(body, "base64")),
        ...(replyTo !== undefined ? { replyTo } : {}),
      });
      return reply.code(r.duplicate ? 200 : 201).send({ seq: r.seq, ts: r.ts, duplicate: r.duplicate });
    },
  );
}
