"""The demo Mini App (``webapp/``) in Chromium against a real ``croupier serve`` with ``CROUPIER_DEV=1``.

Playwright drives Debian's Chromium (``/usr/bin/chromium``; Playwright downloads no browser here) through the
page as a player would: the development sign-in, a dice bet settled, a crash bet cashed out on the live curve,
deposits refused on a development node, every settled round verified in the browser and a tampered seed or
outcome caught (edited in the page's verifier, and rewritten in the WebSocket frames on their way in), the
page inside a stand-in Telegram (theme, viewport, haptics, ``openInvoice``), the page saying how to build the
client when it is missing, and the reconnect banner while the node restarts on the same port and database,
then the app playing on.

One node for the module, started and stopped by its PID (``tests/browser/node.py``); the restart comes last.
Screenshots go to ``$CROUPIER_SCREENSHOT_DIR`` or a temp dir (the path is printed with ``-s``). Skipped, in one
line saying why, without ``/usr/bin/chromium``, the ``playwright`` module, or the built JavaScript client.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.auth import sign_init_data
from server.devapp import CLIENT_DIST, MSGPACK_DIST

CHROMIUM = Path("/usr/bin/chromium")

try:
    from playwright.sync_api import Browser, BrowserContext, Locator, Page, WebSocketRoute, expect, sync_playwright
except ImportError:
    pytest.skip("the playwright module is missing: pip install -e '.[dev]'", allow_module_level=True)
if not CHROMIUM.exists():
    pytest.skip("/usr/bin/chromium is missing: apt-get install -y chromium", allow_module_level=True)
if not (CLIENT_DIST / "index.js").exists() or not MSGPACK_DIST.is_dir():
    pytest.skip("the JavaScript client is not built: npm ci --prefix clients/js && npm run build --prefix clients/js",
                allow_module_level=True)  # fmt: skip

from tests.browser.node import DevNode  # noqa: E402 - only once the module is known to run

pytestmark = pytest.mark.timeout(300)

WAIT_MS = 30_000
"""The longest one step may take: a round is 3 s of betting and a few of play; the rest is a busy machine."""
CRASH_WAIT_MS = 90_000
"""A crash round runs until its crash point: past 50x in 4% of rounds (13 s on this curve)."""
expect.set_options(timeout=WAIT_MS)

TELEGRAM_SCRIPT = "https://telegram.org/js/telegram-web-app.js*"
FAKE_TELEGRAM = """
window.__tg = { haptics: [], invoices: [], expanded: false, ready: false, events: {} };
window.Telegram = { WebApp: {
  initData: %(init_data)s, version: "8.0", platform: "test", isActive: true,
  themeParams: { bg_color: "#17212b", secondary_bg_color: "#232e3c", text_color: "#f5f5f5",
                 hint_color: "#708499", link_color: "#6ab3f3", button_color: "#5288c1", button_text_color: "#ffffff" },
  viewportHeight: 640, viewportStableHeight: 640,
  isVersionAtLeast: () => true,
  ready() { __tg.ready = true; },
  expand() { __tg.expanded = true; },
  onEvent(type, handler) { (__tg.events[type] ||= []).push(handler); },
  offEvent() {},
  HapticFeedback: {
    impactOccurred(style) { __tg.haptics.push("impact:" + style); },
    notificationOccurred(type) { __tg.haptics.push("notification:" + type); },
    selectionChanged() {},
  },
  openInvoice(url, callback) { __tg.invoices.push(url); setTimeout(() => callback("paid"), 50); },
} };
"""


@pytest.fixture(scope="module")
def node() -> Iterator[DevNode]:
    node = DevNode()
    try:
        node.start()
        yield node
    finally:
        node.cleanup()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("CROUPIER_SCREENSHOT_DIR")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("miniapp-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nMini App screenshots: {folder}")
    return folder


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A phone-sized browser profile of its own; the page may not throw (uncaught errors fail the test)."""
    context = browser.new_context(viewport={"width": 420, "height": 900}, device_scale_factor=2)
    errors: list[str] = []
    context.on("weberror", lambda error: errors.append(str(error.error)))
    try:
        yield context
    finally:
        context.close()
    assert errors == [], f"the page threw: {errors}"


def plain_browser(context: BrowserContext) -> Page:
    """A page outside Telegram: telegram-web-app.js does not load (as offline), so Telegram.WebApp is absent."""
    context.route(TELEGRAM_SCRIPT, lambda route: route.abort())
    return context.new_page()


def sign_in(page: Page, node: DevNode, user_id: int) -> None:
    """Open the app and sign in through the development sign-in; return once the tables show."""
    page.goto(f"{node.url}/app/")
    expect(page.locator("#signin")).to_be_visible()
    page.fill("#signin-user", str(user_id))
    page.click("#signin-button")
    expect(page.locator("#tables")).to_be_visible()
    expect(page.locator("#balance")).to_have_text("1,000")  # the development welcome credit


def balance(page: Page) -> int:
    return int(page.inner_text("#balance").replace(",", ""))


