"""Reading the CSV and TSV files people really have: BOMs, legacy code pages, four delimiters, streamed."""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import BinaryIO, TextIO

from charset_normalizer import from_bytes
from charset_normalizer.md import mess_ratio

DELIMITERS = ",;\t|"
# One record (a row, with any quoted newlines) may hold this many characters: a 10 MB note fits,
# a missing closing quote that swallows the rest of a 2 GB file does not.
MAX_RECORD_CHARS = 16 * 1024 * 1024

_SAMPLE_BYTES = 64 * 1024  # what encoding detection and delimiter sniffing look at
_SCAN_BYTES = 1024 * 1024  # chunk size when checking a whole file is UTF-8
_LOCATE_BYTES = 64 * 1024  # chunk size when looking for the line of a decoding error
_SNIFF_RECORDS = 50

# Longest first: a UTF-32 LE BOM begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32 LE (BOM)"),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32 BE (BOM)"),
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8 (BOM)"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16 LE (BOM)"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16 BE (BOM)"),
)
_WORKBOOKS = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")  # .xlsx (zip), .xls (OLE2)
_LABELS = {
    "latin_1": "ISO-8859-1",
    "mac_roman": "Mac Roman",
    "mac_latin2": "Mac Central European",
    "cp932": "Shift_JIS (Windows)",
    "shift_jis": "Shift_JIS",
    "euc_jp": "EUC-JP",
    "gb18030": "GB18030",
    "big5": "Big5",
    "cp949": "Korean (Windows-949)",
    "koi8_r": "KOI8-R",
}
_MESS_LIMIT = 0.2  # charset-normalizer's own default threshold for "this is not garbled"
_NON_ASCII_TEXT = re.compile("[^\x00-\x7f\ufffd]")  # a character that decoded as real UTF-8
_SEPARATORS = re.compile(r"[\W_]+")

# Header names, compared with separators removed. Mobile words come first: for SMS, a "Mobile"
# column beats a "Phone" column that may hold the office line.
_EXACT_PHONE_HEADERS = (
    frozenset(
        [
            "mobile",
            "mobilenumber",
            "mobilephone",
            "mobilephonenumber",
            "mobileno",
            "mobiletel",
            "cell",
            "cellphone",
            "cellnumber",
            "cellphonenumber",
            "cellno",
            "msisdn",
            "smsnumber",
            "handy",
            "handynummer",
            "mobil",
            "mobilnummer",
            "celular",
            "movil",
            "móvil",
            "cellulare",
            "portable",
        ]
    ),
    frozenset(
        [
            "phone",
            "phonenumber",
            "phoneno",
            "telephone",
            "telephonenumber",
            "tel",
            "telno",
            "telnumber",
            "telefon",
            "telefonnummer",
            "telefono",
            "teléfono",
            "téléphone",
            "telefone",
        ]
    ),
    frozenset({"number", "contactnumber"}),
)
_PARTIAL_PHONE_WORDS = (
    frozenset(["mobile", "cell", "cellphone", "mobilephone", "msisdn", "handy", "mobil", "celular", "movil"]),
    frozenset(["phone", "phonenumber", "telephone", "tel", "telefon", "telefono", "téléphone"]),
)
# A header holding one of these words is about a phone column, not the number: "Phone type",
# "Mobile opt-in", "Country code".
_NOT_A_PHONE = frozenset(
    [
        "ext",
        "extension",
        "fax",
        "type",
        "kind",
        "country",
        "code",
        "prefix",
        "status",
        "verified",
        "opt",
        "optin",
        "optout",
        "consent",
        "subscribed",
        "carrier",
    ]
)

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class CsvProblem(Exception):
    """The file cannot be read as a table; the message is written for the person who uploaded it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class FileFormat:
    """How to read one file, as sniffed or as the user corrected it."""

    encoding: str  # Python codec name
    encoding_label: str  # for people: "UTF-8 (BOM)", "Windows-1252 (detected)"
    detected: bool  # a legacy encoding was guessed: show it in the preview so a person confirms it
    delimiter: str  # one of DELIMITERS


class _RecordTooLong(Exception):
    """Raised inside the line feed; turned into a CsvProblem where the record's line is known."""


