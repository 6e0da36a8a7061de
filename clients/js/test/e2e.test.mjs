// The client library against a real `croupier serve` (started here, stopped by PID at the end, also on failure).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import { CroupierError, connect, jsonCodec, msgpackCodec } from "../dist/index.js";
import { flakyWebSocket } from "./helpers/flaky.mjs";
import { CroupierServer } from "./helpers/server.mjs";
import { assertContiguous, bettingRound, fakeWebApp, next, sumOfDeltas, until, userEvents } from "./helpers/util.mjs";

const WELCOME_CREDIT = 1000;
const DICE = { target: 5000, side: "over" };
/** Fast retries: a restarted node is back within seconds. */
const FAST = { lifecycle: false, backoff: { initialMs: 100, maxMs: 1000 }, requestTimeoutMs: 8000 };

let server;
const clients = [];

function open(userId, options = {}) {
  const client = connect({ url: server.url, initData: server.initData(userId), WebSocket, ...FAST, ...options });
  client.then(
    (c) => clients.push(c),
    () => {},
  );
  return client;
}

before(async () => {
  server = await CroupierServer.start();
});

after(async () => {
  for (const client of clients) client.close();
  await server?.cleanup();
});

describe("both codecs end to end", () => {
  for (const [codec, userId] of [
    ["json", 101],
    ["msgpack", 102],
  ]) {
    test(`${codec}: auth, subscribe, a dice bet settled, balance events`, async () => {
      const client = await open(userId, { codec });
      assert.equal(client.codec.name, codec);
      assert.equal(client.user.id, userId);
      assert.equal(client.balance, WELCOME_CREDIT);
      assert.deepEqual(client.games, ["dice"]);
      assert.ok(client.gameInfo.dice.bet_schema, "welcome carries each game's bet schema");
      const start = client.position("user");
      assert.equal(typeof start.epoch, "string");
      const events = userEvents(client);

      const snapshot = next(client, "snapshot", (s) => s.channel === "game:dice");
      const subscribed = await client.subscribe("dice");
      assert.equal(subscribed.game, "dice");
      assert.equal((await snapshot).reason, "initial");

      const round = await bettingRound(client);
      const settled = next(client, "bet_settled");
      const ok = await client.bet({ game: "dice", round: round.round, amount: 10, params: DICE });
      assert.equal(ok.t, "bet_ok");
      assert.equal(ok.bet.amount, 10);
      assert.equal(ok.bet.round, round.round);
      assert.equal(ok.balance, WELCOME_CREDIT - 10);
      const result = await settled;
      assert.equal(result.bet, ok.bet.id);
      await until(() => client.balance === result.balance, "the settled balance");

      const debit = events.find((e) => e.t === "balance" && e.reason === "bet");
      assert.equal(debit.delta, -10);
      assert.equal(debit.ref, ok.bet.id);
      if (result.payout > 0) await until(() => events.some((e) => e.reason === "win"), "the win push");
      assertContiguous(events, start.offset);
      assert.equal(WELCOME_CREDIT + sumOfDeltas(events), client.balance);
      assert.equal(await client.getBalance(), client.balance);
      assert.ok((await client.ping()) > 0);
      const rounds = await client.history("dice", 5);
      assert.ok(rounds.some((r) => r.round === round.round && typeof r.seed === "string"));
    });
  }
});

test("errors are CroupierError with the contract's code and field", async () => {
  const client = await open(201);
  await client.subscribe("dice");
  const round = await bettingRound(client);
  await assert.rejects(
    client.bet({ game: "dice", round: round.round, amount: 10, params: { target: 0, side: "over" } }),
    (error) => {
      assert.ok(error instanceof CroupierError);
      assert.equal(error.code, "invalid_bet");
      assert.equal(error.field, "params.target");
      assert.equal(error.request, "bet");
      assert.match(error.key, /^[0-9a-f-]{36}$/);
      assert.equal(error.retryable, false);
      return true;
    },
  );
  await assert.rejects(client.bet({ game: "dice", round: round.round, amount: 0, params: DICE }), {
    code: "bad_request",
    field: "amount",
  });
  await assert.rejects(client.bet({ game: "nope", round: round.round, amount: 1, params: DICE }), {
    code: "unknown_game",
  });
  // The client seed travels as client_seed: the server checks it (no ':' in a seed).
  await assert.rejects(client.bet({ game: "dice", round: round.round, amount: 1, params: DICE, clientSeed: "a:b" }), {
    code: "bad_request",
    field: "client_seed",
  });
  await assert.rejects(client.subscribe("nope"), { code: "unknown_game" });
  assert.deepEqual(client.subscriptions, ["dice"]);
  assert.equal(client.balance, WELCOME_CREDIT, "no refused bet charged anything");
});

