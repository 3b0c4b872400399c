"""Fuzz: any table written as CSV reads back exactly; any bytes at all are read or refused with a CsvProblem."""

import codecs
import csv
import io
import tempfile
from pathlib import Path
from unittest import mock

from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzzing import bounded_time, fuzz_settings
from webapp.services import csvfiles
from webapp.services.csvfiles import (
    DELIMITERS,
    CsvProblem,
    FileFormat,
    count_records,
    iter_records,
    read_preview,
    sniff_format,
)

# What each encoding is written as, and what sniff_format must call it.
ENCODINGS = {
    "utf-8": (lambda text: text.encode("utf-8"), "utf-8"),
    "utf-8 with BOM": (lambda text: codecs.BOM_UTF8 + text.encode("utf-8"), "utf-8-sig"),
    "utf-16 LE": (lambda text: codecs.BOM_UTF16_LE + text.encode("utf-16-le"), "utf-16"),
    "utf-16 BE": (lambda text: codecs.BOM_UTF16_BE + text.encode("utf-16-be"), "utf-16"),
    "utf-32": (lambda text: text.encode("utf-32"), "utf-32"),
}
NUL_FREE = ("utf-8", "utf-8 with BOM")  # without a UTF-16/32 BOM a NUL byte means binary: refused, by design
SPECIAL = ",;\t|\"'\r\n\x00 \u00a0\ufeff€é😀"


def _write(folder: str, data: bytes) -> Path:
    path = Path(folder) / "upload.csv"
    path.write_bytes(data)
    return path


cells = st.one_of(
    st.text(st.sampled_from(SPECIAL + "ab"), max_size=8),
    st.text(max_size=12),
    st.sampled_from(["", " ", '""', '"', "a\r\nb", "=1+2", "+14155552671"]),
)
HUGE = "x" * 70_000  # a field longer than what sniffing samples


@st.composite
def tables(draw) -> tuple[list[list[str]], str]:
    """Rows (a blank line now and then) and the encoding to write them in."""
    encoding = draw(st.sampled_from(sorted(ENCODINGS)))
    width = draw(st.integers(1, 6))
    row = st.lists(cells, min_size=1, max_size=width + 1).filter(lambda r: any(cell.strip() for cell in r))
    rows = draw(st.lists(st.one_of(row, st.just([])), min_size=1, max_size=8))
    if encoding in NUL_FREE:
        rows = [[cell.replace("\x00", "") for cell in r] for r in rows]
        rows = [r for r in rows if not r or any(cell.strip() for cell in r)] or [["x"]]
    if not any(rows):
        rows.append(["x"])
    first = next(r for r in rows if r)
    first[0] = first[0].lstrip("\ufeff") or "x"  # a leading U+FEFF in the file *is* a BOM
    if draw(st.integers(0, 4)) == 0:  # now and then a huge field, in the header or below it
        row = draw(st.sampled_from([r for r in rows if r]))
        row[draw(st.integers(0, len(row) - 1))] += HUGE
    return rows, encoding


