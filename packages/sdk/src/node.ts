// @parley/sdk/node: everything in @parley/sdk, plus what only Node.js has. Importing it registers
// the "tcp" transport and makes the `ws` package the WebSocket of the "ws" transport.

import { NodeWebSocket } from "./transport/node-ws.ts";
import { TcpTransport } from "./transport/tcp-transport.ts";
import { registerTransport } from "./transport/transport.ts";
import { setDefaultWebSocket } from "./transport/ws-transport.ts";

export * from "./mod.ts";
export { FileLocalStore } from "./store/file-store.ts";
export type { FileStoreOptions } from "./store/file-store.ts";
export { NodeWebSocket } from "./transport/node-ws.ts";
export { TcpTransport } from "./transport/tcp-transport.ts";
export type { TcpTransportOptions } from "./transport/tcp-transport.ts";

registerTransport("tcp", (options) => new TcpTransport(options));
setDefaultWebSocket(NodeWebSocket);
