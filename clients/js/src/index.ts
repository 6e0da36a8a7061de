/**
 * @croupier/client: the browser and Node client of the Croupier wire protocol v1 (docs/protocol.md).
 *
 * ```ts
 * import { connect } from "@croupier/client";
 * const client = await connect({ url: "wss://host/ws", initData: Telegram.WebApp.initData });
 * client.on("round", (event) => console.log(event.game, event.round, event.phase));
 * await client.subscribe("dice");
 * const { round } = client.currentRound("dice")!;
 * await client.bet({ game: "dice", round, amount: 10, params: { target: 5000, side: "over" } });
 * ```
 */
export { connect, CroupierClient } from "./client.js";
export type {
  ActionRequest,
  BalancePush,
  BetParams,
  BetRequest,
  ChannelEvent,
  ClientEvents,
  ClientOptions,
  ClientStats,
  ConnectionState,
  KnownGame,
  RoundState,
  Snapshot,
  SnapshotReason,
  StateChange,
  WebSocketConstructor,
  WebSocketLike,
} from "./client.js";
export { CroupierError } from "./errors.js";
export type { ClientErrorCode, ContractErrorCode, CroupierErrorDetails, ErrorCode } from "./errors.js";
export { backoffDelay, DEFAULT_BACKOFF } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL, codecFor, jsonCodec, msgpackCodec } from "./codec.js";
export type { Codec, CodecName } from "./codec.js";
export { telegramWebApp, watchLifecycle } from "./lifecycle.js";
export type { DocumentLike, LifecycleSources, TelegramWebAppLike } from "./lifecycle.js";
export type * from "./protocol.js";
