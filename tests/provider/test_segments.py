"""SMS segment and cost arithmetic: every expected figure below was worked out by hand."""

import dataclasses
import random
from decimal import Decimal

import pytest

from webapp.provider.segments import Encoding, ForcingChar, Measurement, cost, estimate, is_gsm7, measure

G, U = Encoding.GSM7, Encoding.UCS2
LIMITS = {G: (160, 153), U: (70, 67)}
A = "a"
EURO = "€"
SMILE = "\U0001f600"  # 😀, one surrogate pair
FLAG_US = "\U0001f1fa\U0001f1f8"  # 🇺🇸, two regional indicators, 4 units
THUMBS_MEDIUM = "\U0001f44d\U0001f3fd"  # 👍🏽, emoji + skin tone, 4 units
RSQUO = "\u2019"  # ’

# text, encoding, units, parts, remaining (units left in the last part)
VECTORS = [
    pytest.param("", G, 0, 0, 160, id="empty"),
    pytest.param("Hello", G, 5, 1, 155, id="gsm-short"),
    pytest.param(A * 160, G, 160, 1, 0, id="gsm-160-one-part"),
    pytest.param(A * 161, G, 161, 2, 145, id="gsm-161-two-parts"),
    pytest.param(A * 306, G, 306, 2, 0, id="gsm-306-two-parts-full"),
    pytest.param(A * 307, G, 307, 3, 152, id="gsm-307-three-parts"),
    pytest.param(A * 459, G, 459, 3, 0, id="gsm-459-three-parts-full"),
    pytest.param(A * 460, G, 460, 4, 152, id="gsm-460-four-parts"),
    pytest.param(A * 158 + EURO, G, 160, 1, 0, id="ext-ending-at-160"),
    pytest.param(A * 159 + EURO, G, 161, 2, 145, id="ext-ending-at-161"),
    pytest.param(A * 160 + EURO, G, 162, 2, 144, id="ext-ending-at-162"),
    pytest.param(A * 152 + EURO, G, 154, 1, 6, id="ext-at-152-single-part-no-split-issue"),
    pytest.param(A * 152 + EURO + A * 152, G, 306, 3, 152, id="ext-straddling-boundary-moves-whole"),
    pytest.param(A * 151 + EURO + A * 153, G, 306, 2, 0, id="ext-just-fitting-before-boundary"),
    pytest.param(A * 152 + EURO + A * 8, G, 162, 2, 143, id="ext-straddling-short-tail"),
    pytest.param(A * 305 + EURO, G, 307, 3, 151, id="ext-straddling-second-boundary"),
    pytest.param(A * 152 + EURO + A * 151 + EURO + A * 10, G, 317, 3, 141, id="ext-two-straddle-checks"),
    pytest.param("{" * 80, G, 160, 1, 0, id="ext-only-160-septets"),
    pytest.param("{" * 81, G, 162, 2, 143, id="ext-only-padded-at-odd-limit"),
    pytest.param("^{}\\[~]|€\f", G, 20, 1, 140, id="every-ext-char-costs-two"),
    pytest.param("a\fb", G, 4, 1, 156, id="form-feed-costs-two"),
    pytest.param("a\r\nb", G, 4, 1, 156, id="crlf-costs-two-septets"),
    pytest.param("Café £5 ¥ §", G, 11, 1, 149, id="gsm-non-ascii-basic"),
    pytest.param("Preis: 5€ für Sie", G, 18, 1, 142, id="gsm-non-ascii-with-euro"),
    pytest.param("ΔΦΓΛΩΠΨΣΘΞ", G, 10, 1, 150, id="gsm-greek-capitals"),
    pytest.param("Ç", G, 1, 1, 159, id="capital-c-cedilla-is-gsm"),
    pytest.param("ç", U, 1, 1, 69, id="small-c-cedilla-is-ucs2"),
    pytest.param("á", U, 1, 1, 69, id="a-acute-is-ucs2"),
    pytest.param("Olá", U, 3, 1, 67, id="ucs2-whole-message"),
    pytest.param("a\tb", U, 3, 1, 67, id="tab-is-ucs2"),
    pytest.param("`code`", U, 6, 1, 64, id="backtick-is-ucs2"),
    pytest.param("It" + RSQUO + "s here", U, 9, 1, 61, id="curly-apostrophe"),
    pytest.param("\u201cHi\u201d", U, 4, 1, 66, id="curly-double-quotes"),
    pytest.param("a\u2014b", U, 3, 1, 67, id="em-dash"),
    pytest.param("Wait\u2026", U, 5, 1, 65, id="ellipsis"),
    pytest.param("10\u00a0%", U, 4, 1, 66, id="nbsp"),
    pytest.param("Привет", U, 6, 1, 64, id="cyrillic"),
    pytest.param(RSQUO + EURO, U, 2, 1, 68, id="euro-costs-one-in-ucs2"),
    pytest.param(RSQUO + EURO * 69, U, 70, 1, 0, id="sixty-nine-euros-fit-one-ucs2-part"),
    pytest.param("{" + RSQUO + "}", U, 3, 1, 67, id="ext-chars-cost-one-in-ucs2"),
    pytest.param(SMILE, U, 2, 1, 68, id="emoji-costs-two"),
    pytest.param(THUMBS_MEDIUM, U, 4, 1, 66, id="skin-tone-emoji-costs-four"),
    pytest.param(FLAG_US, U, 4, 1, 66, id="flag-costs-four"),
    pytest.param(RSQUO + A * 69, U, 70, 1, 0, id="ucs2-70-one-part"),
    pytest.param(RSQUO + A * 70, U, 71, 2, 63, id="ucs2-71-two-parts"),
    pytest.param(RSQUO + A * 133, U, 134, 2, 0, id="ucs2-134-two-parts-full"),
    pytest.param(RSQUO + A * 134, U, 135, 3, 66, id="ucs2-135-three-parts"),
    pytest.param(A * 68 + SMILE, U, 70, 1, 0, id="emoji-ending-at-70"),
    pytest.param(A * 69 + SMILE, U, 71, 2, 63, id="emoji-ending-at-71"),
    pytest.param(A * 66 + SMILE + A * 66, U, 134, 3, 66, id="emoji-straddling-boundary-moves-whole"),
    pytest.param(A * 65 + SMILE + A * 67, U, 134, 2, 0, id="emoji-just-fitting-before-boundary"),
    pytest.param(A * 133 + SMILE, U, 135, 3, 65, id="emoji-straddling-second-boundary"),
    pytest.param(A * 66 + FLAG_US + A * 66, U, 136, 3, 64, id="flag-straddling-boundary"),
    pytest.param(SMILE * 35, U, 70, 1, 0, id="thirty-five-emoji-one-part"),
    pytest.param(SMILE * 36, U, 72, 2, 61, id="thirty-six-emoji-padded-at-odd-limit"),
]