test("4401: refused initData stops the client, or getInitData supplies fresh initData", async () => {
  const forged = "auth_date=1700000000&user=%7B%22id%22%3A301%7D&hash=" + "0".repeat(64);
  await assert.rejects(connect({ url: server.url, initData: forged, WebSocket, ...FAST }), (error) => {
    assert.ok(error instanceof CroupierError);
    assert.equal(error.code, "unauthorized");
    assert.equal(error.field, "init_data");
    assert.equal(error.closeCode, 4401);
    return true;
  });
  let asked = 0;
  const client = await open(302, {
    initData: forged,
    getInitData: () => {
      asked++;
      return server.initData(302);
    },
  });
  assert.equal(asked, 1);
  assert.equal(client.user.id, 302);
});

test("a bet whose reply is lost with the connection is retried with its key and charged once", async () => {
  const flaky = flakyWebSocket(msgpackCodec.decode);
  const client = await open(401, { codec: "msgpack", WebSocket: flaky.WebSocket });
  const start = client.position("user");
  const events = userEvents(client);
  await client.subscribe("dice");
  const round = await bettingRound(client, "dice", 800);

  flaky.control.dropWhen = (message) => message.t === "bet_ok";
  const ok = await client.bet({ game: "dice", round: round.round, amount: 25, params: DICE });

  const [lost] = flaky.control.dropped;
  assert.ok(lost, "the first bet_ok was dropped with the connection");
  assert.equal(flaky.control.sockets, 2, "the client reconnected once");
  const bets = flaky.control.sent.filter((m) => m.t === "bet");
  assert.equal(bets.length, 2, "the bet was sent twice");
  assert.equal(bets[0].key, bets[1].key, "with the same idempotency key");
  assert.deepEqual(ok.bet, lost.bet, "the retry got the first bet_ok: the same bet");
  assert.equal(ok.balance, lost.balance);
  assert.equal(client.stats.betRetries, 1);

  await next(client, "bet_settled", (e) => e.bet === ok.bet.id);
  await until(async () => client.balance === (await client.getBalance()), "the balance to settle");
  const debits = events.filter((e) => e.t === "balance" && e.reason === "bet");
  assert.equal(debits.length, 1, "charged once");
  assert.equal(debits[0].delta, -25);
  assert.equal(debits[0].ref, ok.bet.id);
  assertContiguous(events, start.offset);
  assert.equal(WELCOME_CREDIT + sumOfDeltas(events), client.balance);
});

test("lifecycle: paused while deactivated, resumed with the user events missed meanwhile, once each", async () => {
  const webApp = fakeWebApp();
  const app = await open(501, { lifecycle: { webApp, document: null } });
  assert.equal(webApp.listeners("deactivated"), 1);
  const start = app.position("user");
  const seen = userEvents(app);
  const welcomes = [];
  app.on("welcome", (w) => welcomes.push(w));

  webApp.fire("deactivated");
  await until(() => app.state === "paused", "the pause");

  // Meanwhile the same user plays from another socket: these events are the paused app's to catch up on.
  const other = await open(501);
  await other.subscribe("dice");
  for (let i = 0; i < 2; i++) {
    const round = await bettingRound(other);
    const settled = next(other, "bet_settled");
    const ok = await other.bet({ game: "dice", round: round.round, amount: 5, params: DICE });
    assert.equal((await settled).bet, ok.bet.id);
  }
  await until(async () => other.balance === (await other.getBalance()), "the other socket's balance");
  assert.equal(seen.length, 0, "nothing reaches a paused client");

  webApp.fire("activated");
  await until(() => app.state === "ready", "the resume");
  assert.equal(welcomes.length, 1);
  assert.equal(welcomes[0].recovered, true);
  assert.ok(welcomes[0].missed.length >= 4, "two bets and their settlements were missed");
  assertContiguous(seen, start.offset);
  assert.equal(app.balance, other.balance);
  assert.equal(WELCOME_CREDIT + sumOfDeltas(seen), app.balance);
  app.close();
  assert.equal(webApp.listeners("deactivated"), 0, "close() stops watching the lifecycle");
});

