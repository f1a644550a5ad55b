import { ParleyError } from "@parley/protocol";
import type { DeviceId, UserId } from "@parley/protocol";
import type { DeviceInfo, LoginResult, Principal, UserInfo } from "./api.ts";
import { newId, newToken, sha256Hex } from "./ids.ts";
import type { CoreOptions } from "./options.ts";
import type { Clock } from "./ports/clock.ts";
import type { PasswordHasher } from "./ports/password-hasher.ts";
import type { Store } from "./ports/store.ts";

// Accounts, devices and tokens. Each login is a device with its own token; revoking the device
// revokes its tokens. Tokens are opaque random strings; only their sha256 is stored.

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

/** Most ids one getUsers call may ask about, and the longest id it accepts (the REST schema of
 * `GET /v1/users` uses both). */
export const MAX_USER_LOOKUP = 100;
export const MAX_USER_ID_LENGTH = 64;

export class Accounts {
  /** A real hash of a random password, verified against when the user does not exist, so a
   * failed login takes the same time whether or not the name is known. */
  private dummyHash: Promise<string> | undefined;

  constructor(
    private readonly store: Store,
    private readonly hasher: PasswordHasher,
    private readonly clock: Clock,
    private readonly options: CoreOptions,
  ) {}

  async register(name: string, password: string): Promise<UserInfo> {
    if (typeof name !== "string" || !NAME_RE.test(name)) {
      throw new ParleyError("E_INVALID", "name must be 1-64 characters of A-Z a-z 0-9 _ . -");
    }
    if (typeof password !== "string" || password.length < 8 || password.length > 256) {
      throw new ParleyError("E_INVALID", "password must be 8-256 characters");
    }
    const id = newId("u");
    const passwordHash = await this.hasher.hash(password);
    await this.store.createUser({ id, name, passwordHash, createdAt: this.clock.now() });
    return { id, name };
  }

  async login(name: string, password: string, deviceName: string): Promise<LoginResult> {
    if (typeof deviceName !== "string" || deviceName.length < 1 || deviceName.length > 128) {
      throw new ParleyError("E_INVALID", "device name must be 1-128 characters");
    }
    const user =
      typeof name === "string" && NAME_RE.test(name) ? await this.store.findUserByName(name) : undefined;
    if (!user) {
      this.dummyHash ??= this.hasher.hash(newToken());
      await this.hasher.verify(await this.dummyHash, String(password));
      throw new ParleyError("E_BAD_CREDENTIALS");
    }
    if (!(await this.hasher.verify(user.passwordHash, String(password)))) {
      throw new ParleyError("E_BAD_CREDENTIALS");
    }
    const now = this.clock.now();
    const device = newId("d");
    const token = newToken();
    const expiresAt = now + this.options.tokenTtlMs;
    await this.store.createDevice(
      { id: device, userId: user.id, name: deviceName, createdAt: now, cursor: 0, lastSeenAt: now },
      { hash: sha256Hex(token), userId: user.id, deviceId: device, createdAt: now, expiresAt },
    );
    return { token, user: user.id, device, expiresAt };
  }

  /** Resolves the principal of a bearer token, or rejects E_TOKEN_INVALID (unknown, expired,
   * revoked, or its device revoked). */
  async authenticate(token: string): Promise<Principal> {
    if (typeof token !== "string" || token.length === 0 || token.length > 512) {
      throw new ParleyError("E_TOKEN_INVALID");
    }
    const tokenHash = sha256Hex(token);
    const record = await this.store.findToken(tokenHash);
    if (!record || record.revokedAt !== undefined || record.expiresAt <= this.clock.now()) {
      throw new ParleyError("E_TOKEN_INVALID");
    }
    return { user: record.userId, device: record.deviceId, tokenHash };
  }

  async findUser(name: string): Promise<UserInfo> {
    const user =
      typeof name === "string" && NAME_RE.test(name) ? await this.store.findUserByName(name) : undefined;
    if (!user) throw new ParleyError("E_NOT_FOUND", "no such user");
    return { id: user.id, name: user.name };
  }

  async getUser(id: UserId): Promise<UserInfo> {
    const user = await this.store.getUser(id);
    if (!user) throw new ParleyError("E_NOT_FOUND", "no such user");
    return { id: user.id, name: user.name };
  }

  /** The users among `ids` that exist, in the order first asked for; unknown ids are left out and
   * repeated ids answered once. E_INVALID for 0 or more than MAX_USER_LOOKUP ids, or an id that is
   * not a string of 1-64 characters. One Store read per distinct id. */
  async getUsers(ids: readonly UserId[]): Promise<UserInfo[]> {
    if (!Array.isArray(ids) || ids.length === 0 || ids.length > MAX_USER_LOOKUP) {
      throw new ParleyError("E_INVALID", `ask for 1-${MAX_USER_LOOKUP} user ids`);
    }
    for (const id of ids) {
      if (typeof id !== "string" || id.length === 0 || id.length > MAX_USER_ID_LENGTH) {
        throw new ParleyError("E_INVALID", `user ids must be 1-${MAX_USER_ID_LENGTH} characters`);
      }
    }
    const users = await Promise.all([...new Set<UserId>(ids)].map((id) => this.store.getUser(id)));
    return users.flatMap((u) => (u ? [{ id: u.id, name: u.name }] : []));
  }

  async listDevices(p: Principal): Promise<DeviceInfo[]> {
    const devices = await this.store.listDevices(p.user);
    return devices.map((d) => ({
      id: d.id,
      name: d.name,
      createdAt: d.createdAt,
      lastSeenAt: d.lastSeenAt,
      cursor: d.cursor,
      current: d.id === p.device,
      revoked: d.revokedAt !== undefined,
    }));
  }

  /** Revokes one of the caller's devices (and its tokens). E_NOT_FOUND if not theirs or already revoked. */
  async revokeDevice(p: Principal, device: DeviceId): Promise<void> {
    if (!(await this.store.revokeDevice(p.user, device, this.clock.now()))) {
      throw new ParleyError("E_NOT_FOUND", "no such device");
    }
  }
}
