"""A full disk while users' files are written: a clear message, no partial file, no half-made row.

The disk really fills: a forked child whose files may not grow past RLIMIT_FSIZE (Python ignores
SIGXFSZ, so the write fails with EFBIG), or a small tmpfs (ENOSPC) where mounting one is allowed.
"""

import html
import io
import json
import os
import resource
import subprocess
import traceback
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from tests.factories import make_campaign, make_list, make_team, make_user
from tests.services.test_campaign_drafts import png_bytes
from webapp.extensions import db
from webapp.models import Campaign, Contact, ContactImport, OptOutImport, Role, Suppression, Team
from webapp.services import disk

FILE_LIMIT = 256 * 1024  # what a child may write into any one file
NEAR_LIMIT = 400 * 1024  # an upload Werkzeug keeps in memory (under 500 KB) that our own write can't fit
OVER_SPOOL = 1024 * 1024  # an upload Werkzeug spools to a temporary file, which can't fit either


@pytest.fixture
def team_id(app, auth):
    """An editor of team Acme, signed in."""
    with app.app_context():
        team = make_team("Acme")
        make_user(team, Role.EDITOR, "ed@example.com")
        team_id = team.id
    auth.login("ed@example.com")
    return team_id


def _csv(size: int) -> bytes:
    """A valid contacts file of about `size` bytes."""
    row = b"Someone,+14155552671,Somewhere\r\n"
    return b"Name,Mobile,City\r\n" + row * (size // len(row))


def in_child_with_file_limit(app, work, limit: int = FILE_LIMIT):
    """Run work() in a forked child that may not grow any file past `limit` bytes; return what it returns (JSON)."""
    with app.app_context():
        if db.engine.dialect.name == "sqlite":  # the child's own small writes must not land past the limit
            db.session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        db.session.remove()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            with app.app_context():
                db.engine.dispose(close=False)  # the parent's connections stay the parent's
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            result = work()
            with os.fdopen(write_end, "w") as pipe:
                json.dump(result, pipe)
            status = 0
        except BaseException:  # noqa: BLE001 - reported to the parent through the exit status and stderr
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child failed (its traceback is above)"
    return json.loads(output)


def _post(client, url: str, field: str, data: bytes, filename: str) -> dict:
    """POST one file as a browser does; the body is built in memory (the test client would spool it to disk)."""
    boundary, body = encode_multipart({field: FileStorage(io.BytesIO(data), filename)})
    response = client.post(url, data=body, content_type=f"multipart/form-data; boundary={boundary}")
    return {"status": response.status_code, "page": html.unescape(response.get_data(as_text=True)),
            "location": response.headers.get("Location")}


def _files(folder) -> list[str]:
    folder = Path(folder)
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()) \
        if folder.exists() else []


