// Croupier's demo Mini App: balance, crash (live curve, cash-out), dice, roulette, the session's bets, Stars
// deposits, and every settled round verified in the browser (fairness.js). One socket, held by the client
// library (clients/js: reconnects, resumes, retries bets with their key); this file only draws and asks.
// Inside Telegram it signs in with Telegram.WebApp.initData and follows the theme, viewport and haptics;
// in a plain browser a development node (CROUPIER_DEV=1) signs in through POST dev-signin.

import { CroupierClient, CroupierError } from "@croupier/client";
import { verifyRound } from "./fairness.js";

/** The games this page has tables for (the node may serve fewer: welcome.games says). */
const TABLES = ["crash", "dice", "roulette"];
/** Fairness entries kept on the page. */
const FAIRNESS_KEPT = 30;

/** @param {string} id @returns {any} */
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- Telegram (every feature detected)

/** `Telegram.WebApp` when telegram-web-app.js loaded; it has initData only inside Telegram. */
const webApp = /** @type {any} */ (window).Telegram?.WebApp;
const inTelegram = typeof webApp?.initData === "string" && webApp.initData !== "";

/** @param {string} version */
function supports(version) {
  return inTelegram && (typeof webApp.isVersionAtLeast !== "function" || webApp.isVersionAtLeast(version));
}

/** themeParams key -> the CSS variable style.css uses. */
const THEME = {
  bg_color: "--bg",
  secondary_bg_color: "--bg-2",
  text_color: "--text",
  hint_color: "--hint",
  link_color: "--link",
  button_color: "--button",
  button_text_color: "--button-text",
  destructive_text_color: "--bad",
};

function applyTheme() {
  const theme = webApp?.themeParams ?? {};
  for (const [key, variable] of Object.entries(THEME)) {
    if (typeof theme[key] === "string") document.documentElement.style.setProperty(variable, theme[key]);
  }
}

function applyViewport() {
  const height = webApp?.viewportStableHeight;
  if (typeof height === "number" && height > 0) {
    document.documentElement.style.setProperty("--app-height", `${height}px`);
  }
}

/** @param {"bet" | "win" | "loss"} what */
function haptic(what) {
  const feedback = webApp?.HapticFeedback;
  if (!feedback || !supports("6.1")) return;
  if (what === "bet") feedback.impactOccurred?.("light");
  else feedback.notificationOccurred?.(what === "win" ? "success" : "error");
}

function setUpTelegram() {
  if (!inTelegram) return;
  webApp.ready?.();
  webApp.expand?.();
  applyTheme();
  applyViewport();
  webApp.onEvent?.("themeChanged", applyTheme);
  webApp.onEvent?.("viewportChanged", applyViewport);
}

// ---------------------------------------------------------------- signing in

/**
 * initData for `userId` from a development node (never in a URL, never logged).
 * @param {number} userId
 * @returns {Promise<string>}
 */
async function devSignIn(userId) {
  const response = await fetch("dev-signin", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user_id: userId }),
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 404) throw new Error("No development sign-in on this server: open the app from Telegram.");
  if (!response.ok) throw new Error(body.error ?? `sign-in refused (HTTP ${response.status})`);
  return body.init_data;
}

function showSignIn() {
  const form = $("signin");
  form.hidden = false;
  const remembered = localStorage.getItem("croupier.userId"); // the user id only, never initData
  if (remembered) $("signin-user").value = remembered;
  form.addEventListener("submit", async (/** @type {Event} */ event) => {
    event.preventDefault();
    const userId = Number($("signin-user").value);
    $("signin-button").disabled = true;
    try {
      const initData = await devSignIn(userId);
      localStorage.setItem("croupier.userId", String(userId));
      form.hidden = true;
      await play({ initData, getInitData: () => devSignIn(userId) });
    } catch (error) {
      $("signin-message").textContent = error instanceof Error ? error.message : String(error);
      $("signin-button").disabled = false;
    }
  });
}

// ---------------------------------------------------------------- the session

/** @type {CroupierClient} */
let client;
/** Server clock minus ours (ms), from the last welcome: betting countdowns use the server's clock. */
let clockOffset = 0;
/** `${game}:${round}` -> the seed_hash and salt announced before the round's seed was revealed. */
const commitments = new Map();
/** bet id -> {row, amount, game, round, cashout} for the session's bets. */
const bets = new Map();

