"""GSM-7 stand-ins: each replaces a UCS-2 culprit with a GSM-7 character, and the parts drop."""

from webapp.provider import segments
from webapp.provider.gsm_equivalents import EQUIVALENTS, replaceable, to_gsm7


def test_every_key_forces_ucs2_and_every_value_is_gsm7():
    """The table only ever turns a non-GSM character into GSM ones."""
    for char, replacement in EQUIVALENTS.items():
        assert not segments.is_gsm7(char), repr(char)
        assert segments.is_gsm7(replacement), repr(replacement)


def test_curly_quotes_dashes_ellipsis_and_spaces_are_replaced():
    """Typical word-processor text becomes GSM-7 and reads the same."""
    text = "Don\u2019t miss \u201cthe sale\u201d \u2014 50%\u00a0off\u2026 \u200bnow\u2009!"
    assert replaceable(text) == ["\u2019", "\u201c", "\u201d", "\u2014", "\u00a0", "\u2026", "\u200b", "\u2009"]
    assert to_gsm7(text) == 'Don\'t miss "the sale" - 50% off... now !'
    assert segments.measure(to_gsm7(text)).encoding is segments.Encoding.GSM7


def test_the_parts_drop_after_replacing():
    """A 100-character text with one curly quote is 2 UCS-2 parts, 1 GSM-7 part once replaced."""
    text = "It\u2019s " + "a" * 95
    assert segments.measure(text).parts == 2
    assert segments.measure(to_gsm7(text)).parts == 1


def test_letters_and_emoji_are_left_alone():
    """Accented letters and emoji have no safe stand-in: they stay, and are not offered."""
    text = "Ol\u00e1 \u00e7a va \U0001F600"
    assert to_gsm7(text) == text
    assert replaceable(text) == []