@pytest.mark.parametrize(("text", "encoding", "units", "parts", "remaining"), VECTORS)
def test_measure(text: str, encoding: Encoding, units: int, parts: int, remaining: int) -> None:
    """Encoding, units, parts and room left match the hand-worked GSM 03.38 figures."""
    single_limit, part_limit = LIMITS[encoding]
    m = measure(text)
    assert (m.encoding, m.units, m.parts, m.remaining) == (encoding, units, parts, remaining)
    assert (m.single_limit, m.part_limit) == (single_limit, part_limit)
    assert (m.forcing_chars == ()) is (encoding is G)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "It" + RSQUO + "s a\u2014b",
            ((2, RSQUO, "RIGHT SINGLE QUOTATION MARK"), (6, "\u2014", "EM DASH")),
            id="quote-and-dash",
        ),
        pytest.param(
            SMILE + "x" + RSQUO,
            ((0, SMILE, "GRINNING FACE"), (2, RSQUO, "RIGHT SINGLE QUOTATION MARK")),
            id="code-point-index",
        ),
        pytest.param("a\tb", ((1, "\t", "U+0009"),), id="unnamed-char-hex-fallback"),
        pytest.param("ç Ç €", ((0, "ç", "LATIN SMALL LETTER C WITH CEDILLA"),), id="gsm-chars-not-listed"),
        pytest.param(
            FLAG_US,
            (
                (0, "\U0001f1fa", "REGIONAL INDICATOR SYMBOL LETTER U"),
                (1, "\U0001f1f8", "REGIONAL INDICATOR SYMBOL LETTER S"),
            ),
            id="flag",
        ),
        pytest.param("10\u00a0%", ((2, "\u00a0", "NO-BREAK SPACE"),), id="nbsp"),
        pytest.param("``", ((0, "`", "GRAVE ACCENT"), (1, "`", "GRAVE ACCENT")), id="every-occurrence"),
        pytest.param("Hi {name}, 5€ [off]", (), id="gsm7-has-none"),
    ],
)
def test_forcing_chars(text: str, expected: tuple[tuple[int, str, str], ...]) -> None:
    """Each character that forces UCS-2 is reported with its code-point index and a name."""
    assert measure(text).forcing_chars == tuple(ForcingChar(*item) for item in expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", True, id="empty"),
        pytest.param("Reply STOP to opt out", True, id="ascii"),
        pytest.param("^{}\\[~]|€\f", True, id="extension-table"),
        pytest.param("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà", True, id="basic-non-ascii"),
        pytest.param("ç", False, id="small-c-cedilla"),
        pytest.param("`", False, id="backtick"),
        pytest.param("\t", False, id="tab"),
        pytest.param("\x1b", False, id="raw-escape"),
        pytest.param(SMILE, False, id="emoji"),
    ],
)
def test_is_gsm7(text: str, expected: bool) -> None:
    """Only text made entirely of the basic and extension tables is GSM-7."""
    assert is_gsm7(text) is expected


