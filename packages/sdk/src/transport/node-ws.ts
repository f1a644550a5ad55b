import WebSocket from "ws";
import type { WebSocketConstructor } from "./ws-transport.ts";

// The `ws` package's WebSocket for Node.js versions without a global one (Node 20). It implements
// the browser API (binaryType, onmessage, protocol...) that WsTransport uses.

export const NodeWebSocket = WebSocket as unknown as WebSocketConstructor;
