import { type ClientStorage } from "./storage.js";
/**
 * Keeps the client's state in a JSON file. Each save writes a temporary
 * file and renames it over the old one, so a crash leaves either state
 * whole.
 */
export declare function fileStorage(path: string): ClientStorage;
export * from "./index.js";
