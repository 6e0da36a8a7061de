import { backoffDelay, type BackoffOptions } from "./backoff.js";
import { codecFor, frameSize, type Codec, type CodecName } from "./codec.js";
import { Emitter } from "./emitter.js";
import { CroupierError, type ErrorCode } from "./errors.js";
import { defaultSources, telegramWebApp, watchLifecycle, type LifecycleSources } from "./lifecycle.js";
import type {
  ActionOk,
  Balance,
  BetOk,
  BetSettled,
  CroupierProtocol,
  GameInfo,
  GameLimits,
  HistoryReply,
  Invoice,
  Pong,
  RoundEvent,
  RoundRecord,
  StreamPosition,
  Subscribed,
  Tick,
  User,
  Welcome,
} from "./protocol.js";

// ---------------------------------------------------------------- public types

/** Where the client is. `ready`: authenticated, requests flow. `stopped`: for good (see the `stopped` event). */
export type ConnectionState =
  "idle" | "connecting" | "authenticating" | "ready" | "reconnecting" | "paused" | "stopped";

/** The WebSocket API the client needs (the browser's, or the `ws` package's in Node). */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  binaryType: string;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor: `globalThis.WebSocket` in browsers, `(await import("ws")).WebSocket` in Node 20. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => unknown;

export interface ClientOptions {
  /** The node's WebSocket URL, e.g. `wss://games.example.com/ws`. */
  url: string;
  /** The raw `Telegram.WebApp.initData` (default: `Telegram.WebApp.initData` when the page runs in Telegram). */
  initData?: string;
  /**
   * Called for fresh initData when the server closes with 4401 (initData expired or refused), and before the first
   * connection when `initData` is not given. Without it, a 4401 stops the client.
   */
  getInitData?: () => string | Promise<string>;
  /** `json` (default) or `msgpack`: the `croupier.v1.json` or `croupier.v1.msgpack` subprotocol. */
  codec?: CodecName;
  /** The WebSocket constructor (default `globalThis.WebSocket`; Node 20 has none: pass `ws`'s). */
  WebSocket?: WebSocketConstructor;
  /** How long a request waits for its reply, in ms (default 10,000). */
  requestTimeoutMs?: number;
  /** How long a bet may take, reconnects and retries included, in ms (default 30,000). */
  betTimeoutMs?: number;
  /** How long opening a socket and authenticating may take before the attempt counts as failed (default 10,000). */
  connectTimeoutMs?: number;
  /** Reconnect after a socket closes (default true). False: a close stops the client. */
  reconnect?: boolean;
  /** Reconnect delays (exponential with jitter). */
  backoff?: BackoffOptions;
  /** Send a `ping` this often while ready, in ms, and reconnect when it gets no `pong` (default 25,000; 0: off). */
  pingIntervalMs?: number;
  /** How long a gap in the `user` channel may stay open before the client resyncs, in ms (default 5,000). */
  gapTimeoutMs?: number;
  /** Largest frame the client sends (the server's `CROUPIER_MAX_FRAME_BYTES`, default 16,384). */
  maxFrameBytes?: number;
  /** Consecutive 4401 closes (each with fresh initData from `getInitData`) before the client gives up (default 3). */
  maxAuthFailures?: number;
  /**
   * Pause when the Mini App is deactivated or hidden, resume when it is back (default true: watch
   * `Telegram.WebApp` and `document` when they exist). False: never pause by itself. An object: watch these.
   */
  lifecycle?: boolean | LifecycleSources;
}

/** A `balance` push on the `user` channel (a `balance` reply to a request has no `ch`). */
export type BalancePush = Balance & { ch: string; offset: number; epoch: string; delta: number; reason: string };

/** Any event on a channel (`user` or `game:<name>`), with its position. */
export type ChannelEvent =
  | BalancePush
  | BetSettled
  | RoundEvent
  | Tick
  | { t: string; ch: string; offset: number; epoch: string; [field: string]: unknown };

/** A round as the client last saw it: the `subscribed` snapshot, then every `round` event and `tick` merged in. */
export type RoundState = { round: number; phase: string; game?: string; [field: string]: unknown };

/** Why the app should replace its state with a snapshot. */
export type SnapshotReason =
  /** The first `welcome` of the client, or the first `subscribed` of a game. */
  | "initial"
  /** A resume (`since`) the server could not serve: events were missed and are not all kept any more. */
  | "not_recovered";

/** Replace your state for this channel: events before it are not coming. */
export type Snapshot =
  | { kind: "user"; channel: "user"; reason: SnapshotReason; balance: number; welcome: Welcome }
  | {
      kind: "game";
      channel: `game:${string}`;
      game: string;
      reason: SnapshotReason;
      round: RoundState | null;
      subscribed: Subscribed;
    };

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** Reconnect attempts since the last `welcome`. */
  attempt: number;
  /** In `reconnecting`: how long until the next attempt. */
  delayMs?: number;
  /** The close code of the socket that just closed, if any (local codes: 4000 resync, 4001 paused, 4002 timeout). */
  closeCode?: number;
  closeReason?: string;
}

export interface ClientEvents {
  /** The connection state changed. */
  state: StateChange;
  /** A socket authenticated (first connection and every reconnection), after any missed `user` events. */
  welcome: Welcome;
  /** Replace your state for a channel (first time, or when a resume could not be served). */
  snapshot: Snapshot;
  /** A `balance` push of the user channel (bet, win, refund, deposit, adjust), once, in order. */
  balance: BalancePush;
  /** A bet of this user was settled, once, in order. */
  bet_settled: BetSettled;
  /** A round of a subscribed game changed phase, once, in order. */
  round: RoundEvent;
  /** A tick of a subscribed game (crash's multiplier). Ticks may be skipped for a slow socket, never reordered. */
  tick: Tick;
  /** Every channel event above, and events of kinds this version does not know. */
  event: ChannelEvent;
  /** An error not tied to a request of yours (an `error` with no id, a resubscribe that failed). */
  error: CroupierError;
  /** Any other message the server sent that answers nothing (a future push). */
  message: Record<string, unknown>;
  /** The client stopped for good: `code` is `closed` (you closed it), `replaced` (4409), `forbidden` (4403, a blocked account), `unauthorized`, ... */
  stopped: CroupierError;
}