def place_bet(page: Page, game: str, timeout: float = WAIT_MS) -> Locator:
    """Bet from ``game``'s tab with a second or more of betting left (not to race the close); returns the bet's
    row in the history."""
    page.click(f"[data-tab={game}]")
    expect(page.locator(f"#{game}-round")).to_have_text(re.compile(r"betting, closes in [1-9]"), timeout=timeout)
    page.click(f"#{game}-bet")
    row = page.locator(f"#history tr[data-game={game}]").first
    expect(row).to_be_visible()
    return row


def bet_and_settle(page: Page, game: str) -> tuple[str, int]:
    """Bet 10 on ``game``'s current round; wait until it settles. Returns its status (``won``, ``lost``,
    ``returned``) and round."""
    row = place_bet(page, game)
    expect(row).to_have_attribute("data-status", re.compile(r"won|lost|returned"), timeout=CRASH_WAIT_MS)
    return row.get_attribute("data-status") or "", int(row.locator("td").nth(1).inner_text())


def fairness_entry(page: Page, game: str, round_id: int) -> Locator:
    return page.locator(f'#fairness li[data-game="{game}"][data-round="{round_id}"]')


def test_sign_in_a_dice_bet_settles_verified_and_deposits_are_refused(
    context: BrowserContext, node: DevNode, screenshots: Path
) -> None:
    page = plain_browser(context)
    sign_in(page, node, 4101)
    expect(page.locator("#player")).to_have_text("Player")

    page.click("#deposit")  # a development node has no bot of its own: deposit_refused with no field
    expect(page.locator("#deposit-message")).to_have_text("Deposits are not enabled on this server.")
    expect(page.locator("#deposit")).to_be_disabled()

    status, round_id = bet_and_settle(page, "dice")
    result = page.locator("#history tr[data-game=dice] td").nth(3).inner_text()
    payout = int(result.split()[-1]) if status != "lost" else 0
    expect(page.locator("#balance")).to_have_text(f"{1000 - 10 + payout:,}")
    entry = fairness_entry(page, "dice", round_id)
    expect(entry).to_have_attribute("data-status", "verified")
    expect(entry.locator(".status")).to_have_text("verified ✓")
    page.screenshot(path=screenshots / "dice.png", full_page=True)


def test_a_crash_bet_is_cashed_out_on_the_live_curve(context: BrowserContext, node: DevNode, screenshots: Path) -> None:
    page = plain_browser(context)
    sign_in(page, node, 4102)
    page.click("[data-tab=crash]")
    blank = page.evaluate("document.getElementById('crash-canvas').toDataURL()")
    row = place_bet(page, "crash", timeout=CRASH_WAIT_MS)
    cash_out = page.locator("#crash-cashout")
    expect(cash_out).to_be_enabled(timeout=CRASH_WAIT_MS)
    # Every round reaches 2.00x here (tests/browser/node.py): wait for the curve to climb a little, then cash out.
    page.wait_for_function("parseFloat(document.getElementById('crash-multiplier').textContent) >= 1.1")
    cash_out.click()
    expect(row.locator("td").nth(3)).to_contain_text("cashed out at")
    expect(page.locator("#crash-message")).to_contain_text("Cashed out at")
    # The curve goes on climbing for the others (to 2.00x at least): it is drawn, and makes a picture.
    page.wait_for_function("parseFloat(document.getElementById('crash-multiplier').textContent) >= 1.6")
    assert page.evaluate("document.getElementById('crash-canvas').toDataURL()") != blank
    page.screenshot(path=screenshots / "crash.png")  # the phone screen: curve, bets, the first verified rounds

    expect(row).to_have_attribute("data-status", "won", timeout=CRASH_WAIT_MS)
    round_id = int(row.locator("td").nth(1).inner_text())
    expect(fairness_entry(page, "crash", round_id)).to_have_attribute("data-status", "verified")


def test_every_settled_round_is_verified_and_an_edited_seed_or_outcome_is_caught(
    context: BrowserContext, node: DevNode
) -> None:
    page = plain_browser(context)
    sign_in(page, node, 4103)
    first = page.locator('#fairness li[data-game="dice"][data-status="verified"]').first
    expect(first).to_be_visible()
    entry = fairness_entry(page, "dice", int(first.get_attribute("data-round") or 0))  # pinned: new ones come first
    entry.locator("summary").click()
    seed = entry.locator("input[name=seed]")
    outcome = entry.locator("input[name=outcome]")
    real_seed, real_outcome = seed.input_value(), outcome.input_value()

    seed.fill(secrets.token_hex(32))
    entry.locator("button").click()
    expect(entry).to_have_attribute("data-status", "mismatch")
    expect(entry.locator(".status")).to_contain_text("not the committed seed_hash")

    seed.fill(real_seed)
    roll = json.loads(real_outcome)["roll"]
    outcome.fill(json.dumps({"roll": (roll + 1) % 10_000}))
    entry.locator("button").click()
    expect(entry).to_have_attribute("data-status", "mismatch")
    expect(entry.locator(".status")).to_contain_text(f"roll: published {(roll + 1) % 10_000}, recomputed {roll}")

    outcome.fill(real_outcome)
    entry.locator("button").click()
    expect(entry).to_have_attribute("data-status", "verified")


