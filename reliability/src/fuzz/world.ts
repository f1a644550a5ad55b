// The accounts and conversations a fuzz run needs, created over REST on a fresh server: three
// fuzz accounts (four tokens) in a group, a direct conversation and a second group where one of
// them is a plain member; and two control users, in a direct conversation of their own. The
// control peer is also a member of the fuzz group, so it receives what the fuzzers manage to send.

import type { Targets } from "./generate.ts";

export interface Account {
  name: string;
  password: string;
  user: string;
  token: string;
}

export interface World {
  url: string;
  targets: Targets;
  /** Control sender and receiver (the SDK logs them in itself, with the password). */
  controlA: Account;
  controlB: Account;
  /** Their direct conversation, which no fuzz account can see. */
  controlConv: string;
}

const PASSWORD = "fuzz-password-1";

/** POST/GET JSON; throws with the status and body on a non-2xx answer. */
async function rest<T>(
  url: string,
  method: string,
  path: string,
  body?: unknown,
  token?: string,
): Promise<T> {
  const res = await fetch(url + path, {
    method,
    headers: {
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

async function account(url: string, name: string): Promise<Account> {
  await rest(url, "POST", "/v1/register", { name, password: PASSWORD });
  return login(url, name, "fuzz");
}

async function login(url: string, name: string, device: string): Promise<Account> {
  const r = await rest<{ token: string; user: string }>(url, "POST", "/v1/login", {
    name,
    password: PASSWORD,
    device,
  });
  return { name, password: PASSWORD, user: r.user, token: r.token };
}

async function conversation(url: string, owner: Account, body: unknown): Promise<string> {
  return (await rest<{ id: string }>(url, "POST", "/v1/conversations", body, owner.token)).id;
}

/** Creates the run's accounts and conversations on the server at `url` (sequentially: logins
 * hash passwords, which is slow on purpose). */
export async function setUpWorld(url: string, maxFrameBytes: number): Promise<World> {
  const f1 = await account(url, "fuzz1");
  const f2 = await account(url, "fuzz2");
  const f3 = await account(url, "fuzz3");
  const f1b = await login(url, "fuzz1", "fuzz-second-device");
  const controlA = await account(url, "control-a");
  const controlB = await account(url, "control-b");
  const group = await conversation(url, f1, {
    kind: "group",
    name: "fuzz",
    members: [f2.user, f3.user, controlB.user],
  });
  const direct = await conversation(url, f1, { kind: "direct", user: f2.user });
  // fuzz1 is a plain member here: deleting others' messages must be refused.
  const memberGroup = await conversation(url, f2, {
    kind: "group",
    name: "fuzz-2",
    members: [f1.user, f3.user],
  });
  const controlConv = await conversation(url, controlA, { kind: "direct", user: controlB.user });
  return {
    url,
    targets: {
      convs: [group, direct, memberGroup, controlConv],
      users: [f1.user, f2.user, f3.user, controlA.user, controlB.user],
      tokens: [f1.token, f2.token, f3.token, f1b.token],
      maxFrameBytes,
    },
    controlA,
    controlB,
    controlConv,
  };
}
