"""Fuzz: the callback parser reads every wire style back exactly, and shrugs off hostile bodies in bounded time."""

import json
import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from urllib.parse import quote, urlencode

from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzzing import bounded_time, fuzz_settings
from webapp.provider.delivery_reports import ALIASES, STATUS_WORDS, DeliveryState, map_status, parse_callback

FORM = "application/x-www-form-urlencoded"
HOSTILE_NUMBERS = [
    "1e1000000", "-1e1000000", "1e-1000000", "9" * 5000, "0." + "0" * 4000 + "1", "NaN", "-nan", "sNaN", "Infinity",
    "-Infinity", "1_000", "١٢٣", "0x10", "1e5", "1E+5", "999999.999999", "1000000", "-0", "+7", "0E+999999", "$3",
    "€0.5", "1,5", " 2 ", "", "٣.٥", "1e999999999999999999", "2.", ".5", "1e", "--1",
]
CHARSETS = ["utf-8", "UTF-8", "latin-1", "iso-8859-15", "utf-16", "utf-7", "ascii", "cp1252", "koi8-r", "shift_jis",
            "rot13", "base64", "hex", "zlib", "uu", "undefined", "idna", "punycode", "unicode_escape",
            "raw_unicode_escape", "x-no-such", "", '"utf-8"', "utf-8;", "\x00", "é", "utf-8" * 40]
CONTENT_TYPES = [None, "", FORM, "application/json", "text/plain", "application/xml", "multipart/form-data",
                 "multipart/form-data; boundary=", "multipart/mixed; boundary=x", "application/json; charset=latin-1",
                 "text/html; charset", "charset=", "; ; ;"]


@contextmanager
def no_logged_errors() -> Iterator[list[logging.LogRecord]]:
    """Collect what the parser logs at ERROR: its catch-all fired, so it lost the fields it could have read."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append
    logger = logging.getLogger("webapp.provider.delivery_reports")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
    assert not records, [f"{record.getMessage()}: {record.exc_info and record.exc_info[1]!r}" for record in records]


def _parse(body: bytes, content_type: str | None, query: str = ""):
    """parse_callback, checked for what it promises on any input: no raise, no log, bounded time and size."""
    with no_logged_errors(), bounded_time(2.0, f"parse_callback of {len(body)} bytes"):
        parsed = parse_callback(body, content_type, query)
    assert isinstance(parsed.state, DeliveryState)
    assert parsed.state is map_status(parsed.raw_status)
    assert parsed.cost is None or (parsed.cost.is_finite() and abs(parsed.cost) < 1_000_000)
    assert parsed.parts is None or (isinstance(parsed.parts, int) and 0 <= parsed.parts < 1_000_000)
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in parsed.fields.items())
    # What the parser keeps grows with what it was given: JSON re-spelt with spaces may double, no more.
    kept = sum(len(key) + len(value) for key, value in parsed.fields.items())
    assert kept <= 4 * (len(body) + len(query)) + 64, (kept, len(body), len(query))
    return parsed


# --- a callback read back exactly, in every wire style ----------------------------------------------------


@st.composite
def spellings(draw, word: str) -> str:
    """`word` as a provider might spell a key or a status: any case, `_`, `-` or a space between letters."""
    out = []
    for index, char in enumerate(word):
        if index and draw(st.integers(0, 5)) == 0:
            out.append(draw(st.sampled_from("_- ")))
        out.append(char.upper() if draw(st.booleans()) else char)
    return "".join(out)


def key_for(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from(ALIASES[name]).flatmap(spellings)


values = st.text(min_size=1, max_size=40).map(str.strip).filter(bool)
status_words = st.one_of(st.sampled_from(sorted(STATUS_WORDS)).flatmap(spellings), values)
costs = st.decimals(min_value=Decimal("-999999"), max_value=Decimal("999999"), places=5, allow_nan=False)
extra_keys = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).map(lambda key: "x" + key)


@st.composite
def callbacks(draw) -> tuple[dict, dict[str, str]]:
    """What a callback says, and the wire keys it says it with (extra unknown fields beside them)."""
    said = {"unique_id": draw(values), "reference": draw(st.none() | values), "status": draw(status_words),
            "cause_code": draw(st.none() | st.integers(0, 999).map(str)), "cost": draw(st.none() | costs),
            "parts": draw(st.none() | st.integers(0, 99_999))}
    wire: dict[str, str] = {}
    for name, value in said.items():
        if value is not None:
            wire[draw(key_for(name))] = str(value)
    for key in draw(st.lists(extra_keys, max_size=4, unique=True)):
        wire.setdefault(key, draw(st.text(max_size=20)))
    return said, wire


def _json_value(key: str, text: str):
    """Costs and parts as JSON numbers, as a provider's JSON would have them."""
    normalised = re.sub("[^0-9a-z]", "", key.lower())
    if normalised in ALIASES["parts"]:
        return int(text)
    if normalised in ALIASES["cost"]:
        return Decimal(text)
    return text


