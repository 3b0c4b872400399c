"""Fuzz: messy files through the whole import (upload, mapping, job): refused with a reason, or every row counted."""

import codecs
import csv
import io
from pathlib import Path

from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage

from tests.factories import make_team, make_user
from tests.fuzzing import bounded_time, fuzz_settings
from webapp.extensions import db
from webapp.models import Contact, ContactImport, ImportIssue, ImportStatus
from webapp.services import imports as importer
from webapp.services.phones import Rejection, normalize

HEADER = ["Name", "Mobile", "City"]
ENCODINGS = {
    "utf-8": lambda text: text.encode("utf-8"),
    "utf-8 with BOM": lambda text: codecs.BOM_UTF8 + text.encode("utf-8"),
    "utf-16 LE": lambda text: codecs.BOM_UTF16_LE + text.encode("utf-16-le"),  # Excel's "Unicode Text"
    "cp1252": lambda text: text.encode("cp1252", "replace"),
}
phones = st.one_of(
    st.integers(0, 30).map(lambda n: f"+1 415 555 {2600 + n:04d}"),  # valid, and often repeated
    st.sampled_from(["", " ", "\x00", "+1415\x005552671", "1.41556E+10", "14155552671.0", "1e99999", "+" + "9" * 300,
                     "４１５５５５２６７１", "'+14155552671", "=HYPERLINK(1)", "00 44 7400 123456", "555-1234",
                     "\u00a0", "+800 1234 5678", "é" * 50]),
    st.text(max_size=20),
)
names = st.one_of(st.text(max_size=15), st.sampled_from(["Zoë\x00", "\x00", "a\r\nb", '"quoted"', " Noël ", "😀",
                                                          "x" * 5000, "\ud7ff", "\\N", "\\", "\t"]))


@st.composite
def uploads(draw) -> tuple[bytes, list[list[str]], str]:
    """A file as a person's tools write it: (its bytes, the rows written, the encoding)."""
    encoding = draw(st.sampled_from(sorted(ENCODINGS)))
    rows = draw(st.lists(st.lists(st.one_of(names, phones), min_size=0, max_size=4).map(tuple)
                         | st.tuples(names, phones, names), min_size=1, max_size=12))
    rows = [list(row) for row in rows]
    if encoding != "utf-16 LE":  # a NUL byte without a UTF-16 BOM is binary: refused before import, by design
        rows = [[cell.replace("\x00", "") for cell in row] for row in rows]
    if encoding == "cp1252":
        rows = [[cell.encode("cp1252", "replace").decode("cp1252") for cell in row] for row in rows]
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=draw(st.sampled_from(",;\t|")), lineterminator="\r\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return ENCODINGS[encoding](buffer.getvalue()), rows, encoding


def _expected(rows: list[list[str]]) -> dict[str, dict[str, str]]:
    """The contacts the import must keep: the first row with each valid number, its fields trimmed."""
    kept: dict[str, dict[str, str]] = {}
    for row in ([cell.replace("\x00", "") for cell in row] for row in rows):  # NUL is dropped, not data
        if len(row) < 2 or not any(cell.strip() for cell in row):
            continue
        try:
            number = normalize(row[1], "US").e164
        except Rejection:
            continue
        kept.setdefault(number, {"name": row[0].strip(), "city": row[2].strip() if len(row) > 2 else ""})
    return kept


@fuzz_settings(12, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                          HealthCheck.data_too_large])
@given(uploads())
@example((codecs.BOM_UTF16_LE + "Name,Mobile,City\r\nZoë\x00,+1 415 555 2671,Zürich\r\n\x00,\x00,x\r\n"
          .encode("utf-16-le"), [["Zoë\x00", "+1 415 555 2671", "Zürich"], ["\x00", "\x00", "x"]], "utf-16 LE"))
# PostgreSQL refused the NUL in "Not a phone number: \x00" and in the contact's name: the import failed
@example((b"Name,Mobile,City\r\n,+1 415 555 2600,\xc0\r\n", [["", "+1 415 555 2600", "\xc0"]], "cp1252"))
# A file shorter than the sniffing sample, its only non-UTF-8 byte at the end: the detector was shown the
# file twice, and called it Shift_JIS ("ﾀ" for "À").
def test_a_messy_file_is_refused_or_fully_accounted_for(app, upload):
    """Any encoding, delimiter, quoting, NULs, ragged rows, hostile numbers: the upload is refused with a message
    and leaves no file, or the import ends done with every row counted, the right contacts kept, the file gone."""
    data, rows, encoding = upload
    with app.app_context():
        team = make_team()
        user = make_user(team)
        folder = Path(app.config["UPLOAD_FOLDER"])
        with bounded_time(30.0, f"importing {len(data):,} bytes"):
            try:
                contact_import = importer.store_upload(FileStorage(io.BytesIO(data), "contacts.csv"), team.id,
                                                       user.id, "US")
            except importer.UploadProblem as problem:
                assert str(problem).strip()
                assert not list(folder.glob("*.csv")), "a refused upload left its file behind"
                return
            import_id = contact_import.id
            importer.start_import(contact_import, importer.Mapping(
                phone_column=1, field_columns=[0, 2], list_id=None, new_list_name=f"Fuzz {import_id}",
                default_country="US"))
            importer.run_import(import_id)
        db.session.expire_all()
        done = db.session.get(ContactImport, import_id)
        assert done.status == ImportStatus.DONE, done.error
        assert done.accepted + done.duplicates + done.rejected == done.rows_done == done.total_rows
        stored = {contact.phone: contact.attributes
                  for contact in db.session.scalars(select(Contact).where(Contact.import_id == import_id))}
        assert len(stored) == done.accepted
        assert db.session.scalar(select(func.count()).select_from(ImportIssue).where(
            ImportIssue.import_id == import_id)) == done.duplicates + done.rejected
        if done.encoding == "cp1252" or encoding != "cp1252":
            assert stored == _expected(rows)
        # else a legacy code page was guessed otherwise (the preview says "detected" for a person to check)
        assert not importer.upload_path(done).exists()
