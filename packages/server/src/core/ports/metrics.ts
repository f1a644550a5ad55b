// What the core reports for monitoring. The composition root supplies an adapter
// (metrics/prometheus/) or nothing, in which case every report is ignored.

export interface Metrics {
  /** A group commit of `messages` sends ended after `seconds`, from the batch's start to the
   * store's answer (the transaction, its fsync, the hop to the writer thread and back). `ok`:
   * committed; otherwise rolled back. */
  commit(messages: number, seconds: number, ok: boolean): void;
  /** A send was refused by admission control (E_OVERLOADED). */
  sendRefused(): void;
}

export const NO_METRICS: Metrics = { commit() {}, sendRefused() {} };