def _json_body(wire: dict[str, str], shape: str, ensure_ascii: bool) -> bytes:
    data = {key: _json_value(key, value) for key, value in wire.items()}
    if shape == "nested":
        data = {"event": "dlr", "data": data}
    elif shape == "list":
        data = [data]
    return json.dumps(data, ensure_ascii=ensure_ascii, default=str).encode()


def _multipart(wire: dict[str, str]) -> tuple[bytes, str]:
    boundary = secrets.token_hex(12)
    chunks = []
    for key, value in wire.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode()
                      + value.encode() + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _check_read_back(parsed, said: dict) -> None:
    assert parsed.unique_id == said["unique_id"]
    assert parsed.reference == said["reference"]
    assert parsed.raw_status == said["status"] and parsed.state is map_status(said["status"])
    assert parsed.cause_code == said["cause_code"]
    assert parsed.cost == said["cost"]
    assert parsed.parts == said["parts"]


@fuzz_settings(100)
@given(callbacks(), st.sampled_from([FORM, f"{FORM}; charset=utf-8", f"{FORM}; charset=UTF-8", None, "text/plain",
                                     "application/json"]))
def test_a_form_body_is_read_back_exactly(callback, content_type):
    """Any fields, keys spelt any way, percent-encoded as a form: every value comes back as sent."""
    said, wire = callback
    _check_read_back(_parse(urlencode(wire).encode(), content_type), said)


@fuzz_settings(100)
@given(callbacks(), st.sampled_from(["flat", "nested", "list"]), st.booleans(),
       st.sampled_from(["application/json", "application/json; charset=utf-8", FORM, None, "text/plain"]))
def test_a_json_body_is_read_back_exactly(callback, shape, ensure_ascii, content_type):
    """Flat, nested under "data" or in a one-event list, with numbers as numbers: every value comes back."""
    said, wire = callback
    _check_read_back(_parse(_json_body(wire, shape, ensure_ascii), content_type), said)


@fuzz_settings(60)
@given(callbacks(), st.booleans())
def test_a_query_string_is_read_back_exactly(callback, question_mark):
    """A GET-style callback, everything in the query string and nothing in the body: every value comes back."""
    said, wire = callback
    _check_read_back(_parse(b"", None, ("?" if question_mark else "") + urlencode(wire, quote_via=quote)), said)


@fuzz_settings(60)
@given(callbacks())
def test_a_multipart_body_is_read_back_exactly(callback):
    """multipart/form-data with a part per field: every value comes back."""
    said, wire = callback
    body, content_type = _multipart(wire)
    _check_read_back(_parse(body, content_type), said)


@fuzz_settings(60)
@given(callbacks(), st.data())
def test_fields_split_between_query_and_body_are_merged(callback, data):
    """Some fields in the query string and the rest in the body: the callback reads as one."""
    said, wire = callback
    in_query = data.draw(st.sets(st.sampled_from(sorted(wire))))
    query = urlencode({key: value for key, value in wire.items() if key in in_query})
    body = urlencode({key: value for key, value in wire.items() if key not in in_query}).encode()
    _check_read_back(_parse(body, FORM, query), said)


