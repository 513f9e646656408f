// What CI checks before the client's tests: the generated types match
// docs/asyncapi.json and docs/openapi.json, and dist/ (checked in: the
// node serves it to browsers, and `cargo run` needs no Node) is exactly
// what the sources compile to.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL("..", import.meta.url));
execFileSync(process.execPath, [join(here, "scripts", "generate.mjs"), "--check"], { stdio: "inherit" });

const fresh = mkdtempSync(join(tmpdir(), "ochat-client-dist-"));
try {
  execFileSync(process.execPath, [join(here, "node_modules", "typescript", "bin", "tsc"), "-p", join(here, "tsconfig.json"), "--outDir", fresh], {
    stdio: "inherit",
  });
  const files = (dir) =>
    readdirSync(dir).flatMap((name) => {
      const path = join(dir, name);
      return statSync(path).isDirectory() ? files(path) : [path];
    });
  const built = new Map(files(fresh).map((p) => [relative(fresh, p), readFileSync(p, "utf8")]));
  const shipped = new Map(files(join(here, "dist")).map((p) => [relative(join(here, "dist"), p), readFileSync(p, "utf8")]));
  const stale = [...new Set([...built.keys(), ...shipped.keys()])].filter((name) => built.get(name) !== shipped.get(name));
  if (stale.length) {
    console.error(`clients/js/dist is not what src/ compiles to (${stale.join(", ")}): run \`npm run build\` in clients/js`);
    process.exit(1);
  }
} finally {
  rmSync(fresh, { recursive: true, force: true });
}
