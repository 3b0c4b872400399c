"""Phone normalization: national formats, international prefixes, spreadsheet damage, validity."""

import dataclasses
import random

import phonenumbers
import pytest

from webapp.services.csvfiles import neutralize_cell
from webapp.services.phones import PhoneNumber, Rejection, normalize, number_type_label


def rejection(raw: str, region: str) -> Rejection:
    with pytest.raises(Rejection) as caught:
        normalize(raw, region)
    return caught.value


@pytest.mark.parametrize(
    "raw",
    [
        "+14155552671",
        "(415) 555-2671",
        "415.555.2671",
        "415-555-2671",
        "1 415 555 2671",
        "415\u00a0555\u00a02671",
        "  +1 (415) 555-2671  ",
        "\u00a0+1.415.555.2671\u00a0",
    ],
)
def test_us_national_and_punctuated_formats(raw):
    """Spaces, dots, dashes, parentheses and NBSP around a US number all give the same E.164."""
    assert normalize(raw, "US").e164 == "+14155552671"


def test_gb_national_mobile():
    """A UK national number with its trunk 0 becomes +44 without it, typed as a mobile."""
    number = normalize("07400 123456", "GB")
    assert number == PhoneNumber(e164="+447400123456", region="GB", number_type="mobile")
    assert not number.is_landline


def test_gb_landline_is_flagged():
    """A London number is FIXED_LINE, and only that counts as a landline."""
    number = normalize("020 7946 0018", "GB")
    assert number.e164 == "+442079460018"
    assert number.number_type == "fixed_line"
    assert number.is_landline


def test_us_number_is_fixed_line_or_mobile_not_landline():
    """US numbers can't be told apart: FIXED_LINE_OR_MOBILE, which must not be treated as a landline."""
    number = normalize("(415) 555-2671", "US")
    assert number.number_type == "fixed_line_or_mobile"
    assert not number.is_landline


def test_italian_leading_zero_is_kept():
    """In Italy the leading 0 is part of the number, so it stays in E.164."""
    number = normalize("06 1234 5678", "IT")
    assert number.e164 == "+390612345678"
    assert number.region == "IT"


def test_italian_number_that_lost_its_zero_is_rejected():
    """A spreadsheet that dropped the leading 0 of an Italian number leaves an invalid one."""
    assert rejection("612345678", "IT").code == "invalid_number"


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("0044 7400 123456", "US", "+447400123456"),  # the US dials 011, yet 00 must work
        ("00 44 7400 123456", "US", "+447400123456"),
        ("0044 7400 123456", "GB", "+447400123456"),
        ("001 415 555 2671", "GB", "+14155552671"),
        ("0039 06 1234 5678", "US", "+390612345678"),
        ("011 44 7400 123456", "US", "+447400123456"),  # the US's own international prefix
        ("+44 (0) 7400 123456", "US", "+447400123456"),
    ],
)
def test_international_prefixes(raw, region, e164):
    """00 and + mean international from any default country; the number keeps its own country."""
    assert normalize(raw, region).e164 == e164


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("14155552671.0", "US", "+14155552671"),
        ("14155552671.00", "US", "+14155552671"),
        ("1.4155552671E10", "US", "+14155552671"),
        ("1.4155552671E+10", "US", "+14155552671"),
        ("1.4155552671e+10", "US", "+14155552671"),
        ("1,4155552671E+10", "US", "+14155552671"),  # written with a decimal comma
        ("447400123456.0", "GB", "+447400123456"),
        ("4.47400123456E+11", "GB", "+447400123456"),
    ],
)
def test_spreadsheet_floats_that_kept_every_digit_are_converted(raw, region, e164):
    """A number saved as a float or in scientific notation with all its digits is recovered."""
    assert normalize(raw, region).e164 == e164


