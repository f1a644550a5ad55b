import type { Conversation, ConversationId, DeviceId, Message, Role, UserId } from "@parley/protocol";

// Types of the core's public API, shared by the REST gateway, the CLI and tests.

/** Who is calling: an authenticated device of a user. */
export interface Principal {
  user: UserId;
  device: DeviceId;
  /** sha256 of the bearer token, so logout can revoke exactly this token. */
  tokenHash: string;
}

export interface LoginResult {
  token: string;
  user: UserId;
  device: DeviceId;
  expiresAt: number;
}

export interface DeviceInfo {
  id: DeviceId;
  name: string;
  createdAt: number;
  lastSeenAt: number;
  cursor: number;
  current: boolean;
  revoked: boolean;
}

export interface UserInfo {
  id: UserId;
  name: string;
}

export interface SendInput {
  conv: ConversationId;
  cid: string;
  type: string;
  body: Uint8Array;
  replyTo?: number;
}

export interface SendResult {
  conv: ConversationId;
  cid: string;
  seq: number;
  ts: number;
  duplicate: boolean;
}

export interface HistoryPage {
  messages: Message[];
  more: boolean;
}

export type { Conversation, Role };
