/**
 * Telegram Mini App lifecycle: a Mini App that is minimised, deactivated or hidden should not hold a socket
 * (Telegram may freeze it, and the server keeps a slot for it). The client closes its socket politely when
 * the app goes away and resumes (with `since`) when it comes back.
 */

/** The part of `Telegram.WebApp` the client uses. */
export interface TelegramWebAppLike {
  initData?: string;
  /** Bot API 8.0+: whether the Mini App is active (not minimised, not in the background). */
  isActive?: boolean;
  onEvent(type: string, handler: () => void): void;
  offEvent(type: string, handler: () => void): void;
}

/** The part of `document` the client uses. */
export interface DocumentLike {
  visibilityState?: string;
  hidden?: boolean;
  addEventListener(type: string, handler: () => void): void;
  removeEventListener(type: string, handler: () => void): void;
}

/** Where lifecycle signals come from; by default the page's own `Telegram.WebApp` and `document`. */
export interface LifecycleSources {
  webApp?: TelegramWebAppLike | null;
  document?: DocumentLike | null;
}

/** `globalThis.Telegram.WebApp` when the page runs inside Telegram (telegram-web-app.js loaded). */
export function telegramWebApp(): TelegramWebAppLike | undefined {
  const webApp = (globalThis as { Telegram?: { WebApp?: TelegramWebAppLike } }).Telegram?.WebApp;
  return webApp && typeof webApp.onEvent === "function" ? webApp : undefined;
}

export function defaultSources(): LifecycleSources {
  const doc = (globalThis as { document?: DocumentLike }).document;
  return {
    webApp: telegramWebApp() ?? null,
    document: doc && typeof doc.addEventListener === "function" ? doc : null,
  };
}

/**
 * Call `onChange(false, why)` when the app becomes inactive (Telegram `deactivated`, or the document hidden)
 * and `onChange(true, why)` when it is active again (both signals clear). Calls it once at once with the
 * current state when the app starts inactive. Returns a function that stops watching.
 */
export function watchLifecycle(
  sources: LifecycleSources,
  onChange: (active: boolean, why: string) => void,
): () => void {
  const { webApp, document: doc } = sources;
  let deactivated = webApp?.isActive === false;
  let hidden = doc ? doc.visibilityState === "hidden" || doc.hidden === true : false;
  let active = !deactivated && !hidden;
  const update = (why: string) => {
    const now = !deactivated && !hidden;
    if (now !== active) {
      active = now;
      onChange(now, why);
    }
  };
  const onDeactivated = () => {
    deactivated = true;
    update("deactivated");
  };
  const onActivated = () => {
    deactivated = false;
    update("activated");
  };
  const onVisibility = () => {
    hidden = doc ? doc.visibilityState === "hidden" || doc.hidden === true : false;
    update(hidden ? "hidden" : "visible");
  };
  webApp?.onEvent("deactivated", onDeactivated);
  webApp?.onEvent("activated", onActivated);
  doc?.addEventListener("visibilitychange", onVisibility);
  if (!active) onChange(false, deactivated ? "deactivated" : "hidden");
  return () => {
    webApp?.offEvent("deactivated", onDeactivated);
    webApp?.offEvent("activated", onActivated);
    doc?.removeEventListener("visibilitychange", onVisibility);
  };
}
