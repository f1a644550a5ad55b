import { describe, expect, it } from "vitest";
import type { DeviceRecord, TokenRecord } from "../../core/ports/store.ts";
import { T0, addUsers, expectCode } from "./fixtures.ts";
import type { GetStore } from "./fixtures.ts";

// Users, devices and tokens.

function device(id: string, userId: string, createdAt = T0): DeviceRecord {
  return { id, userId, name: `phone ${id}`, createdAt, cursor: 0, lastSeenAt: createdAt };
}

function token(hash: string, userId: string, deviceId: string): TokenRecord {
  return { hash, userId, deviceId, createdAt: T0, expiresAt: T0 + 3_600_000 };
}

export function accountCases(store: GetStore): void {
  describe("users", () => {
    it("creates a user and finds it by id and by name, case-insensitively", async () => {
      const alice = { id: "u1", name: "Alice", passwordHash: "h", createdAt: T0 };
      await store().createUser(alice);
      expect(await store().getUser("u1")).toEqual(alice);
      expect(await store().findUserByName("Alice")).toEqual(alice);
      expect(await store().findUserByName("aLICE")).toEqual(alice);
      expect(await store().findUserByName("alic")).toBeUndefined();
      expect(await store().getUser("nobody")).toBeUndefined();
    });

    it("refuses a taken name in any case (E_CONFLICT) and a taken id, writing nothing", async () => {
      await store().createUser({ id: "u1", name: "alice", passwordHash: "h", createdAt: T0 });
      await expectCode(
        store().createUser({ id: "u2", name: "ALICE", passwordHash: "h", createdAt: T0 }),
        "E_CONFLICT",
      );
      await expectCode(
        store().createUser({ id: "u1", name: "bob", passwordHash: "h", createdAt: T0 }),
        "E_CONFLICT",
      );
      expect(await store().getUser("u2")).toBeUndefined();
      expect(await store().findUserByName("bob")).toBeUndefined();
      // Both refused writes left the names free for someone else.
      await store().createUser({ id: "u3", name: "bob", passwordHash: "h", createdAt: T0 });
      expect((await store().findUserByName("BOB"))?.id).toBe("u3");
    });

    it("returns copies: mutating a result does not change the store", async () => {
      await addUsers(store(), "u1");
      const u = await store().getUser("u1");
      u!.name = "changed";
      expect((await store().getUser("u1"))?.name).toBe("name-u1");
    });

    it("starts every user with an empty update log", async () => {
      await addUsers(store(), "u1");
      expect(await store().head("u1")).toBe(0);
      expect(await store().head("nobody")).toBe(0);
      expect(await store().readUpdates("u1", 0, 10)).toEqual([]);
    });
  });

  describe("devices and tokens", () => {
    it("creates a device with its token and lists the user's devices in creation order", async () => {
      await addUsers(store(), "u1", "u2");
      await store().createDevice(device("d2", "u1", T0 + 5), token("t2", "u1", "d2"));
      await store().createDevice(device("d1", "u1", T0 + 1), token("t1", "u1", "d1"));
      await store().createDevice(device("d3", "u2"), token("t3", "u2", "d3"));
      expect(await store().getDevice("d1")).toEqual(device("d1", "u1", T0 + 1));
      expect((await store().listDevices("u1")).map((d) => d.id)).toEqual(["d1", "d2"]);
      expect(await store().listDevices("nobody")).toEqual([]);
      expect(await store().findToken("t1")).toEqual(token("t1", "u1", "d1"));
      expect(await store().findToken("nope")).toBeUndefined();
      expect(await store().getDevice("nope")).toBeUndefined();
    });

    it("refuses bad devices atomically: unknown user, mismatched token, taken id or token hash", async () => {
      await addUsers(store(), "u1", "u2");
      await expectCode(
        store().createDevice(device("d1", "ghost"), token("t1", "ghost", "d1")),
        "E_NOT_FOUND",
      );
      await expectCode(store().createDevice(device("d1", "u1"), token("t1", "u2", "d1")), "E_INVALID");
      await expectCode(store().createDevice(device("d1", "u1"), token("t1", "u1", "d9")), "E_INVALID");
      await store().createDevice(device("d1", "u1"), token("t1", "u1", "d1"));
      await expectCode(store().createDevice(device("d1", "u2"), token("t2", "u2", "d1")), "E_CONFLICT");
      await expectCode(store().createDevice(device("d2", "u1"), token("t1", "u1", "d2")), "E_CONFLICT");
      // The device of a refused pair was not created either.
      expect(await store().getDevice("d2")).toBeUndefined();
      expect(await store().findToken("t2")).toBeUndefined();
      expect((await store().listDevices("u1")).map((d) => d.id)).toEqual(["d1"]);
    });

    it("revokes a device and all its tokens, once, and only the owner's", async () => {
      await addUsers(store(), "u1", "u2");
      await store().createDevice(device("d1", "u1"), token("t1", "u1", "d1"));
      await store().createDevice(device("d2", "u1"), token("t2", "u1", "d2"));
      expect(await store().revokeDevice("u2", "d1", T0 + 10)).toBe(false);
      expect(await store().revokeDevice("u1", "nope", T0 + 10)).toBe(false);
      expect((await store().getDevice("d1"))?.revokedAt).toBeUndefined();

      await store().revokeToken("t1", T0 + 5);
      expect(await store().revokeDevice("u1", "d1", T0 + 10)).toBe(true);
      expect((await store().getDevice("d1"))?.revokedAt).toBe(T0 + 10);
      // An already revoked token keeps the time it was revoked.
      expect((await store().findToken("t1"))?.revokedAt).toBe(T0 + 5);
      expect(await store().revokeDevice("u1", "d1", T0 + 20)).toBe(false);
      expect((await store().getDevice("d1"))?.revokedAt).toBe(T0 + 10);
      // The other device and its token are untouched.
      expect((await store().getDevice("d2"))?.revokedAt).toBeUndefined();
      expect((await store().findToken("t2"))?.revokedAt).toBeUndefined();
      // Revoking a device revokes its live token.
      expect(await store().revokeDevice("u1", "d2", T0 + 30)).toBe(true);
      expect((await store().findToken("t2"))?.revokedAt).toBe(T0 + 30);
    });

    it("revokes a token once; an unknown token is a no-op", async () => {
      await addUsers(store(), "u1");
      await store().createDevice(device("d1", "u1"), token("t1", "u1", "d1"));
      await store().revokeToken("t1", T0 + 5);
      await store().revokeToken("t1", T0 + 9);
      expect((await store().findToken("t1"))?.revokedAt).toBe(T0 + 5);
      await store().revokeToken("unknown", T0);
      expect((await store().getDevice("d1"))?.revokedAt).toBeUndefined();
    });

    it("touchDevice raises the cursor, never lowers it, and sets lastSeenAt", async () => {
      await addUsers(store(), "u1");
      await store().createDevice(device("d1", "u1"), token("t1", "u1", "d1"));
      await store().touchDevice("d1", 7, T0 + 1);
      expect(await store().getDevice("d1")).toMatchObject({ cursor: 7, lastSeenAt: T0 + 1 });
      await store().touchDevice("d1", 3, T0 + 2);
      expect(await store().getDevice("d1")).toMatchObject({ cursor: 7, lastSeenAt: T0 + 2 });
      await store().touchDevice("d1", 9, T0 + 3);
      expect(await store().getDevice("d1")).toMatchObject({ cursor: 9, lastSeenAt: T0 + 3 });
      await expectCode(store().touchDevice("nope", 1, T0), "E_NOT_FOUND");
      await expectCode(store().touchDevice("d1", 1.5, T0), "E_INVALID");
    });

    it("returns copies of devices and tokens", async () => {
      await addUsers(store(), "u1");
      await store().createDevice(device("d1", "u1"), token("t1", "u1", "d1"));
      const d = await store().getDevice("d1");
      d!.cursor = 99;
      const [listed] = await store().listDevices("u1");
      listed!.revokedAt = 1;
      const t = await store().findToken("t1");
      t!.revokedAt = 1;
      expect(await store().getDevice("d1")).toEqual(device("d1", "u1"));
      expect((await store().findToken("t1"))?.revokedAt).toBeUndefined();
    });
  });
}
