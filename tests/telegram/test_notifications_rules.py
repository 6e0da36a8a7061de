"""Notifications without I/O: the flood windows on a fake clock, the retry schedule, what each Bot API
answer leads to, the templates and their languages, and the progress line of ``croupier notify``."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import SendMessage

from server.settings import Settings, SettingsError
from server.telegram.announcements import Progress, check_text, default_key, progress_line
from server.telegram.floodcontrol import FloodLimits, FloodState, SlidingWindow, Wait
from server.telegram.recipients import Source
from server.telegram.sender import Action, retry_delay, verdict_of
from server.telegram.templates import (
    FALLBACK,
    LANGUAGES,
    MAX_TEXT,
    TEMPLATES,
    NotificationKind,
    TemplateError,
    check_params,
    fields_of,
    language_of,
    render,
)

TOKEN = "123456789:TEST-token-for-the-croupier-suite_x"
EXACT = FloodLimits(margin=0.0, pace=0.0)  # Telegram's windows, no margin, no pacing: the arithmetic is easier to read
METHOD = SendMessage(chat_id=1, text="x")


# -------------------------------------------------------------------------------------- flood windows


def test_a_window_lets_limit_through_then_says_when_the_oldest_leaves() -> None:
    window = SlidingWindow(3, 1.0)
    for now in (10.0, 10.1, 10.2):
        assert window.wait(now) == 0.0
        window.add(now)
    assert window.wait(10.3) == pytest.approx(0.7)  # 10.0 leaves at 11.0
    assert window.wait(11.0) == 0.0  # exactly one window old: out, as Telegram counts


def test_the_bot_window_holds_rate_a_second_across_chats() -> None:
    state = FloodState(EXACT)
    assert all(state.take(chat, 100.0) is None for chat in range(1, 31))
    wait = state.take(31, 100.0)
    assert wait == Wait(1.0, chat_only=False)
    assert state.take(31, 100.999) is not None
    assert state.take(31, 101.0) is None


def test_a_private_chat_gets_one_a_second_and_others_go_meanwhile() -> None:
    state = FloodState(EXACT)
    assert state.take(7, 0.0) is None
    assert state.take(7, 0.4) == Wait(pytest.approx(0.6), chat_only=True)  # type: ignore[arg-type]
    assert state.take(8, 0.4) is None  # another chat is not held up
    assert state.take(7, 1.0) is None


def test_a_group_gets_twenty_a_minute() -> None:
    state = FloodState(EXACT)
    group = -100123
    for second in range(20):
        assert state.take(group, float(second)) is None
    wait = state.take(group, 20.0)
    assert wait is not None and wait.chat_only and wait.seconds == pytest.approx(40.0)
    assert state.take(group, 59.9) is not None
    assert state.take(group, 60.0) is None


def test_the_margin_lengthens_every_window() -> None:
    state = FloodState(FloodLimits(margin=0.05))
    assert state.take(1, 0.0) is None
    assert state.take(1, 1.0) == Wait(pytest.approx(0.05), chat_only=True)  # type: ignore[arg-type]
    assert state.take(1, 1.05) is None


def test_the_bots_messages_are_paced_over_the_window() -> None:
    limits = FloodLimits(margin=0.0)  # pace 0.9: at least 30 ms apart
    state = FloodState(limits)
    assert state.take(1, 0.0) is None
    assert state.take(2, 0.01) == Wait(pytest.approx(0.02))  # type: ignore[arg-type]
    assert state.take(2, limits.spacing) is None
    assert FloodLimits().spacing == pytest.approx(0.9 * 1.02 / 30)


def test_a_pause_holds_every_chat_and_a_shorter_one_does_not_shorten_it() -> None:
    state = FloodState(EXACT)
    assert state.pause(2.0, now=10.0) == 2.0
    assert state.pause(1.0, now=10.5) == pytest.approx(1.5)  # the longer pause stays
    assert state.take(5, 11.0) == Wait(1.0)
    assert state.take(6, 11.999) is not None
    assert state.take(6, 12.0) is None


def test_no_window_of_the_bot_or_a_chat_ever_holds_more_than_its_limit() -> None:
    """A sender's way with the gate, simulated: 900 messages to 60 chats in random order; each message
    asks when the previous one went, one whose chat is full steps aside, and when nothing may go the
    clock moves to the soonest wait. No second holds more than 30 messages, no chat's second more than
    one, messages are at least the spacing apart, and the rate is 30 a second."""
    rng = random.Random(15)
    limits = FloodLimits(margin=0.0)
    state = FloodState(limits)
    pending = [rng.randrange(1, 61) for _ in range(900)]
    now, let = 0.0, []
    while pending:
        waits: list[float] = []
        for index, chat in enumerate(pending):
            wait = state.take(chat, now)
            if wait is None:
                let.append((now, pending.pop(index)))
                waits = []
                break
            waits.append(wait.seconds)
            if not wait.chat_only:  # the bot's window or its pace: nothing may go
                break
        if waits:
            now += max(min(waits), 1e-9)
    times = [t for t, _ in let]
    assert max(sum(1 for u in times[i : i + 40] if u < t + limits.window) for i, t in enumerate(times)) == 30
    by_chat: dict[int, list[float]] = {}
    for t, chat in let:
        by_chat.setdefault(chat, []).append(t)
    gaps = [b - a for stamps in by_chat.values() for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= limits.private_window - 1e-9
    assert min(b - a for a, b in itertools.pairwise(times)) >= limits.spacing - 1e-9
    steady = times[:600]  # before the chats with the most messages are all that is left
    assert (len(steady) - 1) / (steady[-1] - steady[0]) == pytest.approx(30, rel=0.02)


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one"):
        FloodLimits(rate=0)
    with pytest.raises(ValueError, match="positive"):
        FloodLimits(window=0)
    with pytest.raises(ValueError, match="pace"):
        FloodLimits(pace=1.5)
    assert FloodLimits().of_chat(5) == (1, pytest.approx(1.02))
    assert FloodLimits().of_chat(-5) == (20, pytest.approx(60.02))


# --------------------------------------------------------------------------------------- the outcomes


def test_the_retry_schedule_doubles_up_to_the_cap_spread_by_jitter() -> None:
    lows = [retry_delay(n, base=2.0, cap=60.0, jitter=0.0) for n in range(1, 8)]
    assert lows == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    highs = [retry_delay(n, base=2.0, cap=60.0, jitter=0.999999) for n in range(1, 8)]
    assert highs == pytest.approx([2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0], rel=1e-5)
    assert retry_delay(0, base=2.0, cap=60.0, jitter=0.5) == 1.5  # never below the first step


@pytest.mark.parametrize(
    ("exc", "action", "source"),
    [
        (None, Action.SENT, None),
        (TelegramRetryAfter(METHOD, "Too Many Requests: retry after 3", retry_after=3), Action.PAUSE, None),
        (TelegramForbiddenError(METHOD, "Forbidden: bot was blocked by the user"), Action.UNREACHABLE,
         Source.FORBIDDEN),
        (TelegramForbiddenError(METHOD, "Forbidden: user is deactivated"), Action.UNREACHABLE, Source.FORBIDDEN),
        (TelegramBadRequest(METHOD, "Bad Request: chat not found"), Action.UNREACHABLE, Source.CHAT_NOT_FOUND),
        (TelegramBadRequest(METHOD, "Bad Request: message is too long"), Action.DEAD, None),
        (TelegramServerError(METHOD, "Internal Server Error"), Action.RETRY, None),
        (TelegramNetworkError(METHOD, "Request timeout error"), Action.RETRY, None),
        (TelegramUnauthorizedError(METHOD, "Unauthorized"), Action.STALL, None),
        (TelegramNotFound(METHOD, "Not Found"), Action.STALL, None),
        (TemplateError("a big_win notification takes params ..."), Action.DEAD, None),
    ],
)  # fmt: skip
def test_each_answer_leads_to_its_action(exc: Exception | None, action: Action, source: Source | None) -> None:
    verdict = verdict_of(exc)
    assert (verdict.action, verdict.source) == (action, source)
    if action is Action.PAUSE:
        assert verdict.retry_after == 3.0
    if exc is not None:
        assert type(exc).__name__ in verdict.error


# ------------------------------------------------------------------------------------------ templates


def test_every_kind_has_the_same_languages_and_fields_in_each() -> None:
    assert FALLBACK in LANGUAGES and {"en", "ru"} <= LANGUAGES
    for kind in NotificationKind:
        assert set(TEMPLATES[kind]) == LANGUAGES, kind
        for language, template in TEMPLATES[kind].items():
            probe = {name: 1 for name in fields_of(kind)}
            assert "{" not in template.format_map(probe), (kind, language)
            assert fields_of(kind) == {n for n in probe}


@pytest.mark.parametrize(
    ("code", "language"),
    [("en", "en"), ("ru", "ru"), ("ru-RU", "ru"), ("RU", "ru"), ("ru_RU", "ru"), ("de", "en"), ("pt-br", "en"),
     ("", "en"), (None, "en")],
)  # fmt: skip
def test_the_language_is_the_users_when_there_are_templates_in_it_else_english(code: str | None,
                                                                                language: str) -> None:  # fmt: skip
    assert language_of(code) == language


def test_render_fills_the_users_language_and_falls_back_to_english() -> None:
    params = {"stars": 50, "chips": 100}
    assert render(NotificationKind.DEPOSIT_RECEIPT, params, "ru") == (
        "Платёж получен: 50 звёзд. На ваш баланс зачислено 100 фишек. Удачи за столами!"  # noqa: RUF001
    )
    english = render(NotificationKind.DEPOSIT_RECEIPT, params, "en")
    assert english.startswith("Payment received: 50 Stars. 100 chips")
    assert render(NotificationKind.DEPOSIT_RECEIPT, params, "de") == english
    assert render(NotificationKind.ANNOUNCEMENT, {"text": "Hi {there}"}, "ru") == "Hi {there}"  # verbatim


def test_params_must_be_exactly_the_templates_fields() -> None:
    check_params(NotificationKind.BIG_WIN, {"game": "crash", "payout": 5000, "multiple": 50})
    with pytest.raises(TemplateError, match=r"takes params \['chips', 'stars'\]"):
        check_params(NotificationKind.DEPOSIT_RECEIPT, {"stars": 1})
    with pytest.raises(TemplateError):
        render(NotificationKind.REFUND, {"stars": 1, "chips": 2, "extra": 3}, "en")


def test_a_text_past_telegrams_limit_is_cut() -> None:
    text = render(NotificationKind.ANNOUNCEMENT, {"text": "x" * (MAX_TEXT + 10)}, None)
    assert len(text) == MAX_TEXT and text.endswith("…")


# ------------------------------------------------------------------------------------- announcements


def test_the_same_text_is_the_same_announcement() -> None:
    assert default_key("Tournament at 8!") == default_key("Tournament at 8!")
    assert default_key("Tournament at 8!") != default_key("Tournament at 9!")
    assert check_text("  ") == "the text is empty"
    assert check_text("x" * (MAX_TEXT + 1)) is not None and check_text("x" * MAX_TEXT) is None


def test_the_progress_line_shows_the_bar_counts_rate_and_time_left() -> None:
    line = progress_line(Progress(total=10_000, queued=10_000, sent=2_500, dropped=3, dead=1), rate=30.0, width=10)
    assert line.startswith("[##........]  25%")
    assert "sent 2,500/10,000" in line and "queued 10,000" in line and "dropped 3" in line and "dead 1" in line
    assert "30.0/s" in line and "ETA 4m09s" in line  # 7,496 left at 30/s
    assert progress_line(Progress(0, 0, 0, 0, 0), rate=None, width=4).startswith("[####] 100%")
    assert Progress(total=10, queued=8, sent=5, dropped=1, dead=1).pending == 1


# ------------------------------------------------------------------------------------------ settings


def test_the_notification_settings_and_their_defaults(tmp_path: Path) -> None:
    env = {"CROUPIER_BOT_TOKEN": TOKEN, "CROUPIER_DATA_DIR": str(tmp_path)}
    default = Settings.from_env(env)
    assert (default.notify_sender, default.notify_rate, default.notify_max_attempts) == (True, 30, 8)
    changed = Settings.from_env({**env, "CROUPIER_NOTIFY_SENDER": "0", "CROUPIER_NOTIFY_RATE": "20",
                                 "CROUPIER_NOTIFY_MAX_ATTEMPTS": "3"})  # fmt: skip
    assert (changed.notify_sender, changed.notify_rate, changed.notify_max_attempts) == (False, 20, 3)
    for name, value in (("CROUPIER_NOTIFY_RATE", "0"), ("CROUPIER_NOTIFY_MAX_ATTEMPTS", "x"),
                        ("CROUPIER_NOTIFY_SENDER", "maybe")):  # fmt: skip
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({**env, name: value})
