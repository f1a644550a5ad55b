import type { ServerFrame } from "@parley/protocol";

// A large group's push reaches every online member in the same turn, and the bus hands each
// session the same frame object: encode it once per encoding and write the same bytes to every
// socket (neither ws nor net changes what it is given). Only such pushes are kept, weakly, by
// frame; every other frame goes to one connection and is encoded as before.

/** `encode`, remembering its result for pushes of a large group's log. */
export function sharedEncoder<T extends object | string>(
  encode: (frame: ServerFrame) => T,
): (frame: ServerFrame) => T {
  const done = new WeakMap<ServerFrame, T>();
  return (frame) => {
    if (frame.t !== "push" || frame.log === undefined) return encode(frame);
    let bytes = done.get(frame);
    if (bytes === undefined) {
      bytes = encode(frame);
      done.set(frame, bytes);
    }
    return bytes;
  };
}
