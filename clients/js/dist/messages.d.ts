import type { ChatMessage, OwnChange } from "./feed.js";
import type { Attachment, ClientFrame, MessageOut, SendMessage, SyncMessage } from "./generated/protocol.js";
import type { Acked } from "./outbox.js";
import type { Message as RestMessage } from "./generated/rest.js";
/** A message frame (live or in a sync page) as the app sees it. */
export declare function fromWire(frame: MessageOut | SyncMessage): ChatMessage;
/** A message from the REST API as the app sees it. */
export declare function fromRest(m: RestMessage): ChatMessage;
/** The conversation a message belongs to, from `me`'s side: its group, or the other person. */
export declare function conversationOf(message: ChatMessage, me: string): string;
/** Where a message or typing signal goes, as the wire says it. */
export declare function destinationOf(input: {
    to?: string;
    conversationId?: string;
}): {
    to: string;
} | {
    conversation_id: string;
};
/**
 * The message an ack confirms, as the server stored it: `me` sent it,
 * `replied` is the message it answers (when held), `files` what it carries.
 */
export declare function sentMessage(frame: SendMessage, ack: Acked, me: string, replied: ChatMessage | undefined, files: Attachment[]): ChatMessage;
/** The change an acked edit, delete or reaction of one's own stands for. */
export declare function ownChange(frame: ClientFrame, ack: Acked, me: string): OwnChange | null;
