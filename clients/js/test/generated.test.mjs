// The generated types follow the documents: a type changed in either
// document without `npm run generate` fails the check CI runs.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { root } from "./cluster.mjs";

const generate = join(root, "clients", "js", "scripts", "generate.mjs");

/** Runs `generate.mjs --check` against copies of the documents, `change` applied to one. */
function checkWith(file, change) {
  const dir = mkdtempSync(join(tmpdir(), "ochat-docs-"));
  try {
    for (const name of ["asyncapi.json", "openapi.json"]) copyFileSync(join(root, "docs", name), join(dir, name));
    const doc = JSON.parse(readFileSync(join(dir, file), "utf8"));
    change(doc);
    writeFileSync(join(dir, file), JSON.stringify(doc));
    return spawnSync(process.execPath, [generate, "--check"], { env: { ...process.env, OCHAT_DOCS: dir }, encoding: "utf8" });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("the checked-in types are what the documents give", () => {
  const run = checkWith("asyncapi.json", () => {});
  assert.equal(run.status, 0, run.stderr);
});

test("a frame's field changing type in docs/asyncapi.json fails the check", () => {
  const run = checkWith("asyncapi.json", (doc) => {
    doc.components.schemas.Ack.properties.id = { type: "integer" };
  });
  assert.equal(run.status, 1);
  assert.match(run.stderr, /^stale: clients\/js\/src\/generated\/protocol\.ts no longer match/);
});

test("a REST schema's field changing type in docs/openapi.json fails the check", () => {
  const run = checkWith("openapi.json", (doc) => {
    doc.components.schemas.Message.properties.is_read = { type: "string" };
  });
  assert.equal(run.status, 1);
  assert.match(run.stderr, /^stale: clients\/js\/src\/generated\/rest\.ts no longer match/);
});
