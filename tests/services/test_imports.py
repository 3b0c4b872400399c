"""Contact import end to end through the views and a real RQ worker: real files, every row accounted for."""

import codecs
import csv
import io
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import run_jobs
from tests.factories import make_team, make_user
from webapp.extensions import db
from webapp.models import Contact, ContactImport, ContactList, ImportIssue, Role, Suppression
from webapp.services import imports as importer

HEADER = ["Name", "Mobile Number", "City"]
ROWS = [
    ["Zoë Müller", "+1 (415) 555-2671", "Zürich"],
    ["Émile", "415.555.2672", "Montréal"],
    ["Ann", "00 44 7400 123456", "London"],
]


@pytest.fixture
def editor(app, auth):
    with app.app_context():
        team = make_team("Acme")
        make_user(team, Role.EDITOR, "ed@example.com")
        team_id = team.id
    auth.login("ed@example.com")
    return team_id


def _csv_bytes(rows, header=HEADER, delimiter=",", encoding="utf-8"):
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode(encoding)


def _upload(client, data: bytes, filename="contacts.csv"):
    return client.post("/imports/", data={"file": (io.BytesIO(data), filename)}, content_type="multipart/form-data")


def _import_id(response) -> int:
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    return int(re.search(r"/imports/(\d+)$", response.headers["Location"]).group(1))


def _start(client, import_id, phone_column=1, fields=(0, 2), list_name="Customers", list_id=None, country="US"):
    data = {"phone_column": str(phone_column), "field_columns": [str(f) for f in fields],
            "default_country": country, "list_id": str(list_id) if list_id else "new", "new_list_name": list_name}
    return client.post(f"/imports/{import_id}/start", data=data)


def _import(app, client, data: bytes, **mapping) -> ContactImport:
    import_id = _import_id(_upload(client, data))
    response = _start(client, import_id, **mapping)
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    run_jobs(app)
    with app.app_context():
        contact_import = db.session.get(ContactImport, import_id)
        db.session.expunge(contact_import)
        return contact_import


def _contacts(app, list_id):
    with app.app_context():
        return {c.phone: c.attributes for c in db.session.scalars(select(Contact).where(Contact.list_id == list_id))}


def _assert_adds_up(imp):
    assert imp.accepted + imp.duplicates + imp.rejected == imp.rows_done == imp.total_rows


EXPECTED = {"+14155552671": {"name": "Zoë Müller", "city": "Zürich"},
            "+14155552672": {"name": "Émile", "city": "Montréal"},
            "+447400123456": {"name": "Ann", "city": "London"}}


@pytest.mark.parametrize(
    ("encoding", "delimiter", "bom"),
    [
        ("utf-8", ",", b""),
        ("utf-8", ",", b"\xef\xbb\xbf"),
        ("utf-16-le", "\t", b"\xff\xfe"),  # Excel's "Unicode Text"
        ("utf-16-be", ",", b"\xfe\xff"),
        ("cp1252", ";", b""),  # European Excel
        ("utf-8", "|", b""),
    ],
    ids=["utf8", "utf8-bom", "utf16le-tab", "utf16be", "cp1252-semicolon", "pipe"],
)
def test_real_file_encodings_and_delimiters(app, client, editor, encoding, delimiter, bom):
    """Each encoding and delimiter people export imports the same three contacts with their accents intact."""
    rows = [[c.replace("Zoë Müller", "Zoe Müller") if encoding == "cp1252" else c for c in r] for r in ROWS]
    imp = _import(app, client, bom + _csv_bytes(rows, delimiter=delimiter, encoding=encoding))
    assert imp.status == "done", imp.error
    assert (imp.accepted, imp.duplicates, imp.rejected) == (3, 0, 0)
    _assert_adds_up(imp)
    expected = dict(EXPECTED)
    if encoding == "cp1252":
        expected["+14155552671"] = {"name": "Zoe Müller", "city": "Zürich"}
    assert _contacts(app, imp.list_id) == expected


def test_mapping_page_previews_and_guesses_the_phone_column(app, client, editor):
    """After upload the user sees the first rows, the detected encoding and the guessed phone column."""
    import_id = _import_id(_upload(client, b"\xff\xfe" + _csv_bytes(ROWS, delimiter="\t", encoding="utf-16-le")))
    page = client.get(f"/imports/{import_id}").get_data(as_text=True)
    assert "UTF-16 LE" in page and "tab-separated" in page
    assert "Zoë Müller" in page
    assert re.search(r'<option (selected value="1"|value="1" selected)>Mobile Number</option>', page)


