"""Money on pages: an amount in its currency's usual places (rounded half-up), the full figure in its title.

Exports and the title keep every stored decimal; a page shows what a person reads on an invoice. A price
per part or per message is a rate, not an amount: it keeps its own decimals (0.015 a part stays 0.015),
so a row "489 × 0.015 = 7.34" multiplies out.
"""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from flask import Flask
from flask_login import current_user
from markupsafe import Markup, escape

# ISO 4217 minor units for the currencies that don't use two (https://www.iso.org/iso-4217-currency-codes.html).
MINOR_UNITS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0, "RWF": 0,
    "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    "CLF": 4, "UYW": 4,
}


def places(currency: str | None) -> int:
    """The decimals a currency is usually written with: two unless ISO 4217 says otherwise."""
    return MINOR_UNITS.get((currency or "").strip().upper(), 2)


def _decimal(amount) -> Decimal | None:
    if amount is None or amount == "":
        return None
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def rounded(amount, currency: str | None) -> Decimal:
    """The amount as a page shows it: the currency's places, half-up (0.125 -> 0.13, not banker's 0.12)."""
    return _decimal(amount).quantize(Decimal(1).scaleb(-places(currency)), rounding=ROUND_HALF_UP)


def full(amount) -> str:
    """Every stored decimal, without the column's trailing zeros (0.01500 -> 0.015, 2.00000 -> 2)."""
    text = format(_decimal(amount), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def money_text(amount, currency: str | None) -> str:
    """'1,234.57 USD': the amount in its currency's places, grouped, with its code."""
    return f"{rounded(amount, currency):,} {currency or ''}".strip()


def price_text(price, currency: str | None) -> str:
    """A rate in full: at least the currency's places, more where the price has them ('0.015 USD', '0.05 USD')."""
    value = _decimal(price)
    digits = max(places(currency), -value.normalize().as_tuple().exponent if value else 0)
    return f"{value:,.{digits}f} {currency or ''}".strip()


def _span(shown: str, amount, currency: str | None) -> Markup:
    title = f"{full(amount)} {currency or ''}".strip()
    return Markup('<span class="money" title="{}">{}</span>').format(title, shown)


def money(amount, currency: str | None = None) -> Markup:
    """The `money` filter: {{ cost | money(currency) }}; an empty amount shows nothing."""
    if _decimal(amount) is None:
        return Markup("") if amount is None or amount == "" else escape(str(amount))
    return _span(money_text(amount, currency), amount, currency)


def price(amount, currency: str | None = None) -> Markup:
    """The `price` filter: a price per part or per message in full, the same figure in its title."""
    if _decimal(amount) is None:
        return Markup("") if amount is None or amount == "" else escape(str(amount))
    return _span(price_text(amount, currency), amount, currency)


def _team_currency(currency: str | None) -> str | None:
    """The currency given, else the signed-in team's."""
    if currency is None and current_user.is_authenticated:
        return current_user.team.currency
    return currency


def init_app(app: Flask) -> None:
    """{{ amount | money }} and {{ rate | price }} on every page, in the team's currency unless one is given."""
    app.jinja_env.filters["money"] = lambda amount, currency=None: money(amount, _team_currency(currency))
    app.jinja_env.filters["price"] = lambda amount, currency=None: price(amount, _team_currency(currency))
