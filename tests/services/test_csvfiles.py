"""CSV/TSV reading: encodings, delimiters, quoted newlines, limits, headers and export safety."""

import codecs
import csv
import os
import tracemalloc
from pathlib import Path

import pytest

from webapp.services import csvfiles
from webapp.services.csvfiles import (
    CsvProblem,
    FileFormat,
    count_records,
    field_names,
    guess_phone_column,
    iter_records,
    neutralize_cell,
    normalize_header,
    read_preview,
    sniff_format,
)

ROWS = [
    ["name", "phone", "city"],
    ["José Núñez", "+14155552671", "São Paulo"],
    ["Zoë", "+447400123456", "Zürich"],
]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def table(rows: list[list[str]], delimiter: str = ",", newline: str = "\n") -> str:
    return newline.join(delimiter.join(row) for row in rows) + newline


def records(path: Path, fmt: FileFormat | None = None) -> list[tuple[int, list[str]]]:
    return list(iter_records(path, fmt or sniff_format(path)))


# --- encodings -------------------------------------------------------------------------------


def test_plain_utf8(tmp_path):
    """Plain UTF-8 is read strictly, without a guess, accents intact."""
    path = write(tmp_path, "contacts.csv", table(ROWS).encode("utf-8"))
    fmt = sniff_format(path)
    assert fmt == FileFormat("utf-8", "UTF-8", False, ",")
    assert read_preview(path, fmt) == (ROWS[0], ROWS[1:])


def test_utf8_bom_is_not_part_of_the_first_header(tmp_path):
    """Excel's "CSV UTF-8" BOM is consumed, so the first header is "name", not "\\ufeffname"."""
    path = write(tmp_path, "excel.csv", codecs.BOM_UTF8 + table(ROWS, newline="\r\n").encode("utf-8"))
    fmt = sniff_format(path)
    assert (fmt.encoding, fmt.encoding_label, fmt.detected) == ("utf-8-sig", "UTF-8 (BOM)", False)
    header, rows = read_preview(path, fmt)
    assert header == ["name", "phone", "city"]
    assert rows == ROWS[1:]


def test_excel_unicode_text_utf16le_tab_delimited(tmp_path):
    """Excel's "Unicode Text" (UTF-16 LE with BOM, tabs, CRLF) is recognised by its BOM."""
    data = codecs.BOM_UTF16_LE + table(ROWS, "\t", "\r\n").encode("utf-16-le")
    path = write(tmp_path, "unicode.txt", data)
    assert data[:2] == b"\xff\xfe"
    fmt = sniff_format(path)
    assert fmt == FileFormat("utf-16", "UTF-16 LE (BOM)", False, "\t")
    assert records(path, fmt) == [(2, ROWS[1]), (3, ROWS[2])]


def test_utf16be_with_bom(tmp_path):
    """A big-endian UTF-16 file with its BOM reads the same."""
    path = write(tmp_path, "be.csv", codecs.BOM_UTF16_BE + table(ROWS).encode("utf-16-be"))
    fmt = sniff_format(path)
    assert (fmt.encoding, fmt.encoding_label, fmt.delimiter) == ("utf-16", "UTF-16 BE (BOM)", ",")
    assert read_preview(path, fmt) == (ROWS[0], ROWS[1:])


def test_windows_1252_is_detected_and_flagged(tmp_path):
    """A US Excel CSV in Windows-1252 with é, £ and € decodes correctly and is flagged as a guess."""
    rows = [
        ["name", "phone", "note"],
        ["René Lefèvre", "+442079460018", "owes £5"],
        ["Zoë", "+33612345678", "10€"],
    ]
    path = write(tmp_path, "cp1252.csv", table(rows, newline="\r\n").encode("cp1252"))
    fmt = sniff_format(path)
    assert fmt == FileFormat("cp1252", "Windows-1252 (detected)", True, ",")
    assert read_preview(path, fmt) == (rows[0], rows[1:])


def test_windows_1252_found_after_the_sample(tmp_path):
    """UTF-8 is checked over the whole file: a cp1252 byte after 200 KB of ASCII still switches encoding."""
    body = "".join(f"Contact {i},+1415555{i % 10000:04d}\n" for i in range(8000))
    data = ("name,phone\n" + body + "Zoë,+14155550000\n").encode("cp1252")
    path = write(tmp_path, "late.csv", data)
    assert len(data) > 200_000
    fmt = sniff_format(path)
    assert (fmt.encoding, fmt.detected) == ("cp1252", True)
    assert records(path, fmt)[-1] == (8002, ["Zoë", "+14155550000"])


