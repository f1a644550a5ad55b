import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { WebSocketServer, type WebSocket } from "ws";
import { openConn } from "./idle-load.ts";

// The reasons the idle and login-storm load processes report for a WebSocket connection that
// ends: the status of a refused upgrade, the code of the server's close frame.

describe("openConn over WebSocket", () => {
  let wss: WebSocketServer | undefined;

  afterEach(async () => {
    if (wss) await new Promise((resolve) => wss!.close(resolve));
    wss = undefined;
  });

  async function server(): Promise<string> {
    wss = new WebSocketServer({
      host: "127.0.0.1",
      port: 0,
      path: "/v1/ws",
      handleProtocols: () => "parley.v1.binary",
    });
    await once(wss, "listening");
    return `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/v1/ws`;
  }

  function reason(wsUrl: string): Promise<string> {
    return new Promise((resolve) =>
      openConn({ transport: "ws", host: "127.0.0.1", tcpPort: 0, wsUrl }, undefined, {
        onOpen: () => {},
        onFrame: () => {},
        onClose: resolve,
      }),
    );
  }

  it("reports a refused upgrade as HTTP and its status", async () => {
    const url = await server();
    expect(await reason(url.replace("/v1/ws", "/elsewhere"))).toBe("HTTP 400");
  });

  it("reports the server's close frame as ws close and its code", async () => {
    const url = await server();
    wss!.on("connection", (ws: WebSocket) => ws.close(4004, "too many"));
    expect(await reason(url)).toBe("ws close 4004");
  });
});
