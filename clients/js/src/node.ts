// Node-only helpers, apart from the main entry so that browsers never load
// `node:` modules.
import { readFile, rename, writeFile } from "node:fs/promises";

import { parseState, type ClientStorage } from "./storage.js";

/**
 * Keeps the client's state in a JSON file. Each save writes a temporary
 * file and renames it over the old one, so a crash leaves either state
 * whole.
 */
export function fileStorage(path: string): ClientStorage {
  return {
    async load() {
      try {
        return parseState(await readFile(path, "utf8"));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
        throw error;
      }
    },
    async save(state) {
      const temporary = `${path}.${process.pid}.tmp`;
      await writeFile(temporary, JSON.stringify(state));
      await rename(temporary, path);
    },
  };
}

export * from "./index.js";