def tamper_settled_rounds(ws: WebSocketRoute) -> None:
    """Between the page and the node: every settled dice round gets another seed, every settled roulette round
    another number; everything else passes unchanged, both ways."""
    server = ws.connect_to_server()

    def from_server(message: str | bytes) -> None:
        if isinstance(message, str):
            event = json.loads(message)
            if event.get("t") == "round" and event.get("phase") == "settled" and event.get("outcome") is not None:
                if event["game"] == "dice":
                    event["seed"] = secrets.token_hex(32)
                elif event["game"] == "roulette":
                    event["outcome"]["number"] = (event["outcome"]["number"] + 1) % 37
                message = json.dumps(event)
        ws.send(message)

    server.on_message(from_server)
    ws.on_message(server.send)


def test_a_seed_or_outcome_tampered_on_the_wire_is_reported(context: BrowserContext, node: DevNode) -> None:
    page = plain_browser(context)
    page.route_web_socket(re.compile(r"/ws$"), tamper_settled_rounds)
    sign_in(page, node, 4104)
    dice = page.locator('#fairness li[data-game="dice"]').first
    expect(dice).to_have_attribute("data-status", "mismatch")
    expect(dice.locator(".status")).to_contain_text("not the committed seed_hash")
    roulette = page.locator('#fairness li[data-game="roulette"]').first
    expect(roulette).to_have_attribute("data-status", "mismatch")
    expect(roulette.locator(".status")).to_contain_text("number: published")


def answer_deposits_with_an_invoice(ws: WebSocketRoute) -> None:
    """A development node refuses deposits (no bot): answer ``deposit`` with an invoice as a node with a bot
    would; pass everything else through."""
    server = ws.connect_to_server()

    def from_page(message: str | bytes) -> None:
        request = json.loads(message)
        if request.get("t") == "deposit":
            stars = request["stars"]
            invoice = {"t": "invoice", "id": request["id"], "url": "https://t.me/$croupier-test-invoice",
                       "order": 1, "stars": stars, "chips": stars}  # fmt: skip
            ws.send(json.dumps(invoice))
        else:
            server.send(message)

    ws.on_message(from_page)
    server.on_message(ws.send)


def test_inside_telegram_theme_viewport_haptics_and_invoice(context: BrowserContext, node: DevNode) -> None:
    init_data = sign_init_data(node.bot_token, user_id=4105, first_name="Tele")
    script = FAKE_TELEGRAM % {"init_data": json.dumps(init_data)}
    context.route(TELEGRAM_SCRIPT, lambda route: route.fulfill(body=script, content_type="text/javascript"))
    page = context.new_page()
    page.route_web_socket(re.compile(r"/ws$"), answer_deposits_with_an_invoice)
    page.goto(f"{node.url}/app/")
    expect(page.locator("#tables")).to_be_visible()  # signed in with Telegram.WebApp.initData: no form
    expect(page.locator("#signin")).to_be_hidden()
    expect(page.locator("#player")).to_have_text("Tele")

    def css(name: str) -> str:
        return str(page.evaluate(f"getComputedStyle(document.documentElement).getPropertyValue('{name}').trim()"))

    assert (css("--bg"), css("--button"), css("--app-height")) == ("#17212b", "#5288c1", "640px")
    assert page.evaluate("[__tg.ready, __tg.expanded, Object.keys(__tg.events).sort()]") == [
        True, True, ["activated", "deactivated", "themeChanged", "viewportChanged"],  # the first two: the client's
    ]  # fmt: skip

    page.click("#deposit")
    expect(page.locator("#deposit-message")).to_have_text("Paid: 50 chips are on their way.")
    assert page.evaluate("__tg.invoices") == ["https://t.me/$croupier-test-invoice"]

    status, _ = bet_and_settle(page, "dice")
    haptics = page.evaluate("__tg.haptics")
    assert haptics[0] == "impact:light"
    assert haptics[-1] == ("notification:success" if status == "won" else "notification:error")


def test_without_the_built_client_the_page_says_how_to_build_it(context: BrowserContext, node: DevNode) -> None:
    page = plain_browser(context)
    page.route("**/app/client/**", lambda route: route.fulfill(status=404, body="missing"))
    page.goto(f"{node.url}/app/")
    expect(page.locator("#fatal")).to_be_visible()
    expect(page.locator("#fatal")).to_contain_text("npm run build --prefix clients/js")


def test_the_reconnect_banner_shows_while_the_node_restarts_and_the_app_plays_on(
    context: BrowserContext, node: DevNode, screenshots: Path
) -> None:
    page = plain_browser(context)
    sign_in(page, node, 4106)
    banner = page.locator("#banner")
    expect(banner).to_be_hidden()
    node.stop()
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("reconnecting")
    page.screenshot(path=screenshots / "reconnecting.png")
    node.start()  # the same port, data dir and database
    expect(banner).to_be_hidden(timeout=2 * WAIT_MS)
    expect(page.locator("#balance")).to_have_text("1,000")
    _, round_id = bet_and_settle(page, "dice")
    expect(fairness_entry(page, "dice", round_id)).to_have_attribute("data-status", "verified")