def sniff_format(path: str | os.PathLike[str], delimiter: str | None = None) -> FileFormat:
    """Work out the encoding (BOM, then strict UTF-8, then detection) and the delimiter."""
    if delimiter is not None and (len(delimiter) != 1 or delimiter not in DELIMITERS):
        raise ValueError(f"delimiter must be one of {DELIMITERS!r}, not {delimiter!r}")
    encoding, label, detected = _sniff_encoding(path)
    with open(path, encoding=encoding, errors="replace", newline="") as f:
        sample = f.read(_SAMPLE_BYTES)
    if not sample.strip():
        raise CsvProblem("The file is empty.")
    return FileFormat(encoding, label, detected, delimiter or _sniff_delimiter(sample))


def read_preview(
    path: str | os.PathLike[str], fmt: FileFormat, rows: int = 10
) -> tuple[list[str], list[list[str]]]:
    """The header and the first `rows` data records, for the user to check before importing."""
    with closing(_records(path, fmt)) as records:
        first = next(records, None)
        if first is None:
            raise CsvProblem("The file has no header row.")
        return first[1], [row for _, row in itertools.islice(records, rows)]


def iter_records(path: str | os.PathLike[str], fmt: FileFormat) -> Iterator[tuple[int, list[str]]]:
    """Stream the data records (header skipped) with the physical line each one starts on.

    Blank lines are skipped, and so are records of empty cells only (";;;;", as spreadsheets write
    their trailing blank rows); ragged records come back as they are, for the importer to report.
    """
    with closing(_records(path, fmt)) as records:
        if next(records, None) is None:
            return
        yield from records


def count_records(path: str | os.PathLike[str], fmt: FileFormat) -> int:
    """Data records in the file, counted the way iter_records yields them (for a progress bar)."""
    return sum(1 for _ in iter_records(path, fmt))


def normalize_header(name: str) -> str:
    """A key that ignores case, spaces, underscores and dashes: " Mobile Number " -> "mobile_number"."""
    return _SEPARATORS.sub("_", name.replace("\ufeff", "").lower()).strip("_")


def guess_phone_column(headers: list[str]) -> int | None:
    """The index of the column that most likely holds phone numbers, or None if nothing fits.

    An exact name ("Mobile", "phone_number", "Cell #") beats a name that only contains one
    ("Home phone"); among equals, mobile words beat phone words, then the leftmost wins.
    """
    best: tuple[int, int] | None = None  # (rank, index)
    for index, header in enumerate(headers):
        rank = _phone_header_rank(normalize_header(header))
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, index)
    return None if best is None else best[1]


def _phone_header_rank(key: str) -> int | None:
    """Lower is likelier: exact mobile, phone, generic names, then names containing a mobile or phone word."""
    compact = key.replace("_", "")
    for rank, names in enumerate(_EXACT_PHONE_HEADERS):
        if compact in names:
            return rank
    words = {word.rstrip("0123456789") for word in key.split("_")}  # "phone2" counts as "phone"
    if words & _NOT_A_PHONE:
        return None
    for rank, partial in enumerate(_PARTIAL_PHONE_WORDS, start=len(_EXACT_PHONE_HEADERS)):
        if words & partial:
            return rank
    return None


def field_names(headers: list[str]) -> list[str]:
    """A unique template-field key per column: normalized, `_2`-suffixed on repeats, `column_N` if blank.

    A header that is itself called "phone_2" keeps that name; a repeated "phone" steps around it.
    """
    keys = [normalize_header(header) or f"column_{number}" for number, header in enumerate(headers, 1)]
    taken = set(keys)
    seen: set[str] = set()
    names = []
    for key in keys:
        name = key
        if key in seen:
            suffix = 2
            while f"{key}_{suffix}" in taken:
                suffix += 1
            name = f"{key}_{suffix}"
            taken.add(name)
        seen.add(key)
        names.append(name)
    return names