def test_central_european_code_page_is_not_forced_to_1252(tmp_path):
    """Polish text in Windows-1250 reads as garbage in cp1252, so the detector's answer is used."""
    rows = [["imię", "telefon"], ["Łódź Zażółć", "+48123456789"], ["Gęślą jaźń", "+48123456780"]]
    path = write(tmp_path, "pl.csv", table(rows).encode("cp1250"))
    fmt = sniff_format(path)
    assert (fmt.encoding, fmt.encoding_label, fmt.detected) == ("cp1250", "Windows-1250 (detected)", True)
    assert read_preview(path, fmt)[1][0] == rows[1]


def test_file_mixing_utf8_and_cp1252_names_the_line(tmp_path):
    """UTF-8 names beside a cp1252 one can't all be right in any encoding: refuse, naming the line."""
    data = "name,phone\nJosé,+14155552671\n".encode() + b"Ren\xe9,+14155552672\n"
    path = write(tmp_path, "mixed.csv", data)
    with pytest.raises(CsvProblem, match=r"^Line 3: the file mixes UTF-8"):
        sniff_format(path)


def test_decoding_error_names_the_physical_line(tmp_path):
    """A byte the chosen encoding can't read is reported on its own line, even deep into the file."""
    data = b"name,phone\n" + b'A,+14155552671,"two\nlines"\n' * 15000 + b"Ren\xe9,+1\n" + b"B,+2\n"
    path = write(tmp_path, "bad.csv", data)
    fmt = FileFormat("utf-8", "UTF-8", False, ",")
    with pytest.raises(CsvProblem, match=r"^Line 30002: this is not valid UTF-8 text"):
        count_records(path, fmt)


def test_truncated_utf16_file_is_a_problem_not_a_crash(tmp_path):
    """An odd byte at the end of a UTF-16 file is reported as a decoding problem on the last line."""
    data = codecs.BOM_UTF16_LE + table(ROWS, "\t").encode("utf-16-le") + b"x"
    path = write(tmp_path, "cut.txt", data)
    with pytest.raises(CsvProblem, match=r"^Line 4: this is not valid UTF-16 LE \(BOM\) text"):
        records(path)


# --- delimiters ------------------------------------------------------------------------------


def test_semicolon_file_from_european_excel(tmp_path):
    """European Excel writes ; and decimal commas; commas inside values don't confuse the sniffer."""
    rows = [["Name", "Telefon", "Betrag"], ["Jürgen", "+4930123456", "1,50"], ["Anna", "+4930123457", "2,75"]]
    path = write(tmp_path, "de.csv", table(rows, ";", "\r\n").encode("utf-8"))
    fmt = sniff_format(path)
    assert fmt.delimiter == ";"
    assert read_preview(path, fmt) == (rows[0], rows[1:])


def test_pipe_delimited(tmp_path):
    """Pipe-delimited exports are recognised."""
    rows = [["name", "phone"], ["Ann", "+14155552671"], ["Bo", "+14155552672"]]
    path = write(tmp_path, "pipe.csv", table(rows, "|").encode())
    fmt = sniff_format(path)
    assert fmt.delimiter == "|"
    assert records(path, fmt) == [(2, rows[1]), (3, rows[2])]


def test_ragged_semicolon_file_falls_back_to_counting(tmp_path):
    """Where csv.Sniffer gives up (ragged rows), counting outside quotes still finds ;."""
    text = "name;phone\nAnn;+14155552671\nBo\nCy;+14155552673;x\n"
    with pytest.raises(csv.Error):
        csv.Sniffer().sniff(text, delimiters=csvfiles.DELIMITERS)
    path = write(tmp_path, "ragged.csv", text.encode())
    assert sniff_format(path).delimiter == ";"


def test_delimiters_inside_quotes_do_not_count(tmp_path):
    """A comma file whose quoted names hold semicolons is still a comma file."""
    text = 'name,phone\n"Smith; John",+14155552671\n"Doe; Jane",+14155552672\n'
    path = write(tmp_path, "quoted.csv", text.encode())
    fmt = sniff_format(path)
    assert fmt.delimiter == ","
    assert records(path, fmt)[0] == (2, ["Smith; John", "+14155552671"])


