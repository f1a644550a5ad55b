// The fuzz cases: one case is one connection's worth of messages, generated from the run seed and
// the case index alone (so `--seed S --case N` replays it). Valid frames come from fast-check
// arbitraries, the protocol package's own and targeted ones that name the run's real users,
// conversations and tokens, so the authorised paths of the server run too; mutate.ts breaks them.

import fc from "fast-check";
import * as A from "@parley/protocol/arbitraries";
import { LIMITS, SUPPORTED_VERSIONS } from "@parley/protocol";
import type { ClientFrame, HelloFrame } from "@parley/protocol";
import { type Draw, chance, drawFor, int, weighted } from "./draw.ts";
import { badUnit, type BadKind } from "./mutate.ts";
import { bigSend } from "./mutate-transport.ts";
import { type Encoded, type Transport, encodeFor } from "./wire.ts";

/** What the fuzzer knows of the server it attacks. */
export interface Targets {
  /** Conversation ids: some the fuzz accounts belong to, one they do not. */
  convs: readonly string[];
  users: readonly string[];
  /** Valid tokens of the fuzz accounts (never of the control clients). */
  tokens: readonly string[];
  maxFrameBytes: number;
}

export interface Unit extends Encoded {
  /** What made it, e.g. "valid:send", "structure:missing", "bytes:bitflip", "tcp:len-zero". */
  label: string;
}

export interface FuzzCase {
  seed: number;
  index: number;
  transport: Transport;
  /** The client logs in (a valid hello, then welcome) before sending the units. */
  login: boolean;
  /** Index into Targets.tokens of the account it logs in with. */
  account: number;
  units: Unit[];
  /** TCP: byte offsets where the stream is cut into separate writes (sorted). */
  cuts: number[];
  /** How the client ends a connection the server keeps open: close frame / FIN, or reset. */
  end: "close" | "reset";
}

type Phase = "first" | "mid" | "last";
type Kind = "valid" | "any" | "hello" | "ping" | "big" | BadKind;

// What each message of a case is. Most of a logged-in case is valid traffic (so each connection
// carries several frames and reaches the handlers); the last message is often bad.
const KINDS: Record<Phase, ReadonlyArray<readonly [number, Kind]>> = {
  first: [
    [25, "hello"],
    [12, "any"],
    [10, "valid"],
    [15, "structure"],
    [10, "raw"],
    [12, "bytes"],
    [6, "random"],
    [10, "transport"],
  ],
  mid: [
    [72, "valid"],
    [8, "any"],
    [6, "ping"],
    [1, "hello"],
    [0.4, "big"],
    [4, "bytes"],
    [3, "structure"],
    [1.5, "raw"],
    [0.5, "random"],
    [1.5, "transport"],
  ],
  last: [
    [30, "valid"],
    [5, "any"],
    [3, "ping"],
    [1, "big"],
    [20, "structure"],
    [11, "raw"],
    [15, "bytes"],
    [5, "random"],
    [10, "transport"],
  ],
};

const HELLO_VARIANTS = [
  [60, "ok"],
  [25, "bad-token"],
  [15, "bad-version"],
] as const;

const MAX_UNITS_LOGGED_IN = 16;
const MAX_UNITS_PRE_HELLO = 4;

export class CaseGenerator {
  /** Valid client frames aimed at the run's users and conversations, keyed by `t`. */
  private readonly targeted: fc.Arbitrary<ClientFrame>;
  private readonly hello: fc.Arbitrary<HelloFrame>;

  constructor(readonly targets: Targets) {
    this.targeted = targetedFrame(targets);
    this.hello = fc.record(
      {
        t: fc.constant("hello" as const),
        versions: fc.oneof(
          fc.constant(null).map(() => [1]),
          fc.array(A.uint(), { minLength: 1, maxLength: 3 }).map((v) => [...v, 1]),
        ),
        token: fc.constantFrom(...targets.tokens),
        agent: A.text(0, LIMITS.agent),
      },
      { requiredKeys: ["t", "versions", "token"], noNullPrototype: true },
    );
  }

