"""Tolerant parser for MultiTEL's delivery callbacks, whose wire format is not published.

MultiTEL documents only that the notify URL "receives the result of sending, keyed by uniqueid"
(DOMAIN.md §1), so one guess at the format must never be load-bearing. The parser reads
form-encoded, multipart, JSON (flat, or nested one level as {"data": {...}} or the API's own
{"status": ..., "response": {...}} envelope) and the query string, merged with the body winning.
Keys are matched case- and separator-insensitively ("UniqueId", "unique_id", "UNIQUEID") through
alias lists, and status words from SMPP, Twilio and plain English map to four states. A word it
does not know maps to UNKNOWN with the raw word kept, so the caller stores and shows it instead of
applying it (DOMAIN.md §5). It never raises: a body it cannot read yields UNKNOWN and no fields.
"""

import email.parser
import email.policy
import json
import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl

logger = logging.getLogger(__name__)


class DeliveryState(StrEnum):
    """Where a callback says the message is; only SENT, DELIVERED and FAILED may move a status."""

    SENT = "sent"  # with the provider or the carrier, not final
    DELIVERED = "delivered"
    FAILED = "failed"
    UNKNOWN = "unknown"  # missing or unrecognised word: store it, don't apply it


# Normalised (lower case, letters and digits only) word -> state.
STATUS_WORDS: dict[str, DeliveryState] = {
    **dict.fromkeys(
        ["delivered", "delivrd", "success", "successful", "deliveredtohandset", "deliveredtophone"],
        DeliveryState.DELIVERED,
    ),
    **dict.fromkeys(
        [
            "failed",
            "failure",
            "fail",
            "undelivered",
            "undeliv",
            "undeliverable",
            "notdelivered",
            "rejectd",
            "rejected",
            "expired",
            "deleted",
            "error",
            "skipped",
            "blocked",
        ],
        DeliveryState.FAILED,
    ),
    **dict.fromkeys(
        [
            "sent",
            "acceptd",
            "accepted",
            "enroute",
            "queued",
            "sending",
            "buffered",
            "submitted",
            "scheduled",
            "schedld",
            "enqueud",
        ],
        DeliveryState.SENT,
    ),
}
"""Numeric codes are left out on purpose: Kannel's 8 means "delivered to SMSC" while LOX24's 8 means
failed, so a bare number is UNKNOWN until MultiTEL's own vocabulary has been observed."""

# Field -> normalised key aliases, most specific first.
ALIASES: dict[str, tuple[str, ...]] = {
    "unique_id": ("uniqueid", "messageid", "msgid", "smsid", "messagesid", "smssid"),
    "reference": ("reference", "ref", "clientref", "clientreference", "customerreference", "userref"),
    "status": ("status", "state", "dlrstatus", "deliverystatus", "messagestatus", "smsstatus", "stat"),
    "cause_code": ("causecode", "errorcode", "errcode", "err", "reasoncode"),
    "cost": ("cost", "price", "charge"),
    "parts": ("parts", "segments", "numsegments", "numparts"),
}

_NOT_ALNUM = re.compile(r"[^0-9a-z]")
_MAX_BODY = 1024 * 1024  # callbacks are small; anything larger is not one
# No SMS has a million parts or costs a million: a bigger number is unreadable, not converted.
# int() of Decimal("1e1000000") builds a million-digit integer and held a web thread for 30 s.
_MAX_NUMBER_CHARS = 40
_MAX_ADJUSTED_EXPONENT = 5  # below 1,000,000


@dataclass(frozen=True)
class ParsedCallback:
    """What one callback says, with every field it carried for the raw log.

    `fields` keys are lower-cased; a value nested one level down is keyed "parent.child".
    """

    unique_id: str | None
    reference: str | None
    state: DeliveryState
    raw_status: str | None
    cause_code: str | None
    cost: Decimal | None
    parts: int | None
    fields: dict[str, str] = field(default_factory=dict)


def map_status(word: str | None) -> DeliveryState:
    """The state a status word means, ignoring case and separators; UNKNOWN for anything else."""
    if not word:
        return DeliveryState.UNKNOWN
    return STATUS_WORDS.get(_normalise(str(word)), DeliveryState.UNKNOWN)


def parse_callback(body: bytes, content_type: str | None, query_string: str = "") -> ParsedCallback:
    """Read a callback in any of the formats above; never raises."""
    try:
        fields = _query_fields(query_string)
        fields.update(_body_fields(body or b"", content_type or ""))
        return _interpret(fields)
    except Exception:  # a parser for unknown input must not take the webhook down
        logger.exception("unreadable delivery callback (%d bytes, %s)", len(body or b""), content_type)
        return ParsedCallback(None, None, DeliveryState.UNKNOWN, None, None, None, None, {})


def _interpret(fields: dict[str, str]) -> ParsedCallback:
    by_key = _index(fields)
    raw_status = _pick(by_key, "status")
    return ParsedCallback(
        unique_id=_pick(by_key, "unique_id"),
        reference=_pick(by_key, "reference"),
        state=map_status(raw_status),
        raw_status=raw_status,
        cause_code=_pick(by_key, "cause_code"),
        cost=_decimal(_pick(by_key, "cost")),
        parts=_integer(_pick(by_key, "parts")),
        fields=fields,
    )


