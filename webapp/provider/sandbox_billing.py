"""How the sandbox bills a message: its own count of parts, written apart from webapp.provider.segments.

The composer's estimate is proven against what the sandbox bills (tests/services/test_estimates.py),
so the two must not share code: this module packs characters into parts one at a time, the way a
carrier's SMSC fills 140-octet payloads, instead of reusing the estimator's arithmetic.
"""

from decimal import Decimal

# GSM 03.38, default alphabet and its extension table, written out from the standard's tables.
_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXTENDED = "\f^{}\\[~]|€"
_PAYLOAD_BITS = 140 * 8
_HEADER_BITS = 6 * 8  # the concatenation header each part of a long message carries


def _gsm_septets(text: str) -> list[int] | None:
    """Septets per character, or None when one character has no GSM-7 form."""
    sizes = []
    for char in text:
        if char == "\x1b":  # the escape itself is not a character a person can send
            return None
        if char in _BASIC:
            sizes.append(1)
        elif char in _EXTENDED:
            sizes.append(2)
        else:
            return None
    return sizes


def _ucs2_units(text: str) -> list[int]:
    """UTF-16 code units per character: 2 for anything beyond the basic plane (emoji)."""
    return [2 if ord(char) > 0xFFFF else 1 for char in text]


def _pack(sizes: list[int], unit_bits: int) -> int:
    """Parts needed: one payload if it all fits, else fill payloads that carry a header, never
    splitting one character's units across two parts."""
    if sum(sizes) * unit_bits <= _PAYLOAD_BITS:
        return 1
    room = (_PAYLOAD_BITS - _HEADER_BITS) // unit_bits
    parts, used = 1, 0
    for size in sizes:
        if used + size > room:
            parts, used = parts + 1, 0
        used += size
    return parts


def billed_parts(text: str) -> int:
    """How many SMS parts the sandbox charges for this text."""
    septets = _gsm_septets(text)
    if septets is not None:
        return _pack(septets, 7)
    return _pack(_ucs2_units(text), 16)


def billed_cost(text: str, price_per_part: Decimal, media: bool = False, mms_price: Decimal | None = None
                ) -> tuple[int, Decimal]:
    """(parts, cost) the sandbox bills: an MMS is one message at the MMS price, an SMS its parts."""
    if media and mms_price is not None:
        return 1, mms_price
    parts = billed_parts(text)
    return parts, price_per_part * parts