def test_every_row_is_accounted_for(app, client, editor):
    """Valid, duplicate, invalid and spreadsheet-damaged rows: the counts add up and each reject has a reason."""
    rows = [
        ["A", "+1 415 555 2671", "x"],      # line 2 accepted
        ["B", "14155552671", "x"],          # line 3 duplicate of line 2
        ["C", "555-1234", "x"],             # line 4 invalid
        ["D", "1.41556E+10", "x"],          # line 5 digits lost
        ["E", "14155552673.0", "x"],        # line 6 spreadsheet float, every digit kept
        ["F\nwith a newline", "", "x"],     # lines 7-8 empty number
        ["G", "+44 20 7946 0958", "x"],     # line 9 landline, accepted and flagged
        ["H"],                              # line 10 ragged: no phone column
    ]
    imp = _import(app, client, _csv_bytes(rows))
    assert imp.status == "done"
    assert (imp.rows_done, imp.accepted, imp.duplicates, imp.rejected, imp.landlines) == (8, 3, 1, 4, 1)
    _assert_adds_up(imp)
    with app.app_context():
        issues = {i.line: (i.kind, i.reason_code) for i in db.session.scalars(select(ImportIssue))}
    assert issues[3] == ("duplicate", "repeated")
    assert issues[4][0] == "rejected"
    assert issues[5] == ("rejected", "digits_lost")
    assert issues[7][0] == "rejected"  # the record starts on line 7
    assert issues[10] == ("rejected", "missing_column")

    report = client.get(f"/imports/{imp.id}/rejects.csv")
    assert report.headers["Content-Type"].startswith("text/csv")
    assert report.data.startswith(codecs.BOM_UTF8)  # Excel shows accents only with it
    lines = list(csv.reader(io.StringIO(report.data.decode("utf-8-sig"))))
    assert lines[0] == ["line", "kind", "reason_code", "reason", *HEADER]
    assert len(lines) == 1 + imp.duplicates + imp.rejected
    assert any(row[3].startswith("Digits lost in spreadsheet: 1.41556E+10") for row in lines[1:])

    summary = client.get(f"/imports/{imp.id}").get_data(as_text=True)
    assert "3 imported + 1 duplicate + 4 rejected = 8 data rows" in summary


def test_import_into_an_existing_list(app, client, editor):
    """Numbers already in the target list count as duplicates; the new ones are added."""
    first = _import(app, client, _csv_bytes(ROWS[:2]))
    second = _import(app, client, _csv_bytes(ROWS), list_id=first.list_id)
    assert (second.accepted, second.duplicates) == (1, 2)
    with app.app_context():
        reasons = set(db.session.scalars(select(ImportIssue.reason_code).where(ImportIssue.import_id == second.id)))
    assert reasons == {"in_list"}
    assert len(_contacts(app, first.list_id)) == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty"),
        (b"name,phone\r\n", "header row but no data rows"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40, "not a text"),
        (b"phone," + b"x" * (10 * 1024 * 1024), "no data rows"),
    ],
    ids=["empty", "header-only", "binary", "10MB-single-line"],
)
def test_bad_files_get_a_clear_message(app, client, editor, data, message):
    """Files that can't be imported are refused on the upload page with the reason, and nothing is stored."""
    response = _upload(client, data)
    assert response.status_code == 400
    assert re.search(message, response.get_data(as_text=True), re.I), response.get_data(as_text=True)[:3000]
    with app.app_context():
        assert db.session.scalar(select(func.count(ContactImport.id))) == 0


@pytest.mark.parametrize("request_cap", [False, True], ids=["while-storing", "before-reading"])
def test_file_over_the_cap_is_refused(app, client, editor, request_cap):
    """A file over the cap is refused with the limit named, and nothing is kept."""
    app.config["IMPORT_MAX_BYTES"] = 1024 * 1024
    if request_cap:  # what production does: the request is refused from its Content-Length
        app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024 + 1024
    response = _upload(client, _csv_bytes([["A", "+14155552671", "x"]] * 80000))
    assert response.status_code == (413 if request_cap else 400)
    assert "larger than the 1 MB limit" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count(ContactImport.id))) == 0
    assert list(Path(app.config["UPLOAD_FOLDER"]).glob("*")) == []