def field_headers(ours: list[str], labels: Iterable[str]) -> list[str]:
    """Column names for contact fields beside an export's own columns, each unique ignoring case: a field
    named like one of ours ("Status") gets " (contact)", a name seen before (two "Email" columns) " (2)"."""
    own = {name.casefold() for name in ours}
    taken, names = set(own), []
    for label in labels:
        base = f"{label} (contact)" if label.casefold() in own else label
        name, number = base, 2
        while name.casefold() in taken:
            name, number = f"{base} ({number})", number + 1
        taken.add(name.casefold())
        names.append(name)
    return names


def neutralize_cell(value: str) -> str:
    """Prefix an apostrophe to a cell a spreadsheet would run as a formula (CSV injection), and only to
    one that starts with = + - @, a tab or a carriage return: every other cell is written as it is.

    Applies to every text cell we export, phone numbers included: an E.164 number starts with "+",
    so it is written as "'+14155552671". That is deliberate (the README's "Exports" says it for users):
    the same rule everywhere, no guessing which "+" is harmless, and Excel keeps the number as text
    instead of showing 1.42E+10 without its "+". normalize() accepts the apostrophe form, so an
    exported file imports back unchanged.
    """
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


# --- encoding --------------------------------------------------------------------------------


def _sniff_encoding(path: str | os.PathLike[str]) -> tuple[str, str, bool]:
    """(codec, label, detected): a BOM decides; else strict UTF-8 over the whole file; else a guess."""
    with open(path, "rb") as f:
        head = f.read(_SAMPLE_BYTES)
        if not head:
            raise CsvProblem("The file is empty.")
        for bom, encoding, label in _BOMS:
            if head.startswith(bom):
                return encoding, label, False
        if head.startswith(_WORKBOOKS):
            raise CsvProblem(
                "This is an Excel workbook, not a CSV file. In Excel choose File > Save As > "
                "CSV UTF-8, then upload that file."
            )
        if b"\x00" in head:  # without a UTF-16/32 BOM, NUL bytes mean this is not text
            raise CsvProblem("This is not a text file (it contains binary data). Upload a CSV file.")
        bad_at = _first_invalid_utf8(f, head)
        if bad_at is None:
            return "utf-8", "UTF-8", False
        sample = head
        # The bad bytes are further on (or cut at the sample's end): show the detector those too. A file
        # shorter than the sample is all in `head`; reading it again showed the detector every line twice.
        if bad_at >= len(head) - 4 and len(head) == _SAMPLE_BYTES:
            f.seek(max(0, bad_at - 1024))
            sample = head + b"\n" + f.read(_SAMPLE_BYTES)
    as_utf8 = sample.decode("utf-8", "replace")
    if len(_NON_ASCII_TEXT.findall(as_utf8)) >= as_utf8.count("\ufffd"):
        # As much well-formed UTF-8 as bytes that are not: two encodings in one file (in a real
        # cp1252 file, byte pairs that happen to be UTF-8, like "ß“", are rare). Any single
        # choice garbles some names, so say where and let a person fix it.
        raise CsvProblem(
            f"Line {_line_of_offset(path, bad_at)}: the file mixes UTF-8 with another encoding. "
            "Open it in a spreadsheet and save it again as CSV UTF-8."
        )
    encoding = _guess_legacy_encoding(sample)
    return encoding, f"{_label(encoding)} (detected)", True