def _index(fields: dict[str, str]) -> dict[str, str]:
    """Normalised key -> value; a top-level key wins over the same key nested one level down."""
    index: dict[str, str] = {}
    for key, value in fields.items():
        if "." not in key:
            index.setdefault(_normalise(key), value)
    for key, value in fields.items():
        if "." in key:
            index.setdefault(_normalise(key.rsplit(".", 1)[1]), value)
    return index


def _pick(index: dict[str, str], name: str) -> str | None:
    for alias in ALIASES[name]:
        value = index.get(alias)
        if value is not None and value.strip():
            return value.strip()
    return None


def _body_fields(body: bytes, content_type: str) -> dict[str, str]:
    """Fields from the body, trying the declared format first and then the others."""
    if not body.strip() or len(body) > _MAX_BODY:
        return {}
    # The body's first byte says more than a header a provider may set wrong: a form never starts with {.
    readers = [_json_fields, _form_fields]
    if not body.lstrip().startswith((b"{", b"[")):
        readers.reverse()
    if "multipart/" in content_type.lower():
        readers.insert(0, _multipart_fields)
    for reader in readers:
        fields = reader(body, content_type)
        if fields:
            return fields
    return {}


def _json_fields(body: bytes, content_type: str = "") -> dict[str, str]:
    try:
        # JSON is UTF-8 by definition; one stray byte costs that character, not every field.
        data = json.loads(body.decode("utf-8-sig", "replace"), parse_float=Decimal, parse_int=_json_int)
    except (ValueError, RecursionError):
        return {}
    if isinstance(data, list):  # a batch: take the first event (one callback per message so far)
        data = next((item for item in data if isinstance(item, dict)), None)
    if not isinstance(data, dict):
        return {}
    fields: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for inner_key, inner_value in value.items():
                fields[f"{str(key).lower()}.{str(inner_key).lower()}"] = _as_text(inner_value)
        else:
            fields[str(key).lower()] = _as_text(value)
    return fields


def _form_fields(body: bytes, content_type: str = "") -> dict[str, str]:
    charset = "utf-8"
    if "charset=" in content_type.lower():
        charset = content_type.lower().split("charset=", 1)[1].split(";")[0].strip().strip('"') or "utf-8"
    try:
        text = body.decode("ascii")  # a form body is percent-encoded ASCII...
    except UnicodeDecodeError:
        text = body.decode("utf-8", "replace")  # ...but tolerate raw UTF-8
    pairs = [chunk for chunk in re.split(r"[&;]", text) if chunk]
    if not pairs or not all("=" in chunk for chunk in pairs):
        return {}
    try:
        parsed = parse_qsl(text, keep_blank_values=True, encoding=charset, errors="replace")
    except (LookupError, ValueError):
        parsed = parse_qsl(text, keep_blank_values=True, errors="replace")
    return {key.strip().lower(): value for key, value in parsed if key.strip()}


def _multipart_fields(body: bytes, content_type: str) -> dict[str, str]:
    # The boundary is case-sensitive, so the header is used exactly as received.
    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("utf-8", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
    fields: dict[str, str] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name and part.get_filename() is None:
            fields[str(name).lower()] = _decoded(part.get_payload(decode=True) or b"", part.get_content_charset())
    return fields


def _decoded(payload: bytes, charset: str | None) -> str:
    """A part's text in its declared charset, else UTF-8: Python may not know the name, and some codecs it
    knows fail even with errors="replace" ("undefined", "punycode"), and a NUL in the name is a ValueError."""
    try:
        return payload.decode(charset or "utf-8", "replace")
    except (LookupError, ValueError):
        return payload.decode("utf-8", "replace")


def _query_fields(query_string: str) -> dict[str, str]:
    if not query_string:
        return {}
    parsed = parse_qsl(query_string.lstrip("?"), keep_blank_values=True, errors="replace")
    return {key.strip().lower(): value for key, value in parsed if key.strip()}


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | Decimal):
        return str(value)
    return json.dumps(value, default=str)


def _normalise(key: str) -> str:
    return _NOT_ALNUM.sub("", key.lower())


def _json_int(digits: str) -> int | Decimal:
    """A JSON integer; a long one stays a Decimal (int() refuses over 4,300 digits, slowly before that)."""
    return int(digits) if len(digits) <= _MAX_NUMBER_CHARS else Decimal(digits)


def _decimal(value: str | None) -> Decimal | None:
    """A plausible amount, or None: unreadable, infinite, NaN or over a million."""
    if value is None:
        return None
    text = value.strip().lstrip("$€£")
    if len(text) > _MAX_NUMBER_CHARS:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    # adjusted() reads the exponent without arithmetic, which could overflow the context.
    return number if number.is_finite() and number.adjusted() <= _MAX_ADJUSTED_EXPONENT else None


def _integer(value: str | None) -> int | None:
    number = _decimal(value)
    if number is None or number != number.to_integral_value() or number < 0:
        return None
    return int(number)