@pytest.mark.parametrize(
    ("parts", "price", "expected"),
    [
        pytest.param(0, Decimal("0.015"), Decimal("0"), id="no-parts"),
        pytest.param(1, Decimal("0.015"), Decimal("0.015"), id="one-part"),
        pytest.param(3, Decimal("0.015"), Decimal("0.045"), id="three-parts"),
        pytest.param(7, Decimal("0.0075"), Decimal("0.0525"), id="sub-cent-price"),
        pytest.param(1_000_000, Decimal("0.015"), Decimal("15000"), id="million-parts-exact"),
    ],
)
def test_cost(parts: int, price: Decimal, expected: Decimal) -> None:
    """Cost is parts times price, exact and in Decimal."""
    result = cost(parts, price)
    assert isinstance(result, Decimal)
    assert result == expected


def test_cost_refuses_float_price() -> None:
    """A float price is refused rather than silently rounded."""
    with pytest.raises(TypeError):
        cost(2, 0.015)  # type: ignore[arg-type]


def test_cost_refuses_negative_parts() -> None:
    """Negative parts are a bug upstream, not a refund."""
    with pytest.raises(ValueError, match="negative"):
        cost(-1, Decimal("0.015"))


@pytest.mark.parametrize(
    ("text", "parts", "expected"),
    [
        pytest.param("", 0, Decimal("0"), id="empty-costs-nothing"),
        pytest.param("Hello", 1, Decimal("0.015"), id="one-part"),
        pytest.param(A * 152 + EURO + A * 152, 3, Decimal("0.045"), id="straddling-euro-three-parts"),
        pytest.param(A * 66 + SMILE + A * 66, 3, Decimal("0.045"), id="straddling-emoji-three-parts"),
    ],
)
def test_estimate(text: str, parts: int, expected: Decimal) -> None:
    """The estimate prices the measured parts at the per-part price."""
    measurement, price = estimate(text, Decimal("0.015"))
    assert measurement.parts == parts
    assert price == expected


def test_results_are_immutable() -> None:
    """Measurements are values: shared and cached safely because nobody can change them."""
    m = measure("It" + RSQUO + "s")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.parts = 9  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.forcing_chars[0].index = 9  # type: ignore[misc]


def test_encoding_values_are_the_wire_names() -> None:
    """Encoding values are the names shown to users and reported by providers."""
    assert [str(e) for e in Encoding] == ["GSM-7", "UCS-2"]


# The plain algorithm of reference/sms_domain.md §1.7, one character at a time, kept slow on purpose.
_REF_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_REF_EXT = set("^{}\\[~]|€\f")


def _reference(text: str) -> tuple[Encoding, int, int, int]:
    if all(c in _REF_BASIC or c in _REF_EXT for c in text):
        enc, sizes, single, cap = G, [2 if c in _REF_EXT else 1 for c in text], 160, 153
    else:
        enc, sizes, single, cap = U, [len(c.encode("utf-16-le")) // 2 for c in text], 70, 67
    total = sum(sizes)
    if total <= single:
        return enc, total, (1 if total else 0), single - total
    parts, used = 1, 0
    for n in sizes:
        if used + n > cap:
            parts, used = parts + 1, 0
        used += n
    return enc, total, parts, cap - used


def test_fast_paths_agree_with_per_character_reference() -> None:
    """On random texts rich in two-unit items, measure() matches the per-character greedy reference."""
    rng = random.Random(20240601)
    alphabets = [
        "ab ",
        "ab€{",
        "aé€",
        "ab" + SMILE,
        "aé€" + SMILE + RSQUO,
        "a`\t",
    ]
    for _ in range(3000):
        alphabet = rng.choice(alphabets)
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 480)))
        m = measure(text)
        assert (m.encoding, m.units, m.parts, m.remaining) == _reference(text), text


def test_measurement_fields() -> None:
    """The public Measurement keeps the field order the other modules construct it with."""
    assert [f.name for f in dataclasses.fields(Measurement)] == [
        "encoding",
        "units",
        "parts",
        "single_limit",
        "part_limit",
        "remaining",
        "forcing_chars",
    ]