  /** Case `index` of the run seeded `seed`. Deterministic. */
  generate(seed: number, index: number): FuzzCase {
    const draw = drawFor(seed, index);
    const transport = weighted<Transport>(draw, [
      [40, "tcp"],
      [30, "ws-binary"],
      [30, "ws-json"],
    ]);
    const login = chance(draw, 65);
    const account = int(draw, 0, this.targets.tokens.length - 1);
    const n = login ? int(draw, 1, MAX_UNITS_LOGGED_IN) : int(draw, 1, MAX_UNITS_PRE_HELLO);
    const units: Unit[] = [];
    for (let slot = 0; slot < n; slot++) {
      const phase: Phase = !login && slot === 0 ? "first" : slot === n - 1 ? "last" : "mid";
      units.push(this.unit(draw, transport, phase, slot));
    }
    const total = units.reduce((sum, u) => sum + u.bytes.length, 0);
    return {
      seed,
      index,
      transport,
      login,
      account,
      units,
      cuts: transport === "tcp" ? cutPoints(draw, total) : [],
      end: chance(draw, 70) ? "close" : "reset",
    };
  }

  /** A valid frame aimed at the run's targets, with a request id unique in its case. */
  validFrame(draw: Draw, slot: number): ClientFrame {
    return withId(draw, draw(this.targeted), slot);
  }

  private unit(draw: Draw, transport: Transport, phase: Phase, slot: number): Unit {
    const kind = weighted(draw, KINDS[phase]);
    const frame = (f: ClientFrame, label: string): Unit => ({ label, ...encodeFor(transport, f) });
    switch (kind) {
      case "valid": {
        const f = this.validFrame(draw, slot);
        return frame(f, `valid:${f.t}`);
      }
      case "any": {
        const f = withId(draw, draw(A.clientFrame()), slot);
        return frame(f, `any:${f.t}`);
      }
      case "hello": {
        const f = draw(this.hello);
        // Before welcome, also hellos the server must refuse: a token it never issued, or no
        // version in common.
        const variant = phase === "first" ? weighted(draw, HELLO_VARIANTS) : "ok";
        if (variant === "bad-token") f.token = draw(A.text(1, LIMITS.token));
        if (variant === "bad-version")
          f.versions = draw(
            fc.array(fc.integer({ min: Math.max(...SUPPORTED_VERSIONS) + 1, max: 2 ** 32 }), {
              minLength: 1,
              maxLength: 4,
            }),
          );
        return frame(f, variant === "ok" ? "valid:hello" : `valid:hello-${variant}`);
      }
      case "ping":
        return frame({ t: "ping", n: draw(A.uint()) }, "valid:ping");
      case "big":
        return bigSend(draw, transport, this.validFrame(draw, slot), this.targets.maxFrameBytes);
      default:
        return badUnit(kind, draw, transport, () => this.validFrame(draw, slot), this.targets.maxFrameBytes);
    }
  }
}

/** Request ids unique within a case, from four disjoint families (small, around 2^31 and 2^32,
 * just under 2^53). */
function withId(draw: Draw, f: ClientFrame, slot: number): ClientFrame {
  if (!("id" in f)) return f;
  const family = int(draw, 0, 3);
  f.id = [slot, 2 ** 31 + slot, 2 ** 32 + slot, Number.MAX_SAFE_INTEGER - slot][family]!;
  return f;
}

/** Where to cut a TCP stream of `total` bytes into writes: mostly not at all (one write per
 * message), sometimes at random offsets, rarely byte by byte at the start. */
function cutPoints(draw: Draw, total: number): number[] {
  if (total < 2) return [];
  const style = weighted(draw, [
    [70, "none"],
    [26, "random"],
    [4, "bytewise"],
  ] as const);
  if (style === "none") return [];
  if (style === "bytewise") return Array.from({ length: Math.min(total - 1, 48) }, (_, i) => i + 1);
  const cuts = new Set<number>();
  const count = int(draw, 1, 6);
  for (let i = 0; i < count; i++) cuts.add(int(draw, 1, total - 1));
  return [...cuts].sort((a, b) => a - b);
}

