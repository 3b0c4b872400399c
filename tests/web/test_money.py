"""Money on pages: the currency's usual places, rounded half-up, with the full figure in the title; prices in full."""

import re
from decimal import Decimal
from pathlib import Path

import pytest

from webapp.web.money import full, money, money_text, price, price_text

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@pytest.mark.parametrize("amount, currency, shown", [
    ("26.215", "USD", "26.22 USD"),  # half-up: banker's rounding would say 26.22 too, but...
    ("0.125", "USD", "0.13 USD"),  # ...here it would say 0.12
    ("48.6150", "USD", "48.62 USD"),
    ("24.40", "USD", "24.40 USD"),
    ("1234567.005", "EUR", "1,234,567.01 EUR"),
    ("1500.5", "JPY", "1,501 JPY"),  # ISO 4217: no minor unit
    ("1.2345", "KWD", "1.235 KWD"),  # three
    ("0", "USD", "0.00 USD"),
])
def test_amounts_show_the_currencys_places_rounded_half_up(amount, currency, shown):
    """An amount reads as on an invoice, however many decimals it is stored with."""
    assert money_text(Decimal(amount), currency) == shown


def test_the_full_figure_is_in_the_title():
    """A tooltip keeps every stored decimal, without the column's trailing zeros."""
    assert str(money(Decimal("26.21500"), "USD")) == '<span class="money" title="26.215 USD">26.22 USD</span>'
    assert full(Decimal("2.00000")) == "2"
    assert str(money(None, "USD")) == ""


@pytest.mark.parametrize("rate, currency, shown", [
    ("0.015", "USD", "0.015 USD"), ("0.05000", "USD", "0.05 USD"), ("2", "EUR", "2.00 EUR"), ("0.0075", "USD",
                                                                                             "0.0075 USD")])
def test_prices_keep_their_own_decimals(rate, currency, shown):
    """A price per part is a rate: 0.015 a part is never shown as 0.02, so count x price multiplies out."""
    assert price_text(Decimal(rate), currency) == shown
    assert f'title="{full(Decimal(rate))} {currency}"' in str(price(Decimal(rate), currency))


def test_no_template_formats_money_by_hand():
    """Every cost, spend, estimate and price on a page goes through the money or price filter."""
    by_hand = re.compile(r'"\{:[,.]*\d*f\}"\.format\([^)]*(cost|spend|estimate|price|billed|budget)', re.I)
    offenders = [f"{path.relative_to(TEMPLATES)}:{number}" for path in TEMPLATES.rglob("*.html")
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if by_hand.search(line) or re.search(r"(?<![|] )\bmoney\(", line)]
    assert offenders == []
