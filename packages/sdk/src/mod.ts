// @parley/sdk: the isomorphic client (browsers, Node.js, Deno, Bun). Node.js programs import
// @parley/sdk/node instead, which adds the TCP transport, the `ws` WebSocket and FileLocalStore.

export { ParleyClient, newCid, textOf } from "./client.ts";
export type {
  ClientEvents,
  ClientOptions,
  ClientState,
  ConnectedEvent,
  DisconnectedEvent,
  LoginOptions,
  PresenceEvent,
  RegisterOptions,
  SendOptions,
  TypingEvent,
} from "./client-types.ts";
export { CLIENT_ERRORS, ClientError } from "./client-error.ts";
export type { ClientErrorCode } from "./client-error.ts";
export { Emitter } from "./emitter.ts";
export type { EventMap, Listener } from "./emitter.ts";
export { MemoryLocalStore, StoreState } from "./local-store.ts";
export type { LocalStore, MessageQuery, PendingSend, StoreMeta, StoreOptions } from "./local-store.ts";
export type { SendResult } from "./outbox.ts";
export type { HistoryPage, HistoryQuery, UserInfo } from "./rest.ts";
export { SyncEngine } from "./sync-engine.ts";
export type { ReactionEvent, ReceiptEvent, SyncEvent } from "./sync-engine.ts";
export {
  BaseTransport,
  CLOSE_ABNORMAL,
  CLOSE_NORMAL,
  CLOSE_PROTOCOL_ERROR,
  getTransport,
  registerTransport,
} from "./transport/transport.ts";
export type {
  Encoding,
  Transport,
  TransportEvents,
  TransportFactory,
  TransportOptions,
} from "./transport/transport.ts";
export { setDefaultWebSocket, SUBPROTOCOLS, WsTransport } from "./transport/ws-transport.ts";
export type { WebSocketConstructor, WebSocketLike } from "./transport/ws-transport.ts";
export { ParleyError } from "@parley/protocol";
export type { Conversation, ConversationId, Message, UserId } from "@parley/protocol";
