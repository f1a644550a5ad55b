import { describe, expect, it } from "vitest";
import { DEFAULT_MAX_FRAME_BYTES } from "@parley/protocol";
import { loadConfig } from "../src/config.ts";

describe("loadConfig", () => {
  it("has defaults", () => {
    expect(loadConfig([], {})).toEqual({
      dataDir: "./data",
      host: "127.0.0.1",
      httpPort: 8080,
      tcpPort: 8081,
      tls: undefined,
      store: "sqlite",
      logLevel: "info",
      maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
    });
  });

  it("reads every PARLEY_* variable", () => {
    const c = loadConfig([], {
      PARLEY_DATA: "/var/lib/parley",
      PARLEY_PORT: "9000",
      PARLEY_TCP_PORT: "9001",
      PARLEY_HOST: "0.0.0.0",
      PARLEY_TLS_CERT: "/etc/cert.pem",
      PARLEY_TLS_KEY: "/etc/key.pem",
      PARLEY_STORE: "memory",
      PARLEY_LOG_LEVEL: "debug",
      PARLEY_MAX_FRAME_BYTES: "131072",
    });
    expect(c).toEqual({
      dataDir: "/var/lib/parley",
      host: "0.0.0.0",
      httpPort: 9000,
      tcpPort: 9001,
      tls: { certFile: "/etc/cert.pem", keyFile: "/etc/key.pem" },
      store: "memory",
      logLevel: "debug",
      maxFrameBytes: 131072,
    });
  });

  it("lets flags override variables, in both spellings", () => {
    const env = { PARLEY_PORT: "9000", PARLEY_DATA: "/env", PARLEY_STORE: "memory" };
    const c = loadConfig(["--port", "7000", "--data=/flag", "--tcp-port", "0"], env);
    expect(c.httpPort).toBe(7000);
    expect(c.dataDir).toBe("/flag");
    expect(c.tcpPort).toBe(0);
    expect(c.store).toBe("memory");
  });

  it("ignores empty variables", () => {
    expect(loadConfig([], { PARLEY_PORT: "" }).httpPort).toBe(8080);
  });

  it.each([
    [["--port", "70000"], {}, /--port must be an integer from 0 to 65535/],
    [["--port", "-1"], {}, /--port/],
    [["--port", "80x"], {}, /--port/],
    [[], { PARLEY_TCP_PORT: "1.5" }, /PARLEY_TCP_PORT must be an integer/],
    [["--store", "postgres"], {}, /--store must be one of sqlite, memory/],
    [[], { PARLEY_LOG_LEVEL: "loud" }, /PARLEY_LOG_LEVEL must be one of/],
    [["--max-frame-bytes", "10"], {}, /--max-frame-bytes must be an integer from 1024/],
    [["--tls-cert", "c.pem"], {}, /--tls-cert and --tls-key/],
    [["--nope", "1"], {}, /unknown flag --nope/],
    [["--port"], {}, /--port needs a value/],
    [["--port", "--host", "x"], {}, /--port needs a value/],
    [["serve"], {}, /unexpected argument "serve"/],
  ])("refuses %j %j", (argv, env, message) => {
    expect(() => loadConfig(argv, env)).toThrow(message);
  });
});