/** A bet. `params` is typed for the games the schema knows (dice: `{target, side}`). */
export interface BetRequest<G extends string = string> {
  game: G;
  /** The round to bet on: the current round of `game` (take it from `currentRound(game)` or a `betting` event). */
  round: number;
  amount: number;
  params?: BetParams<G>;
  /** The idempotency key (default: a new UUID). Reuse it to retry a bet whose outcome you did not see. */
  key?: string;
  /** Overrides `betTimeoutMs` for this bet. */
  timeoutMs?: number;
  /**
   * A seed of the player's choosing (1-64 printable ASCII characters, no `:`): the client seeds of the bets in
   * a seed chain's first round make the salt of every round of that chain (docs/fairness.md).
   */
  clientSeed?: string;
}

type Games = CroupierProtocol["games"];
/** The games the generated types know. */
export type KnownGame = keyof Games;
/** A bet's `params` in game `G` (free-form for games the generated types do not know). */
export type BetParams<G extends string> = G extends KnownGame ? Games[G]["bet"] : Record<string, unknown>;

export interface ActionRequest {
  game: string;
  round: number;
  action: string;
  params?: Record<string, unknown>;
  timeoutMs?: number;
}

export interface ClientStats {
  /** Sockets opened after the first. */
  reconnects: number;
  /** Channel events dropped because they had been applied already (a replay overlapping a push). */
  duplicates: number;
  /** Forced reconnections to close a gap in the user channel. */
  resyncs: number;
  /** Bets sent again (same key) after a socket closed before their reply. */
  betRetries: number;
}

// ---------------------------------------------------------------- internals

const OPEN = 1;
/** Local close codes (never sent by the server): a socket the client dropped itself. */
const CLOSE_RESYNC = 4000; // reconnect at once (a gap to close, reconnect() called)
const CLOSE_PAUSED = 4001; // the app paused the client
const CLOSE_TIMEOUT = 4002; // no welcome, or no reply to the client's own request: reconnect with backoff
/** Client-side close code sent to the server when the client leaves on purpose. */
const CLOSE_NORMAL = 1000;

interface Pending {
  id: number;
  t: string;
  message: Record<string, unknown>;
  resolve: (reply: never) => void;
  reject: (error: CroupierError) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** Sent again after a reconnect instead of failing (bets, with their key). */
  retry: boolean;
  key: string | null;
  /** The socket it was last sent on; null while waiting to be sent. */
  socket: WebSocketLike | null;
  /** Sent during authentication (auth itself): never queued. */
  now: boolean;
  /** A request the client makes for itself (auth, subscribe, ping): a timeout drops the socket. */
  internal: boolean;
  /** Sent at least once (a bet sent again after a reconnect counts as a retry). */
  sent: boolean;
}

interface Channel {
  name: string;
  kind: "user" | "game";
  epoch: string | null;
  offset: number | null;
  /** False from a new socket's open until its welcome/subscribed: events are held meanwhile. */
  live: boolean;
  held: ChannelEvent[];
  /** User channel: events after a gap, waiting for the missing offsets. */
  ahead: ChannelEvent[];
  gapTimer: ReturnType<typeof setTimeout> | undefined;
  /** Game channel: epochs replaced by a newer one (another node took over): their late events are dropped. */
  retired: Set<string>;
}

interface Subscription {
  game: string;
  waiters: Array<{ resolve: (reply: Subscribed) => void; reject: (error: CroupierError) => void }>;
  inFlight: boolean;
}

function uuid(): string {
  const crypto = (globalThis as { crypto?: Crypto }).crypto;
  if (crypto && typeof crypto.randomUUID === "function") {
    try {
      return crypto.randomUUID();
    } catch {
      // randomUUID needs a secure context in browsers (https or localhost): fall through.
    }
  }
  const bytes = new Uint8Array(16);
  if (crypto && typeof crypto.getRandomValues === "function") crypto.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function isChannelEvent(message: object): message is ChannelEvent {
  return typeof (message as { ch?: unknown }).ch === "string";
}

function positioned(event: ChannelEvent): boolean {
  return typeof event.offset === "number" && typeof event.epoch === "string";
}

const ROUND_META = new Set(["t", "ch", "offset", "epoch", "ts"]);

function roundFields(event: object): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(event)) if (!ROUND_META.has(name)) fields[name] = value;
  return fields;
}

// ---------------------------------------------------------------- the client

/**
 * A Croupier session that survives its sockets: it authenticates with initData, resumes the `user` channel and
 * every subscribed game after a reconnect, applies each channel event once and in order, and retries bets with
 * their idempotency key. Create it with {@link connect}.
 */
export class CroupierClient extends Emitter<ClientEvents> {
  readonly url: string;
  readonly codec: Codec;

  #options: Required<
    Pick<
      ClientOptions,
      | "requestTimeoutMs"
      | "betTimeoutMs"
      | "connectTimeoutMs"
      | "reconnect"
      | "pingIntervalMs"
      | "gapTimeoutMs"
      | "maxFrameBytes"
      | "maxAuthFailures"
    >
  > & { backoff: BackoffOptions };
  #WebSocket: new (url: string, protocols?: string | string[]) => WebSocketLike;
  #initData: string | undefined;
  #getInitData: (() => string | Promise<string>) | undefined;
  #lifecycle: LifecycleSources | null;
  #unwatch: (() => void) | null = null;