@pytest.mark.parametrize(
    ("raw", "region"), [("1.41556E+10", "US"), ("4.15555E+09", "US"), ("4.474E+11", "GB")]
)
def test_spreadsheet_values_that_lost_digits_are_rejected(raw, region):
    """Zeros that came from the exponent are not digits: refuse rather than store a wrong number."""
    problem = rejection(raw, region)
    assert problem.code == "digits_lost"
    assert problem.message.startswith(f"Digits lost in spreadsheet: {raw} kept only")


def test_lost_digits_would_otherwise_pass_as_valid():
    """The trap the digits_lost rule exists for: the expanded value is a valid, wrong, number."""
    assert phonenumbers.is_valid_number(phonenumbers.parse("14155600000", "US"))
    assert rejection("1.41556E+10", "US").code == "digits_lost"


@pytest.mark.parametrize("raw", ["1.5E-3", "1.41555526715E+10"])
def test_scientific_values_that_are_not_whole_numbers_are_rejected(raw):
    """A float with a fractional part is not a phone number."""
    assert rejection(raw, "US").code == "not_a_number"


def test_huge_exponent_is_rejected_without_expanding_it():
    """1E999999 must not make Decimal build a million-digit integer."""
    assert rejection("1E999999", "US").code == "too_long"


def test_local_only_number_is_rejected_although_possible():
    """555-1234 is "possible" to libphonenumber but not valid: the gate is validity."""
    number = phonenumbers.parse("555-1234", "US")
    assert phonenumbers.is_possible_number(number)
    problem = rejection("555-1234", "US")
    assert problem.code == "invalid_number"
    assert problem.message == "Area code missing: 555-1234 is only a local number in United States (+1)"


def test_international_number_without_plus_in_the_wrong_region_is_rejected():
    """447400123456 with default US is read as +1 447400123456, which is invalid, and is refused."""
    parsed = phonenumbers.parse("447400123456", "US")
    assert phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == "+1447400123456"
    assert not phonenumbers.is_valid_number(parsed)
    problem = rejection("447400123456", "US")
    assert problem.code == "invalid_number"
    assert problem.message == ("Too many digits: 447400123456 is too long for United States (+1); "
                               "a number from another country needs + and its country code")
    assert normalize("447400123456", "GB").e164 == "+447400123456"


def test_no_silent_fallback_to_another_country():
    """A US number typed without +1 in a GB import is rejected, not reinterpreted as American."""
    assert rejection("4155552671", "GB").code == "invalid_number"


@pytest.mark.parametrize("raw", ["", "   ", "\u00a0", "\t\n"])
def test_blank_is_empty(raw):
    """Blank cells get their own reason code."""
    assert rejection(raw, "US").code == "empty"


@pytest.mark.parametrize(
    ("raw", "region", "code"),
    [
        ("abc", "GB", "not_a_number"),
        ("n/a", "GB", "not_a_number"),
        ("+", "GB", "not_a_number"),
        ("12345678901234567890", "GB", "too_long"),
        ("+999 1234 5678", "GB", "invalid_country_code"),
        ("+0014155552671", "US", "invalid_country_code"),
        ("07700 900123", "GB", "invalid_number"),  # Ofcom's drama range: right length, never assigned
    ],
)
def test_reason_codes(raw, region, code):
    """Each kind of bad input has a stable code, and the message is the exception text."""
    problem = rejection(raw, region)
    assert problem.code == code
    assert str(problem) == problem.message


def test_exported_cell_imports_back_unchanged():
    """A number exported with its leading apostrophe (CSV injection guard) normalizes to itself."""
    cell = neutralize_cell("+14155552671")
    assert cell == "'+14155552671"
    assert normalize(cell, "US").e164 == "+14155552671"


def test_non_geographic_number_has_no_region():
    """+800 numbers belong to no country: region None, still valid."""
    number = normalize("+800 1234 5678", "US")
    assert number == PhoneNumber(e164="+80012345678", region=None, number_type="toll_free")