def test_single_column_defaults_to_comma(tmp_path):
    """A bare list of numbers has no delimiter to find; comma is assumed."""
    path = write(tmp_path, "numbers.csv", b"phone\n+14155552671\n+14155552672\n")
    fmt = sniff_format(path)
    assert fmt.delimiter == ","
    assert records(path, fmt) == [(2, ["+14155552671"]), (3, ["+14155552672"])]


def test_user_can_override_the_delimiter(tmp_path):
    """The user's choice of delimiter wins over the sniffer; only the four known ones are allowed."""
    path = write(tmp_path, "c.csv", table(ROWS).encode())
    assert sniff_format(path, delimiter=";").delimiter == ";"
    with pytest.raises(ValueError):
        sniff_format(path, delimiter="x")
    with pytest.raises(ValueError):
        sniff_format(path, delimiter="")


# --- records ---------------------------------------------------------------------------------


def test_quoted_newlines_keep_line_numbers_right(tmp_path):
    """A record spanning lines is reported at the line it starts on, and later lines stay exact."""
    text = (
        'name,phone,note\nAnn,+1,"line one\nline two\nline three"\n'
        'Bo,+2,plain\n"Cy\r\nCyson",+3,x\nDee,+4,y\n'
    )
    path = write(tmp_path, "multi.csv", text.encode())
    assert records(path) == [
        (2, ["Ann", "+1", "line one\nline two\nline three"]),
        (5, ["Bo", "+2", "plain"]),
        (6, ["Cy\r\nCyson", "+3", "x"]),
        (8, ["Dee", "+4", "y"]),
    ]


def test_crlf_and_old_mac_line_endings(tmp_path):
    """CRLF (Windows) and bare CR (old Mac Excel) both end records, and both count as one line."""
    for newline in ("\r\n", "\r"):
        path = write(tmp_path, "endings.csv", table(ROWS, newline=newline).encode())
        assert records(path) == [(2, ROWS[1]), (3, ROWS[2])]


def test_ragged_rows_are_returned_as_they_are(tmp_path):
    """Short and long rows are not padded or cut here: the importer reports them."""
    text = "name,phone,city\nAnn,+1\nBo,+2,Paris,extra\n,,x\n"
    path = write(tmp_path, "ragged.csv", text.encode())
    assert records(path) == [(2, ["Ann", "+1"]), (3, ["Bo", "+2", "Paris", "extra"]), (4, ["", "", "x"])]


def test_rows_of_only_separators_are_blank_lines(tmp_path):
    """The ";;;;" rows a spreadsheet saves below the data (or between it), empty quotes and spaces included,
    are blank lines: skipped, not counted, and the lines after them keep their numbers."""
    text = "name;phone;city\r\nAnn;+1;Paris\r\n;;\r\n\"\";  ;\r\nBo;+2;Rome\r\n;;;;\r\n;;;;\r\n"
    path = write(tmp_path, "trailing.csv", text.encode())
    fmt = sniff_format(path)
    assert fmt.delimiter == ";"
    assert records(path, fmt) == [(2, ["Ann", "+1", "Paris"]), (5, ["Bo", "+2", "Rome"])]
    assert count_records(path, fmt) == 2


def test_blank_lines_are_skipped_but_counted(tmp_path):
    """Empty lines are not records, yet line numbers after them match what an editor shows."""
    text = "\nname,phone\n\nAnn,+1\n\n\nBo,+2\n\n"
    path = write(tmp_path, "blank.csv", text.encode())
    fmt = sniff_format(path)
    assert read_preview(path, fmt) == (["name", "phone"], [["Ann", "+1"], ["Bo", "+2"]])
    assert records(path, fmt) == [(4, ["Ann", "+1"]), (7, ["Bo", "+2"])]
    assert count_records(path, fmt) == 2


def test_preview_stops_at_the_requested_rows(tmp_path):
    """read_preview gives the header and at most `rows` records."""
    rows = [["phone"]] + [[f"+1415555{i:04d}"] for i in range(50)]
    path = write(tmp_path, "many.csv", table(rows).encode())
    header, body = read_preview(path, sniff_format(path), rows=3)
    assert header == ["phone"]
    assert body == rows[1:4]


