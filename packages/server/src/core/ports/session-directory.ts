import type { DeviceId, UserId } from "@parley/protocol";

// The SessionDirectory port: which devices are online now, and where. In one process it is a map;
// in a cluster it says which gateway holds which device. Online state is ephemeral: it is never
// persisted, and a restart starts with nobody online.

export interface SessionEntry {
  user: UserId;
  device: DeviceId;
  /** Connection id, unique within the process that holds it. */
  conn: string;
  since: number;
}

export interface SessionDirectory {
  /** Registers a connection. Returns true if the user had no other connection (came online). */
  add(entry: SessionEntry): boolean;
  /** Removes a connection. Returns true if it was the user's last one (went offline). */
  remove(entry: SessionEntry): boolean;
  isOnline(user: UserId): boolean;
  /** Connections of one user (any order). */
  sessions(user: UserId): SessionEntry[];
  /** Number of connections held. */
  size(): number;
}
