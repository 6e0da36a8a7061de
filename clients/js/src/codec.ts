import { decode, encode } from "@msgpack/msgpack";

export type CodecName = "json" | "msgpack";

/** One of the two subprotocols of the v1 contract. */
export interface Codec {
  readonly name: CodecName;
  readonly subprotocol: string;
  encode(message: object): string | Uint8Array;
  decode(data: unknown): unknown;
}

export const JSON_SUBPROTOCOL = "croupier.v1.json";
export const MSGPACK_SUBPROTOCOL = "croupier.v1.msgpack";

const textDecoder = new TextDecoder();

function bytes(data: unknown): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError(`unexpected frame of type ${typeof data}`);
}

export const jsonCodec: Codec = {
  name: "json",
  subprotocol: JSON_SUBPROTOCOL,
  encode: (message) => JSON.stringify(message),
  decode: (data) => JSON.parse(typeof data === "string" ? data : textDecoder.decode(bytes(data))),
};

export const msgpackCodec: Codec = {
  name: "msgpack",
  subprotocol: MSGPACK_SUBPROTOCOL,
  encode: (message) => encode(message, { ignoreUndefined: true }),
  decode: (data) => {
    if (typeof data === "string") throw new TypeError("text frame on the MessagePack subprotocol");
    return decode(bytes(data));
  },
};

export function codecFor(name: CodecName | undefined): Codec {
  if (name === undefined || name === "json") return jsonCodec;
  if (name === "msgpack") return msgpackCodec;
  throw new TypeError(`unknown codec ${JSON.stringify(name)}: use "json" or "msgpack"`);
}

/** Size of an encoded frame in bytes, as the server counts it. */
export function frameSize(frame: string | Uint8Array): number {
  if (typeof frame !== "string") return frame.byteLength;
  // UTF-8 length without allocating for the common all-ASCII case.
  for (let i = 0; i < frame.length; i++) {
    if (frame.charCodeAt(i) >= 0x80) return new TextEncoder().encode(frame).byteLength;
  }
  return frame.length;
}
