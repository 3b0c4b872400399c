"""Phone number normalization for contact import: raw spreadsheet text in, E.164 or a reason out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType, ValidationResult

from webapp.services.countries import country_name

# Spreadsheet damage, matched only against stripped input (see _undo_spreadsheet).
# A float keeps no leading zero, so an integer part starting with 0 is a real (national) number.
_FLOAT = re.compile(r"([1-9][0-9]*)\.0+", re.ASCII)
_SCIENTIFIC = re.compile(r"([0-9]+)(?:[.,]([0-9]*))?[eE]([+-]?[0-9]+)", re.ASCII)
# E.164 allows 15 digits; anything past this is not a phone number, and a huge exponent must not
# make Decimal build a huge integer.
_MAX_DIGITS = 17

_TYPE_NAMES: dict[int, str] = {
    value: name.lower() for name, value in vars(PhoneNumberType).items() if name.isupper()
}
_NON_GEOGRAPHIC = phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY  # "001": +800, +808, +870, ...

# Every reason begins with a word, never with what was typed: a reason exported to a spreadsheet
# must not start with a character it would run (+, =, -, @), and people read the why first.
_PARSE_ERRORS: dict[int, tuple[str, str]] = {
    NumberParseException.INVALID_COUNTRY_CODE: ("invalid_country_code", "Unknown country code: {typed}"),
    NumberParseException.NOT_A_NUMBER: ("not_a_number", "Not a phone number: {typed}"),
    NumberParseException.TOO_SHORT_AFTER_IDD: ("too_short", "Too few digits after the international prefix: {typed}"),
    NumberParseException.TOO_SHORT_NSN: ("too_short", "Too few digits to be a phone number: {typed}"),
    NumberParseException.TOO_LONG: ("too_long", "Too many digits to be a phone number: {typed}"),
}
_TYPED_CHARS = 40  # what a reason quotes of the cell

# What number types mean to people. FIXED_LINE_OR_MOBILE is how libphonenumber types every US and
# Canadian number: their ranges don't tell a mobile from a landline.
_TYPE_LABELS = {
    "mobile": "mobile",
    "fixed_line": "landline",
    "fixed_line_or_mobile": "mobile or landline (the number doesn't say which)",
    "toll_free": "toll-free",
    "premium_rate": "premium rate",
    "shared_cost": "shared cost",
    "voip": "internet phone (VoIP)",
    "personal_number": "personal number",
    "pager": "pager",
    "uan": "company number",
    "voicemail": "voicemail",
    "unknown": "unknown",
}


class Rejection(Exception):
    """A raw value that is not a usable phone number; `code` is stable, `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A valid number in E.164, with what libphonenumber can tell about it."""

    e164: str
    region: str | None  # ISO 3166 code; None for non-geographic numbers such as +800
    number_type: str  # PhoneNumberType name in lower case: "mobile", "fixed_line_or_mobile", ...

    @property
    def is_landline(self) -> bool:
        """Only FIXED_LINE: US and Canadian numbers are FIXED_LINE_OR_MOBILE and may well be mobiles."""
        return self.number_type == "fixed_line"


def normalize(raw: str, default_region: str) -> PhoneNumber:
    """Parse `raw` as typed in `default_region`, gate on validity, and never guess another country.

    A number without `+` or `00` is read as a `default_region` number; if that reading is invalid
    the row is rejected, not retried with some other country.
    """
    if default_region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unsupported default region {default_region!r}")
    text = raw.strip()  # str.strip also removes NBSP and other Unicode spaces
    if not text:
        raise Rejection("empty", "No phone number")
    typed = text if len(text) <= _TYPED_CHARS else text[: _TYPED_CHARS - 1] + "…"
    if text[-1] == "0" or "e" in text or "E" in text:  # cheap pre-check: most input is neither
        text = _undo_spreadsheet(text, typed)
    try:
        return _parse(text, default_region, typed)
    except Rejection:
        # "00" is the international prefix almost everywhere; parse() knows it only where the
        # default region itself dials 00 (not in the US, whose prefix is 011).
        if text.startswith("00"):
            return _parse("+" + text[2:], default_region, typed)
        raise


def number_type_label(number_type: str) -> str:
    """A stored number type in words people use: "fixed_line" is a landline."""
    return _TYPE_LABELS.get(number_type, number_type.replace("_", " "))


def _parse(text: str, default_region: str, typed: str) -> PhoneNumber:
    """Parse once and keep the number only if libphonenumber calls it valid (not merely possible)."""
    try:
        number = phonenumbers.parse(text, default_region)
    except NumberParseException as exc:
        code, message = _PARSE_ERRORS.get(exc.error_type, _PARSE_ERRORS[NumberParseException.NOT_A_NUMBER])
        raise Rejection(code, message.format(typed=typed)) from None
    # number_type() and is_valid_number() run the same match against the same region's metadata:
    # the type is UNKNOWN exactly when the number is invalid (tests hold this against
    # is_valid_number), so one call gives both and saves a full pass over the number ranges.
    kind = phonenumbers.number_type(number)
    if kind == PhoneNumberType.UNKNOWN:
        raise _invalid(text, typed, number)
    region = phonenumbers.region_code_for_number(number)
    return PhoneNumber(
        e164=phonenumbers.format_number(number, PhoneNumberFormat.E164),
        region=None if region == _NON_GEOGRAPHIC else region,
        number_type=_TYPE_NAMES[kind],
    )


def _invalid(text: str, typed: str, number: phonenumbers.PhoneNumber) -> Rejection:
    """Word the rejection of a number that parsed but is not valid: what was typed, and why it is no number.

    The country is the one the number was read in: the import's default country, or the one its
    + code names. "12345" is "too short for United States (+1)", never "read as +112345".
    """
    region = phonenumbers.region_code_for_country_code(number.country_code)
    where = f"{country_name(region)} (+{number.country_code})" if region.isalpha() else f"+{number.country_code}"
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason == ValidationResult.IS_POSSIBLE_LOCAL_ONLY:
        return Rejection("invalid_number", f"Area code missing: {typed} is only a local number in {where}")
    if reason in (ValidationResult.TOO_SHORT, ValidationResult.INVALID_LENGTH):
        return Rejection("invalid_number", f"Too few digits: {typed} is too short for {where}")
    if reason == ValidationResult.TOO_LONG:
        message = f"Too many digits: {typed} is too long for {where}"
    else:
        message = f"No such number: {typed} is in no number range of {where}"
    if not text.startswith(("+", "00")):  # the classic: 447400123456 read as a US number
        message += "; a number from another country needs + and its country code"
    return Rejection("invalid_number", message)


def _undo_spreadsheet(text: str, typed: str) -> str:
    """Turn a number a spreadsheet saved as a float back into its digits, or refuse if digits were lost.

    `14155550123.0` and `1.4155550123E10` still hold every digit. `1.41556E+10` is what Excel
    writes for a number shown at six significant digits: the zeros after them came from the
    exponent, and 14155600000 would pass as a *valid* but wrong number.
    """
    if match := _FLOAT.fullmatch(text):
        return match[1]
    match = _SCIENTIFIC.fullmatch(text)
    if match is None:
        return text
    whole, fraction, exponent = match[1], match[2] or "", int(match[3])
    written = (whole + fraction).lstrip("0")  # significant digits as written, trailing zeros included
    if len(whole.lstrip("0")) + exponent > _MAX_DIGITS:
        raise Rejection("too_long", f"Too many digits to be a phone number: {typed}")
    try:
        value = Decimal(f"{whole}.{fraction}E{exponent}")
    except InvalidOperation:  # unreachable given the pattern; kept so bad input can never escape
        raise Rejection("not_a_number", f"Not a phone number: {typed}") from None
    if value != value.to_integral_value():
        raise Rejection("not_a_number", f"Not a whole number: {typed}")
    digits = str(int(value))
    if len(written) < len(digits):
        raise Rejection(
            "digits_lost",
            f"Digits lost in spreadsheet: {typed} kept only {len(written)} digits; format the column as Text "
            "and export again",
        )
    return digits