/** @param {{initData?: string, getInitData?: () => Promise<string>}} auth */
async function play(auth) {
  const url = new URL("/ws", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  client = new CroupierClient({ url: url.href, codec: "json", ...auth });
  let everReady = false;
  client.on("state", ({ state, attempt, closeCode }) => {
    $("connection").classList.toggle("ready", state === "ready");
    everReady ||= state === "ready";
    showBanner(everReady, state, attempt, closeCode);
  });
  client.on("welcome", (welcome) => {
    clockOffset = welcome.server_time - Date.now();
    $("player").textContent = welcome.user.first_name;
    showBalance(welcome.balance);
  });
  client.on("snapshot", (snapshot) => {
    if (snapshot.kind === "user") showBalance(snapshot.balance);
    else if (snapshot.round) onRound(/** @type {any} */ (snapshot.round));
  });
  client.on("balance", (event) => showBalance(event.balance));
  client.on("round", (event) => onRound(/** @type {any} */ (event)));
  client.on("tick", (event) => onTick(/** @type {any} */ (event)));
  client.on("bet_settled", (event) => onBetSettled(event));
  client.on("stopped", (error) => showBanner(true, "stopped", 0, undefined, error.message));
  await client.open();
  $("tables").hidden = false;
  for (const game of TABLES) {
    const table = client.games.includes(game);
    document.querySelector(`[data-tab="${game}"]`).hidden = !table;
    if (table) await client.subscribe(game);
  }
  setInterval(renderRounds, 250);
  renderDiceOdds();
}

/**
 * The reconnect banner, driven by the client's state events: hidden while ready (and before the first
 * welcome, which the sign-in covers), shown while the client reconnects or after it stopped for good.
 */
function showBanner(everReady, state, attempt, closeCode, reason = "") {
  const banner = $("banner");
  banner.dataset.state = state;
  if (!everReady || state === "ready" || state === "paused") {
    banner.hidden = true;
    return;
  }
  banner.hidden = false;
  banner.textContent =
    state === "stopped"
      ? `Disconnected: ${reason}`
      : `Connection lost${closeCode ? ` (${closeCode})` : ""}, reconnecting${attempt > 1 ? ` (attempt ${attempt})` : ""}…`;
}

/** @param {number | null} balance */
function showBalance(balance) {
  $("balance").textContent = balance === null ? "–" : balance.toLocaleString("en");
}

// ---------------------------------------------------------------- rounds

/** @param {any} round a round event, or a subscribe snapshot's round */
function onRound(round) {
  const game = round.game;
  const key = `${game}:${round.round}`;
  if (round.phase !== "settled" && !commitments.has(key)) {
    commitments.set(key, { seedHash: round.seed_hash, salt: round.salt });
  }
  if (game === "crash" && round.phase === "running") startCurve(round.round);
  if (round.phase === "settled") {
    if (game === "crash") crashed(round);
    if (game === "dice" && round.outcome) $("dice-last").textContent = (round.outcome.roll / 100).toFixed(2);
    if (game === "roulette" && round.outcome) $("roulette-last").textContent = String(round.outcome.number);
    if (round.seed && !round.voided) verifySettled(round);
    commitments.delete(key);
  }
  renderRounds();
}

function renderRounds() {
  if (!client) return;
  for (const game of TABLES) {
    const round = client.currentRound(game);
    if (!round) continue;
    let text = `Round ${round.round}: ${round.phase}`;
    if (round.phase === "betting" && typeof round.closes_at === "number") {
      const left = Math.max(0, (round.closes_at - (Date.now() + clockOffset)) / 1000);
      text += `, closes in ${left.toFixed(1)} s`;
    }
    $(`${game}-round`).textContent = text;
    $(`${game}-bet`).disabled = round.phase !== "betting";
  }
  const crash = client.currentRound("crash");
  $("crash-cashout").disabled = !(crash?.phase === "running" && cashable(crash.round).length > 0);
}

// ---------------------------------------------------------------- crash: the curve

/** The running crash round's ticks: [ms since it started here, multiplier]. */
let curve = { round: 0, start: 0, points: /** @type {[number, number][]} */ ([]), crashedAt: 0 };

/** @param {number} round */
function startCurve(round) {
  if (curve.round === round) return;
  curve = { round, start: performance.now(), points: [[0, 1]], crashedAt: 0 };
  $("crash-multiplier").classList.remove("crashed");
  drawCurve();
}

/** @param {any} tick */
function onTick(tick) {
  if (tick.game !== "crash") return;
  if (curve.round !== tick.round) startCurve(tick.round);
  const multiplier = tick.multiplier / 100;
  curve.points.push([performance.now() - curve.start, multiplier]);
  if (tick.crashed) curve.crashedAt = multiplier;
  $("crash-multiplier").textContent = `${multiplier.toFixed(2)}x`;
  $("crash-multiplier").classList.toggle("crashed", Boolean(tick.crashed));
  drawCurve();
}

/** @param {any} round the settled event */
function crashed(round) {
  const point = round.outcome?.crash_point;
  if (typeof point !== "number") return;
  curve.crashedAt = point / 100;
  $("crash-multiplier").textContent = `${(point / 100).toFixed(2)}x`;
  $("crash-multiplier").classList.add("crashed");
  drawCurve();
}

function drawCurve() {
  const canvas = $("crash-canvas");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 360;
  const height = canvas.clientHeight || 180;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const context = canvas.getContext("2d");
  context.scale(ratio, ratio);
  context.clearRect(0, 0, width, height);
  const last = curve.points[curve.points.length - 1] ?? [0, 1];
  const maxT = Math.max(3000, last[0] * 1.15);
  const maxM = Math.max(1.5, last[1] * 1.15);
  const x = (/** @type {number} */ t) => 8 + (t / maxT) * (width - 16);
  const y = (/** @type {number} */ m) => height - 8 - ((m - 1) / (maxM - 1)) * (height - 16);
  const style = getComputedStyle(document.documentElement);
  const colour = style.getPropertyValue(curve.crashedAt ? "--bad" : "--button");
  context.beginPath();
  curve.points.forEach(([t, m], i) => (i ? context.lineTo(x(t), y(m)) : context.moveTo(x(t), y(m))));
  context.lineWidth = 3;
  context.strokeStyle = colour;
  context.stroke();
  context.lineTo(x(last[0]), y(1)); // the area under the curve, faintly
  context.lineTo(x(0), y(1));
  context.globalAlpha = 0.15;
  context.fillStyle = colour;
  context.fill();
}

// ---------------------------------------------------------------- bets

/**
 * Place a bet on `game`'s current round (it must be taking bets).
 * @param {string} game
 * @param {Record<string, unknown>} params
 * @param {string} label what the history shows
 */
async function placeBet(game, params, label) {
  const message = $(`${game}-message`);
  const round = client.currentRound(game);
  const amount = Number($(`${game}-amount`).value);
  if (round?.phase !== "betting") {
    message.textContent = "Betting is closed: wait for the next round.";
    return;
  }
  message.textContent = "";
  try {
    const ok = await client.bet({ game, round: round.round, amount, params });
    haptic("bet");
    showBalance(ok.balance);
    addBet(ok.bet, label);
    message.textContent = `Bet ${ok.bet.id} placed on round ${ok.bet.round}.`;
  } catch (error) {
    message.textContent = error instanceof CroupierError ? `${error.code}: ${error.message}` : String(error);
  }
  renderRounds();
}

/** @param {{id: number, game: string, round: number, amount: number}} bet @param {string} label */
function addBet(bet, label) {
  if (bets.has(bet.id)) return;
  const row = document.createElement("tr");
  row.dataset.bet = String(bet.id);
  row.dataset.game = bet.game;
  for (const text of [bet.game, String(bet.round), `${bet.amount} on ${label}`, "in play"]) {
    row.appendChild(document.createElement("td")).textContent = text;
  }
  $("history").tBodies[0].prepend(row);
  bets.set(bet.id, { row, amount: bet.amount, game: bet.game, round: bet.round, cashout: 0 });
}

/** The session's crash bets in `round` not cashed out yet. @param {number} round */
function cashable(round) {
  return [...bets.values()].filter((bet) => bet.game === "crash" && bet.round === round && !bet.cashout);
}

async function cashOut() {
  const round = client.currentRound("crash");
  const message = $("crash-message");
  if (round?.phase !== "running") return;
  try {
    const ok = await client.action({ game: "crash", round: round.round, action: "cashout" });
    const results = Array.isArray(ok.result.bets) ? ok.result.bets : [ok.result];
    for (const { bet, multiplier, payout } of /** @type {any[]} */ (results)) {
      const mine = bets.get(bet);
      if (!mine) continue;
      mine.cashout = multiplier;
      mine.row.cells[3].textContent = `cashed out at ${(multiplier / 100).toFixed(2)}x: ${payout}`;
    }
    message.textContent = `Cashed out at ${(results[0].multiplier / 100).toFixed(2)}x.`;
  } catch (error) {
    message.textContent = error instanceof CroupierError ? `${error.code}: ${error.message}` : String(error);
  }
  renderRounds();
}

/** @param {{bet: number, payout: number, balance: number}} event */
function onBetSettled(event) {
  showBalance(event.balance);
  const bet = bets.get(event.bet);
  if (!bet) return;
  const won = event.payout > bet.amount;
  const lost = event.payout === 0;
  const cell = bet.row.cells[3];
  cell.textContent = won ? `won ${event.payout}` : lost ? "lost" : `returned ${event.payout}`;
  cell.className = won ? "good" : lost ? "bad" : "";
  bet.row.dataset.status = won ? "won" : lost ? "lost" : "returned";
  if (won || lost) haptic(won ? "win" : "loss");
}

function renderDiceOdds() {
  const target = Number($("dice-target").value);
  const side = $("dice-side").value;
  const edge = client?.gameInfo.dice?.params?.house_edge_bp ?? 100;
  const winning = side === "under" ? target : 9999 - target;
  const multiplier = Math.floor(((10_000 - edge) * 100) / winning); // server/games/dice.py
  $("dice-odds").textContent =
    `${side} ${(target / 100).toFixed(2)}: wins ${(winning / 100).toFixed(2)}%, pays ${(multiplier / 100).toFixed(2)}x`;
}

function diceBet() {
  const target = Number($("dice-target").value);
  const side = $("dice-side").value;
  void placeBet("dice", { target, side }, `${side} ${(target / 100).toFixed(2)}`);
}

function rouletteBet() {
  const [type, dozen] = $("roulette-type").value.split(":");
  const numbers = type === "straight" ? [Number($("roulette-number").value)] : dozen ? [Number(dozen)] : [];
  void placeBet("roulette", { type, numbers }, numbers.length ? `${type} ${numbers[0]}` : type);
}

function crashBet() {
  const auto = $("crash-auto").value;
  const params = auto ? { auto_cashout: Math.round(Number(auto) * 100) } : {};
  void placeBet("crash", params, auto ? `auto ${Number(auto).toFixed(2)}x` : "crash");
}

// ---------------------------------------------------------------- deposits

async function deposit() {
  const message = $("deposit-message");
  const stars = Number($("deposit-stars").value);
  message.textContent = "";
  try {
    const invoice = await client.deposit(stars);
    if (supports("6.1") && typeof webApp.openInvoice === "function") {
      webApp.openInvoice(invoice.url, (/** @type {string} */ status) => {
        message.textContent =
          status === "paid" ? `Paid: ${invoice.chips} chips are on their way.` : `Invoice ${status}.`;
      });
    } else {
      message.innerHTML = "";
      const link = message.appendChild(document.createElement("a"));
      link.href = invoice.url;
      link.target = "_blank";
      link.rel = "noopener";
      link.textContent = `Pay ${invoice.stars} Stars in Telegram for ${invoice.chips} chips`;
    }
  } catch (error) {
    if (error instanceof CroupierError && error.code === "deposit_refused" && error.field === null) {
      $("deposit").disabled = true; // deposits are off on this server: say so instead of a button that fails
      message.textContent = "Deposits are not enabled on this server.";
    } else {
      message.textContent = error instanceof CroupierError ? error.message : String(error);
    }
  }
}

// ---------------------------------------------------------------- fairness

/** @param {any} round a settled round event with its seed */
function verifySettled(round) {
  const committed = commitments.get(`${round.game}:${round.round}`);
  const entry = {
    game: round.game,
    seed: round.seed,
    salt: committed?.salt ?? round.salt,
    seedHash: committed?.seedHash ?? round.seed_hash,
    outcome: round.outcome ?? {},
    params: client.gameInfo[round.game]?.params ?? {},
    late: !committed, // joined after the seed_hash was announced (or resumed without the round's events)
  };
  const item = document.createElement("li");
  item.dataset.game = round.game;
  item.dataset.round = String(round.round);
  item.innerHTML = `<span class="title"></span> <span class="status">checking…</span>
    <details><summary>check it yourself</summary>
      <label>seed <input name="seed" spellcheck="false"></label>
      <label>salt <input name="salt" spellcheck="false"></label>
      <label>seed_hash <input name="seedHash" spellcheck="false"></label>
      <label>outcome <input name="outcome" spellcheck="false"></label>
      <button type="button">Check</button>
    </details>`;
  item.querySelector(".title").textContent = `${round.game} round ${round.round}: ${describe(entry.outcome)}`;
  const inputs = Object.fromEntries(
    [...item.querySelectorAll("input")].map((/** @type {HTMLInputElement} */ input) => [input.name, input]),
  );
  inputs.seed.value = entry.seed;
  inputs.salt.value = entry.salt;
  inputs.seedHash.value = entry.seedHash;
  inputs.outcome.value = JSON.stringify(entry.outcome);
  item.querySelector("button").addEventListener("click", () => {
    let outcome;
    try {
      outcome = JSON.parse(inputs.outcome.value);
    } catch {
      outcome = null;
    }
    const edited = { ...entry, seed: inputs.seed.value.trim(), salt: inputs.salt.value.trim() };
    void check(item, { ...edited, seedHash: inputs.seedHash.value.trim(), outcome });
  });
  const list = $("fairness");
  list.prepend(item);
  while (list.children.length > FAIRNESS_KEPT) list.lastElementChild.remove();
  void check(item, entry);
}

/** An outcome in words: `crash_point 243` -> "crashed at 2.43x", `roll 9239` -> "roll 92.39". */
function describe(/** @type {Record<string, any>} */ outcome) {
  if (typeof outcome.crash_point === "number") return `crashed at ${(outcome.crash_point / 100).toFixed(2)}x`;
  if (typeof outcome.roll === "number") return `roll ${(outcome.roll / 100).toFixed(2)}`;
  return Object.entries(outcome)
    .map(([name, value]) => `${name} ${value}`)
    .join(", ");
}

/** Verify and show the verdict on `item`: "verified", or each mismatch. */
async function check(/** @type {HTMLElement} */ item, /** @type {any} */ entry) {
  const status = item.querySelector(".status");
  item.dataset.status = "checking";
  const verdict = await verifyRound(entry);
  item.dataset.status = verdict.ok ? "verified" : "mismatch";
  const late = entry.late ? " (its seed_hash first seen at settlement)" : "";
  status.textContent = verdict.ok ? `verified ✓${late}` : `mismatch ✗ ${verdict.problems.join("; ")}`;
}

// ---------------------------------------------------------------- wiring

function wire() {
  for (const tab of document.querySelectorAll("[data-tab]")) {
    tab.addEventListener("click", () => {
      for (const other of document.querySelectorAll("[data-tab]")) {
        other.classList.toggle("selected", other === tab);
        $(other.dataset.tab).hidden = other !== tab;
      }
      if (tab.dataset.tab === "crash") drawCurve();
    });
  }
  $("crash-bet").addEventListener("click", crashBet);
  $("crash-cashout").addEventListener("click", cashOut);
  $("dice-bet").addEventListener("click", diceBet);
  $("dice-target").addEventListener("input", renderDiceOdds);
  $("dice-side").addEventListener("change", renderDiceOdds);
  $("roulette-bet").addEventListener("click", rouletteBet);
  $("roulette-type").addEventListener("change", () => {
    $("roulette-number").hidden = $("roulette-type").value !== "straight";
  });
  $("roulette-number").hidden = true;
  $("deposit").addEventListener("click", deposit);
}

wire();
setUpTelegram();
if (inTelegram) {
  play({}).catch((error) => showBanner(true, "stopped", 0, undefined, error.message));
} else {
  showSignIn();
}
