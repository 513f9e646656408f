import type { ChatMessage } from "./feed.js";
import type { MessageOut, SyncMessage } from "./generated/protocol.js";
import type { Message as RestMessage } from "./generated/rest.js";
/** A message frame (live or in a sync page) as the app sees it. */
export declare function fromWire(frame: MessageOut | SyncMessage): ChatMessage;
/** A message from the REST API as the app sees it. */
export declare function fromRest(m: RestMessage): ChatMessage;
/** The conversation a message belongs to, from `me`'s side: its group, or the other person. */
export declare function conversationOf(message: ChatMessage, me: string): string;
