// A `ws` WebSocket whose tests can lose a reply in flight: the connection dies (terminate: close 1006) with the
// chosen frame unread, as when a phone's network drops just after the server answered.
import { WebSocket } from "ws";

export function flakyWebSocket(decode) {
  const control = {
    /** Every frame the client sent, decoded. */
    sent: [],
    /** When set: the first incoming message it returns true for is dropped and the connection is killed. */
    dropWhen: null,
    /** The messages dropped that way. */
    dropped: [],
    sockets: 0,
  };
  class FlakyWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      control.sockets++;
    }
    send(data) {
      control.sent.push(decode(data));
      super.send(data);
    }
    get onmessage() {
      return super.onmessage;
    }
    set onmessage(handler) {
      if (!handler) {
        super.onmessage = null;
        return;
      }
      super.onmessage = (event) => {
        const message = decode(event.data);
        if (control.dropWhen && control.dropWhen(message)) {
          control.dropWhen = null;
          control.dropped.push(message);
          this.terminate();
          return;
        }
        handler(event);
      };
    }
  }
  return { WebSocket: FlakyWebSocket, control };
}