def test_header_without_rows(tmp_path):
    """A header alone is a valid table with no records; the importer decides what to say."""
    path = write(tmp_path, "header.csv", b"name,phone\r\n")
    fmt = sniff_format(path)
    assert read_preview(path, fmt) == (["name", "phone"], [])
    assert records(path, fmt) == []
    assert count_records(path, fmt) == 0


def test_count_matches_records_with_multiline_fields(tmp_path):
    """count_records counts records, not lines, so a progress bar ends at 100%."""
    text = 'name,note\nA,"1\n2"\nB,x\nC,"3\n4\n5"\n'
    path = write(tmp_path, "count.csv", text.encode())
    fmt = sniff_format(path)
    assert count_records(path, fmt) == len(records(path, fmt)) == 3


def test_ten_megabyte_field_is_read(tmp_path):
    """A single 10 MB field (a pasted document) fits under the record cap and survives intact."""
    big = "x" * (10 * 1024 * 1024)
    path = write(tmp_path, "big.csv", f"name,phone,note\nAnn,+14155552671,{big}\nBo,+2,y\n".encode())
    fmt = sniff_format(path)
    got = records(path, fmt)
    assert [line for line, _ in got] == [2, 3]
    assert got[0][1][2] == big
    assert got[1][1] == ["Bo", "+2", "y"]


def test_unclosed_quote_hits_the_record_cap(tmp_path, monkeypatch):
    """A missing closing quote that would swallow the file stops at the cap, naming the line."""
    monkeypatch.setattr(csvfiles, "MAX_RECORD_CHARS", 64 * 1024)
    text = 'name,phone,note\nAnn,+1,ok\nBo,+2,"never closed\n' + "Cy,+3,z\n" * 20000
    path = write(tmp_path, "unclosed.csv", text.encode())
    with pytest.raises(CsvProblem, match=r"^Line 3: a record longer than"):
        records(path)


def test_one_endless_line_hits_the_record_cap(tmp_path, monkeypatch):
    """A line with no newline at all is not read whole into memory."""
    monkeypatch.setattr(csvfiles, "MAX_RECORD_CHARS", 64 * 1024)
    path = write(tmp_path, "endless.csv", b"name,phone\nAnn," + b"9" * 200_000 + b"\n")
    with pytest.raises(CsvProblem, match=r"^Line 2: a record longer than"):
        records(path)


def test_records_are_streamed(tmp_path):
    """Reading a 5 MB file allocates far less than the file: rows are never all in memory."""
    path = tmp_path / "stream.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["name", "phone", "city"])
        for i in range(120_000):
            writer.writerow([f"Contact {i}", f"+1415555{i % 10000:04d}", "San Francisco"])
    assert path.stat().st_size > 4_000_000
    fmt = sniff_format(path)
    tracemalloc.start()
    try:
        total = sum(1 for _ in iter_records(path, fmt))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 120_000
    assert peak < 1_000_000


# --- files that are not CSV ------------------------------------------------------------------


def test_binary_file_named_csv(tmp_path):
    """Random bytes with NULs in a file called .csv are refused as binary."""
    path = write(tmp_path, "photo.csv", os.urandom(4096) + b"\x00\x00")
    with pytest.raises(CsvProblem, match="not a text file"):
        sniff_format(path)


def test_binary_without_nul_bytes(tmp_path):
    """Binary data that avoids NUL is still refused when no text encoding fits it."""
    data = bytes(b for b in os.urandom(64 * 1024) if b) * 2
    path = write(tmp_path, "noise.csv", data)
    with pytest.raises(CsvProblem, match="not a text file"):
        sniff_format(path)


def test_excel_workbook_renamed_csv(tmp_path):
    """An .xlsx (a zip) uploaded as CSV gets a message telling how to save it as CSV."""
    path = write(tmp_path, "book.csv", b"PK\x03\x04\x14\x00\x06\x00" + os.urandom(512))
    with pytest.raises(CsvProblem, match="Excel workbook"):
        sniff_format(path)


@pytest.mark.parametrize("data", [b"", codecs.BOM_UTF8, b"\r\n\r\n  \n", codecs.BOM_UTF16_LE])
def test_empty_file(tmp_path, data):
    """No bytes, only a BOM, or only blank lines: the file is empty."""
    path = write(tmp_path, "empty.csv", data)
    with pytest.raises(CsvProblem, match="The file is empty"):
        sniff_format(path)


