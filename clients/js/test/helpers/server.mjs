// A real `croupier serve` for the tests: the repository's virtualenv, development mode (a generated bot token,
// dev-initdata), an embedded PostgreSQL in a fresh data dir, short rounds; only 127.0.0.1.
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const CROUPIER = process.env.CROUPIER_BIN || resolve(PACKAGE_ROOT, "..", "..", ".venv", "bin", "croupier");

const live = new Set();
function stopAllNow() {
  for (const server of live) server.killNow();
}
process.once("exit", stopAllNow);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.once(signal, () => {
    stopAllNow();
    process.exit(1);
  });
}

/** A free TCP port of 127.0.0.1 (the kernel's pick). */
export async function freePort() {
  const probe = createServer();
  await new Promise((ok, fail) => probe.once("error", fail).listen(0, "127.0.0.1", ok));
  const { port } = probe.address();
  await new Promise((ok) => probe.close(ok));
  return port;
}

/** Croupier's settings for a test node: this process's environment without CROUPIER_*, DATABASE_URL, REDIS_URL. */
function nodeEnv(dataDir, extra) {
  const env = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith("CROUPIER_") && name !== "DATABASE_URL" && name !== "REDIS_URL") env[name] = value;
  }
  return {
    ...env,
    CROUPIER_DEV: "1",
    CROUPIER_DATA_DIR: dataDir,
    CROUPIER_GAMES: "dice",
    CROUPIER_BETTING_MS: "1500",
    CROUPIER_ROUND_PAUSE_MS: "300",
    CROUPIER_GAME_PARAMS: JSON.stringify({ dice: { running_ms: 200 } }),
    CROUPIER_WELCOME_CREDIT: "1000",
    CROUPIER_HANDOVER_SECONDS: "1",
    ...extra,
  };
}

export class CroupierServer {
  /** Start a node on a free port with a fresh data dir; resolves once /readyz answers 200. */
  static async start(extraEnv = {}) {
    if (!existsSync(CROUPIER))
      throw new Error(`croupier not found at ${CROUPIER}: run \`make test\` once, or set CROUPIER_BIN`);
    const dataDir = mkdtempSync(join(tmpdir(), "croupier-js-"));
    chmodSync(dataDir, 0o755); // as root, the embedded PostgreSQL runs as a system user that must traverse it
    const server = new CroupierServer(dataDir, await freePort(), nodeEnv(dataDir, extraEnv));
    await server.start();
    return server;
  }

  constructor(dataDir, port, env) {
    this.dataDir = dataDir;
    this.port = port;
    this.env = env;
    this.process = null;
    this.log = join(dataDir, "server.log");
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /** (Re)start the node on the same port and data dir. */
  async start() {
    const log = openSync(this.log, "a");
    try {
      this.process = spawn(
        CROUPIER,
        ["serve", "--host", "127.0.0.1", "--port", String(this.port), "--log-level", "warning"],
        {
          env: this.env,
          stdio: ["ignore", log, log],
        },
      );
    } finally {
      closeSync(log);
    }
    live.add(this);
    const child = this.process;
    const exited = new Promise((ok) => child.once("exit", (code, signal) => ok({ code, signal })));
    this.exited = exited;
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      const done = await Promise.race([exited, sleep(100).then(() => null)]);
      if (done) throw new Error(`croupier serve exited (${done.code ?? done.signal}) before ready:\n${this.logTail()}`);
      try {
        const response = await fetch(`http://127.0.0.1:${this.port}/readyz`);
        if (response.status === 200) return;
      } catch {
        // not listening yet
      }
    }
    throw new Error(`croupier serve not ready within 60 s:\n${this.logTail()}`);
  }

  /** Stop the node by its PID: SIGTERM (it drains: sockets closed with 1012, PostgreSQL stopped), SIGKILL after 20 s. */
  async stop(signal = "SIGTERM") {
    const child = this.process;
    if (!child) return;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill(signal);
      const done = await Promise.race([this.exited, sleep(20_000).then(() => null)]);
      if (!done) {
        child.kill("SIGKILL");
        await this.exited;
      }
    }
    this.process = null;
    live.delete(this);
    this.#killOrphanPostgres();
  }

  /** Stop the node and remove its data dir. */
  async cleanup() {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** Synchronous last resort (process exit): SIGTERM the node by its PID. */
  killNow() {
    if (this.process && this.process.exitCode === null && this.process.signalCode === null)
      this.process.kill("SIGTERM");
  }

  /** A signed initData for `userId`, minted by `croupier dev-initdata` with this node's development token. */
  initData(userId, firstName = "Player") {
    return execFileSync(CROUPIER, ["dev-initdata", "--user-id", String(userId), "--first-name", firstName], {
      env: this.env,
      encoding: "utf8",
    }).trim();
  }

  logTail(lines = 40) {
    try {
      return readFileSync(this.log, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "(no log)";
    }
  }

  /** A node killed with SIGKILL leaves its embedded PostgreSQL running: stop it by the PID it wrote. */
  #killOrphanPostgres() {
    const pidFile = join(this.dataDir, "pg", "postmaster.pid");
    if (!existsSync(pidFile)) return;
    const pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]);
    if (!Number.isInteger(pid) || pid <= 0) return;
    try {
      process.kill(pid, 0);
    } catch {
      return; // not running
    }
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
      if (cmdline.includes(this.dataDir)) process.kill(pid, "SIGTERM");
    } catch {
      // gone meanwhile, or no /proc
    }
  }
}