def _written(rows: list[list[str]], delimiter: str, quoting: int, terminator: str) -> tuple[str, list[int]]:
    """The CSV text, and the physical line each row starts on (\\r\\n, \\r and \\n each break a line)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, quoting=quoting, lineterminator=terminator)
    starts = []
    for row in rows:
        text = buffer.getvalue()
        starts.append(1 + text.count("\n") + text.count("\r") - text.count("\r\n"))
        writer.writerow(row)
    return buffer.getvalue(), starts


@fuzz_settings(80)
@given(tables(), st.sampled_from(DELIMITERS), st.sampled_from(["minimal", "all", "all-lf", "all-cr"]), st.booleans())
@example(([["name", "phone"], ["a\x00b", "1"]], "utf-16 LE"), ";", "minimal", True)
@example(([["a", "b"], ["c", HUGE]], "utf-8"), ",", "minimal", True)
def test_a_written_table_reads_back_exactly(table, delimiter, style, sniff_delimiter):
    """Quotes, delimiters, newlines and NULs in cells, five encodings, three line ends: every cell comes back,
    each record with the line it starts on, and the delimiter is found when only one is in the header."""
    rows, encoding = table
    quoting = csv.QUOTE_MINIMAL if style == "minimal" else csv.QUOTE_ALL
    terminator = {"all-lf": "\n", "all-cr": "\r"}.get(style, "\r\n")  # minimal quoting doesn't quote a bare \r
    text, starts = _written(rows, delimiter, quoting, terminator)
    encode, expected_encoding = ENCODINGS[encoding]
    plain = [r for r in rows if r and not any(set(cell) & set(DELIMITERS + "\"\r\n") for cell in r)]
    header = next(r for r in rows if r)
    # Sniffing reads the first 64 KB: a header longer than that (never seen in a real file) can't be sniffed.
    header_is_plain = bool(plain) and plain[0] is header and len(header) > 1 and HUGE not in "".join(header)
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, encode(text))
        with bounded_time(10.0, f"reading {len(text):,} characters"):
            fmt = sniff_format(path, None if sniff_delimiter else delimiter)
            assert fmt.encoding == expected_encoding and not fmt.detected
            if sniff_delimiter and header_is_plain:
                assert fmt.delimiter == delimiter
            fmt = FileFormat(fmt.encoding, fmt.encoding_label, fmt.detected, delimiter)
            expected = [(start, row) for start, row in zip(starts, rows, strict=True) if row]
            first, preview = read_preview(path, fmt, rows=3)
            assert [first, *preview] == [row for _, row in expected[:4]]
            assert list(iter_records(path, fmt)) == expected[1:]
            assert count_records(path, fmt) == len(expected) - 1


@st.composite
def damaged_files(draw) -> bytes:
    """A CSV as people's tools damage it: cut mid-character, mixed encodings, NULs, stray BOMs, or plain noise."""
    kind = draw(st.sampled_from(["noise", "damaged", "legacy", "unclosed"]))
    if kind == "noise":
        return draw(st.binary(max_size=3000))
    if kind == "legacy":  # a code page, with bytes that are not UTF-8
        text = draw(st.text(st.sampled_from("abc,;\t|\"\r\n éüñ€£ßøçÅЖж日本語ąę"), min_size=1, max_size=300))
        codec = draw(st.sampled_from(["cp1252", "latin-1", "cp1250", "koi8-r", "shift_jis", "mac_roman", "cp437"]))
        return text.encode(codec, "replace")
    rows, encoding = draw(tables())
    text = _written(rows, draw(st.sampled_from(DELIMITERS)), csv.QUOTE_MINIMAL, "\r\n")[0]
    data = bytearray(ENCODINGS[encoding][0](text))
    if kind == "unclosed":
        data[len(data) // 2:len(data) // 2] = b'"'
        return bytes(data)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        damage = draw(st.sampled_from([b"\x00", b"\xff", b"\xc3", b"\xe2\x80", b"\xef\xbb\xbf", b"\xff\xfe", b"\r",
                                       b'"', b"\x00\x00\xfe\xff", b"\xed\xa0\x80", "é".encode("cp1252")]))
        if draw(st.booleans()):
            data[where:where] = damage
        else:
            del data[where:]
    return bytes(data)


@fuzz_settings(100)
@given(damaged_files(), st.sampled_from([None, *DELIMITERS]))
@example(b"\xff\xfea\x00", None)  # UTF-16 cut mid-unit
@example(b"\xef\xbb\xbfname,phone\r\nJos\xe9,1\r\n", None)  # a UTF-8 BOM on a cp1252 file
@example(b"a,b\n" + b"x" * 70_000 + b"\xe9\n", None)  # the first bad byte past the sample
@example(b'a,b\n"' + b"x" * 5000, ",")  # a quote never closed
def test_any_bytes_are_read_or_refused_with_a_problem(data, delimiter):
    """Whatever the bytes, sniffing and reading either work or raise CsvProblem, in bounded time, and never
    yield more text than the file holds."""
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, data)
        with bounded_time(10.0, f"reading {len(data):,} bytes"), mock.patch.object(csvfiles, "MAX_RECORD_CHARS", 4096):
            try:
                fmt = sniff_format(path, delimiter)
                read_preview(path, fmt)
                records = list(iter_records(path, fmt))
                assert count_records(path, fmt) == len(records)
            except CsvProblem as problem:
                assert problem.message.strip()
                return
    assert fmt.delimiter in DELIMITERS
    assert sum(len(cell) for _, row in records for cell in row) <= len(data)
    # A record never outgrows the bound, whatever quote is left open.
    assert all(sum(len(cell) for cell in row) <= 4096 for _, row in records)
    assert [line for line, _ in records] == sorted({line for line, _ in records})