# --- headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [" Mobile Number ", "mobile_number", "Mobile-Number", "MOBILE  NUMBER", "\ufeffmobile number"]
)
def test_normalize_header(name):
    """Case, spaces, underscores, dashes and a stray BOM don't change the key."""
    assert normalize_header(name) == "mobile_number"


def test_normalize_header_drops_symbols_and_keeps_accents():
    """ "Cell #" is "cell"; "Téléphone" keeps its letters."""
    assert normalize_header("Cell #") == "cell"
    assert normalize_header("Téléphone") == "téléphone"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (["Name", "Phone"], 1),
        (["name", "phone_number"], 1),
        (["First", "Last", "Mobile Phone"], 2),
        (["Cell #", "Email"], 0),
        (["id", "MSISDN"], 1),
        (["Telephone", "Name"], 0),
        (["Name", "Tel"], 1),
        (["Vorname", "Handynummer"], 1),
        (["Name", "Number"], 1),
        (["Home Phone", "Phone"], 1),  # exact beats partial
        (["Phone", "Mobile"], 1),  # for SMS, mobile beats phone
        (["Number", "Home phone"], 0),  # exact beats partial, even the generic "number"
        (["Name", "Work Phone 2"], 1),  # partial, with a digit
        (["Phone type", "Phone ext", "Mobile opt-in", "Country code", "Mobile"], 4),
        (["Name", "Email", "Account Number", "Hotel", "Cellar"], None),
        ([], None),
    ],
)
def test_guess_phone_column(headers, expected):
    """The phone column is found by name; exact names first; columns about phones are not phones."""
    assert guess_phone_column(headers) == expected


def test_field_names_are_unique_keys():
    """Repeats get _2, _3 (stepping around a real "phone_2"), blanks become column_N."""
    headers = ["Name", "name", "", "Phone", "phone_2", "Phone", "###"]
    assert field_names(headers) == ["name", "name_2", "column_3", "phone", "phone_2", "phone_3", "column_7"]


# --- export safety ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["=SUM(A1:A2)", "+14155552671", "-2+3", "@cmd", "\t=1", "\r=1", '=HYPERLINK("http://x")']
)
def test_neutralize_formula_starts(value):
    """Cells a spreadsheet would evaluate get a leading apostrophe, E.164 numbers included."""
    assert neutralize_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["", "Ann", "14155552671", " =1", "a=b", "'+1"])
def test_neutralize_leaves_plain_text(value):
    """Ordinary text, and text already starting with an apostrophe, is left alone."""
    assert neutralize_cell(value) == value


def test_downloads_start_with_a_utf8_bom_and_import_back(tmp_path):
    """Excel shows "Noël" only when the CSV starts with a BOM; the file still reads back as the same rows."""
    text = "".join(csvfiles.stream_csv([["name", "phone"], ["Noël", "+14155552671"]]))
    data = text.encode("utf-8")
    assert data.startswith(codecs.BOM_UTF8) and data.count(codecs.BOM_UTF8) == 1
    path = write(tmp_path, "download.csv", data)
    fmt = sniff_format(path)
    assert read_preview(path, fmt) == (["name", "phone"], [["Noël", "'+14155552671"]])


def test_downloads_use_the_separator_asked_for(tmp_path):
    """A ";" download reads back as the same rows; a separator the importer can't sniff is refused."""
    text = "".join(csvfiles.stream_csv([["name", "note"], ["Noël", "a;b"], ["Ann", "-1"]], ";"))
    assert text.startswith("\ufeffname;note\r\nNoël;\"a;b\"\r\nAnn;'-1\r\n")
    path = write(tmp_path, "semicolon.csv", text.encode("utf-8"))
    fmt = sniff_format(path)
    assert fmt.delimiter == ";"
    assert read_preview(path, fmt) == (["name", "note"], [["Noël", "a;b"], ["Ann", "'-1"]])
    with pytest.raises(ValueError):
        list(csvfiles.stream_csv([["x"]], ":"))


def test_downloads_keep_neutralising_after_the_bom():
    """The BOM is not a cell: a first cell that starts with "=" is still neutralised."""
    text = "".join(csvfiles.stream_csv([["=1+1"]]))
    assert text == "\ufeff'=1+1\r\n"
