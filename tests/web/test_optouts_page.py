"""The opt-outs page: forms, CSV uploads run as a job with progress, and the live, bounded search."""

import ast
import io
import os
import re
import time
from pathlib import Path

import pytest
from markupsafe import escape
from rq import Queue
from sqlalchemy import func, select

from tests.conftest import run_jobs
from tests.factories import PASSWORD, make_team, make_user
from webapp.extensions import db
from webapp.models import ImportStatus, OptOutImport, Role, Suppression
from webapp.queues import redis_connection
from webapp.services.phones import Rejection, normalize

WEB_MODULE = Path(__file__).parents[2] / "webapp" / "web" / "optouts.py"


@pytest.fixture
def team_id(app, auth):
    """An editor of team Acme, signed in."""
    with app.app_context():
        team = make_team("Acme")
        make_user(team, Role.EDITOR, "ed@example.com")
        team_id = team.id
    auth.login("ed@example.com")
    return team_id


def _phones(app, team_id) -> set[str]:
    with app.app_context():
        return set(db.session.scalars(select(Suppression.phone).where(Suppression.team_id == team_id)))


def _count(app, team_id) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(Suppression.id)).where(Suppression.team_id == team_id))


def _only_import(app) -> OptOutImport:
    with app.app_context():
        [row] = db.session.scalars(select(OptOutImport)).all()
        db.session.expunge(row)
        return row


