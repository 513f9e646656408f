import { Emitter } from "./emitter.js";
import type { Operations } from "./generated/rest.js";
import type { CallArgs, Operation, Rest } from "./rest.js";
export declare abstract class RestMethods<Events extends {
    [K in keyof Events]: unknown;
}> extends Emitter<Events> {
    /** The REST API, typed from the OpenAPI document. */
    abstract readonly rest: Rest;
    /** Any REST operation, typed from the OpenAPI document. */
    request<K extends Operation>(operation: K, args?: CallArgs<K>): Promise<Operations[K]["response"]>;
    profile(): Promise<Operations["GET /users/me"]["response"]>;
    user(id: string): Promise<Operations["GET /users/{id}"]["response"]>;
    /** People whose username starts with `prefix` (any case), by name; page on with `after`. */
    searchUsers(prefix: string, page?: {
        after?: string;
        limit?: number;
    }): Promise<Operations["GET /users/search"]["response"]>;
    /** One's conversations, most recent first. */
    conversations(query?: Operations["GET /messages/conversations"]["query"]): Promise<Operations["GET /messages/conversations"]["response"]>;
    createGroup(title: string, memberIds: string[]): Promise<Operations["POST /conversations"]["response"]>;
    group(id: string): Promise<Operations["GET /conversations/{id}"]["response"]>;
    addMembers(id: string, userIds: string[]): Promise<Operations["POST /conversations/{id}/members"]["response"]>;
    /** Removes someone from a group (oneself: leaving it). */
    removeMember(id: string, userId: string): Promise<Operations["DELETE /conversations/{id}/members/{user_id}"]["response"]>;
    renameGroup(id: string, title: string): Promise<Operations["PATCH /conversations/{id}"]["response"]>;
    /** Makes a group member an admin or a plain member again (owners and admins may). */
    setRole(id: string, userId: string, role: Operations["PATCH /conversations/{id}/members/{user_id}"]["body"]["role"]): Promise<Operations["PATCH /conversations/{id}/members/{user_id}"]["response"]>;
    /** Changes one's username or avatar. */
    updateProfile(changes: Operations["PATCH /users/me"]["body"]): Promise<Operations["PATCH /users/me"]["response"]>;
    /** One's counts: conversations, sent, received, unread. */
    stats(): Promise<Operations["GET /messages/stats"]["response"]>;
    /** Stops someone from messaging one (and from finding one by name). */
    block(userId: string): Promise<Operations["POST /users/{id}/block"]["response"]>;
    unblock(userId: string): Promise<Operations["DELETE /users/{id}/block"]["response"]>;
    /** Whom one blocked. */
    blocks(query?: Operations["GET /users/me/blocks"]["query"]): Promise<Operations["GET /users/me/blocks"]["response"]>;
    /** Marks many received messages read at once (up to 1,000); each sender hears of it. */
    markManyRead(messageIds: string[]): Promise<Operations["POST /messages/mark-read"]["response"]>;
    /** Whether someone is online now (their profile says; `presence` events say when it changes). */
    isOnline(userId: string): Promise<boolean>;
    /** Announces a file; PUT its bytes to the answer's `upload_url`, then send its id with a message. */
    announceAttachment(file: Operations["POST /attachments"]["body"]): Promise<Operations["POST /attachments"]["response"]>;
    /** A short-lived download URL for an attachment. */
    attachmentUrl(id: string): Promise<Operations["GET /attachments/{id}"]["response"]>;
}
