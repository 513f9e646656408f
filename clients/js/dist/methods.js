// The REST API as methods, each typed from the OpenAPI document
// (src/generated/rest.ts): the calls that need nothing of the connection.
// The client (src/client.ts) extends this class, so they are its methods.
import { Emitter } from "./emitter.js";
export class RestMethods extends Emitter {
    /** Any REST operation, typed from the OpenAPI document. */
    request(operation, args) {
        return this.rest.call(operation, args);
    }
    profile() {
        return this.rest.call("GET /users/me");
    }
    user(id) {
        return this.rest.call("GET /users/{id}", { path: { id } });
    }
    /** People whose username starts with `prefix` (any case), by name; page on with `after`. */
    searchUsers(prefix, page = {}) {
        return this.rest.call("GET /users/search", { query: { q: prefix, ...page } });
    }
    /** One's conversations, most recent first. */
    conversations(query = {}) {
        return this.rest.call("GET /messages/conversations", { query });
    }
    createGroup(title, memberIds) {
        return this.rest.call("POST /conversations", { body: { title, member_ids: memberIds } });
    }
    group(id) {
        return this.rest.call("GET /conversations/{id}", { path: { id } });
    }
    addMembers(id, userIds) {
        return this.rest.call("POST /conversations/{id}/members", { path: { id }, body: { user_ids: userIds } });
    }
    /** Removes someone from a group (oneself: leaving it). */
    removeMember(id, userId) {
        return this.rest.call("DELETE /conversations/{id}/members/{user_id}", { path: { id, user_id: userId } });
    }
    renameGroup(id, title) {
        return this.rest.call("PATCH /conversations/{id}", { path: { id }, body: { title } });
    }
    /** Makes a group member an admin or a plain member again (owners and admins may). */
    setRole(id, userId, role) {
        return this.rest.call("PATCH /conversations/{id}/members/{user_id}", { path: { id, user_id: userId }, body: { role } });
    }
    /** Changes one's username or avatar. */
    updateProfile(changes) {
        return this.rest.call("PATCH /users/me", { body: changes });
    }
    /** One's counts: conversations, sent, received, unread. */
    stats() {
        return this.rest.call("GET /messages/stats");
    }
    /** Stops someone from messaging one (and from finding one by name). */
    block(userId) {
        return this.rest.call("POST /users/{id}/block", { path: { id: userId } });
    }
    unblock(userId) {
        return this.rest.call("DELETE /users/{id}/block", { path: { id: userId } });
    }
    /** Whom one blocked. */
    blocks(query = {}) {
        return this.rest.call("GET /users/me/blocks", { query });
    }
    /** Marks many received messages read at once (up to 1,000); each sender hears of it. */
    markManyRead(messageIds) {
        return this.rest.call("POST /messages/mark-read", { body: { message_ids: messageIds } });
    }
    /** Whether someone is online now (their profile says; `presence` events say when it changes). */
    async isOnline(userId) {
        return (await this.user(userId)).is_online;
    }
    /** Announces a file; PUT its bytes to the answer's `upload_url`, then send its id with a message. */
    announceAttachment(file) {
        return this.rest.call("POST /attachments", { body: file });
    }
    /** A short-lived download URL for an attachment. */
    attachmentUrl(id) {
        return this.rest.call("GET /attachments/{id}", { path: { id } });
    }
}