def _upload(client, data: bytes, name: str = "stop.csv"):
    return client.post("/opt-outs/upload", data={"file": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")


def _uploads(app) -> list[Path]:
    folder = Path(app.config["UPLOAD_FOLDER"])
    return sorted(folder.iterdir()) if folder.exists() else []


def _numbers(count: int) -> list[str]:
    """`count` distinct valid US numbers in national format: (415) 2xx-xxxx."""
    return [f"(415) {200 + i // 10000:03d}-{i % 10000:04d}" for i in range(count)]


# Adding one number ------------------------------------------------------------------------------

def test_add_by_hand(app, client, team_id):
    """A number typed in the national format is stored in E.164; a second add says it is already there."""
    client.post("/opt-outs/", data={"phone": "(415) 555-2671", "note": "asked by phone"})
    again = client.post("/opt-outs/", data={"phone": "+14155552671"}, follow_redirects=True)
    assert "had already opted out" in again.get_data(as_text=True)
    assert _phones(app, team_id) == {"+14155552671"}
    with app.app_context():
        assert db.session.scalar(select(Suppression.note)) == "asked by phone"


def test_an_invalid_number_is_shown_beside_the_field_and_kept(app, client, team_id):
    """The form answers 400 with the reason next to the number field and the typed values kept."""
    response = client.post("/opt-outs/", data={"phone": "12", "note": "called us"})
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert 'value="12"' in page and 'value="called us"' in page
    assert "Not added" in page
    missing = client.post("/opt-outs/", data={"note": "no number"})
    assert missing.status_code == 400
    assert _phones(app, team_id) == set()


def test_a_note_over_500_characters_is_refused(app, client, team_id):
    """The note's limit is the form's, not a silent cut."""
    response = client.post("/opt-outs/", data={"phone": "+14155552671", "note": "x" * 501})
    assert response.status_code == 400
    assert _phones(app, team_id) == set()


def test_no_view_reads_request_form_field_by_field():
    """Every opt-out form goes through Flask-WTF: the blueprint never touches request.form or request.files."""
    tree = ast.parse(WEB_MODULE.read_text())
    reads = [f"line {node.lineno}: request.{node.attr}" for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
             and node.value.id == "request" and node.attr in {"form", "files"}]
    assert reads == []


def test_forms_carry_and_need_the_csrf_token(app, client, team_id):
    """With CSRF on, both forms render their token and a POST without it changes nothing."""
    app.config["WTF_CSRF_ENABLED"] = True
    page = client.get("/opt-outs/").get_data(as_text=True)
    assert page.count('name="csrf_token"') >= 2
    assert client.post("/opt-outs/", data={"phone": "+14155552671"}).status_code == 400
    assert _phones(app, team_id) == set()


# Uploading a CSV: a job with progress -----------------------------------------------------------

def test_a_file_of_50000_numbers_is_added_by_the_job_with_exact_counts(app, client, team_id):
    """The upload only queues the file; the job adds every number, counting known, repeated and bad rows.

    The file is also over the old 5 MB in-request limit.
    """
    client.post("/opt-outs/", data={"phone": "(415) 200-0007"})  # already on the list
    numbers = _numbers(50_000)
    lines = ["name,phone,note"] + [f"Person {i},{n},{'x' * 100}" for i, n in enumerate(numbers)]
    lines += ["Again,(415) 200-0001,", "Again,+1 415 200 0002,", "Bad,nope,", "Bad,12,", "Bad,,"]
    data = ("\r\n".join(lines) + "\r\n").encode()
    assert len(data) > 5 * 10**6

    started = time.monotonic()
    response = _upload(client, data, "big stop list.csv")
    seconds = time.monotonic() - started
    assert response.status_code == 302
    assert _count(app, team_id) == 1, "numbers were added inside the web request"
    queued = _only_import(app)
    assert queued.status == ImportStatus.QUEUED and queued.filename == "big stop list.csv"
    assert response.headers["Location"].endswith(f"/opt-outs/imports/{queued.id}")
    print(f"upload request for {len(data):,} bytes: {seconds:.2f} s")

    run_jobs(app)

    done = _only_import(app)
    assert done.status == ImportStatus.DONE, done.error
    assert (done.added, done.already, done.rejected) == (49_999, 3, 3)
    assert done.rows_done == done.total_rows == 50_005
    assert _count(app, team_id) == 50_000
    with app.app_context():
        assert db.session.scalar(select(func.count(Suppression.id)).where(Suppression.source == "csv")) == 49_999
    assert _uploads(app) == []


def test_rejected_rows_are_counted_with_their_line_and_reason(app, client, team_id):
    """Rows that are not a number are counted, and the first ones are shown with line and reason."""
    _upload(client, b"phone\r\n+14155552671\r\nnope\r\n12\r\n+14155552671\r\n")
    run_jobs(app)
    imp = _only_import(app)
    assert (imp.added, imp.already, imp.rejected, imp.rows_done) == (1, 1, 2, 4)
    page = client.get(f"/opt-outs/imports/{imp.id}").get_data(as_text=True)
    assert 'id="count-rejected">2<' in page
    assert '<td class="num">3</td><td class="mono">nope</td>' in page
    with pytest.raises(Rejection) as reason:
        normalize("nope", "US")
    assert escape(reason.value.message) in page


def test_a_file_without_a_phone_header_is_read_from_its_first_line(app, client, team_id):
    """A bare list of numbers has no header: its first line is a number too."""
    _upload(client, b"+14155552671\n+14155552672\n")
    run_jobs(app)
    assert _phones(app, team_id) == {"+14155552671", "+14155552672"}
    assert _only_import(app).added == 2


def test_progress_fragment_polls_until_the_job_is_done(app, client, team_id):
    """The page and its fragment poll while queued; once final the fragment renders without a trigger."""
    response = _upload(client, b"phone\n+14155552671\n")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    imp = _only_import(app)
    progress_url = f"/opt-outs/imports/{imp.id}/progress"
    assert f'hx-get="{progress_url}"' in page and 'hx-trigger="every 1s"' in page
    fragment = client.get(progress_url, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert fragment.lstrip().startswith('<div id="optout-import"')
    assert "<main" not in fragment and 'hx-trigger="every 1s"' in fragment and "queued" in fragment

    run_jobs(app)

    final = client.get(progress_url, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "hx-trigger" not in final and "hx-get" not in final
    assert 'id="count-added">1<' in final and "done" in final


def test_the_uploaded_file_is_private_and_deleted_when_done(app, client, team_id):
    """The stored upload is readable by its owner only, and gone once the job ends."""
    _upload(client, b"phone\n+14155552671\n")
    [path] = _uploads(app)
    assert os.stat(path).st_mode & 0o777 == 0o600
    run_jobs(app)
    assert not path.exists()


def test_an_unreadable_file_fails_with_the_reason_and_is_deleted(app, client, team_id):
    """A workbook is not a CSV: the import fails, says why, and its file goes."""
    _upload(client, b"PK\x03\x04" + b"\x00" * 200, "numbers.xlsx")
    run_jobs(app)
    imp = _only_import(app)
    assert imp.status == ImportStatus.FAILED and imp.error
    page = client.get(f"/opt-outs/imports/{imp.id}/progress").get_data(as_text=True)
    assert imp.error.split(".")[0] in page and "hx-trigger" not in page
    assert _uploads(app) == []


def test_an_empty_file_is_refused_at_once(app, client, team_id):
    """Nothing to queue: the page says so and keeps no file."""
    response = _upload(client, b"")
    assert response.status_code == 400
    assert "empty" in response.get_data(as_text=True)
    assert _uploads(app) == []
    with app.app_context():
        assert db.session.scalar(select(func.count(OptOutImport.id))) == 0


def test_a_file_over_the_import_limit_is_refused_and_not_kept(app, client, team_id):
    """IMPORT_MAX_BYTES bounds opt-out files as it bounds contact files; nothing of a refused file stays."""
    app.config["IMPORT_MAX_BYTES"] = 1024 * 1024
    response = _upload(client, b"phone\n" + b"+14155552671\n" * 90_000)
    assert response.status_code == 400
    assert "1 MB" in response.get_data(as_text=True)
    assert _uploads(app) == []


def test_cancelling_a_queued_import_deletes_its_file_and_the_job_adds_nothing(app, client, team_id):
    """Stop while queued: the file goes at once and the job, when it comes, leaves the list alone."""
    _upload(client, b"phone\n+14155552671\n")
    imp = _only_import(app)
    client.post(f"/opt-outs/imports/{imp.id}/cancel")
    assert _uploads(app) == []
    run_jobs(app)
    assert _only_import(app).status == ImportStatus.CANCELLED
    assert _phones(app, team_id) == set()


def test_the_job_is_queued_by_name_with_a_failure_callback(app, client, team_id):
    """The imports queue holds the job by dotted name, and a killed worker's callback marks it failed."""
    from jobs.optouts import import_stopped

    _upload(client, b"phone\n+14155552671\n")
    imp = _only_import(app)
    with app.app_context():
        [job] = Queue("imports", connection=redis_connection()).get_jobs()
        assert job.func_name == "jobs.optouts.import_optouts" and job.args == (imp.id,)
        assert job.id == imp.job_id
        assert job._failure_callback_name == "jobs.optouts.import_stopped"
        import_stopped(job, redis_connection(), RuntimeError, RuntimeError("killed"), None)
    stopped = _only_import(app)
    assert stopped.status == ImportStatus.FAILED and "worker stopped" in stopped.error
    assert _uploads(app) == []


def test_running_the_job_twice_changes_nothing_the_second_time(app, client, team_id):
    """Jobs are safe to run twice: a finished import is left as it is."""
    from webapp.services.optouts import run_optout_import

    _upload(client, b"phone\n+14155552671\n+14155552672\n")
    run_jobs(app)
    with app.app_context():
        run_optout_import(_only_import(app).id)
    imp = _only_import(app)
    assert (imp.status, imp.added, imp.already) == (ImportStatus.DONE, 2, 0)


def test_another_teams_import_is_not_found(app, client, team_id):
    """Imports are scoped to the team like every other row."""
    _upload(client, b"phone\n+14155552671\n")
    imp = _only_import(app)
    with app.app_context():
        make_user(make_team("Other"), Role.EDITOR, "other@example.com")
    client.post("/logout")
    client.post("/login", data={"email": "other@example.com", "password": PASSWORD})
    assert client.get(f"/opt-outs/imports/{imp.id}").status_code == 404
    assert client.get(f"/opt-outs/imports/{imp.id}/progress").status_code == 404
    assert client.post(f"/opt-outs/imports/{imp.id}/cancel").status_code == 404


# Search -----------------------------------------------------------------------------------------

@pytest.fixture
def some_opt_outs(app, team_id):
    with app.app_context():
        for i in range(60):
            db.session.add(Suppression(team_id=team_id, phone=f"+1415555{1000 + i}", source="manual",
                                       note="asked in store" if i == 7 else ""))
        db.session.commit()
    return team_id


def test_a_50000_character_search_is_cut_to_100_and_says_so(app, client, some_opt_outs):
    """A huge ?q= is not a 500: the first 100 characters are searched and the page says so."""
    response = client.get("/opt-outs/", query_string={"q": "4" * 50_000})
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "first 100 characters" in page
    assert "4" * 101 not in page
    fragment = client.get("/opt-outs/", query_string={"q": "in store" + "x" * 50_000},
                          headers={"HX-Request": "true", "HX-Target": "div#optouts-table"})
    assert fragment.status_code == 200 and "first 100 characters" in fragment.get_data(as_text=True)


def test_search_box_filters_as_you_type(client, some_opt_outs):
    """The search input asks htmx for the table on every change, like the list search."""
    page = client.get("/opt-outs/").get_data(as_text=True)
    box = page[page.index('name="q"') - 300:page.index('name="q"') + 400]
    assert 'hx-get="/opt-outs/"' in box
    assert 'hx-trigger="input changed delay:300ms, search"' in box
    assert 'hx-target="#optouts-table"' in box
    assert '<div id="optouts-table"' in page


def test_htmx_search_returns_only_the_table(client, some_opt_outs):
    """htmx 4 names its target as tag#id: the table alone comes back, never a page inside the card."""
    response = client.get("/opt-outs/?q=store", headers={"HX-Request": "true", "HX-Target": "div#optouts-table"})
    fragment = response.get_data(as_text=True)
    assert fragment.lstrip().startswith('<div id="optouts-table"')
    assert "<main" not in fragment and "<html" not in fragment and "<h1" not in fragment
    assert "+14155551007" in fragment and "+14155551008" not in fragment
    assert 'id="optouts-count">1 number<' in fragment


def test_a_search_by_another_target_gets_the_whole_page(client, some_opt_outs):
    """Only a request aimed at the table gets the fragment (a boosted link gets the page)."""
    response = client.get("/opt-outs/?q=store", headers={"HX-Request": "true", "HX-Target": "body"})
    assert "<main" in response.get_data(as_text=True)


@pytest.mark.browser
def test_typing_in_the_search_box_filters_without_enter(app, page, some_opt_outs):
    """In a real browser the table narrows while typing, and the page keeps a single <main>."""
    page.goto("/login")
    page.get_by_label("Email").fill("ed@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")
    page.goto("/opt-outs/")
    page.evaluate("window.sameDocument = true")
    page.locator("input[name=q]").press_sequentially("store", delay=30)
    page.locator("#optouts-count", has_text=re.compile(r"^\s*1 number\s*$")).wait_for(timeout=15_000)
    assert page.locator("#optouts-table tbody tr").count() == 1
    assert page.locator("main").count() == 1
    assert page.evaluate("window.sameDocument") is True
