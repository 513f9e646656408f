// Real parts for the client's tests: ochat nodes (the debug binary the
// README's test command builds), sharing one PostgreSQL database of the
// test's own and one Redis key prefix of its own, behind the shipped
// nginx config.
import { spawn, spawnSync } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const binary = process.env.OCHAT_BIN || join(root, "target", "debug", "ochat");
export const SECRET = "client-tests-secret-0123456789abcdef";
const adminUrl = process.env.TEST_DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres";
const redisUrl = process.env.TEST_REDIS_URL || "redis://127.0.0.1:6379";

export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
    probe.on("error", reject);
  });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it answers truthy; throws with `what` after `ms`. */
export async function eventually(what, check, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/**
 * Closes, after the file's tests, every client `track` was given: a test
 * that fails half way leaves none reconnecting (which would keep the test
 * process alive).
 */
export function closeAfter(after) {
  const clients = [];
  after(() => Promise.all(clients.map((client) => client.close())));
  return (client) => {
    clients.push(client);
    return client;
  };
}

/** An HS256 token as Supabase issues them, valid for `seconds`. */
export function mint(sub, seconds = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const head = part({ alg: "HS256", typ: "JWT" });
  const body = part({ sub, email: `${sub.slice(0, 8)}@example.com`, role: "authenticated", aud: "authenticated", iat: now, exp: now + seconds });
  const signature = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${signature}`;
}

function psql(url, sql) {
  const run = spawnSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`psql: ${run.stderr}`);
  return run.stdout.trim();
}

/** A PostgreSQL database of this test's own, dropped by `drop()`. */
export function database() {
  const name = `ochat_js_${randomUUID().replace(/-/g, "").slice(0, 12)}`;
  psql(adminUrl, `CREATE DATABASE ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    query: (sql) => psql(url.toString(), sql),
    drop: () => psql(adminUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
  };
}

/** An ochat node process; `kill()` is SIGKILL (a crash), `start()` brings it back on its port. */
export class Node {
  constructor(env, port) {
    this.env = env;
    this.port = port;
    this.child = null;
  }

  static async start(env) {
    const node = new Node(env, await freePort());
    await node.start();
    return node;
  }

  async start() {
    this.child = spawn(binary, ["serve"], {
      env: {
        PATH: process.env.PATH,
        JWT_SECRET: SECRET,
        SERVER_PORT: String(this.port),
        METRICS_PORT: "off",
        RUST_LOG: "warn",
        ...this.env,
      },
      cwd: tmpdir(),
      stdio: ["ignore", "ignore", "inherit"],
    });
    const ready = `http://127.0.0.1:${this.port}/api/v1/readyz`;
    await eventually(`node on ${this.port} ready`, async () => (await fetch(ready).catch(() => null))?.ok, 30_000);
  }

  kill() {
    if (!this.child) return;
    this.child.kill("SIGKILL");
    this.child = null;
  }
}

/** One node on an embedded SQLite file of its own (no PostgreSQL or Redis), with `env`. */
export async function embeddedNode(env = {}) {
  const dir = mkdtempSync(join(tmpdir(), "ochat-embedded-"));
  const node = await Node.start({ DATABASE_URL: `sqlite://${dir}/ochat.db`, ...env });
  return {
    node,
    dir,
    url: `http://127.0.0.1:${node.port}`,
    stop() {
      node.kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * One embedded node for a test file: started before its tests, stopped
 * after them. Its fields (`url`, `node`, `dir`) are there once started.
 */
export function embeddedNodeFor({ before, after }, env = {}) {
  const held = {};
  before(async () => Object.assign(held, await embeddedNode(env)));
  after(() => held.stop?.());
  return held;
}

/** Nodes sharing a fresh database and Redis prefix. */
export async function nodes(count, env = {}) {
  const db = database();
  const shared = { DATABASE_URL: db.url, REDIS_URL: redisUrl, REDIS_PREFIX: `ochat-js-${randomUUID().slice(0, 8)}:`, ...env };
  const list = [];
  for (let i = 0; i < count; i++) list.push(await Node.start(shared));
  return {
    db,
    list,
    stop() {
      for (const node of list) node.kill();
      db.drop();
    },
  };
}

/** The shipped deploy/nginx/nginx.conf in front of `ports`: only the upstream addresses and the listen port change. */
export async function nginx(ports) {
  const dir = mkdtempSync(join(tmpdir(), "ochat-nginx-"));
  const port = await freePort();
  let conf = readFileSync(join(root, "deploy", "nginx", "nginx.conf"), "utf8");
  const upstreams = ["ochat1", "ochat2", "ochat3"];
  upstreams.forEach((name, i) => {
    const line = new RegExp(`\\s*server ${name}:8080[^;]*;`);
    if (!line.test(conf)) throw new Error(`nginx.conf has no upstream ${name}`);
    conf = conf.replace(line, i < ports.length ? `\n        server 127.0.0.1:${ports[i]} max_fails=3 fail_timeout=5s;` : "");
  });
  if (!conf.includes("listen 8080;")) throw new Error("nginx.conf no longer listens on 8080");
  conf = conf.replace("listen 8080;", `listen 127.0.0.1:${port};`);
  writeFileSync(join(dir, "nginx.conf"), conf);
  const globals = `pid ${dir}/nginx.pid; error_log ${dir}/error.log;`;
  const args = ["-p", dir, "-c", join(dir, "nginx.conf"), "-g"];
  // stdout is /dev/null: the shipped config logs to /dev/stdout.
  const check = spawnSync("nginx", [...args, globals, "-t"], { encoding: "utf8", stdio: ["ignore", "ignore", "pipe"] });
  if (check.status !== 0) throw new Error(`nginx -t: ${check.stderr}`);
  const child = spawn("nginx", [...args, `daemon off; ${globals}`], { stdio: "ignore" });
  await eventually("nginx answering", async () => {
    const response = await fetch(`http://127.0.0.1:${port}/api/v1/health`).catch(() => null);
    return response?.ok && (response.headers.get("server") ?? "").startsWith("nginx");
  });
  return {
    url: `http://127.0.0.1:${port}`,
    stop() {
      child.kill("SIGTERM");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
