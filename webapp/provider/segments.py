"""SMS segment and cost arithmetic (GSM 03.38): the one place where composer, import and jobs count parts.

One SMS carries 140 octets: 160 GSM-7 septets or 70 UCS-2 units alone, 153 or 67 per part once a
6-octet concatenation header is needed. A single character outside the GSM-7 tables turns the whole
message into UCS-2, and a two-unit item (an escape pair, a surrogate pair) is never split across parts.
`measure` runs once per recipient, so the common cases avoid Python-level loops over characters.
"""

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache


class Encoding(StrEnum):
    """How the handset will encode the text; the names are the ones the provider and Twilio use."""

    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


GSM7_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""One septet each. Lowercase ç, á, backtick and tab are absent on purpose (3GPP TS 23.038)."""

GSM7_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")
"""Two septets each (ESC + code); most libraries forget form feed."""

GSM7_CHARS: frozenset[str] = GSM7_BASIC | GSM7_EXTENSION

SINGLE_LIMIT = {Encoding.GSM7: 160, Encoding.UCS2: 70}
PART_LIMIT = {Encoding.GSM7: 153, Encoding.UCS2: 67}


def _char_class(chars: frozenset[str], negate: bool = False) -> re.Pattern[str]:
    body = "".join(re.escape(c) for c in sorted(chars))
    return re.compile(f"[{'^' if negate else ''}{body}]")


# Regex character classes scan in C, which is what keeps measure() fast on long texts.
_NON_GSM7 = _char_class(GSM7_CHARS, negate=True)
_EXTENSION = _char_class(GSM7_EXTENSION)
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")  # one code point, two UTF-16 units

# ASCII texts (most campaigns) are classified with two bytes.translate calls instead of a regex.
_ASCII_BASIC = bytes(c for c in range(128) if chr(c) in GSM7_BASIC)
_ASCII_EXTENSION = bytes(c for c in range(128) if chr(c) in GSM7_EXTENSION)


@dataclass(frozen=True, slots=True)
class ForcingChar:
    """A character that forces the message into UCS-2, located for the composer to highlight."""

    index: int  # code-point index in the Python string, not a UTF-16 offset
    char: str
    name: str  # Unicode name, or "U+XXXX" for characters without one (tab, controls)


@dataclass(frozen=True, slots=True)
class Measurement:
    """What a text costs on the wire: encoding, units, parts, and why it is UCS-2 when it is."""

    encoding: Encoding
    units: int  # septets for GSM-7 (extension chars count 2), UTF-16 code units for UCS-2
    parts: int  # 0 for an empty text
    single_limit: int  # 160 or 70
    part_limit: int  # 153 or 67 (units per part when split)
    remaining: int  # units left in the last part before another part is needed
    forcing_chars: tuple[ForcingChar, ...]  # empty for GSM-7


@lru_cache(maxsize=16384)
def _forcing_char(index: int, char: str) -> ForcingChar:
    """Shared instances: building a frozen dataclass costs more than the lookup, and per-recipient
    texts of one campaign repeat the same characters at the same few offsets."""
    return ForcingChar(index, char, unicodedata.name(char, "") or f"U+{ord(char):04X}")


def _packed_units(text: str, two_unit_items: re.Pattern[str], part_limit: int, units: int) -> int:
    """Units once padding is added wherever a two-unit item would straddle a part boundary.

    Only the two-unit items are visited: the k-th one found at code-point index i starts at raw
    unit offset i + k, plus the padding already inserted before it.
    """
    padding = 0
    last = part_limit - 1
    for k, match in enumerate(two_unit_items.finditer(text)):
        if (match.start() + k + padding) % part_limit == last:
            padding += 1
    return units + padding


@lru_cache(maxsize=4096)
def _result(encoding: Encoding, units: int, packed: int) -> Measurement:
    """The measurement for a text with no forcing chars; cached because it depends on numbers only."""
    return _build(encoding, units, packed, ())


def _build(encoding: Encoding, units: int, packed: int, forcing: tuple[ForcingChar, ...]) -> Measurement:
    single, per_part = SINGLE_LIMIT[encoding], PART_LIMIT[encoding]
    if units <= single:
        parts = 1 if units else 0
        remaining = single - units
    else:
        parts = -(-packed // per_part)
        remaining = parts * per_part - packed
    return Measurement(encoding, units, parts, single, per_part, remaining, forcing)


def _measure_gsm7(text: str, extension_count: int) -> Measurement:
    units = len(text) + extension_count
    packed = units
    if extension_count and units > SINGLE_LIMIT[Encoding.GSM7]:
        packed = _packed_units(text, _EXTENSION, PART_LIMIT[Encoding.GSM7], units)
    return _result(Encoding.GSM7, units, packed)


def _measure_ucs2(text: str) -> Measurement:
    units = len(text.encode("utf-16-le", "surrogatepass")) // 2  # a lone surrogate counts 1, not a crash
    packed = units
    if units > len(text) and units > SINGLE_LIMIT[Encoding.UCS2]:
        packed = _packed_units(text, _ASTRAL, PART_LIMIT[Encoding.UCS2], units)
    forcing = tuple(_forcing_char(m.start(), m[0]) for m in _NON_GSM7.finditer(text))
    return _build(Encoding.UCS2, units, packed, forcing)


def measure(text: str) -> Measurement:
    """Encoding, units and parts of the text exactly as it will be sent (personalized, footer included)."""
    if text.isascii():
        leftover = text.encode("ascii").translate(None, _ASCII_BASIC)
        if not leftover:
            return _measure_gsm7(text, 0)
        if not leftover.translate(None, _ASCII_EXTENSION):
            return _measure_gsm7(text, len(leftover))
        return _measure_ucs2(text)  # backtick, tab or another control character
    if _NON_GSM7.search(text) is None:
        return _measure_gsm7(text, len(_EXTENSION.findall(text)))
    return _measure_ucs2(text)


def is_gsm7(text: str) -> bool:
    """True when every character is in the GSM-7 basic or extension table (an empty text is)."""
    return _NON_GSM7.search(text) is None


def cost(parts: int, price_per_part: Decimal) -> Decimal:
    """Parts times price, exact: money never passes through float (a float price raises TypeError)."""
    if parts < 0:
        raise ValueError(f"parts must not be negative, got {parts}")
    return Decimal(parts) * price_per_part


def estimate(text: str, price_per_part: Decimal) -> tuple[Measurement, Decimal]:
    """The measurement and its cost, for showing beside what the provider later bills."""
    measurement = measure(text)
    return measurement, cost(measurement.parts, price_per_part)
