// The client's bookkeeping against a scripted socket (no server): ordering and dedupe, gaps, resume requests,
// close codes, bet keys across reconnects, timeouts, lifecycle, backoff.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { CroupierClient, CroupierError, backoffDelay, connect, watchLifecycle } from "../dist/index.js";
import { fakeWebApp, until } from "./helpers/util.mjs";

/** Replies resolve the client's promises: let their callbacks run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** A WebSocket the test plays the server of. JSON frames. */
class FakeSocket {
  static all = [];
  static get last() {
    return FakeSocket.all.at(-1);
  }
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.protocol = protocols[0];
    this.readyState = 0;
    this.binaryType = "blob";
    this.sent = [];
    this.closed = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.all.push(this);
    queueMicrotask(() => {
      this.readyState = 1;
      this.onopen?.({});
    });
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close(code, reason) {
    this.readyState = 3;
    this.closed = { code, reason };
  }
  // --- the test's side
  push(message) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }
  request(t) {
    const found = this.sent.filter((m) => m.t === t).at(-1);
    assert.ok(found, `no ${t} sent`);
    return found;
  }
  /** Answer the last `t` request; resolves once the client has handled the answer. */
  async reply(t, fields) {
    const request = this.request(t);
    this.push({ id: request.id, ...fields });
    await settle();
    return request;
  }
  welcome(fields = {}) {
    return this.reply("auth", {
      t: "welcome",
      user: { id: 1, first_name: "P" },
      balance: 100,
      session: "s",
      server_time: Date.now(),
      games: ["dice"],
      offset: 10,
      epoch: "E",
      ...fields,
    });
  }
  serverClose(code, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

const user = (offset, balance = 100 + offset, extra = {}) => ({
  t: "balance",
  ch: "user",
  offset,
  epoch: "E",
  balance,
  delta: 1,
  reason: "win",
  ref: offset,
  ...extra,
});
const tick = (offset, fields = {}) => ({
  t: "tick",
  ch: "game:dice",
  offset,
  epoch: "G",
  game: "dice",
  round: 7,
  ...fields,
});

const clients = new Set();
after(() => {
  for (const client of clients) client.close();
});

async function ready(options = {}) {
  FakeSocket.all = [];
  const promise = connect({
    url: "ws://test/ws",
    initData: "init",
    WebSocket: FakeSocket,
    lifecycle: false,
    pingIntervalMs: 0,
    backoff: { initialMs: 1, maxMs: 5 },
    ...options,
  });
  await until(() => FakeSocket.last?.sent.length > 0, "auth");
  await FakeSocket.last.welcome();
  const client = await promise;
  clients.add(client);
  return client;
}

function record(client, type = "event") {
  const seen = [];
  client.on(type, (payload) => seen.push(payload));
  return seen;
}

describe("user channel", () => {
  test("applied in offset order, once: out of order held, duplicates dropped", async () => {
    const client = await ready();
    const seen = record(client);
    const socket = FakeSocket.last;
    for (const offset of [12, 11, 11, 13, 10, 9]) socket.push(user(offset));
    assert.deepEqual(
      seen.map((e) => e.offset),
      [11, 12, 13],
    );
    assert.equal(client.stats.duplicates, 3);
    assert.equal(client.balance, 113);
    assert.deepEqual(client.position("user"), { offset: 13, epoch: "E" });
    client.close();
  });

  test("a gap that stays open: reconnect with since, the welcome's missed events fill it", async () => {
    const client = await ready({ gapTimeoutMs: 20 });
    const seen = record(client);
    const first = FakeSocket.last;
    first.push(user(11));
    first.push(user(13)); // 12 is late
    assert.deepEqual(
      seen.map((e) => e.offset),
      [11],
    );
    await until(() => FakeSocket.all.length === 2 && FakeSocket.last.sent.length > 0, "the resync");
    assert.equal(client.stats.resyncs, 1);
    assert.equal(first.closed.code, 1000, "closed politely");
    const auth = FakeSocket.last.request("auth");
    assert.deepEqual(auth.since, { offset: 11, epoch: "E" });
    await FakeSocket.last.welcome({ offset: 13, balance: 113, recovered: true, missed: [user(12), user(13)] });
    assert.deepEqual(
      seen.map((e) => e.offset),
      [11, 12, 13],
    );
    client.close();
  });

  test("pushes that arrive before the welcome wait for it; not recovered means a snapshot", async () => {
    const client = await ready();
    const seen = record(client);
    const snapshots = record(client, "snapshot");
    FakeSocket.last.push(user(11));
    FakeSocket.last.serverClose(1006);
    await until(() => FakeSocket.all.length === 2 && FakeSocket.last.sent.length > 0, "the reconnect");
    const socket = FakeSocket.last;
    assert.deepEqual(socket.request("auth").since, { offset: 11, epoch: "E" });
    socket.push(user(31)); // published while the socket authenticates
    socket.push(user(30));
    assert.equal(seen.length, 1);
    await socket.welcome({ offset: 30, balance: 130, recovered: false, missed: [] });
    assert.deepEqual(
      snapshots.map((s) => [s.channel, s.reason, s.balance]),
      [["user", "not_recovered", 130]],
    );
    assert.deepEqual(
      seen.map((e) => e.offset),
      [11, 31],
    );
    assert.equal(client.balance, 131);
    client.close();
  });
});

describe("game channels", () => {
  test("snapshot, ticks in order (a skipped tick is fine), resubscribe with since, a new epoch", async () => {
    const client = await ready();
    const snapshots = record(client, "snapshot");
    const ticks = record(client, "tick");
    const subscribed = client.subscribe("dice");
    const socket = FakeSocket.last;
    socket.push(tick(5)); // before the reply: held, and older than the snapshot
    await socket.reply("subscribe", {
      t: "subscribed",
      game: "dice",
      round: { round: 7, phase: "running", game: "dice" },
      offset: 5,
      epoch: "G",
      recovered: false,
      missed: [],
    });
    assert.equal((await subscribed).offset, 5);
    assert.equal(snapshots[0].reason, "initial");
    assert.equal(client.currentRound("dice").phase, "running");
    socket.push(tick(6, { multiplier: 120 }));
    socket.push(tick(8, { multiplier: 140 })); // 7 skipped for a slow socket
    socket.push(tick(8, { multiplier: 140 }));
    assert.deepEqual(
      ticks.map((e) => e.offset),
      [6, 8],
    );
    assert.equal(client.currentRound("dice").multiplier, 140);

    socket.serverClose(1012, "restart");
    await until(() => FakeSocket.all.length === 2 && FakeSocket.last.sent.length > 0, "the reconnect");
    const next = FakeSocket.last;
    await next.welcome({ recovered: true, missed: [] });
    const again = next.request("subscribe");
    assert.deepEqual(again.since, { offset: 8, epoch: "G" });
    await next.reply("subscribe", {
      t: "subscribed",
      game: "dice",
      round: null,
      offset: 9,
      epoch: "G",
      recovered: true,
      missed: [tick(8), tick(9, { multiplier: 150 })],
    });
    assert.deepEqual(
      ticks.map((e) => e.offset),
      [6, 8, 9],
    );
    assert.equal(snapshots.length, 1, "recovered: no snapshot");

    next.push({ t: "round", ch: "game:dice", offset: 1, epoch: "H", game: "dice", round: 7, phase: "running" }); // taken over
    next.push(tick(10)); // a late event of the old epoch
    next.push(tick(2, { epoch: "H", multiplier: 160 }));
    assert.deepEqual(
      ticks.map((e) => [e.epoch, e.offset]),
      [
        ["G", 6],
        ["G", 8],
        ["G", 9],
        ["H", 2],
      ],
    );
    client.close();
  });
});

describe("requests", () => {
  test("a bet keeps its key across a reconnect and is sent again; other requests fail with disconnected", async () => {
    const client = await ready();
    const bet = client.bet({ game: "dice", round: 7, amount: 5, params: { target: 5000, side: "over" } });
    const balance = client.getBalance();
    const first = FakeSocket.last;
    const sentBet = first.request("bet");
    assert.match(sentBet.key, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    first.serverClose(1006);
    await assert.rejects(
      balance,
      (error) => error instanceof CroupierError && error.code === "disconnected" && error.retryable,
    );
    await until(() => FakeSocket.all.length === 2 && FakeSocket.last.sent.length > 0, "the reconnect");
    const second = FakeSocket.last;
    assert.equal(second.sent.filter((m) => m.t === "bet").length, 0, "not before the welcome");
    await second.welcome({ recovered: true, missed: [] });
    const resent = second.request("bet");
    assert.deepEqual(resent, sentBet, "the same bet, the same key");
    await second.reply("bet", {
      t: "bet_ok",
      bet: { id: 1, game: "dice", round: 7, amount: 5, params: {}, status: "accepted" },
      balance: 95,
    });
    assert.equal((await bet).bet.id, 1);
    assert.equal(client.stats.betRetries, 1);
    client.close();
  });

  test("an error reply is a CroupierError with code and field; a silent server is a timeout", async () => {
    const client = await ready({ requestTimeoutMs: 30 });
    const refused = client.bet({ game: "dice", round: 7, amount: 5, params: { target: 0, side: "over" }, key: "k1" });
    const checked = assert.rejects(refused, {
      name: "CroupierError",
      code: "invalid_bet",
      field: "params.target",
      key: "k1",
      request: "bet",
    });
    await FakeSocket.last.reply("bet", { t: "error", code: "invalid_bet", message: "target", field: "params.target" });
    await checked;
    await assert.rejects(client.ping(), { code: "timeout", request: "ping" });
    const big = client.request({ t: "history", game: "x".repeat(20_000) });
    await assert.rejects(big, { code: "frame_too_big" });
    client.close();
    await assert.rejects(client.ping(), { code: "closed" });
  });
});

describe("close codes", () => {
  test("4409 stops for good: no reconnect, pending requests rejected with replaced", async () => {
    const client = await ready();
    const stopped = record(client, "stopped");
    const pending = client.getBalance();
    FakeSocket.last.serverClose(4409, "replaced");
    await assert.rejects(pending, { code: "replaced" });
    assert.equal(client.state, "stopped");
    assert.equal(stopped[0].closeCode, 4409);
    await sleep(20);
    assert.equal(FakeSocket.all.length, 1);
  });

  test("4403 (a blocked account) stops for good: no reconnect, pending requests rejected with forbidden", async () => {
    const client = await ready();
    const stopped = record(client, "stopped");
    const pending = client.getBalance();
    FakeSocket.last.serverClose(4403, "account blocked");
    await assert.rejects(pending, { code: "forbidden" });
    assert.equal(client.state, "stopped");
    assert.equal(stopped[0].closeCode, 4403);
    await sleep(20);
    assert.equal(FakeSocket.all.length, 1);
  });

  test("1012 and 4503 reconnect; 4401 asks getInitData, or stops without it", async () => {
    let asked = 0;
    const client = await ready({ getInitData: () => `fresh${++asked}` });
    for (const code of [1012, 4503]) {
      const before = FakeSocket.all.length;
      FakeSocket.last.serverClose(code);
      await until(
        () => FakeSocket.all.length === before + 1 && FakeSocket.last.sent.length > 0,
        `a reconnect after ${code}`,
      );
      await FakeSocket.last.welcome({ recovered: true, missed: [] });
    }
    assert.equal(asked, 0);
    FakeSocket.last.serverClose(4401, "unauthorized");
    await until(
      () => FakeSocket.all.length === 4 && FakeSocket.last.sent.length > 0,
      "a reconnect with fresh initData",
    );
    assert.equal(asked, 1);
    assert.equal(FakeSocket.last.request("auth").init_data, "fresh1");
    client.close();

    const strict = await ready();
    FakeSocket.last.serverClose(4401, "unauthorized");
    assert.equal(strict.state, "stopped");
  });

  test("the first connection fails with unauthorized when initData is refused", async () => {
    FakeSocket.all = [];
    const promise = connect({ url: "ws://test/ws", initData: "bad", WebSocket: FakeSocket, lifecycle: false });
    await until(() => FakeSocket.last?.sent.length > 0, "auth");
    await FakeSocket.last.reply("auth", {
      t: "error",
      code: "unauthorized",
      message: "bad_hash: ...",
      field: "init_data",
    });
    FakeSocket.last.serverClose(4401, "unauthorized");
    await assert.rejects(promise, { code: "unauthorized", field: "init_data", closeCode: 4401 });
  });
});

describe("Mini App lifecycle", () => {
  test("deactivated/hidden pauses (socket closed politely), activated/visible resumes with since", async () => {
    const webApp = fakeWebApp();
    const listeners = new Map();
    const document = {
      visibilityState: "visible",
      addEventListener: (type, handler) => listeners.set(type, handler),
      removeEventListener: (type) => listeners.delete(type),
    };
    const client = await ready({ lifecycle: { webApp, document } });
    FakeSocket.last.push(user(11));
    const socket = FakeSocket.last;
    const pending = client.ping();
    webApp.fire("deactivated");
    assert.equal(client.state, "paused");
    assert.equal(socket.closed.code, 1000);
    await assert.rejects(pending, { code: "paused" });
    document.visibilityState = "hidden";
    listeners.get("visibilitychange")();
    webApp.fire("activated");
    assert.equal(client.state, "paused", "still hidden");
    assert.equal(FakeSocket.all.length, 1);
    document.visibilityState = "visible";
    listeners.get("visibilitychange")();
    await until(() => FakeSocket.all.length === 2 && FakeSocket.last.sent.length > 0, "the resume");
    assert.deepEqual(FakeSocket.last.request("auth").since, { offset: 11, epoch: "E" });
    client.close();
    assert.equal(listeners.size, 0);
  });

  test("a Mini App opened in the background starts paused; outside Telegram nothing is watched", async () => {
    const changes = [];
    const stop = watchLifecycle({ webApp: { ...fakeWebApp(), isActive: false }, document: null }, (active, why) =>
      changes.push([active, why]),
    );
    assert.deepEqual(changes, [[false, "deactivated"]]);
    stop();
    assert.ok(
      new CroupierClient({ url: "ws://x", initData: "i", WebSocket: FakeSocket }),
      "no Telegram, no document: fine",
    );
  });
});

test("backoff grows exponentially to its cap, with jitter", () => {
  const options = { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.5 };
  assert.deepEqual(
    [0, 1, 2, 3, 4, 10].map((n) => backoffDelay(n, options, () => 0)),
    [100, 200, 400, 800, 1000, 1000],
  );
  assert.deepEqual(
    [0, 1, 2, 3, 4, 10].map((n) => backoffDelay(n, options, () => 1)),
    [50, 100, 200, 400, 500, 500],
  );
});