def test_no_phone_column_must_be_chosen(app, client, editor):
    """With no recognisable phone column the page says so, and starting without choosing one is refused."""
    import_id = _import_id(_upload(client, _csv_bytes([["A", "+14155552671"]], header=["who", "digits"])))
    assert "couldn't recognise a phone column" in client.get(f"/imports/{import_id}").get_data(as_text=True)
    response = client.post(f"/imports/{import_id}/start", data={"phone_column": "", "list_id": "new",
                                                                "new_list_name": "X", "default_country": "US"})
    assert response.status_code == 400
    assert "Choose the column that holds the phone numbers" in response.get_data(as_text=True)


def test_delimiter_can_be_overridden(app, client, editor):
    """Re-reading with another delimiter changes the columns of the preview."""
    import_id = _import_id(_upload(client, b"name;phone\r\nA;+14155552671\r\n"))
    client.post(f"/imports/{import_id}/delimiter", data={"delimiter": ","})
    with app.app_context():
        assert db.session.get(ContactImport, import_id).headers == ["name;phone"]
    client.post(f"/imports/{import_id}/delimiter", data={"delimiter": ";"})
    with app.app_context():
        assert db.session.get(ContactImport, import_id).headers == ["name", "phone"]


def test_failure_midway_is_visible_and_counts_match(app, client, editor, monkeypatch):
    """A crash after some batches marks the import failed; counters match exactly the rows committed."""
    monkeypatch.setattr(importer, "BATCH_SIZE", 10)
    real_normalize = importer.normalize

    def normalize(raw, region):
        if raw == "boom":
            raise RuntimeError("disk on fire")
        return real_normalize(raw, region)

    monkeypatch.setattr(importer, "normalize", normalize)
    rows = [["n", f"+1415555{2000 + i:04d}", "x"] for i in range(25)] + [["n", "boom", "x"]]
    imp = _import(app, client, _csv_bytes(rows))
    assert imp.status == "failed"
    assert "stopped unexpectedly" in imp.error
    assert imp.rows_done == 20 and imp.accepted == 20
    assert len(_contacts(app, imp.list_id)) == imp.accepted
    page = client.get(f"/imports/{imp.id}").get_data(as_text=True)
    assert "stopped unexpectedly" in page and "Remove the 20 contacts" in page
    client.post(f"/imports/{imp.id}/remove-contacts")
    assert _contacts(app, imp.list_id) == {}


def test_job_is_safe_to_run_twice(app, client, editor):
    """After a crashed run the job starts over cleanly; once done, running it again changes nothing."""
    import_id = _import_id(_upload(client, _csv_bytes(ROWS)))
    _start(client, import_id)
    with app.app_context():
        crashed = db.session.get(ContactImport, import_id)
        crashed.status = "running"  # as if the worker died after its first batch
        crashed.accepted = crashed.rows_done = 1
        db.session.add(Contact(team_id=crashed.team_id, list_id=crashed.list_id, import_id=import_id,
                               phone="+14155552671"))
        db.session.commit()
        importer.run_import(import_id, job_id="another-job")  # a stray duplicate job leaves it alone
        assert db.session.get(ContactImport, import_id).accepted == 1
        importer.run_import(import_id)
        again = db.session.get(ContactImport, import_id)
        assert (again.status, again.accepted, again.rows_done) == ("done", 3, 3)
        importer.run_import(import_id)
        assert db.session.scalar(select(func.count(Contact.id))) == 3
        assert not importer.upload_path(again).exists()  # personal data is not kept once final
    run_jobs(app)  # the queued job finds the import done and does nothing
    with app.app_context():
        assert db.session.scalar(select(func.count(Contact.id))) == 3


def test_second_click_starts_one_job(app, client, editor):
    """Submitting the mapping twice queues one job; the second submit just shows the import."""
    import_id = _import_id(_upload(client, _csv_bytes(ROWS)))
    assert _start(client, import_id).status_code == 302
    assert _start(client, import_id).status_code == 302
    from webapp.queues import get_queue

    with app.app_context():
        assert get_queue("imports").count == 1


