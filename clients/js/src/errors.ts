/** Error codes of the v1 contract (protocol/codes.py), as the server sends them in `error.code`. */
export type ContractErrorCode =
  | "bad_request"
  | "unknown_type"
  | "unauthorized"
  | "auth_required"
  | "unknown_game"
  | "not_subscribed"
  | "betting_closed"
  | "round_mismatch"
  | "invalid_bet"
  | "insufficient_funds"
  | "rate_limited"
  | "idempotency_conflict"
  | "unavailable"
  | "internal"
  | "deposit_refused"
  | "forbidden"
  | "limit_reached"
  | "excluded";

/** Codes this library raises itself, for failures that never reached (or never came back from) the server. */
export type ClientErrorCode =
  /** No reply within the request's timeout. A bet may still have been placed: retry it with `error.key`. */
  | "timeout"
  /** The socket closed while the request was in flight (bets are not failed this way: they are retried). */
  | "disconnected"
  /** The client was closed (`client.close()`), or stopped for good. */
  | "closed"
  /** Another socket of the same user took over (close 4409): the client stopped and will not reconnect. */
  | "replaced"
  /** The client is paused (Mini App hidden or deactivated) and the request was in flight when it paused. */
  | "paused"
  /** The encoded request is larger than the server accepts (`maxFrameBytes`): it was not sent. */
  | "frame_too_big";

export type ErrorCode = ContractErrorCode | ClientErrorCode | (string & {});

/** Codes after which sending the same request again may succeed (for a bet: with the same `key`). */
const RETRYABLE = new Set<string>(["timeout", "disconnected", "paused", "unavailable", "internal", "rate_limited"]);

export interface CroupierErrorDetails {
  /** The dotted path of the offending field (`amount`, `params.target`, `init_data`), or null. */
  field?: string | null;
  /** The request's `t` (`bet`, `subscribe`, ...) when the error answers a request. */
  request?: string | null;
  /** The request's id on the wire. */
  id?: number | string | null;
  /** For a bet: its idempotency key. Retrying with the same key can never charge twice. */
  key?: string | null;
  /** The WebSocket close code, when the error comes from a close. */
  closeCode?: number | null;
  /** `limit_reached`, `excluded`: when the player's own limit lets them try again (ms since the epoch; null: never). */
  resetsAt?: number | null;
}

/**
 * A failed request or a stopped client: `code` is the contract's error code (`invalid_bet`, ...) or one of
 * this library's own ({@link ClientErrorCode}); `field` names the offending field when the server named one.
 */
export class CroupierError extends Error {
  override readonly name = "CroupierError";
  readonly code: ErrorCode;
  readonly field: string | null;
  readonly request: string | null;
  readonly id: number | string | null;
  readonly key: string | null;
  readonly closeCode: number | null;
  readonly resetsAt: number | null;

  constructor(code: ErrorCode, message: string, details: CroupierErrorDetails = {}) {
    super(message);
    this.code = code;
    this.field = details.field ?? null;
    this.request = details.request ?? null;
    this.id = details.id ?? null;
    this.key = details.key ?? null;
    this.closeCode = details.closeCode ?? null;
    this.resetsAt = details.resetsAt ?? null;
  }

  /** Whether sending the request again may succeed (a bet: again with {@link key}, never with a new key). */
  get retryable(): boolean {
    return RETRYABLE.has(this.code);
  }
}