def _first_invalid_utf8(f: BinaryIO, head: bytes) -> int | None:
    """Byte offset of the first byte that is not strict UTF-8, reading on from `head`; None if clean."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # bytes fed to the decoder before `chunk`
    chunk = head
    while chunk:
        pending = len(decoder.getstate()[0])  # a character cut at the end of the previous chunk
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            return offset - pending + exc.start
        offset += len(chunk)
        chunk = f.read(_SCAN_BYTES)
    pending = len(decoder.getstate()[0])
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:  # the file ends inside a character
        return offset - pending
    return None


def _guess_legacy_encoding(sample: bytes) -> str:
    """The code page of a file that is not UTF-8: Windows-1252 if it reads cleanly, else a detected one.

    Excel on a Western Windows writes cp1252, and charset-normalizer's ranking is unreliable on
    short Western samples (a cp1252 list with é, £ and € comes back as cp775, mac_latin2 or even
    cp1006). So the lines that hold non-ASCII bytes are first read as cp1252 and scored with its
    mess detector; only text that reads as garbage there (Polish, Cyrillic, Greek, Japanese...) is
    left to the detector's ranking.
    """
    evidence = b"\n".join(line for line in sample.splitlines() if not line.isascii())[:_SAMPLE_BYTES]
    try:
        if mess_ratio(evidence.decode("cp1252"), _MESS_LIMIT) < _MESS_LIMIT:
            return "cp1252"
    except UnicodeDecodeError:  # one of the five bytes cp1252 leaves undefined
        pass
    for candidates in (sample, evidence):
        # Strict UTF-8 already failed, and UTF-16/32 without NUL bytes would be a fluke.
        names = [match.encoding for match in from_bytes(candidates) if not match.encoding.startswith("utf")]
        if names:
            return names[0]  # CharsetMatches are ordered best first
    raise CsvProblem("This is not a text file (no text encoding fits it). Upload a CSV file.")


def _label(encoding: str) -> str:
    """A name people recognise for a Python codec: "cp1252" -> "Windows-1252"."""
    name = codecs.lookup(encoding).name.replace("-", "_")  # canonical: "cp1252", "iso8859_2"
    if name in _LABELS:
        return _LABELS[name]
    if name.startswith("cp125") and len(name) == 6:
        return "Windows-" + name[2:]
    if name.startswith("iso8859_"):
        return "ISO-8859-" + name[8:]
    return name.upper()


def _line_of_offset(path: str | os.PathLike[str], offset: int) -> int:
    """The 1-based line holding byte `offset` of an ASCII-compatible file."""
    line = 1
    with open(path, "rb") as f:
        while offset > 0 and (chunk := f.read(min(_SCAN_BYTES, offset))):
            line += chunk.count(b"\n")
            offset -= len(chunk)
    return line


def _line_of_decode_error(path: str | os.PathLike[str], encoding: str) -> int:
    """The physical line (as newline="" counts them) where decoding with `encoding` first fails.

    TextIOWrapper decodes 8 KB at a time, so the error it raises says nothing useful about the
    line; this second pass runs only after a failure.
    """
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    line, after_cr = 1, False
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_LOCATE_BYTES)
            state = decoder.getstate()
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError:
                decoder.setstate(state)
                for i in range(len(chunk)):  # replay the failing chunk a byte at a time
                    try:
                        text = decoder.decode(chunk[i : i + 1])
                    except UnicodeDecodeError:
                        break
                    line, after_cr = _count_lines(text, line, after_cr)
                return line
            line, after_cr = _count_lines(text, line, after_cr)
            if not chunk:
                return line


def _count_lines(text: str, line: int, after_cr: bool) -> tuple[int, bool]:
    """Advance a line count over `text`, treating \\r\\n, \\r and \\n each as one break."""
    if not text:
        return line, after_cr
    breaks = text.count("\n") + text.count("\r") - text.count("\r\n")
    if after_cr and text[0] == "\n":
        breaks -= 1
    return line + breaks, text[-1] == "\r"


# --- delimiter -------------------------------------------------------------------------------


def _sniff_delimiter(sample: str) -> str:
    """csv.Sniffer restricted to DELIMITERS, checked against the header; else count outside quotes."""
    sample = sample.replace("\r\n", "\n").replace("\r", "\n")
    counts = _delimiter_counts(sample)
    try:
        head = "\n".join(sample.split("\n", _SNIFF_RECORDS)[:_SNIFF_RECORDS])
        sniffed = csv.Sniffer().sniff(head, delimiters=DELIMITERS).delimiter
    except csv.Error:
        sniffed = None
    if sniffed and counts and counts[0].get(sniffed):
        return sniffed
    return _delimiter_by_counting(counts)


def _delimiter_counts(sample: str) -> list[dict[str, int]]:
    """Per record (quoted newlines respected), how often each delimiter occurs outside quotes."""
    records: list[dict[str, int]] = []
    current = dict.fromkeys(DELIMITERS, 0)
    in_quotes = has_text = False
    for char in sample:
        if char == '"':
            in_quotes = not in_quotes  # a doubled "" toggles twice: still inside
            has_text = True
        elif in_quotes:
            continue
        elif char == "\n":
            if has_text:
                records.append(current)
                if len(records) == _SNIFF_RECORDS:
                    return records
            current, has_text = dict.fromkeys(DELIMITERS, 0), False
        else:
            has_text = True
            if char in current:
                current[char] += 1
    if has_text:
        records.append(current)
    return records


def _delimiter_by_counting(counts: list[dict[str, int]]) -> str:
    """The delimiter found in the header that recurs the same number of times on most records."""
    if not counts:
        return ","
    rows = counts[1:] or counts
    best, best_score = ",", (0.0, 0)
    for delimiter in DELIMITERS:
        in_header = counts[0][delimiter]
        if not in_header:
            continue
        score = (sum(row[delimiter] == in_header for row in rows) / len(rows), in_header)
        if score > best_score:
            best, best_score = delimiter, score
    return best


# --- records ---------------------------------------------------------------------------------


class _Budget:
    """Characters read for the record being parsed; reset by _records after each one."""

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = 0


def _bounded_lines(f: TextIO, budget: _Budget) -> Iterator[str]:
    """Physical lines for csv.reader, refusing a record that grows past MAX_RECORD_CHARS."""
    readline = f.readline
    limit = MAX_RECORD_CHARS + 1  # a longer line arrives cut at the limit and trips the check
    while line := readline(limit):
        budget.used += len(line)
        if budget.used > MAX_RECORD_CHARS:
            raise _RecordTooLong
        yield line


def _records(path: str | os.PathLike[str], fmt: FileFormat) -> Iterator[tuple[int, list[str]]]:
    """Every non-blank record, header included, with the line it starts on (blank: no cell holds
    anything but spaces, like the ";;;;" rows a spreadsheet saves below the data)."""
    if csv.field_size_limit() < MAX_RECORD_CHARS:  # process-wide, and only ever raised
        csv.field_size_limit(MAX_RECORD_CHARS)
    with open(path, encoding=fmt.encoding, newline="") as f:
        budget = _Budget()
        reader = csv.reader(_bounded_lines(f, budget), delimiter=fmt.delimiter)
        start = 1
        try:
            for row in reader:
                row_start, start = start, reader.line_num + 1
                budget.used = 0
                if any(cell.strip() for cell in row):
                    yield row_start, row
        except UnicodeDecodeError:
            line = _line_of_decode_error(path, fmt.encoding)
            raise CsvProblem(
                f"Line {line}: this is not valid {fmt.encoding_label} text. "
                "Save the file as CSV UTF-8 and upload it again."
            ) from None
        except _RecordTooLong:
            raise CsvProblem(
                f"Line {start}: a record longer than {MAX_RECORD_CHARS // (1024 * 1024)} MB. "
                "Is a quote missing its closing quote?"
            ) from None
        except csv.Error as exc:
            raise CsvProblem(f"Line {start}: {exc}") from None


def stream_csv(rows: Iterable[Iterable[object]], delimiter: str = ",") -> Iterator[str]:
    """Write rows as CSV in ~64 KB pieces for a streamed download, every text cell neutralised.

    The download starts with a UTF-8 byte order mark: without one, Excel reads a CSV file in the
    locale's code page and shows "NoÃ«l" for "Noël". sniff_format() reads the mark, so a download
    imports back unchanged. `delimiter` is one of DELIMITERS: the one the team's uploads use, so a
    European Excel that saves ";" opens the download in columns.
    """
    if len(delimiter) != 1 or delimiter not in DELIMITERS:
        raise ValueError(f"delimiter must be one of {DELIMITERS!r}, not {delimiter!r}")
    buffer = io.StringIO()
    buffer.write("\ufeff")
    writer = csv.writer(buffer, delimiter=delimiter)
    for row in rows:
        writer.writerow([neutralize_cell(cell) if isinstance(cell, str) else cell for cell in row])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
