// Provably fair checks in the browser, with WebCrypto: docs/fairness.md states the algorithm this follows
// (server/rounds/fair.py and the games in server/games/ are the reference). Runs in a browser (a secure
// context: https, or http://127.0.0.1 / localhost) and in Node 20+ (tests/browser/test_fairness_js.py).

const encoder = new TextEncoder();

/** Crash's highest crash point (hundredths): server/games/crash.py MAX_CRASH_POINT. */
const MAX_CRASH_POINT = 100_000_000;

/** @returns {SubtleCrypto} */
function subtle() {
  const api = globalThis.crypto?.subtle;
  if (!api) throw new Error("WebCrypto is not available here (the page must be served over https or from localhost)");
  return api;
}

/** @param {ArrayBuffer} buffer @returns {string} lowercase hex */
function toHex(buffer) {
  return Array.from(new Uint8Array(buffer), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * The seed's `seed_hash`: SHA-256 of the seed's hex *text* (its ASCII characters), as lowercase hex.
 * @param {string} text
 * @returns {Promise<string>}
 */
export async function sha256Hex(text) {
  return toHex(await subtle().digest("SHA-256", encoder.encode(text)));
}

/**
 * The hex digits of HMAC-SHA256(key = seed text, msg = "<game>:<salt>:[bet:<id>:]<n>"), n = 0, 1, ...,
 * read from the front as FairRng reads them: `unit()` takes 13 digits, `below(n)` 5 at a time.
 */
export class FairStream {
  /** @param {string} seed @param {string} salt @param {string} game @param {number | null} [betId] */
  constructor(seed, salt, game, betId = null) {
    if (!seed) throw new Error("the seed is empty");
    this.prefix = `${game}:${salt}:${betId === null ? "" : `bet:${betId}:`}`;
    this.counter = 0;
    this.digits = "";
    this.key = subtle().importKey("raw", encoder.encode(seed), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  }

  /** @param {number} count @returns {Promise<number>} the next `count` digits as an integer */
  async take(count) {
    while (this.digits.length < count) {
      const block = await subtle().sign("HMAC", await this.key, encoder.encode(`${this.prefix}${this.counter}`));
      this.digits += toHex(block);
      this.counter += 1;
    }
    const taken = this.digits.slice(0, count);
    this.digits = this.digits.slice(count);
    return parseInt(taken, 16); // 13 digits = 52 bits: exact in a double
  }

  /** A float in [0, 1): 13 digits / 2^52. */
  async unit() {
    return (await this.take(13)) / 2 ** 52;
  }

  /** An unbiased integer in [0, n), 1 <= n <= 2^20: 5 digits at a time, rejected at or above floor(2^20/n)*n. */
  async below(n) {
    const limit = Math.floor(2 ** 20 / n) * n;
    for (;;) {
      const value = await this.take(5);
      if (value < limit) return value % n;
    }
  }
}

/**
 * The outcome a round of `game` draws from (seed, salt), with the game's params as `welcome.game_info` has
 * them; null for a game this page cannot recompute (plinko's outcome is per bet).
 * @param {string} game
 * @param {string} seed
 * @param {string} salt
 * @param {Record<string, any>} [params]
 * @returns {Promise<Record<string, number> | null>}
 */
export async function recomputeOutcome(game, seed, salt, params = {}) {
  if (!["crash", "dice", "roulette", "wheel"].includes(game)) return null;
  const stream = new FairStream(seed, salt, game);
  switch (game) {
    case "crash": {
      const x = await stream.unit();
      const keep = (10_000 - (params.house_edge_bp ?? 100)) / 10_000;
      const point = Math.ceil((100 * keep) / (1 - x) - 1e-9); // the server's float operations, in its order
      return { crash_point: Math.max(100, Math.min(point, MAX_CRASH_POINT)) };
    }
    case "dice":
      return { roll: await stream.below(10_000) };
    case "roulette":
      return { number: await stream.below(37) };
    default: // the wheel
      return { segment: await stream.below((params.segments ?? []).length || 20) };
  }
}

/**
 * @typedef {object} RoundToVerify
 * @property {string} game
 * @property {string} seed          the seed revealed at settlement
 * @property {string} salt          the round's salt
 * @property {string} seedHash      the `seed_hash` announced before betting
 * @property {Record<string, unknown>} outcome  the published outcome
 * @property {Record<string, any>} [params]     the game's params (welcome.game_info[game].params)
 */

/**
 * @typedef {object} Verdict
 * @property {boolean} ok            every check passed
 * @property {string[]} problems     what did not match, in words (empty when ok)
 * @property {Record<string, number> | null} expected  the recomputed outcome
 */

/**
 * Check a settled round: the seed hashes to the committed seed_hash, and recomputing the outcome from
 * seed + salt gives the published one (every field the seed decides; crash's force_point depends on bets).
 * @param {RoundToVerify} round
 * @returns {Promise<Verdict>}
 */
export async function verifyRound({ game, seed, salt, seedHash, outcome, params = {} }) {
  /** @type {string[]} */
  const problems = [];
  let expected = null;
  try {
    const hashed = await sha256Hex(seed);
    if (hashed !== seedHash) problems.push(`sha256(seed) is ${hashed.slice(0, 12)}…, not the committed seed_hash`);
    expected = await recomputeOutcome(game, seed, salt, params);
    if (expected === null) problems.push(`this page cannot recompute a ${game} outcome`);
    for (const [field, value] of Object.entries(expected ?? {})) {
      if (outcome?.[field] !== value) {
        problems.push(`${field}: published ${JSON.stringify(outcome?.[field])}, recomputed ${value}`);
      }
    }
  } catch (error) {
    problems.push(error instanceof Error ? error.message : String(error));
  }
  return { ok: problems.length === 0, problems, expected };
}