# --- hostile bodies --------------------------------------------------------------------------------------


hostile_numbers = st.one_of(st.sampled_from(HOSTILE_NUMBERS), st.text("0123456789.eE+-_ ", max_size=60))
number_keys = st.sampled_from(["cost", "Price", "CHARGE", "parts", "segments", "num_parts", "causecode"])


@st.composite
def hostile_bodies(draw) -> tuple[bytes, str | None, str]:
    """A body, a content type and a query string that a broken or malicious sender might post."""
    style = draw(st.sampled_from(["bytes", "form", "json", "multipart", "deep", "wide"]))
    content_type = draw(st.sampled_from(CONTENT_TYPES) | st.sampled_from(CHARSETS).map(
        lambda charset: f"{FORM}; charset={charset}"))
    query = draw(st.one_of(st.just(""), st.text(max_size=200),
                           st.dictionaries(number_keys, hostile_numbers, max_size=3).map(urlencode)))
    numbers = draw(st.dictionaries(number_keys, hostile_numbers, max_size=4))
    if style == "bytes":
        body = draw(st.binary(max_size=2000))
    elif style == "form":
        pairs = numbers | draw(st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=5))
        raw = "&".join(f"{key}={value}" for key, value in pairs.items())  # not percent-encoded: as a sloppy sender
        body = raw.encode(draw(st.sampled_from(["utf-8", "latin-1", "utf-16"])), "replace")
    elif style == "json":
        body = ("{" + ",".join(f'"{key}": {value or 0}' for key, value in numbers.items()) + "}").encode()
    elif style == "multipart":
        charset = draw(st.sampled_from(CHARSETS))
        transfer = draw(st.sampled_from(["base64", "quoted-printable", "8bit", "x"]))
        boundary = draw(st.sampled_from(["b", "--", "x" * 70, ""]))
        part = (f'--{boundary}\r\nContent-Disposition: form-data; name="status"\r\nContent-Type: text/plain; '
                f'charset={charset}\r\nContent-Transfer-Encoding: {transfer}\r\n\r\n')
        body = part.encode("utf-8", "replace") + draw(st.binary(max_size=200)) + f"\r\n--{boundary}--".encode()
        content_type = f"multipart/form-data; boundary={boundary}"
    elif style == "deep":
        depth = draw(st.integers(1, 100_000))
        body = b"[" * depth + b"{" * draw(st.integers(0, 3)) + b"]" * draw(st.integers(0, depth))
    else:  # wide: a body near the size limit
        body = b"a=" + b"1" * draw(st.sampled_from([10, 1024 * 1024 - 3, 1024 * 1024 - 2, 1024 * 1024 + 10]))
    return body, content_type, query


@fuzz_settings(200)
@given(hostile_bodies())
@example((b'{"cost": 1e1000000, "parts": 1e1000000}', "application/json", ""))
@example((b"parts=" + b"9" * 5000, FORM, "cost=NaN"))
@example((b"[" * 100_000, "application/json", ""))
@example((b'--b\r\nContent-Disposition: form-data; name="status"\r\nContent-Type: text/plain; charset=undefined\r\n\r\n'
          b"DELIVRD\r\n--b--", "multipart/form-data; boundary=b", ""))  # UnicodeError, not LookupError: fields lost
@example((b'--b\r\nContent-Disposition: form-data; name="status"\r\nContent-Type: text/plain; charset=\x00\r\n\r\n'
          b"DELIVRD\r\n--b--", "multipart/form-data; boundary=b", ""))  # ValueError: embedded null character
def test_hostile_bodies_are_read_in_bounded_time(case):
    """Random bytes, wrong charsets, hostile numbers, deep or wide bodies: a result, never an error or a hang."""
    body, content_type, query = case
    _parse(body, content_type, query)