def _rows(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize("size", [NEAR_LIMIT, OVER_SPOOL], ids=["our-write", "werkzeug-spool"])
def test_a_csv_upload_on_a_full_disk_says_so_and_keeps_nothing(app, client, team_id, size):
    """The imports page answers 507 "The server's disk is full; nothing was imported": no file, no import row."""
    answer = in_child_with_file_limit(app, lambda: _post(client, "/imports/", "file", _csv(size), "big.csv"))
    assert answer["status"] == 507
    assert "The server's disk is full; nothing was imported." in answer["page"]
    assert 'name="file"' in answer["page"]  # the upload form again, to try later
    assert _files(app.config["UPLOAD_FOLDER"]) == []
    assert _rows(app, ContactImport) == 0


def test_the_same_upload_with_room_is_stored(app, client, team_id):
    """Control: the file that did not fit is stored and mapped once the limit is above it."""
    answer = in_child_with_file_limit(app, lambda: _post(client, "/imports/", "file", _csv(NEAR_LIMIT), "big.csv"),
                                      limit=4 * 1024 * 1024)
    assert answer["status"] == 302
    assert len(_files(app.config["UPLOAD_FOLDER"])) == 1 and _rows(app, ContactImport) == 1


def test_an_optout_upload_on_a_full_disk_says_so_and_keeps_nothing(app, client, team_id):
    """The opt-outs page answers 507 with the reason; no file is left and no import is queued."""
    numbers = b"phone\r\n" + b"+14155552671\r\n" * (NEAR_LIMIT // 14)
    answer = in_child_with_file_limit(app, lambda: _post(client, "/opt-outs/upload", "file", numbers, "stop.csv"))
    assert answer["status"] == 507
    assert "The server's disk is full; no number was added." in answer["page"]
    assert _files(app.config["UPLOAD_FOLDER"]) == []
    assert _rows(app, OptOutImport) == 0


def test_an_mms_image_on_a_full_disk_keeps_the_draft_as_it_was(app, client, team_id):
    """The draft answers 507 "the image was not saved"; its earlier image and its row are unchanged."""
    with app.app_context():
        team = db.session.get(Team, team_id)
        campaign = make_campaign(team, [make_list(team)], image=png_bytes())
        campaign_id, earlier = campaign.id, campaign.image_name
    before = _files(app.config["UPLOAD_FOLDER"])
    answer = in_child_with_file_limit(app, lambda: _post(client, f"/campaigns/{campaign_id}/image", "image",
                                                         png_bytes(NEAR_LIMIT), "big.png"))
    assert answer["status"] == 507
    assert "The server's disk is full; the image was not saved." in answer["page"]
    assert _files(app.config["UPLOAD_FOLDER"]) == before
    with app.app_context():
        assert db.session.get(Campaign, campaign_id).image_name == earlier
    assert client.get(f"/campaigns/{campaign_id}/image").data == png_bytes()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A folder on a 2 MB tmpfs that really fills (ENOSPC); skipped where mounting is not permitted."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def test_write_new_file_leaves_nothing_on_a_full_tmpfs(small_tmpfs):
    """On a real full filesystem (ENOSPC) the helper raises DiskFull and the file is gone."""
    with pytest.raises(disk.DiskFull) as raised:
        disk.write_new_file(small_tmpfs / "upload.csv", [b"x" * 65536] * 64)
    assert raised.value.__cause__.errno == disk.errno.ENOSPC
    assert str(raised.value) == "The server's disk is full; nothing was imported."
    assert list(small_tmpfs.iterdir()) == []
    assert disk.write_new_file(small_tmpfs / "fits.csv", [b"x" * 4096]) == 4096  # room again once it is gone


@pytest.fixture
def app_on_small_disk(app_config, tmp_path, small_tmpfs):
    """The embedded default's layout with its SQLite database on the small tmpfs (uploads beside it have room),
    and a signed-in editor's client."""
    from webapp import create_app
    from webapp.queues import redis_connection

    app = create_app(dict(app_config, SQLALCHEMY_DATABASE_URI=f"sqlite:///{small_tmpfs / 'campaigns.sqlite3'}",
                          UPLOAD_FOLDER=str(tmp_path / "uploads")))
    client = app.test_client()
    with app.app_context():
        db.create_all()
        make_user(make_team("Acme"), Role.EDITOR, "ed@example.com")
    client.post("/login", data={"email": "ed@example.com", "password": "correct horse battery"})
    yield app, client
    with app.app_context():
        redis_connection().flushdb()
        db.session.remove()
        db.engine.dispose()


BIG_FILE_ROWS = 30000  # several batches of 5,000: more than the 2 MB disk holds


def test_an_import_job_that_meets_a_full_disk_fails_with_that_reason(app_on_small_disk):
    """The import job that finds the database's disk full fails with the reason on its page, keeps no part
    of the batch that did not fit (its counts match its rows), and deletes its file."""
    from webapp.services import imports as importer

    app, client = app_on_small_disk
    rows = b"".join(b"Someone %d,+1415%07d,Somewhere\r\n" % (n, 5550000 + n) for n in range(BIG_FILE_ROWS))
    import_id = int(_post(client, "/imports/", "file", b"Name,Mobile,City\r\n" + rows, "c.csv")["location"]
                    .rsplit("/", 1)[1])
    started = client.post(f"/imports/{import_id}/start", data={
        "phone_column": "1", "field_columns": ["0", "2"], "default_country": "US", "list_id": "new",
        "new_list_name": "Customers"})
    assert started.status_code == 302
    with app.app_context(), pytest.raises(Exception) as raised:  # noqa: PT011 - the job raises for RQ
        importer.run_import(import_id)
    assert disk.is_no_room(raised.value)
    with app.app_context():
        contact_import = db.session.get(ContactImport, import_id)
        assert contact_import.status == "failed"
        assert contact_import.error.startswith("The server's disk is full; the import stopped there.")
        assert contact_import.accepted + contact_import.duplicates + contact_import.rejected \
            == contact_import.rows_done < BIG_FILE_ROWS
        assert db.session.scalar(select(func.count()).select_from(Contact)) == contact_import.accepted
    assert _files(app.config["UPLOAD_FOLDER"]) == []
    page = html.unescape(client.get(f"/imports/{import_id}").get_data(as_text=True))
    assert "The server's disk is full; the import stopped there." in page


def test_an_optout_job_that_meets_a_full_disk_fails_with_that_reason(app_on_small_disk):
    """The same for a file of opt-outs: failed with the reason, the numbers it counted are the ones stored."""
    from webapp.services import optouts

    app, client = app_on_small_disk
    numbers = b"phone\r\n" + b"".join(b"+1415%07d\r\n" % (5550000 + n) for n in range(BIG_FILE_ROWS * 2))
    assert _post(client, "/opt-outs/upload", "file", numbers, "stop.csv")["status"] == 302
    with app.app_context():
        import_id = db.session.scalar(select(OptOutImport.id))
        with pytest.raises(Exception) as raised:  # noqa: PT011 - the job raises for RQ
            optouts.run_optout_import(import_id)
    assert disk.is_no_room(raised.value)
    with app.app_context():
        optout_import = db.session.get(OptOutImport, import_id)
        assert optout_import.status == "failed"
        assert optout_import.error.startswith("The server's disk is full; the import stopped there.")
        assert optout_import.added == db.session.scalar(select(func.count()).select_from(Suppression))
    assert _files(app.config["UPLOAD_FOLDER"]) == []
    page = html.unescape(client.get(f"/opt-outs/imports/{import_id}").get_data(as_text=True))
    assert "The server's disk is full; the import stopped there." in page


def test_no_room_errors_are_told_apart(tmp_path):
    """ENOSPC, EDQUOT and EFBIG are a full disk; a missing folder is not, and stays an OSError."""
    for number in (disk.errno.ENOSPC, disk.errno.EDQUOT, disk.errno.EFBIG):
        assert disk.is_no_room(OSError(number, os.strerror(number)))
    assert not disk.is_no_room(FileNotFoundError(disk.errno.ENOENT, "gone"))
    with pytest.raises(FileNotFoundError):
        disk.write_new_file(tmp_path / "missing" / "file.csv", [b"x"])


def test_a_cause_chain_that_loops_ends():
    """An error that is its own cause (`raise e from e`) is not a full disk, and asking doesn't loop forever."""
    error = ValueError("looped")
    error.__cause__ = error
    assert not disk.is_no_room(error)
