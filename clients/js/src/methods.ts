// The REST API as methods, each typed from the OpenAPI document
// (src/generated/rest.ts): the calls that need nothing of the connection.
// The client (src/client.ts) extends this class, so they are its methods.

import { Emitter } from "./emitter.js";
import type { Operations } from "./generated/rest.js";
import type { CallArgs, Operation, Rest } from "./rest.js";

export abstract class RestMethods<Events extends { [K in keyof Events]: unknown }> extends Emitter<Events> {
  /** The REST API, typed from the OpenAPI document. */
  abstract readonly rest: Rest;

  /** Any REST operation, typed from the OpenAPI document. */
  request<K extends Operation>(operation: K, args?: CallArgs<K>): Promise<Operations[K]["response"]> {
    return this.rest.call(operation, args);
  }

  profile(): Promise<Operations["GET /users/me"]["response"]> {
    return this.rest.call("GET /users/me");
  }

  user(id: string): Promise<Operations["GET /users/{id}"]["response"]> {
    return this.rest.call("GET /users/{id}", { path: { id } });
  }

  /** People whose username starts with `prefix` (any case), by name; page on with `after`. */
  searchUsers(prefix: string, page: { after?: string; limit?: number } = {}): Promise<Operations["GET /users/search"]["response"]> {
    return this.rest.call("GET /users/search", { query: { q: prefix, ...page } });
  }

  /** One's conversations, most recent first. */
  conversations(query: Operations["GET /messages/conversations"]["query"] = {}): Promise<Operations["GET /messages/conversations"]["response"]> {
    return this.rest.call("GET /messages/conversations", { query });
  }

  createGroup(title: string, memberIds: string[]): Promise<Operations["POST /conversations"]["response"]> {
    return this.rest.call("POST /conversations", { body: { title, member_ids: memberIds } });
  }

  group(id: string): Promise<Operations["GET /conversations/{id}"]["response"]> {
    return this.rest.call("GET /conversations/{id}", { path: { id } });
  }

  addMembers(id: string, userIds: string[]): Promise<Operations["POST /conversations/{id}/members"]["response"]> {
    return this.rest.call("POST /conversations/{id}/members", { path: { id }, body: { user_ids: userIds } });
  }

  /** Removes someone from a group (oneself: leaving it). */
  removeMember(id: string, userId: string): Promise<Operations["DELETE /conversations/{id}/members/{user_id}"]["response"]> {
    return this.rest.call("DELETE /conversations/{id}/members/{user_id}", { path: { id, user_id: userId } });
  }

  renameGroup(id: string, title: string): Promise<Operations["PATCH /conversations/{id}"]["response"]> {
    return this.rest.call("PATCH /conversations/{id}", { path: { id }, body: { title } });
  }

  /** Makes a group member an admin or a plain member again (owners and admins may). */
  setRole(id: string, userId: string, role: Operations["PATCH /conversations/{id}/members/{user_id}"]["body"]["role"]): Promise<Operations["PATCH /conversations/{id}/members/{user_id}"]["response"]> {
    return this.rest.call("PATCH /conversations/{id}/members/{user_id}", { path: { id, user_id: userId }, body: { role } });
  }

  /** Changes one's username or avatar. */
  updateProfile(changes: Operations["PATCH /users/me"]["body"]): Promise<Operations["PATCH /users/me"]["response"]> {
    return this.rest.call("PATCH /users/me", { body: changes });
  }

  /** One's counts: conversations, sent, received, unread. */
  stats(): Promise<Operations["GET /messages/stats"]["response"]> {
    return this.rest.call("GET /messages/stats");
  }

  /** Stops someone from messaging one (and from finding one by name). */
  block(userId: string): Promise<Operations["POST /users/{id}/block"]["response"]> {
    return this.rest.call("POST /users/{id}/block", { path: { id: userId } });
  }

  unblock(userId: string): Promise<Operations["DELETE /users/{id}/block"]["response"]> {
    return this.rest.call("DELETE /users/{id}/block", { path: { id: userId } });
  }

  /** Whom one blocked. */
  blocks(query: Operations["GET /users/me/blocks"]["query"] = {}): Promise<Operations["GET /users/me/blocks"]["response"]> {
    return this.rest.call("GET /users/me/blocks", { query });
  }

  /** Marks many received messages read at once (up to 1,000); each sender hears of it. */
  markManyRead(messageIds: string[]): Promise<Operations["POST /messages/mark-read"]["response"]> {
    return this.rest.call("POST /messages/mark-read", { body: { message_ids: messageIds } });
  }

  /** Whether someone is online now (their profile says; `presence` events say when it changes). */
  async isOnline(userId: string): Promise<boolean> {
    return (await this.user(userId)).is_online;
  }

  /** Announces a file; PUT its bytes to the answer's `upload_url`, then send its id with a message. */
  announceAttachment(file: Operations["POST /attachments"]["body"]): Promise<Operations["POST /attachments"]["response"]> {
    return this.rest.call("POST /attachments", { body: file });
  }

  /** A short-lived download URL for an attachment. */
  attachmentUrl(id: string): Promise<Operations["GET /attachments/{id}"]["response"]> {
    return this.rest.call("GET /attachments/{id}", { path: { id } });
  }
}
