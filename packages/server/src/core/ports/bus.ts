// The Bus port: routing of live events between the core and whoever holds connections. It never
// holds the only copy of anything: durable state is in the Store, and a lost bus message is
// recovered by the client's next sync. Delivery to one subscriber preserves publish order per
// topic.

/** A handle that stops a subscription; calling it twice is harmless. */
export type Unsubscribe = () => void;

export interface Bus<T = unknown> {
  /** Delivers `event` to every current subscriber of `topic`. Synchronous for MemoryBus. */
  publish(topic: string, event: T): void;
  subscribe(topic: string, handler: (event: T) => void): Unsubscribe;
  close(): Promise<void>;
}