def test_one_import_at_a_time_per_list(app, client, editor):
    """A second import into a list whose import is still queued is refused with the reason."""
    first = _import_id(_upload(client, _csv_bytes(ROWS)))
    _start(client, first)
    with app.app_context():
        list_id = db.session.get(ContactImport, first).list_id
    second = _import_id(_upload(client, _csv_bytes(ROWS)))
    response = _start(client, second, list_id=list_id)
    assert response.status_code == 409
    assert "Another import into this list is still running" in response.get_data(as_text=True)
    deleted = client.post(f"/lists/{list_id}/delete", follow_redirects=True)
    assert "still running" in deleted.get_data(as_text=True)
    run_jobs(app)
    assert _start(client, second, list_id=list_id).status_code == 302


def test_a_killed_worker_is_reported(app, client, editor):
    """The job carries a failure callback that turns a stuck 'running' import into a visible failure."""
    from rq.job import Job

    from jobs.contacts import import_stopped
    from webapp.queues import redis_connection

    import_id = _import_id(_upload(client, _csv_bytes(ROWS)))
    _start(client, import_id)
    with app.app_context():
        job = Job.fetch(db.session.get(ContactImport, import_id).job_id, connection=redis_connection())
        assert job.failure_callback is import_stopped
        import_stopped(job, None, None, None, None)
        stopped = db.session.get(ContactImport, import_id)
        assert stopped.status == "failed" and "worker stopped" in stopped.error
    assert "worker stopped during the import" in client.get(f"/imports/{import_id}").get_data(as_text=True)


def test_remove_contacts_of_a_finished_import(app, client, editor):
    """'Remove' takes out exactly the import's contacts and the page says so afterwards."""
    imp = _import(app, client, _csv_bytes(ROWS))
    client.post(f"/imports/{imp.id}/remove-contacts")
    assert _contacts(app, imp.list_id) == {}
    page = client.get(f"/imports/{imp.id}").get_data(as_text=True)
    assert "The 3 contacts it added were removed" in page and "Remove the" not in page


def test_mapping_page_survives_a_vanished_file(app, client, editor):
    """If the stored file is gone the mapping page says so instead of failing."""
    import_id = _import_id(_upload(client, _csv_bytes(ROWS)))
    with app.app_context():
        importer.upload_path(db.session.get(ContactImport, import_id)).unlink()
    page = client.get(f"/imports/{import_id}")
    assert page.status_code == 400 and "no longer on the server" in page.get_data(as_text=True)


def test_cancelled_import_does_not_run(app, client, editor):
    """An import stopped while queued never imports a row."""
    import_id = _import_id(_upload(client, _csv_bytes(ROWS)))
    _start(client, import_id)
    client.post(f"/imports/{import_id}/cancel")
    run_jobs(app)
    with app.app_context():
        assert db.session.get(ContactImport, import_id).status == "cancelled"
        assert db.session.scalar(select(func.count(Contact.id))) == 0


def test_suppressed_numbers_are_counted_and_flagged(app, client, editor):
    """A number on the opt-out list is imported, counted as opted out and flagged in the list."""
    with app.app_context():
        db.session.add(Suppression(team_id=editor, phone="+14155552672", source="manual"))
        db.session.commit()
    imp = _import(app, client, _csv_bytes(ROWS))
    assert imp.suppressed == 1
    page = client.get(f"/lists/{imp.list_id}").get_data(as_text=True)
    assert page.count("opted out</span>") == 1


def test_other_team_cannot_see_the_import(app, client, editor, auth):
    """Another team's user gets 404 for the import, its progress and its rejects."""
    imp = _import(app, client, _csv_bytes(ROWS))
    auth.logout()
    with app.app_context():
        make_user(make_team("Other"), Role.OWNER, "other@example.com")
    auth.login("other@example.com")
    for path in ("", "/progress", "/rejects.csv"):
        assert client.get(f"/imports/{imp.id}{path}").status_code == 404
    with app.app_context():
        assert db.session.scalar(select(func.count(ContactList.id))) == 1


def test_field_values_survive_exactly(app, client, editor):
    """Backslashes, quotes, tabs, newlines and emoji in fields are stored exactly (COPY's escaping on PostgreSQL)."""
    tricky = 'C:\\path "quoted"\tend\nnext line 😀 \\N'
    imp = _import(app, client, _csv_bytes([[tricky, "+14155552671", "\\"]]))
    assert _contacts(app, imp.list_id) == {"+14155552671": {"name": tricky, "city": "\\"}}
