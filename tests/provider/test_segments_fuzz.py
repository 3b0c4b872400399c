"""Fuzz: SMS part math on random text equals a plain reference written from DOMAIN.md §2."""

from decimal import Decimal

from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzzing import bounded_time, fuzz_settings
from webapp.provider.segments import Encoding, cost, estimate, is_gsm7, measure

# GSM 03.38 as DOMAIN.md §2 lists it, typed out again rather than imported, so a slip in the module's
# tables shows up here.
BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
EXTENSION = "^{}\\[~]|€\f"
CULPRITS = "’“”—…\u00a0`\tçáó"  # DOMAIN.md's usual suspects for UCS-2
ASTRAL = ["\U0001f600", "\U0001f1fa\U0001f1f8", "\U0001f44d\U0001f3fd", "\U00010348", "\U0010ffff"]
LONE_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]


def reference(text: str) -> tuple[Encoding, int, int, int]:
    """(encoding, units, parts, units left in the last part), one character at a time.

    Every character is an item of one or two units; a message that doesn't fit one part is cut into
    parts of 153 (GSM-7) or 67 (UCS-2) units, and an item that doesn't fit what is left of a part
    starts the next one.
    """
    if all(char in BASIC or char in EXTENSION for char in text):
        encoding, single, per_part = Encoding.GSM7, 160, 153
        sizes = [2 if char in EXTENSION else 1 for char in text]
    else:
        encoding, single, per_part = Encoding.UCS2, 70, 67
        sizes = [len(char.encode("utf-16-le", "surrogatepass")) // 2 for char in text]
    units = sum(sizes)
    if units <= single:
        return encoding, units, (1 if units else 0), single - units
    parts, room = 1, per_part
    for size in sizes:
        if size > room:
            parts, room = parts + 1, per_part
        room -= size
    return encoding, units, parts, room


characters = st.one_of(
    st.sampled_from(BASIC),
    st.sampled_from(EXTENSION),
    st.sampled_from(CULPRITS),
    st.sampled_from(ASTRAL),
    st.sampled_from(LONE_SURROGATES),
    st.characters(),
)
gsm_characters = st.one_of(st.sampled_from(BASIC), st.sampled_from(EXTENSION))


@st.composite
def texts(draw, alphabet=characters):
    """Text that often lands a two-unit item on a part boundary: a run of plain letters, then random."""
    lead = draw(st.one_of(st.just(0), st.integers(0, 700)))
    tail = draw(st.lists(alphabet, max_size=draw(st.sampled_from([5, 40, 400]))))
    return "a" * lead + "".join(tail)


def _check(text: str) -> None:
    with bounded_time(1.0, f"measure() of {len(text)} characters"):
        measurement = measure(text)
    encoding, units, parts, remaining = reference(text)
    assert (measurement.encoding, measurement.units, measurement.parts, measurement.remaining) == (
        encoding, units, parts, remaining)
    if encoding is Encoding.GSM7:
        assert (measurement.single_limit, measurement.part_limit, measurement.forcing_chars) == (160, 153, ())
    else:
        assert (measurement.single_limit, measurement.part_limit) == (70, 67)
        forcing = [(index, char) for index, char in enumerate(text) if char not in BASIC and char not in EXTENSION]
        assert [(f.index, f.char) for f in measurement.forcing_chars] == forcing
        assert all(f.name for f in measurement.forcing_chars)
    assert is_gsm7(text) is (encoding is Encoding.GSM7)


@fuzz_settings(400)
@given(texts())
@example("a" * 152 + "€" + "a" * 152)  # DOMAIN.md §2: 3 parts, not 2
@example("a" * 66 + "\U0001f600" + "a" * 66)
@example("’" + "a" * 65 + "\U0001f1fa\U0001f1f8" + "a" * 66)
@example("\ud83d\ude00" * 40)  # a surrogate pair spelt as two code points
def test_measure_equals_the_reference(text):
    """Encoding, units, parts, room left and the UCS-2 culprits equal the reference on any text."""
    _check(text)


@fuzz_settings(300)
@given(texts(gsm_characters))
@example("{" * 81)
@example("a" * 305 + "€")
def test_gsm7_text_with_escapes_equals_the_reference(text):
    """GSM-7 text full of two-septet characters is cut exactly as the reference cuts it."""
    _check(text)


@fuzz_settings(100)
@given(texts(), st.decimals(min_value=0, max_value=10, places=4))
def test_estimate_is_parts_times_price(text, price):
    """The estimate is exactly the reference's parts times the price."""
    measurement, amount = estimate(text, price)
    assert measurement.parts == reference(text)[2]
    assert amount == cost(measurement.parts, price) == Decimal(measurement.parts) * price