  #state: ConnectionState = "idle";
  #ws: WebSocketLike | null = null;
  #nextId = 1;
  #pending = new Map<number, Pending>();
  #channels = new Map<string, Channel>();
  #subscriptions = new Map<string, Subscription>();
  #rounds = new Map<string, RoundState | null>();
  #attempt = 0;
  #authFailures = 0;
  #lastAuthError: CroupierError | null = null;
  /** The `resets_at` of the last error that carried one (a session time limit's break end, before a 4410). */
  #lastResetsAt: number | null = null;
  #paused = false;
  #stopped = false;
  #stopError: CroupierError | null = null;
  #sockets = 0;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #connectTimer: ReturnType<typeof setTimeout> | undefined;
  #pingTimer: ReturnType<typeof setInterval> | undefined;
  #ready: Promise<void>;
  #readyResolve!: () => void;
  #readyReject!: (error: CroupierError) => void;
  #everReady = false;
  #opened = false;

  #welcome: Welcome | null = null;
  #balance: number | null = null;
  readonly stats: ClientStats = { reconnects: 0, duplicates: 0, resyncs: 0, betRetries: 0 };

  constructor(options: ClientOptions) {
    super();
    if (!options || typeof options.url !== "string") throw new TypeError("connect() needs { url }");
    this.url = options.url;
    this.codec = codecFor(options.codec);
    this.#options = {
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      betTimeoutMs: options.betTimeoutMs ?? 30_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      reconnect: options.reconnect ?? true,
      pingIntervalMs: options.pingIntervalMs ?? 25_000,
      gapTimeoutMs: options.gapTimeoutMs ?? 5_000,
      maxFrameBytes: options.maxFrameBytes ?? 16_384,
      maxAuthFailures: options.maxAuthFailures ?? 3,
      backoff: options.backoff ?? {},
    };
    const WebSocketClass = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (typeof WebSocketClass !== "function") {
      throw new TypeError('no WebSocket: pass { WebSocket } (in Node 20: import { WebSocket } from "ws")');
    }
    this.#WebSocket = WebSocketClass as new (url: string, protocols?: string | string[]) => WebSocketLike;
    this.#initData = options.initData ?? telegramWebApp()?.initData ?? undefined;
    if (this.#initData === "") this.#initData = undefined;
    this.#getInitData = options.getInitData;
    if (this.#initData === undefined && this.#getInitData === undefined) {
      throw new TypeError("connect() needs initData (or getInitData): the raw Telegram.WebApp.initData string");
    }
    this.#lifecycle =
      options.lifecycle === false
        ? null
        : options.lifecycle === true || options.lifecycle === undefined
          ? defaultSources()
          : options.lifecycle;
    this.#ready = new Promise<void>((resolve, reject) => {
      this.#readyResolve = resolve;
      this.#readyReject = reject;
    });
    this.#ready.catch(() => {}); // observed through open(); never an unhandled rejection
    this.#channels.set("user", this.#newChannel("user", "user"));
  }

  // ------------------------------------------------------------ state the app may read

  get state(): ConnectionState {
    return this.#state;
  }
  /** The signed-in user (from the last `welcome`). */
  get user(): User | null {
    return this.#welcome?.user ?? null;
  }
  /** The wallet balance as of the last applied `user` event (or `welcome`). */
  get balance(): number | null {
    return this.#balance;
  }
  /** The games this node serves. */
  get games(): string[] {
    return this.#welcome?.games ?? [];
  }
  get limits(): Record<string, GameLimits> {
    return this.#welcome?.limits ?? {};
  }
  get gameInfo(): Record<string, GameInfo> {
    return this.#welcome?.game_info ?? {};
  }
  /** The last `welcome`. */
  get welcome(): Welcome | null {
    return this.#welcome;
  }
  /** The games subscribed (and resubscribed after every reconnect). */
  get subscriptions(): string[] {
    return [...this.#subscriptions.keys()];
  }
  /** The last event applied on `channel` (`user` or `game:<name>`): where a resume starts. */
  position(channel: string): StreamPosition | null {
    const state = this.#channels.get(channel);
    return state && state.epoch !== null && state.offset !== null ? { offset: state.offset, epoch: state.epoch } : null;
  }
  /** The current round of a subscribed game as last seen (snapshot, then events merged in), or null. */
  currentRound(game: string): RoundState | null {
    return this.#rounds.get(game) ?? null;
  }

  // ------------------------------------------------------------ lifecycle of the client

  /** Start connecting (once); resolves at the first `welcome`, rejects if the client stops before. */
  open(): Promise<void> {
    if (!this.#opened && !this.#stopped) {
      this.#opened = true;
      if (this.#lifecycle) {
        this.#unwatch = watchLifecycle(this.#lifecycle, (active, why) => (active ? this.resume() : this.pause(why)));
      }
      if (!this.#paused) void this.#start();
    }
    return this.#ready;
  }

  /** Close the socket politely and stay closed until {@link resume} (what the Mini App lifecycle does). */
  pause(why = "paused"): void {
    if (this.#stopped || this.#paused) return;
    this.#paused = true;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    if (this.#ws) this.#abandon(this.#ws, CLOSE_PAUSED, why);
    else this.#setState("paused", { closeReason: why });
  }

  /** Reconnect after {@link pause}, resuming every channel from where it stopped. */
  resume(): void {
    if (this.#stopped || !this.#paused) return;
    this.#paused = false;
    this.#attempt = 0;
    if (this.#opened && !this.#ws && this.#reconnectTimer === undefined) void this.#start();
  }

  /** Drop the current socket and reconnect at once (resuming); for a UI's "retry now" button, and tests. */
  reconnect(): void {
    if (this.#stopped || this.#paused) return;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    if (this.#ws) this.#abandon(this.#ws, CLOSE_RESYNC, "reconnect requested");
    else void this.#start();
  }

  /** Stop for good: close the socket, fail every pending request with `closed`. */
  close(): void {
    this.#stop(new CroupierError("closed", "the client was closed"));
  }

  // ------------------------------------------------------------ requests

  /** Subscribe to a game's channel; resolves with the `subscribed` reply (the snapshot is also a `snapshot` event). */
  subscribe(game: string): Promise<Subscribed> {
    if (this.#stopped) return Promise.reject(this.#stoppedError("subscribe"));
    let subscription = this.#subscriptions.get(game);
    if (!subscription) {
      subscription = { game, waiters: [], inFlight: false };
      this.#subscriptions.set(game, subscription);
    }
    const sub = subscription;
    const reply = new Promise<Subscribed>((resolve, reject) => sub.waiters.push({ resolve, reject }));
    if (this.#state === "ready" && !sub.inFlight) this.#sendSubscribe(sub);
    return reply;
  }

  /** Stop following a game. */
  async unsubscribe(game: string): Promise<void> {
    const sub = this.#subscriptions.get(game);
    this.#subscriptions.delete(game);
    this.#channels.delete(`game:${game}`);
    this.#rounds.delete(game);
    for (const waiter of sub?.waiters ?? []) {
      waiter.reject(new CroupierError("closed", `unsubscribed from ${game}`, { request: "subscribe" }));
    }
    if (this.#state !== "ready") return;
    try {
      await this.#request({ t: "unsubscribe", game });
    } catch (error) {
      if (!(error instanceof CroupierError) || error.code !== "not_subscribed") throw error;
    }
  }

  /**
   * Place a bet. It carries an idempotency `key` (a new UUID unless given): if the socket closes before the reply,
   * the client sends the same bet with the same key after reconnecting, and the server answers the first
   * `bet_ok` if the bet had been placed; a bet is never charged twice. Rejects with a {@link CroupierError}
   * (`invalid_bet` with `field` `params.target`, `betting_closed`, `insufficient_funds`, `timeout`, ...);
   * its `key` is there to retry by hand.
   */
  bet<G extends string>(bet: BetRequest<G>): Promise<BetOk> {
    const key = bet.key ?? uuid();
    const message = {
      t: "bet",
      game: bet.game,
      round: bet.round,
      amount: bet.amount,
      params: bet.params ?? {},
      key,
      ...(bet.clientSeed === undefined ? {} : { client_seed: bet.clientSeed }),
    };
    return this.#request<BetOk>(message, { timeoutMs: bet.timeoutMs ?? this.#options.betTimeoutMs, retry: true, key });
  }

  /** A game action (crash: `{action: "cashout"}`). Not retried after a disconnect: check the balance and the round. */
  action(request: ActionRequest): Promise<ActionOk> {
    const message = {
      t: "action",
      game: request.game,
      round: request.round,
      action: request.action,
      params: request.params ?? {},
    };
    return this.#request<ActionOk>(message, { timeoutMs: request.timeoutMs });
  }

  /** The committed wallet balance. */
  async getBalance(): Promise<number> {
    const reply = await this.#request<Balance>({ t: "balance" });
    return reply.balance;
  }

  /** The game's last settled rounds, newest first, with their seeds. */
  async history(game: string, limit = 20): Promise<RoundRecord[]> {
    const reply = await this.#request<HistoryReply>({ t: "history", game, limit });
    return reply.rounds;
  }

  /** Round trip; resolves with the server's clock (ms). */
  async ping(): Promise<number> {
    const reply = await this.#request<Pong>({ t: "ping" });
    return reply.server_time;
  }

  /** Buy chips with Telegram Stars: open the returned `url` with `Telegram.WebApp.openInvoice`. */
  deposit(stars: number): Promise<Invoice> {
    return this.#request<Invoice>({ t: "deposit", stars });
  }

  /** Send any request of the contract (`t` and fields, no `id`) and resolve with its reply. */
  request<T = Record<string, unknown>>(
    message: { t: string; [field: string]: unknown },
    options: { timeoutMs?: number } = {},
  ): Promise<T> {
    return this.#request<T>(message, options);
  }

  // ------------------------------------------------------------ connection

  async #start(): Promise<void> {
    if (this.#initData === undefined) {
      if (!(await this.#refreshInitData())) return;
    }
    if (this.#stopped || this.#paused || this.#ws) return;
    this.#openSocket();
  }

  /** Ask the app for initData; false (and the client stopped) when it cannot give any. */
  async #refreshInitData(): Promise<boolean> {
    if (!this.#getInitData) return false;
    try {
      const fresh = await this.#getInitData();
      if (typeof fresh !== "string" || fresh === "") throw new Error("getInitData() returned no initData");
      this.#initData = fresh;
      return true;
    } catch (error) {
      this.#stop(
        new CroupierError("unauthorized", `getInitData() failed: ${(error as Error)?.message ?? error}`, {
          field: "init_data",
        }),
      );
      return false;
    }
  }

  #openSocket(): void {
    this.#setState("connecting");
    if (this.#sockets++ > 0) this.stats.reconnects++;
    let ws: WebSocketLike;
    try {
      ws = new this.#WebSocket(this.url, [this.codec.subprotocol]);
    } catch (error) {
      this.#emitError(
        new CroupierError("disconnected", `cannot open ${this.url}: ${(error as Error)?.message ?? error}`),
      );
      this.#afterClose(1006, "cannot open");
      return;
    }
    ws.binaryType = "arraybuffer";
    this.#ws = ws;
    for (const channel of this.#channels.values()) channel.live = false;
    ws.onopen = () => {
      if (ws === this.#ws) this.#authenticate(ws);
    };
    ws.onmessage = (event) => {
      if (ws === this.#ws) this.#onFrame(event.data);
    };
    ws.onclose = (event) => this.#onClose(ws, event.code, event.reason);
    ws.onerror = () => {}; // a close event follows
    this.#connectTimer = setTimeout(() => {
      if (ws === this.#ws && this.#state !== "ready") this.#abandon(ws, CLOSE_TIMEOUT, "connect timeout");
    }, this.#options.connectTimeoutMs);
  }

  #authenticate(ws: WebSocketLike): void {
    this.#setState("authenticating");
    const since = this.position("user");
    const message: Record<string, unknown> & { t: string } = { t: "auth", init_data: this.#initData };
    if (since) message.since = since;
    this.#request<Welcome>(message, { now: true, internal: true }).then(
      (welcome) => {
        if (ws === this.#ws) this.#onWelcome(welcome, since);
      },
      (error: CroupierError) => {
        if (ws !== this.#ws) return;
        if (error.code === "unauthorized") {
          this.#lastAuthError = error; // the server closes with 4401 next
        } else if (error.code === "unavailable") {
          // PostgreSQL did not answer: the socket stays open, auth again shortly.
          setTimeout(
            () => {
              if (ws === this.#ws && ws.readyState === OPEN) this.#authenticate(ws);
            },
            backoffDelay(this.#attempt++, this.#options.backoff),
          );
        } else if (error.code === "bad_request") {
          this.#stop(error); // the initData or since we send is malformed: a bug, retrying will not help
        }
        // timeout: the socket is dropped; disconnected: the close decides.
      },
    );
  }

  #onWelcome(welcome: Welcome, since: StreamPosition | null): void {
    clearTimeout(this.#connectTimer);
    this.#attempt = 0;
    this.#authFailures = 0;
    this.#lastAuthError = null;
    this.#welcome = welcome;
    const user = this.#channels.get("user")!;
    user.ahead = [];
    clearTimeout(user.gapTimer);
    user.gapTimer = undefined;
    let snapshot: SnapshotReason | null = null;
    if (since && welcome.recovered && Array.isArray(welcome.missed)) {
      for (const event of welcome.missed) this.#deliver(user, event as ChannelEvent);
      if (welcome.offset != null && user.offset !== welcome.offset) snapshot = "not_recovered";
    } else {
      snapshot = since ? "not_recovered" : "initial";
    }
    if (snapshot) {
      user.epoch = welcome.epoch ?? null;
      user.offset = welcome.offset ?? null;
      user.ahead = [];
    }
    this.#balance = welcome.balance;
    this.#setState("ready");
    this.emit("welcome", welcome);
    if (snapshot)
      this.emit("snapshot", { kind: "user", channel: "user", reason: snapshot, balance: welcome.balance, welcome });
    this.#goLive(user);
    if (!this.#everReady) {
      this.#everReady = true;
      this.#readyResolve();
    }
    // Resume: every game with `since`, then whatever waited for the socket (bets again with their keys).
    for (const sub of this.#subscriptions.values()) this.#sendSubscribe(sub);
    const queued = [...this.#pending.values()].filter((p) => p.socket === null).sort((a, b) => a.id - b.id);
    for (const pending of queued) {
      if (pending.retry && pending.sent) this.stats.betRetries++;
      this.#send(pending);
    }
    this.#startPing();
  }

  #sendSubscribe(sub: Subscription): void {
    const channelName = `game:${sub.game}`;
    let channel = this.#channels.get(channelName);
    if (!channel) {
      channel = this.#newChannel(channelName, "game");
      this.#channels.set(channelName, channel);
    }
    channel.live = false;
    const since = this.position(channelName);
    const message: Record<string, unknown> & { t: string } = { t: "subscribe", game: sub.game };
    if (since) message.since = since;
    sub.inFlight = true;
    const ws = this.#ws;
    this.#request<Subscribed>(message, { internal: true }).then(
      (reply) => {
        sub.inFlight = false;
        if (ws !== this.#ws || this.#subscriptions.get(sub.game) !== sub) return;
        this.#onSubscribed(sub, channel, reply, since);
      },
      (error: CroupierError) => {
        sub.inFlight = false;
        if (this.#subscriptions.get(sub.game) !== sub) return;
        if (["disconnected", "paused", "timeout"].includes(error.code)) return; // sent again after the reconnect
        if (error.code === "closed" || error.code === "replaced") return; // stopping: #stop rejects the waiters
        if (error.retryable) {
          // rate_limited, unavailable, internal: the subscription stands; ask again shortly on this socket.
          setTimeout(
            () => {
              if (this.#subscriptions.get(sub.game) === sub && !sub.inFlight && this.#state === "ready") {
                this.#sendSubscribe(sub);
              }
            },
            backoffDelay(1, this.#options.backoff),
          );
          return;
        }
        this.#subscriptions.delete(sub.game);
        this.#channels.delete(channelName);
        this.#rounds.delete(sub.game);
        if (sub.waiters.length === 0) this.#emitError(error);
        for (const waiter of sub.waiters.splice(0)) waiter.reject(error);
      },
    );
  }

  #onSubscribed(sub: Subscription, channel: Channel, reply: Subscribed, since: StreamPosition | null): void {
    const recovered = since !== null && reply.recovered === true;
    if (recovered) {
      for (const event of reply.missed) this.#deliver(channel, event as ChannelEvent);
    }
    channel.epoch = reply.epoch;
    channel.offset = reply.offset;
    if (!recovered) {
      channel.retired.clear();
      const round = (reply.round as RoundState | null) ?? null;
      this.#rounds.set(sub.game, round ? { ...round } : null);
      this.emit("snapshot", {
        kind: "game",
        channel: `game:${sub.game}`,
        game: sub.game,
        reason: since ? "not_recovered" : "initial",
        round: round ? { ...round } : null,
        subscribed: reply,
      });
    }
    this.#goLive(channel);
    for (const waiter of sub.waiters.splice(0)) waiter.resolve(reply);
  }

  #startPing(): void {
    clearInterval(this.#pingTimer);
    if (this.#options.pingIntervalMs <= 0) return;
    this.#pingTimer = setInterval(() => {
      if (this.#state === "ready") this.#request({ t: "ping" }, { internal: true }).catch(() => {});
    }, this.#options.pingIntervalMs);
  }

  #onClose(ws: WebSocketLike, code: number, reason: string): void {
    if (ws !== this.#ws) return;
    this.#ws = null;
    clearTimeout(this.#connectTimer);
    clearInterval(this.#pingTimer);
    for (const channel of this.#channels.values()) {
      channel.live = false;
      channel.held = [];
      channel.ahead = [];
      clearTimeout(channel.gapTimer);
      channel.gapTimer = undefined;
    }
    if (code === 4401) this.#authFailures++;
    // A close that ends the client fails everything with its reason (replaced, unauthorized, ...).
    const terminal = this.#terminal(code, reason);
    if (terminal) {
      this.#stop(terminal);
      return;
    }
    const paused = this.#paused;
    for (const pending of [...this.#pending.values()]) {
      if (pending.socket !== ws && !(pending.now && pending.socket === null)) continue;
      if (pending.retry) {
        pending.socket = null; // sent again, same key, once a socket is ready
        continue;
      }
      this.#pending.delete(pending.id);
      clearTimeout(pending.timer);
      const why = paused ? "paused" : "disconnected";
      pending.reject(
        new CroupierError(
          why,
          `the socket closed (${code}${reason ? ` ${reason}` : ""}) before the reply to ${pending.t}`,
          {
            request: pending.t,
            id: pending.id,
            key: pending.key,
            closeCode: code,
          },
        ),
      );
    }
    this.#afterClose(code, reason);
  }

  /** The error that stops the client for good after a close with `code`, or null when it reconnects. */
  #terminal(code: number, reason: string): CroupierError | null {
    if (this.#paused) return null;
    if (code === 4409) {
      return new CroupierError("replaced", "another connection of this user took over (close 4409): not reconnecting", {
        closeCode: code,
      });
    }
    if (code === 4403) {
      return new CroupierError(
        "forbidden",
        `this account is blocked (close 4403${reason ? ` ${reason}` : ""}): not reconnecting`,
        {
          closeCode: code,
        },
      );
    }
    if (code === 4410) {
      return new CroupierError(
        "limit_reached",
        `the player's session time limit is used up (close 4410): not reconnecting before the break ends`,
        { closeCode: code, resetsAt: this.#lastResetsAt },
      );
    }
    if (code === 4401 && (!this.#getInitData || this.#authFailures > this.#options.maxAuthFailures)) {
      const refused = this.#lastAuthError;
      return new CroupierError(
        "unauthorized",
        refused?.message ?? `the server refused the initData (close 4401 ${reason})`,
        {
          field: refused?.field ?? "init_data",
          closeCode: code,
          request: "auth",
        },
      );
    }
    if (!this.#options.reconnect && code !== CLOSE_RESYNC) {
      return new CroupierError("disconnected", `the socket closed (${code}${reason ? ` ${reason}` : ""})`, {
        closeCode: code,
      });
    }
    return null;
  }

  /** When to reconnect after a close that does not end the client (docs/protocol.md, "Close codes"). */
  #afterClose(code: number, reason: string): void {
    if (this.#stopped) return;
    if (this.#paused) {
      this.#setState("paused", { closeCode: code, closeReason: reason });
      return;
    }
    if (code === 4401) {
      // getInitData gives fresh initData first (an expired initData is the usual cause).
      this.#schedule(backoffDelay(this.#authFailures - 1, this.#options.backoff), code, reason, true);
      return;
    }
    // A resync: at once. 1012 (the node drains: reconnect now): the first step of the backoff, so the clients
    // of a node do not all land on the next one in the same millisecond. Anything else (1006 refused or dropped,
    // 4503 too slow, 4408, 4429, 4400, 1009, 1011, a timeout): exponential backoff with jitter.
    const delay =
      code === CLOSE_RESYNC
        ? 0
        : code === 1012
          ? backoffDelay(0, this.#options.backoff)
          : backoffDelay(this.#attempt++, this.#options.backoff);
    this.#schedule(delay, code, reason, false);
  }

  #schedule(delayMs: number, closeCode: number, closeReason: string, refreshInitData: boolean): void {
    this.#setState("reconnecting", { delayMs, closeCode, closeReason });
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(async () => {
      this.#reconnectTimer = undefined;
      if (this.#stopped || this.#paused) return;
      if (refreshInitData && !(await this.#refreshInitData())) return;
      if (this.#stopped || this.#paused || this.#ws) return;
      this.#openSocket();
    }, delayMs);
  }

  /**
   * Stop listening to `ws` (a reply still in flight on it is never read), close it politely, and handle the
   * close now as `code` (a local code: CLOSE_RESYNC, CLOSE_PAUSED, CLOSE_TIMEOUT).
   */
  #abandon(ws: WebSocketLike, code: number, reason: string): void {
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = () => {}; // the `ws` package throws on an error event nobody listens to
    try {
      ws.close(CLOSE_NORMAL, reason.slice(0, 120));
    } catch {
      // already closing
    }
    this.#onClose(ws, code, reason);
  }

  #stop(error: CroupierError): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#stopError = error;
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#connectTimer);
    clearInterval(this.#pingTimer);
    this.#unwatch?.();
    this.#unwatch = null;
    const ws = this.#ws;
    if (ws) {
      this.#ws = null;
      ws.onopen = null;
      ws.onmessage = null;
      ws.onclose = null;
      ws.onerror = () => {};
      try {
        ws.close(CLOSE_NORMAL, "client stopped");
      } catch {
        // already closing
      }
    }
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(this.#stoppedError(pending.t, error, pending));
    }
    this.#pending.clear();
    for (const sub of this.#subscriptions.values()) {
      for (const waiter of sub.waiters.splice(0)) waiter.reject(this.#stoppedError("subscribe", error));
    }
    for (const channel of this.#channels.values()) clearTimeout(channel.gapTimer);
    this.#setState("stopped", { closeCode: error.closeCode ?? undefined, closeReason: error.message });
    this.#readyReject(error);
    this.emit("stopped", error);
  }

  #stoppedError(request: string, reason?: CroupierError, pending?: Pending): CroupierError {
    const cause = reason ?? this.#stopError ?? undefined;
    const code: ErrorCode = cause?.code ?? "closed";
    return new CroupierError(code, cause?.message ?? "the client is stopped", {
      field: cause?.field ?? null,
      request,
      id: pending?.id ?? null,
      key: pending?.key ?? null,
      closeCode: cause?.closeCode ?? null,
    });
  }

  #setState(state: ConnectionState, extra: Partial<StateChange> = {}): void {
    const previous = this.#state;
    if (previous === state && state !== "reconnecting") return;
    this.#state = state;
    this.emit("state", { state, previous, attempt: this.#attempt, ...extra });
  }

  #emitError(error: CroupierError): void {
    this.emit("error", error);
  }

  // ------------------------------------------------------------ requests on the wire

  #request<T>(
    message: { t: string; [field: string]: unknown },
    options: { timeoutMs?: number | undefined; retry?: boolean; key?: string; now?: boolean; internal?: boolean } = {},
  ): Promise<T> {
    if (this.#stopped) return Promise.reject(this.#stoppedError(message.t));
    const id = this.#nextId++;
    const timeoutMs = options.timeoutMs ?? this.#options.requestTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const pending: Pending = {
        id,
        t: message.t,
        message: { ...message, id },
        resolve: resolve as (reply: never) => void,
        reject,
        timer: undefined,
        retry: options.retry ?? false,
        key: options.key ?? null,
        socket: null,
        now: options.now ?? false,
        internal: options.internal ?? false,
        sent: false,
      };
      pending.timer = setTimeout(() => {
        if (this.#pending.get(id) !== pending) return;
        this.#pending.delete(id);
        reject(
          new CroupierError("timeout", `no reply to ${message.t} within ${timeoutMs} ms`, {
            request: message.t,
            id,
            key: pending.key,
          }),
        );
        // The client's own requests time out only when the connection is dead (or the node stuck): start again.
        if (pending.internal && pending.socket && pending.socket === this.#ws)
          this.#abandon(pending.socket, CLOSE_TIMEOUT, `${message.t} timed out`);
      }, timeoutMs);
      this.#pending.set(id, pending);
      if (pending.now || this.#state === "ready") this.#send(pending);
    });
  }

  #send(pending: Pending): void {
    const ws = this.#ws;
    if (!ws || ws.readyState !== OPEN) return; // waits for the next socket
    let frame: string | Uint8Array;
    try {
      frame = this.codec.encode(pending.message);
    } catch (error) {
      this.#fail(
        pending,
        new CroupierError("bad_request", `cannot encode ${pending.t}: ${(error as Error)?.message ?? error}`, {
          request: pending.t,
          id: pending.id,
        }),
      );
      return;
    }
    if (frameSize(frame) > this.#options.maxFrameBytes) {
      this.#fail(
        pending,
        new CroupierError(
          "frame_too_big",
          `${pending.t} is ${frameSize(frame)} bytes, over the ${this.#options.maxFrameBytes} the server accepts`,
          {
            request: pending.t,
            id: pending.id,
            key: pending.key,
          },
        ),
      );
      return;
    }
    try {
      ws.send(frame);
    } catch {
      return; // the socket is closing: the close handler decides
    }
    pending.socket = ws;
    pending.sent = true;
  }

  #fail(pending: Pending, error: CroupierError): void {
    this.#pending.delete(pending.id);
    clearTimeout(pending.timer);
    pending.reject(error);
  }

  // ------------------------------------------------------------ frames in

  #onFrame(data: unknown): void {
    let message: unknown;
    try {
      message = this.codec.decode(data);
    } catch (error) {
      this.#emitError(
        new CroupierError("bad_frame", `a frame could not be decoded: ${(error as Error)?.message ?? error}`),
      );
      return;
    }
    if (message === null || typeof message !== "object" || Array.isArray(message)) return;
    const msg = message as Record<string, unknown>;
    if (isChannelEvent(msg)) {
      this.#onChannelEvent(msg);
      return;
    }
    if (msg.t === "error" && typeof msg.resets_at === "number") this.#lastResetsAt = msg.resets_at;
    const id = msg.id;
    if (typeof id === "number" || typeof id === "string") {
      const pending = this.#pending.get(id as number);
      if (pending) {
        this.#pending.delete(pending.id);
        clearTimeout(pending.timer);
        if (msg.t === "error") {
          pending.reject(
            new CroupierError(String(msg.code), String(msg.message ?? msg.code), {
              field: (msg.field as string | null | undefined) ?? null,
              request: pending.t,
              id: pending.id,
              key: pending.key,
              resetsAt: (msg.resets_at as number | null | undefined) ?? null,
            }),
          );
        } else {
          pending.resolve(msg as never);
        }
        return;
      }
    }
    if (msg.t === "error") {
      this.#emitError(
        new CroupierError(String(msg.code), String(msg.message ?? msg.code), {
          field: (msg.field as string | null | undefined) ?? null,
          id: (id as number | string | null | undefined) ?? null,
          resetsAt: (msg.resets_at as number | null | undefined) ?? null,
        }),
      );
      return;
    }
    this.emit("message", msg);
  }

  #onChannelEvent(event: ChannelEvent): void {
    const channel = this.#channels.get(event.ch);
    if (!channel) return; // a game unsubscribed a moment ago
    if (!channel.live) {
      channel.held.push(event);
      return;
    }
    this.#deliver(channel, event);
  }

  #newChannel(name: string, kind: "user" | "game"): Channel {
    return {
      name,
      kind,
      epoch: null,
      offset: null,
      live: false,
      held: [],
      ahead: [],
      gapTimer: undefined,
      retired: new Set(),
    };
  }

  /** The channel's position is set (welcome or subscribed): apply what arrived meanwhile. */
  #goLive(channel: Channel): void {
    channel.live = true;
    const held = channel.held.sort((a, b) => (a.offset ?? 0) - (b.offset ?? 0));
    channel.held = [];
    for (const event of held) this.#deliver(channel, event);
  }

  /**
   * Apply `event` once and in order. The position of a channel is (epoch, offset) of the last event applied:
   * an event at or below it is a duplicate (a replay overlapping a push) and is dropped. On the user channel
   * offsets are contiguous (the wallet's version): an event past a gap waits for the missing ones, and a gap
   * still open after `gapTimeoutMs` makes the client reconnect with `since` (the welcome replays what is
   * missing). On a game channel, offsets only grow: a gap is a tick skipped for a slow socket.
   */
  #deliver(channel: Channel, event: ChannelEvent): void {
    if (!positioned(event)) {
      this.#apply(channel, event);
      return;
    }
    if (channel.epoch === null || channel.offset === null) {
      channel.epoch = event.epoch;
      channel.offset = event.offset;
      this.#apply(channel, event);
      return;
    }
    if (event.epoch !== channel.epoch) {
      if (channel.retired.has(event.epoch)) {
        this.stats.duplicates++;
        return;
      }
      if (channel.kind === "game") {
        // Another node took over driving the game: a new sequence begins (its first event is the round again).
        channel.retired.add(channel.epoch);
        channel.epoch = event.epoch;
        channel.offset = event.offset;
        this.#apply(channel, event);
        return;
      }
      // The ledger's epoch changed (a new database): start again from a fresh welcome.
      this.#resync(channel);
      return;
    }
    if (event.offset <= channel.offset) {
      this.stats.duplicates++;
      return;
    }
    if (channel.kind === "game" || event.offset === channel.offset + 1) {
      channel.offset = event.offset;
      this.#apply(channel, event);
      if (channel.kind === "user") this.#drainAhead(channel);
      return;
    }
    // A gap in the user channel: hold this event until the missing ones arrive.
    if (!channel.ahead.some((held) => held.offset === event.offset)) {
      channel.ahead.push(event);
      channel.ahead.sort((a, b) => a.offset - b.offset);
    }
    if (channel.gapTimer === undefined) {
      channel.gapTimer = setTimeout(() => {
        channel.gapTimer = undefined;
        if (channel.ahead.length > 0) this.#resync(channel);
      }, this.#options.gapTimeoutMs);
    }
  }

  #drainAhead(channel: Channel): void {
    while (channel.ahead.length > 0 && channel.offset !== null) {
      const next = channel.ahead[0]!;
      if (next.offset <= channel.offset) {
        channel.ahead.shift();
        this.stats.duplicates++;
      } else if (next.offset === channel.offset + 1) {
        channel.ahead.shift();
        channel.offset = next.offset;
        this.#apply(channel, next);
      } else {
        return;
      }
    }
    clearTimeout(channel.gapTimer);
    channel.gapTimer = undefined;
  }

  /** Reconnect at once with `since`: the welcome replays what the gap lacks (or says it cannot: a snapshot). */
  #resync(channel: Channel): void {
    this.stats.resyncs++;
    if (this.#ws) this.#abandon(this.#ws, CLOSE_RESYNC, `resync ${channel.name}`);
  }

  #apply(channel: Channel, event: ChannelEvent): void {
    if (channel.kind === "user") {
      if (typeof (event as { balance?: unknown }).balance === "number")
        this.#balance = (event as { balance: number }).balance;
    } else {
      const game = channel.name.slice("game:".length);
      const current = this.#rounds.get(game) ?? null;
      if (event.t === "round") {
        const fields = roundFields(event) as RoundState;
        this.#rounds.set(game, current && current.round === fields.round ? { ...current, ...fields } : fields);
      } else if (event.t === "tick" && current && current.round === (event as Tick).round) {
        this.#rounds.set(game, { ...current, ...roundFields(event) });
      }
    }
    switch (event.t) {
      case "balance":
        this.emit("balance", event as BalancePush);
        break;
      case "bet_settled":
        this.emit("bet_settled", event as BetSettled);
        break;
      case "round":
        this.emit("round", event as RoundEvent);
        break;
      case "tick":
        this.emit("tick", event as Tick);
        break;
    }
    this.emit("event", event);
  }
}

/**
 * Connect to a Croupier node and authenticate; resolves with the client at its first `welcome`.
 *
 * ```ts
 * const client = await connect({ url: "wss://host/ws", initData: Telegram.WebApp.initData, codec: "msgpack" });
 * ```
 * Rejects (with a {@link CroupierError}) only if the client stops before that: initData refused (4401) with no
 * `getInitData`, replaced (4409), or `close()`. A node that cannot be reached is retried with backoff meanwhile.
 */
export async function connect(options: ClientOptions): Promise<CroupierClient> {
  const client = new CroupierClient(options);
  await client.open();
  return client;
}
