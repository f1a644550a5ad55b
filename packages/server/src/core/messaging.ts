import { ParleyError } from "@parley/protocol";
import type { ConversationId, Message, ReceiptKind, Role } from "@parley/protocol";
import { Admission, type SheddingEvent } from "./admission.ts";
import type { HistoryPage, Principal, SendInput, SendResult } from "./api.ts";
import type { Conversations } from "./conversations.ts";
import { GroupCommitter } from "./group-committer.ts";
import type { CoreOptions } from "./options.ts";
import type { Clock } from "./ports/clock.ts";
import type { Metrics } from "./ports/metrics.ts";
import type { AppendResult, LogUpdate, MessageChange, NewMessage, Store } from "./ports/store.ts";

// Messages: send (group-committed, idempotent by client id), edit, delete (recall), reactions,
// history and receipts. Everything that changes what members see is published after commit.

const CID_MAX = 64;
const TYPE_MAX = 128;
const EMOJI_MAX = 32;

export class Messaging {
  private readonly committer: GroupCommitter;

  constructor(
    private readonly store: Store,
    private readonly conversations: Conversations,
    private readonly clock: Clock,
    private readonly options: CoreOptions,
    private readonly publish: (updates: LogUpdate[]) => void,
    /** The process's resident set size in bytes, for options.maxRssBytes (admission.ts). */
    rssBytes?: () => number,
    /** Told when admission starts and stops refusing sends. */
    onShedding?: (event: SheddingEvent) => void,
    metrics?: Metrics,
    /** Pushes waiting in the core's fan-out queue, for options.maxFanOutBacklog. */
    fanOutBacklog?: () => number,
  ) {
    const admission = new Admission(options, {
      now: () => clock.now(),
      ...(fanOutBacklog !== undefined ? { fanOutBacklog } : {}),
      ...(rssBytes !== undefined ? { rssBytes } : {}),
      ...(onShedding !== undefined ? { onShedding } : {}),
    });
    this.committer = new GroupCommitter(
      store,
      (results) => this.committed(results),
      options.commitBatchMax,
      admission,
      options.commitBatchBytes,
      metrics,
    );
  }

  /** Resolves once the message is durably committed (or was already: duplicate). Rejects
   * E_OVERLOADED (nothing stored) when admission control refuses it. */
  send(p: Principal, input: SendInput): Promise<SendResult> {
    return new Promise((resolve, reject) =>
      this.sendWith(p, input, (err, result) =>
        result !== undefined ? resolve(result) : reject(err ?? new Error("no result")),
      ),
    );
  }

  /** send() with a callback, told exactly once: before this returns if the input is refused,
   * else once its batch ends (GroupCommitter.enqueue says why). `done` must not throw. */
  sendWith(
    p: Principal,
    input: SendInput,
    done: (err: Error | undefined, result: SendResult | undefined) => void,
  ): void {
    const invalid = this.invalid(input);
    if (invalid) {
      done(invalid, undefined);
      return;
    }
    const item: NewMessage = {
      conv: input.conv,
      from: p.user,
      dev: p.device,
      cid: input.cid,
      type: input.type,
      body: input.body,
      ts: this.clock.now(),
    };
    // Set after, not spread in: a spread of a conditional literal allocates and copies one more
    // object per send.
    if (input.replyTo !== undefined) item.replyTo = input.replyTo;
    this.committer.enqueue(item, (err, result) => {
      let outcome: Error | SendResult;
      try {
        outcome = this.outcome(input, err, result);
      } catch (bug) {
        // A malformed result: this send fails (E_INTERNAL where it is answered), not the batch.
        outcome = bug instanceof Error ? bug : new Error(String(bug));
      }
      if (outcome instanceof Error) done(outcome, undefined);
      else done(undefined, outcome);
    });
  }

  /** What a send's caller is told of its committer's answer. */
  private outcome(
    input: SendInput,
    err: Error | undefined,
    result: AppendResult | undefined,
  ): Error | SendResult {
    if (result === undefined) return err ?? new Error("the committer gave no result");
    if (!result.ok) return new ParleyError(result.code, result.message);
    // A resend whose cid was first used in another conversation must not reveal that one.
    if (result.msg.conv !== input.conv)
      return new ParleyError("E_INVALID", "cid already used for another message");
    return {
      conv: result.msg.conv,
      cid: result.msg.cid,
      seq: result.msg.seq,
      ts: result.msg.ts,
      duplicate: result.duplicate,
    };
  }

  /** Why a send's input is refused, if it is. */
  private invalid(input: SendInput): ParleyError | undefined {
    if (!isString(input.cid, CID_MAX))
      return new ParleyError("E_INVALID", `cid must be 1-${CID_MAX} characters`);
    if (!isString(input.type, TYPE_MAX))
      return new ParleyError("E_INVALID", `type must be 1-${TYPE_MAX} characters`);
    if (!(input.body instanceof Uint8Array)) return new ParleyError("E_INVALID", "body must be bytes");
    if (input.body.byteLength > this.options.maxFrameBytes)
      return new ParleyError("E_INVALID", "body too large");
    if (input.replyTo !== undefined && !isSeq(input.replyTo))
      return new ParleyError("E_INVALID", "replyTo must be a seq");
    if (typeof input.conv !== "string") return new ParleyError("E_NOT_FOUND", "no such conversation");
    return undefined;
  }

