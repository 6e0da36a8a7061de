import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";

/** The next `type` event of `client` that `predicate` accepts. */
export function next(client, type, predicate = () => true, timeoutMs = 15_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = client.on(type, (payload) => {
      if (!predicate(payload)) return;
      clearTimeout(timer);
      off();
      resolve(payload);
    });
  });
}

/** Poll `predicate` until it holds. */
export async function until(predicate, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** A round of `game` still taking bets for at least `marginMs`. */
export async function bettingRound(client, game = "dice", marginMs = 700) {
  for (;;) {
    const round = client.currentRound(game);
    if (round && round.phase === "betting" && round.closes_at - Date.now() > marginMs) return round;
    await next(client, "round", (event) => event.game === game && event.phase === "betting");
  }
}

/** Every `user` event the app sees, in the order it sees them. */
export function userEvents(client) {
  const events = [];
  client.on("event", (event) => {
    if (event.ch === "user") events.push(event);
  });
  return events;
}

/** The offsets of `events` are from+1, from+2, ... with none missing and none twice. */
export function assertContiguous(events, from) {
  const offsets = events.map((event) => event.offset);
  const expected = offsets.map((_, index) => from + 1 + index);
  assert.deepEqual(offsets, expected, `user offsets after ${from} are not contiguous: ${offsets.join(",")}`);
}

/** What the user's `balance` events add up to. */
export function sumOfDeltas(events) {
  return events.filter((event) => event.t === "balance").reduce((sum, event) => sum + event.delta, 0);
}

/** A fake `Telegram.WebApp` whose lifecycle events the test fires. */
export function fakeWebApp() {
  const handlers = new Map();
  return {
    initData: "",
    isActive: true,
    onEvent(type, handler) {
      if (!handlers.has(type)) handlers.set(type, new Set());
      handlers.get(type).add(handler);
    },
    offEvent(type, handler) {
      handlers.get(type)?.delete(handler);
    },
    fire(type) {
      this.isActive = type !== "deactivated";
      for (const handler of handlers.get(type) ?? []) handler();
    },
    listeners(type) {
      return handlers.get(type)?.size ?? 0;
    },
  };
}
