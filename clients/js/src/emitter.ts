/** A small typed event emitter that works the same in browsers and Node. */
export class Emitter<Events extends { [K in keyof Events]: unknown }> {
  #handlers = new Map<keyof Events, Set<(payload: never) => void>>();

  /** Call `handler` for every `type` event; returns a function that removes it. */
  on<K extends keyof Events>(type: K, handler: (payload: Events[K]) => void): () => void {
    let set = this.#handlers.get(type);
    if (!set) this.#handlers.set(type, (set = new Set()));
    set.add(handler as (payload: never) => void);
    return () => this.off(type, handler);
  }

  /** Call `handler` for the next `type` event only. */
  once<K extends keyof Events>(type: K, handler: (payload: Events[K]) => void): () => void {
    const off = this.on(type, (payload) => {
      off();
      handler(payload);
    });
    return off;
  }

  off<K extends keyof Events>(type: K, handler: (payload: Events[K]) => void): void {
    this.#handlers.get(type)?.delete(handler as (payload: never) => void);
  }

  protected emit<K extends keyof Events>(type: K, payload: Events[K]): void {
    const set = this.#handlers.get(type);
    if (!set) return;
    for (const handler of [...set]) {
      try {
        (handler as (payload: Events[K]) => void)(payload);
      } catch (error) {
        // An app's handler must not break the client's bookkeeping: report it and go on.
        const report = (globalThis as { reportError?: (error: unknown) => void }).reportError;
        if (typeof report === "function") report(error);
        else console.error("croupier client: an event handler threw", error);
      }
    }
  }
}