  async edit(p: Principal, conv: ConversationId, seq: number, type: string, body: Uint8Array): Promise<void> {
    checkString(type, "type", TYPE_MAX);
    if (!(body instanceof Uint8Array) || body.byteLength > this.options.maxFrameBytes) {
      throw new ParleyError("E_INVALID", "body must be bytes within the frame limit");
    }
    const { msg } = await this.visibleMessage(p, conv, seq);
    if (msg.from !== p.user) throw new ParleyError("E_FORBIDDEN", "only the sender can edit a message");
    if (msg.deleted) throw new ParleyError("E_CONFLICT", "the message was deleted");
    await this.change({ kind: "edit", conv, seq, type, body, at: this.clock.now() });
  }

  async delete(p: Principal, conv: ConversationId, seq: number): Promise<void> {
    const { msg, role } = await this.visibleMessage(p, conv, seq);
    if (msg.deleted) return;
    // Owners and admins exist only in groups: direct conversations have members only.
    if (msg.from !== p.user && role === "member") {
      throw new ParleyError("E_FORBIDDEN", "only the sender or a group admin can delete a message");
    }
    await this.change({ kind: "delete", conv, seq, at: this.clock.now() });
  }

  async react(p: Principal, conv: ConversationId, seq: number, emoji: string, on: boolean): Promise<void> {
    checkString(emoji, "emoji", EMOJI_MAX);
    if (typeof on !== "boolean") throw new ParleyError("E_INVALID", "on must be a boolean");
    const { msg } = await this.visibleMessage(p, conv, seq);
    if (msg.deleted) throw new ParleyError("E_CONFLICT", "the message was deleted");
    await this.change({ kind: "react", conv, seq, user: p.user, emoji, on });
  }

  async history(
    p: Principal,
    conv: ConversationId,
    q: { before?: number | undefined; after?: number | undefined; limit?: number | undefined },
  ): Promise<HistoryPage> {
    await this.conversations.requireRole(p, conv);
    if (q.before !== undefined && q.after !== undefined)
      throw new ParleyError("E_INVALID", "give before or after, not both");
    if (q.before !== undefined && !isSeqOrZero(q.before))
      throw new ParleyError("E_INVALID", "before must be a seq");
    if (q.after !== undefined && !isSeqOrZero(q.after))
      throw new ParleyError("E_INVALID", "after must be a seq");
    const limit = Math.min(Math.max(1, Math.floor(q.limit ?? 50)), this.options.historyPageMax);
    if (!Number.isFinite(limit)) throw new ParleyError("E_INVALID", "limit must be a number");
    const rows = await this.store.history(conv, {
      ...(q.before !== undefined ? { before: q.before } : {}),
      ...(q.after !== undefined ? { after: q.after } : {}),
      limit: limit + 1,
    });
    if (rows.length <= limit) return { messages: rows, more: false };
    // One extra row was read to know whether there is more; drop it on the far side.
    return {
      messages: q.after !== undefined ? rows.slice(0, limit) : rows.slice(rows.length - limit),
      more: true,
    };
  }

  /** Raises the caller's delivered/read mark in `conv`. */
  async receipt(p: Principal, conv: ConversationId, kind: ReceiptKind, seq: number): Promise<void> {
    if (kind !== "delivered" && kind !== "read")
      throw new ParleyError("E_INVALID", "kind must be delivered or read");
    if (!isSeqOrZero(seq)) throw new ParleyError("E_INVALID", "seq must be a non-negative integer");
    if (typeof conv !== "string") throw new ParleyError("E_NOT_FOUND", "no such conversation");
    this.publish(await this.store.setReceipt(conv, p.user, kind, seq));
  }

  /** Resolves when every send submitted so far is committed. */
  drain(): Promise<void> {
    return this.committer.drain();
  }

  private committed(results: AppendResult[]): void {
    for (const r of results) if (r.ok && !r.duplicate) this.publish(r.updates);
  }

  /** The message and the caller's role; E_NOT_FOUND for non-members and missing messages. */
  private async visibleMessage(
    p: Principal,
    conv: ConversationId,
    seq: number,
  ): Promise<{ msg: Message; role: Role }> {
    const role = await this.conversations.requireRole(p, conv);
    const msg = isSeq(seq) ? await this.store.getMessage(conv, seq) : undefined;
    if (!msg) throw new ParleyError("E_NOT_FOUND", "no such message");
    return { msg, role };
  }

  private async change(change: MessageChange): Promise<void> {
    this.publish((await this.store.changeMessage(change)).updates);
  }
}

function checkString(value: unknown, field: string, max: number): void {
  if (!isString(value, max)) throw new ParleyError("E_INVALID", `${field} must be 1-${max} characters`);
}

function isString(value: unknown, max: number): value is string {
  return typeof value === "string" && value.length > 0 && value.length <= max;
}

function isSeq(n: unknown): n is number {
  return Number.isSafeInteger(n) && (n as number) >= 1;
}

function isSeqOrZero(n: unknown): n is number {
  return Number.isSafeInteger(n) && (n as number) >= 0;
}