def test_extension_is_not_part_of_e164():
    """An extension cannot receive SMS; the line itself is kept."""
    assert normalize("+44 7400 123456 ext. 12", "US").e164 == "+447400123456"


def test_unknown_default_region_is_a_programming_error():
    """The default region comes from a form choice; an unknown one is a bug, not a bad row."""
    with pytest.raises(ValueError, match="unsupported default region"):
        normalize("4155552671", "XX")


def test_phone_number_is_immutable():
    """PhoneNumber is a frozen value."""
    number = normalize("+14155552671", "US")
    with pytest.raises(dataclasses.FrozenInstanceError):
        number.e164 = "+1"  # type: ignore[misc]


def test_acceptance_matches_is_valid_number():
    """normalize() keeps exactly the numbers phonenumbers.is_valid_number accepts (its shortcut holds)."""
    generator = random.Random(20240611)
    regions = ["US", "CA", "JM", "GB", "IM", "IT", "DE", "FR", "IN", "BR", "AU", "JP", "NG", "RU"]
    checked = accepted = 0
    for _ in range(3000):
        region = generator.choice(regions)
        length = generator.randint(6, 13)
        raw = str(generator.randint(1, 9)) + "".join(str(generator.randint(0, 9)) for _ in range(length - 1))
        if generator.random() < 0.5:
            raw = "+" + raw
        try:
            expected = phonenumbers.is_valid_number(phonenumbers.parse(raw, region))
        except phonenumbers.NumberParseException:
            expected = False
        try:
            normalize(raw, region)
            got = True
        except Rejection:
            got = False
        assert got == expected, (raw, region)
        checked += 1
        accepted += got
    assert accepted > 100  # the sample must exercise both outcomes
    assert checked - accepted > 100


@pytest.mark.parametrize(
    ("raw", "region", "message"),
    [
        ("12345", "US", "Too few digits: 12345 is too short for United States (+1)"),
        ("+44 12", "US", "Too few digits: +44 12 is too short for United Kingdom (+44)"),
        ("4155552671", "GB", "No such number: 4155552671 is in no number range of United Kingdom (+44); "
                             "a number from another country needs + and its country code"),
        ("abc", "GB", "Not a phone number: abc"),
        ("+999 1234 5678", "GB", "Unknown country code: +999 1234 5678"),
        ("", "GB", "No phone number"),
    ],
)
def test_reasons_say_what_was_typed_and_why(raw, region, message):
    """A reason quotes the cell as typed and names the country it was read in, never "read as +112345"."""
    assert rejection(raw, region).message == message


@pytest.mark.parametrize("raw", ["=1+1", "-5", "@SUM(A1)", "+", "+1", "+44 12", "-", "1.41556E+10", "+999 1",
                                 "=" * 100, "00", "+0014155552671", "1E999999", "1.5E1", "12345678901234567890"])
def test_reasons_never_begin_with_a_formula_character(raw):
    """A reason exported to a spreadsheet must not be run by it: it starts with a word, whatever was typed."""
    message = rejection(raw, "US").message
    assert message[0].isalpha(), message
    assert len(message) < 200  # a long cell is quoted only in part


def test_number_types_in_plain_words():
    """US numbers don't say whether they are mobiles: no "fixed line or mobile" jargon on the page."""
    assert number_type_label("fixed_line_or_mobile") == "mobile or landline (the number doesn't say which)"
    assert number_type_label("fixed_line") == "landline"
    assert number_type_label("mobile") == "mobile"
    assert number_type_label("something_new") == "something new"


def test_pages_have_the_number_type_filter(app):
    """Templates write `number | number_type` and show words, never "fixed line or mobile"."""
    template = app.jinja_env.from_string("{{ 'fixed_line_or_mobile' | number_type }} / {{ 'fixed_line'|number_type }}")
    assert template.render() == "mobile or landline (the number doesn&#39;t say which) / landline"