test("4409: the oldest socket of a user is replaced by a 6th and stops for good", async () => {
  const first = await open(601);
  const stopped = next(first, "stopped");
  for (let i = 0; i < 5; i++) await open(601);
  const error = await stopped;
  assert.equal(error.code, "replaced");
  assert.equal(error.closeCode, 4409);
  assert.equal(first.state, "stopped");
  await assert.rejects(first.getBalance(), { code: "replaced" });
  for (const client of clients.filter((c) => c !== first && c.user?.id === 601)) client.close();
});

test("node restart mid-session: the client reconnects and resumes, no user event lost or applied twice", async (t) => {
  const client = await open(701, { codec: "json" });
  const start = client.position("user");
  const events = userEvents(client);
  const states = [];
  client.on("state", (s) => states.push(s));
  const snapshots = [];
  client.on("snapshot", (s) => snapshots.push(s));
  const gameEvents = [];
  client.on("round", (e) => gameEvents.push(e));
  await client.subscribe("dice");

  // Bet on every round (without waiting for replies) while the node goes down and comes back.
  const outcomes = [];
  let betting = true;
  client.on("round", (event) => {
    if (!betting || event.phase !== "betting") return;
    const bet = client.bet({ game: "dice", round: event.round, amount: 7, params: DICE });
    outcomes.push(
      bet.then(
        (ok) => ({ ok }),
        (error) => ({ error }),
      ),
    );
  });
  await until(() => events.filter((e) => e.t === "bet_settled").length >= 2, "two bets settled before the restart");
  // Go down right after a bet is placed, its round still taking bets: it ends after the restart (settled, or
  // voided and refunded), and its events reach the client through the resume.
  await next(client, "balance", (e) => e.reason === "bet");

  await server.stop("SIGTERM");
  await server.start();
  await until(() => client.state === "ready", "the client back on the restarted node");
  const settledBefore = events.filter((e) => e.t === "bet_settled").length;
  await until(
    () => events.filter((e) => e.t === "bet_settled").length >= settledBefore + 2,
    "two bets settled after it",
  );
  betting = false;

  const results = await Promise.all(outcomes);
  for (const { error } of results) {
    if (error)
      assert.ok(
        ["betting_closed", "round_mismatch"].includes(error.code),
        `unexpected ${error.code}: ${error.message}`,
      );
  }
  const placed = results.filter((r) => r.ok).map((r) => r.ok.bet.id);
  // Every placed bet ends settled or refunded (a betting round cut by the restart is voided and refunded).
  await until(
    () =>
      placed.every((id) =>
        events.some((e) => (e.t === "bet_settled" && e.bet === id) || (e.reason === "refund" && e.ref === id)),
      ),
    "every bet placed to end",
  );
  await until(async () => client.balance === (await client.getBalance()), "the balance to settle");

  assert.ok(
    states.some((s) => s.state === "reconnecting" && s.closeCode === 1012),
    "the node drained with 1012",
  );
  assertContiguous(events, start.offset);
  assert.equal(new Set(events.map((e) => e.offset)).size, events.length, "no user event applied twice");
  assert.equal(WELCOME_CREDIT + sumOfDeltas(events), client.balance);
  const debits = events.filter((e) => e.reason === "bet");
  assert.equal(debits.length, placed.length, "one debit per placed bet");
  assert.deepEqual(new Set(debits.map((e) => e.ref)), new Set(placed));
  assert.ok(
    !snapshots.some((s) => s.channel === "user" && s.reason !== "initial"),
    "the user channel resumed without a snapshot",
  );
  // The game channel: resumed or restarted from a snapshot, and its events in order within each epoch.
  const diceSnapshots = snapshots.filter((s) => s.channel === "game:dice");
  const refused = results.filter((r) => r.error).map((r) => r.error.code);
  t.diagnostic(
    `bets placed ${placed.length}, refused [${refused}], refunds ${events.filter((e) => e.reason === "refund").length}, ` +
      `user events ${events.length}, dice snapshots [${diceSnapshots.map((s) => s.reason)}], stats ${JSON.stringify(client.stats)}`,
  );
  assert.equal(diceSnapshots[0].reason, "initial");
  const byEpoch = new Map();
  for (const event of gameEvents) {
    const last = byEpoch.get(event.epoch);
    if (last !== undefined) assert.ok(event.offset > last, "game events in order, once");
    byEpoch.set(event.epoch, event.offset);
  }
});