function record<T>(model: { [K in keyof T]: fc.Arbitrary<T[K]> }, required: Array<keyof T>): fc.Arbitrary<T> {
  return fc.record(model, { requiredKeys: required, noNullPrototype: true });
}

/** Valid client frames whose ids name real conversations and users most of the time, with
 * small seqs (existing messages) and small page limits (so a page stays cheap). */
function targetedFrame(t: Targets): fc.Arbitrary<ClientFrame> {
  const w = <T>(weight: number, arbitrary: fc.Arbitrary<T>) => ({ weight, arbitrary });
  const conv = fc.oneof(w(6, fc.constantFrom(...t.convs)), w(1, A.id()));
  const user = fc.oneof(w(3, fc.constantFrom(...t.users)), w(1, A.id()));
  const seq = fc.oneof(w(6, fc.integer({ min: 1, max: 64 })), w(1, A.seq1()));
  const uint = fc.oneof(w(3, fc.integer({ min: 0, max: 100 })), w(1, A.uint()));
  const limit = fc.oneof(
    w(8, fc.integer({ min: 1, max: 20 })),
    w(1, fc.integer({ min: 1, max: LIMITS.page })),
  );
  const cid = fc.oneof(w(1, fc.constantFrom("c1", "c2", "c3")), w(4, A.text(1, LIMITS.cid)));
  const type = fc.oneof(
    w(3, fc.constantFrom("text/plain", "application/octet-stream")),
    w(1, A.text(1, 128)),
  );
  const body = fc.oneof(w(10, fc.uint8Array({ maxLength: 64 })), w(1, fc.uint8Array({ maxLength: 4096 })));
  const emoji = fc.oneof(w(3, fc.constantFrom("👍", "❤️", "x", "🎉")), w(1, A.emoji()));
  const id = fc.constant(0); // replaced by withId
  const kind = fc.constantFrom("delivered" as const, "read" as const);
  const frames: Array<[number, fc.Arbitrary<ClientFrame>]> = [
    [
      22,
      record({ t: fc.constant("send"), id, conv, cid, type, body, replyTo: seq }, [
        "t",
        "id",
        "conv",
        "cid",
        "type",
        "body",
      ]),
    ],
    [6, record({ t: fc.constant("sync"), id, cursor: uint, limit }, ["t", "id", "cursor", "limit"])],
    [
      8,
      record({ t: fc.constant("history"), id, conv, before: uint, after: uint, limit }, [
        "t",
        "id",
        "conv",
        "limit",
      ]),
    ],
    [8, record({ t: fc.constant("receipt"), id, conv, kind, seq: uint }, ["t", "id", "conv", "kind", "seq"])],
    [
      8,
      record({ t: fc.constant("edit"), id, conv, seq, type, body }, [
        "t",
        "id",
        "conv",
        "seq",
        "type",
        "body",
      ]),
    ],
    [5, record({ t: fc.constant("delete"), id, conv, seq }, ["t", "id", "conv", "seq"])],
    [
      10,
      record({ t: fc.constant("react"), id, conv, seq, emoji, on: fc.boolean() }, [
        "t",
        "id",
        "conv",
        "seq",
        "emoji",
        "on",
      ]),
    ],
    [5, record({ t: fc.constant("typing"), conv }, ["t", "conv"])],
    [4, record({ t: fc.constant("watch"), users: fc.array(user, { maxLength: 8 }) }, ["t", "users"])],
    [
      8,
      record(
        {
          t: fc.constant("ack"),
          cursor: uint,
          convs: fc.array(record({ conv, seq: uint }, ["conv", "seq"]), { maxLength: 4 }),
        },
        ["t"],
      ),
    ],
    [2, record({ t: fc.constant("pong"), n: uint }, ["t", "n"])],
  ] as Array<[number, fc.Arbitrary<ClientFrame>]>;
  return fc.oneof(...frames.map(([weight, arbitrary]) => ({ weight, arbitrary })));
}
