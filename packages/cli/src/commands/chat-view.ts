import type { Conversation, Message } from "@parley/sdk/node";
import { textOf } from "@parley/sdk/node";

// What `parley chat` shows, as pure functions of the data: labels, list lines, message lines,
// unread counts, and which page of history opening a conversation prints.

/** At most this many unread messages are printed when a conversation is opened. */
export const MAX_UNREAD_SHOWN = 50;
/** With nothing unread, opening a conversation prints this many of its last messages. */
export const CONTEXT_SHOWN = 10;

/** A short, readable form of an id: "c_k3j5ab7x..." -> "k3j5ab". */
export function shortId(id: string): string {
  return id.replace(/^[a-z]+_/, "").slice(0, 6);
}

/** How a user shows: their name, else "user:<short id>" (not looked up, or no such user). */
export function userLabel(id: string, names: ReadonlyMap<string, string>): string {
  return names.get(id) ?? `user:${shortId(id)}`;
}

/** The other member of a direct conversation (`me` for one with oneself); undefined for a group. */
export function directPeer(conv: Conversation, me: string): string | undefined {
  if (conv.kind === "group") return undefined;
  return conv.members.find((m) => m.user !== me)?.user ?? me;
}

/** "#name" for a group; the other member's name (or short id) for a direct conversation. */
export function conversationLabel(
  conv: Conversation,
  me: string,
  names: ReadonlyMap<string, string>,
): string {
  const peer = directPeer(conv, me);
  return peer === undefined ? `#${conv.name}` : userLabel(peer, names);
}

/** The conversation `target` names: a full id, a short id, or "#group" (case-insensitive). */
export function findConversation(target: string, convs: Iterable<Conversation>): Conversation | undefined {
  const list = [...convs];
  const t = target.toLowerCase();
  return (
    list.find((c) => c.id === target) ??
    list.find((c) => shortId(c.id) === t) ??
    (t.startsWith("#")
      ? list.find((c) => c.kind === "group" && c.name.toLowerCase() === t.slice(1))
      : undefined)
  );
}

/** Messages of `conv` after `me`'s read mark: lastSeq minus the higher of the mark the server
 * reported and `localRead` (marked here, maybe not yet sent). 0 if `me` is not a member. */
export function unreadCount(conv: Conversation, me: string, localRead = 0): number {
  const member = conv.members.find((m) => m.user === me);
  if (!member) return 0;
  return Math.max(0, conv.lastSeq - Math.max(member.read, localRead));
}

/** One line of /list: ` * k3j5ab  bob  (direct, 5 messages, 2 unread)`; `*` marks the open one. */
export function conversationLine(conv: Conversation, label: string, unread: number, open: boolean): string {
  // A large group lists only some of its members; memberCount counts them all.
  const what = conv.kind === "group" ? `group, ${conv.memberCount ?? conv.members.length} members` : "direct";
  const count = `${conv.lastSeq} message${conv.lastSeq === 1 ? "" : "s"}`;
  const news = unread > 0 ? `, ${unread} unread` : "";
  return ` ${open ? "*" : " "} ${shortId(conv.id)}  ${label}  (${what}, ${count}${news})`;
}

/** "3 unread messages in 2 conversations." or "No unread messages." */
export function unreadSummary(unread: number, conversations: number): string {
  if (unread === 0) return "No unread messages.";
  const s = (n: number) => (n === 1 ? "" : "s");
  return `${unread} unread message${s(unread)} in ${conversations} conversation${s(conversations)}.`;
}

/** The history page that opening a conversation prints: the unread messages (after `read`, the
 * newest MAX_UNREAD_SHOWN of them), else the last CONTEXT_SHOWN messages. */
export function openingPage(
  lastSeq: number,
  read: number,
): { unread: number; query: { after?: number; limit: number } } {
  const unread = Math.max(0, lastSeq - read);
  if (unread === 0) return { unread, query: { limit: CONTEXT_SHOWN } };
  return { unread, query: { after: Math.max(read, lastSeq - MAX_UNREAD_SHOWN), limit: MAX_UNREAD_SHOWN } };
}

/** One message as a line: `[label] sender: text`. */
export function formatMessage(msg: Message, label: string, sender: string): string {
  let body: string;
  if (msg.deleted) body = "(deleted)";
  else if (msg.type.startsWith("text/")) body = textOf(msg);
  else body = `<${msg.type}, ${msg.body.byteLength} bytes>`;
  return `[${label}] ${sender}: ${body}${msg.editedAt !== undefined && !msg.deleted ? " (edited)" : ""}`;
}
