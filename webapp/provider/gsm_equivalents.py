"""GSM-7 stand-ins for the characters that silently switch a message to UCS-2 (and halve its part size).

Word processors and phones type these without asking: curly quotes, long dashes, the ellipsis,
non-breaking and other typographic spaces, invisible joiners. Each has a plain GSM-7 equivalent that
reads the same on a handset. Letters are left alone on purpose: á → a changes a name or a word, so
the composer lists such characters for the author to decide.
"""

from webapp.provider.segments import GSM7_CHARS

EQUIVALENTS: dict[str, str] = {
    # single quotes, apostrophes, primes, backtick
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u2035": "'",
    "\u02bc": "'", "\u02b9": "'", "\u00b4": "'", "`": "'", "\u2039": "'", "\u203a": "'",
    # double quotes
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u2036": '"',
    "\u00ab": '"', "\u00bb": '"', "\u02ba": '"',
    # dashes and hyphens, minus
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-", "\u2043": "-", "\ufe58": "-", "\ufe63": "-", "\uff0d": "-",
    # ellipsis, bullets, middle dots
    "\u2026": "...", "\u2022": "-", "\u00b7": "-", "\u2027": "-",
    # spaces: no-break, en/em and the rest of the typographic family, tab
    "\u00a0": " ", "\u2000": " ", "\u2001": " ", "\u2002": " ", "\u2003": " ", "\u2004": " ",
    "\u2005": " ", "\u2006": " ", "\u2007": " ", "\u2008": " ", "\u2009": " ", "\u200a": " ",
    "\u202f": " ", "\u205f": " ", "\u3000": " ", "\t": " ",
    # invisible characters: zero-width space and non-joiner, word joiner, soft hyphen, BOM
    "\u200b": "", "\u200c": "", "\u2060": "", "\u00ad": "", "\ufeff": "",
    # line and paragraph separators
    "\u2028": "\n", "\u2029": "\n",
    # fullwidth punctuation phones produce
    "\uff01": "!", "\uff1f": "?", "\uff0c": ",", "\uff0e": ".", "\uff1a": ":", "\uff1b": ";",
    # look-alikes of GSM characters
    "\u2044": "/", "\u2215": "/", "\u02c6": "^", "\u02dc": "~", "\u2024": ".",
}
"""Each key is outside GSM-7 and each value inside it (tests/provider/test_gsm_equivalents.py checks both)."""

_TABLE = str.maketrans(EQUIVALENTS)


def to_gsm7(text: str) -> str:
    """The text with every known stand-in applied; characters without one are left as they were."""
    return text.translate(_TABLE)


def replaceable(text: str) -> list[str]:
    """The distinct characters of `text` that to_gsm7 would change, in order of appearance."""
    return [char for char in dict.fromkeys(text) if char in EQUIVALENTS and char not in GSM7_CHARS]
