"""The cashier's rules without I/O: deposit limits, the pre-checkout, payloads, the webhook secret, the Bot
API's URLs and the token kept out of messages."""

from __future__ import annotations

import datetime as dt

import pytest

from server.telegram import api_server, redacted
from server.telegram.orders import (
    MAX_UNPAID,
    DepositLimits,
    Order,
    OrderStatus,
    Usage,
    checkout_refusal,
    limit_refusal,
    order_id_of,
)
from server.telegram.webhook import secret_matches

LIMITS = DepositLimits(min_stars=5, max_stars=100, daily_stars=250)
NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
TOKEN = "123456789:TEST-token-for-the-croupier-suite_x"


@pytest.mark.parametrize(
    ("stars", "usage", "refusal"),
    [
        (5, Usage(0, 0), None),
        (100, Usage(150, 3), None),  # exactly the daily limit
        (4, Usage(0, 0), "a deposit is at least 5 Stars"),
        (101, Usage(0, 0), "a deposit is at most 100 Stars"),
        (51, Usage(200, 0), "over the limit of 250 Stars in 24 hours (50 left; unpaid invoices count)"),
        (5, Usage(300, 0), "(0 left; unpaid invoices count)"),  # a limit lowered since: never negative
        (5, Usage(10, MAX_UNPAID), f"you have {MAX_UNPAID} unpaid invoices"),
        (5, Usage(10, MAX_UNPAID - 1), None),
    ],
)
def test_limits(stars: int, usage: Usage, refusal: str | None) -> None:
    found = limit_refusal(stars, LIMITS, usage)
    if refusal is None:
        assert found is None
    else:
        assert found is not None and refusal in found


def order(**changes: object) -> Order:
    fields: dict[str, object] = {
        "id": 7, "user_id": 42, "stars": 30, "chips_per_star": 2, "status": OrderStatus.PENDING,
        "created_at": NOW - dt.timedelta(minutes=5), "paid_at": None, "charge_id": None,
    }  # fmt: skip
    fields.update(changes)
    return Order(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("the_order", "payer", "amount", "currency", "refusal"),
    [
        (order(), 42, 30, "XTR", None),
        (order(), 42, 30, "USD", "not payable in Telegram Stars"),
        (None, 42, 30, "XTR", "This order is unknown"),
        (order(), 43, 30, "XTR", "made for another account"),
        (order(), 42, 31, "XTR", "The amount does not match"),
        (order(), 42, 29, "XTR", "The amount does not match"),
        (order(status=OrderStatus.PAID, paid_at=NOW, charge_id="stx1"), 42, 30, "XTR", "already paid"),
        (order(status=OrderStatus.CANCELLED), 42, 30, "XTR", "was cancelled"),
        (order(created_at=NOW - dt.timedelta(hours=24, seconds=1)), 42, 30, "XTR", "has expired"),
        (order(created_at=NOW - dt.timedelta(hours=23, minutes=59)), 42, 30, "XTR", None),
    ],
)
def test_pre_checkout(the_order: Order | None, payer: int, amount: int, currency: str, refusal: str | None) -> None:
    found = checkout_refusal(the_order, payer_id=payer, total_amount=amount, currency=currency, now=NOW)
    if refusal is None:
        assert found is None
    else:
        assert found is not None and refusal in found and len(found) <= 255


def test_an_order_credits_its_own_rate() -> None:
    assert order(stars=30, chips_per_star=2).chips == 60


@pytest.mark.parametrize(
    ("payload", "order_id"),
    [("1", 1), ("123456789012345678", 123456789012345678), ("", None), ("12a", None), ("-3", None),
     (" 4", None), ("1234567890123456789", None), ("٣", None), ("deposit:7", None)],
)  # fmt: skip
def test_payloads_name_orders_by_their_decimal_id(payload: str, order_id: int | None) -> None:
    assert order_id_of(payload) == order_id


def test_the_webhook_secret_is_compared_whole() -> None:
    secret = "croupier-suite-webhook-secret_01"
    assert secret_matches(secret, secret)
    for given in (None, "", secret[:-1], secret + "x", secret.upper(), "croupier-suite-webhook-secret_02"):
        assert not secret_matches(given, secret)


def test_bot_api_urls_in_production_self_hosted_and_test_environments() -> None:
    assert (
        api_server("https://api.telegram.org").api_url(TOKEN, "getMe") == f"https://api.telegram.org/bot{TOKEN}/getMe"
    )
    assert api_server("http://127.0.0.1:8081/").api_url(TOKEN, "getMe") == f"http://127.0.0.1:8081/bot{TOKEN}/getMe"
    test = api_server("https://api.telegram.org", "test")
    assert test.api_url(TOKEN, "getMe") == f"https://api.telegram.org/bot{TOKEN}/test/getMe"
    assert test.file_url(TOKEN, "a/b.jpg") == f"https://api.telegram.org/file/bot{TOKEN}/test/a/b.jpg"
    assert not test.is_local


def test_the_token_is_redacted_whole_and_by_its_secret_half() -> None:
    secret = TOKEN.split(":")[1]
    text = f"POST https://api.telegram.org/bot{TOKEN}/getMe failed; and {secret} alone"
    assert redacted(text, TOKEN) == "POST https://api.telegram.org/bot<token>/getMe failed; and <token> alone"
