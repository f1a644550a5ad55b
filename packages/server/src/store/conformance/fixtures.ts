import { expect } from "vitest";
import { ParleyError } from "@parley/protocol";
import type { ConversationId, ErrorCode, LoggedUpdate, Message, Role, UserId } from "@parley/protocol";
import type { AppendResult, LogUpdate, NewMessage, Store } from "../../core/ports/store.ts";

// Helpers shared by the parts of the Store conformance suite.

export const T0 = 1_700_000_000_000;

/** The store under test; a fresh one for every test. */
export type GetStore = () => Store;

export function bytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

export async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  const err: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected a rejection with ${code}`).toBeInstanceOf(ParleyError);
  expect((err as ParleyError).code).toBe(code);
}

export async function addUsers(store: Store, ...ids: UserId[]): Promise<void> {
  for (const id of ids) {
    await store.createUser({ id, name: `name-${id}`, passwordHash: `hash-${id}`, createdAt: T0 });
  }
}

export async function addGroup(
  store: Store,
  id: ConversationId,
  members: UserId[],
  createdAt = T0,
): Promise<LogUpdate[]> {
  const roles: Role[] = members.map((_, i) => (i === 0 ? "owner" : "member"));
  const r = await store.createConversation({
    id,
    kind: "group",
    name: `group ${id}`,
    createdAt,
    members: members.map((user, i) => ({ user, role: roles[i] ?? "member" })),
  });
  return r.updates;
}

export function newMessage(
  conv: ConversationId,
  from: UserId,
  cid: string,
  extra: Partial<NewMessage> = {},
): NewMessage {
  return {
    conv,
    from,
    dev: `dev-${from}`,
    cid,
    type: "text/plain",
    body: bytes(`${from}:${cid}`),
    ts: T0 + 1000,
    ...extra,
  };
}

/** Appends one message and returns the committed result, failing the test if it was refused. */
export async function send(
  store: Store,
  conv: ConversationId,
  from: UserId,
  cid: string,
  extra: Partial<NewMessage> = {},
): Promise<Extract<AppendResult, { ok: true }>> {
  const [r] = await store.appendMessages([newMessage(conv, from, cid, extra)]);
  if (!r?.ok) throw new Error(`send refused: ${JSON.stringify(r)}`);
  return r;
}

export async function sendMsg(
  store: Store,
  conv: ConversationId,
  from: UserId,
  cid: string,
  extra: Partial<NewMessage> = {},
): Promise<Message> {
  return (await send(store, conv, from, cid, extra)).msg;
}

/** The whole update log of a user. */
export function readAll(store: Store, user: UserId): Promise<LoggedUpdate[]> {
  return store.readUpdates(user, 0, 1_000_000);
}

/** Users an update list was addressed to, sorted; a large group's log shows as "log:<conv>". */
export function recipients(updates: readonly LogUpdate[]): string[] {
  return updates.map((u) => (u.log !== undefined ? `log:${u.log}` : u.user)).sort();
}

/** Heads of several users, to assert that an operation wrote nothing. */
export async function heads(store: Store, users: UserId[]): Promise<number[]> {
  return Promise.all(users.map((u) => store.head(u)));
}
