"""The dashboard in a real browser: login, navigation, htmx loaded from our own static files."""

import pytest
from flask import url_for
from sqlalchemy import select

from tests.conftest import screenshot
from tests.factories import PASSWORD, make_team, make_user
from webapp.extensions import db
from webapp.models import Role
from webapp.web.security import CONTENT_SECURITY_POLICY

pytestmark = pytest.mark.browser


def _sign_in(page, email):
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_login_reaches_the_dashboard(app, page):
    """A user signs in through the form and sees their team's dashboard with htmx ready."""
    with app.app_context():
        make_user(make_team("Acme Marketing"), Role.OWNER, "owner@example.com")
    _sign_in(page, "owner@example.com")
    page.wait_for_url("**/")
    assert page.get_by_role("heading", name="Acme Marketing").is_visible()
    assert page.evaluate("typeof htmx") == "object"
    assert page.get_by_role("link", name="Users").is_visible()
    screenshot(page, "dashboard")


def test_wrong_password_shows_a_message(app, page):
    """A wrong password keeps the user on the login page with a visible reason."""
    with app.app_context():
        make_user(make_team("Acme"), Role.EDITOR, "ed@example.com")
    page.goto("/login")
    page.get_by_label("Email").fill("ed@example.com")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_text("Wrong email or password").is_visible()
    screenshot(page, "login-refused")


def test_sign_out(app, page):
    """The sign-out button ends the session (a POST carrying the CSRF token)."""
    with app.app_context():
        make_user(make_team("Acme"), Role.VIEWER, "viewer@example.com")
    _sign_in(page, "viewer@example.com")
    page.get_by_role("button", name="Sign out").click()
    assert page.get_by_text("You are signed out").is_visible()
    page.goto("/")
    assert "/login" in page.url


def test_upload_map_and_watch_the_import_finish(app, page, worker, tmp_path):
    """Upload a CSV, confirm the mapping, and watch the htmx-polled progress bar reach done (same page)."""
    with app.app_context():
        make_user(make_team("Acme"), Role.EDITOR, "ed@example.com")
    rows = ["first_name;phone;city"] + [f"Person {i};+1 415 55{i // 10000 % 10}{i % 10000:04d};Paris"
                                        for i in range(30000)]
    rows.append("Broken;12;Nowhere")
    path = tmp_path / "Spring customers.csv"
    path.write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")

    _sign_in(page, "ed@example.com")
    page.get_by_role("link", name="Imports").click()
    page.get_by_role("link", name="Import a file").click()
    page.get_by_label("CSV or TSV file").set_input_files(str(path))
    page.get_by_role("button", name="Upload and preview").click()

    assert page.get_by_text("semicolon-separated").is_visible()
    assert page.get_by_label("Phone number column").input_value() == "1"
    screenshot(page, "import-mapping")
    page.get_by_role("button", name="Import contacts").click()

    page.evaluate("window.sameDocument = true")  # a full reload would lose this
    page.locator("#import-status", has_text="done").wait_for(timeout=90_000)
    assert page.evaluate("window.sameDocument") is True
    assert page.get_by_role("progressbar").get_attribute("aria-valuenow") == "100"
    assert page.locator("#count-accepted").inner_text() == "30,000"
    assert page.locator("#count-rejected").inner_text() == "1"
    assert page.get_by_text("30,000 imported + 0 duplicates + 1 rejected = 30,001 data rows").is_visible()
    screenshot(page, "import-done")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download rejected and duplicate rows (CSV)").click()
    assert "Broken" in download.value.path().read_text()


# --- Content-Security-Policy, search in place, phone width, errors inside fragments (issue 8: 5, 6, 18, 25) ---

LONG_NAME = "Spring customers imported from the CRM export of March 2024"


def _seed(app) -> dict:
    """A team with an owner, a list of wide contacts, three opt-outs and a finished import with a rejected row."""
    from webapp.models import (
        Contact,
        ContactImport,
        ContactList,
        ImportIssue,
        ImportStatus,
        IssueKind,
        Suppression,
        SuppressionSource,
    )

    with app.app_context():
        team = make_team("Acme Marketing")
        make_user(team, Role.OWNER, "owner@example.com")
        contact_list = ContactList(team_id=team.id, name=LONG_NAME)
        db.session.add(contact_list)
        db.session.flush()
        fields = {"first_name": "Noël", "last_name": "Castellanos-Whitfield", "city": "San Francisco",
                  "company": "Whitfield & Castellanos Consolidated Holdings", "email": "noel.castellanos@example.com",
                  "notes": "Prefers evening messages; asked about the loyalty programme twice"}
        for i in range(12):
            db.session.add(Contact(team_id=team.id, list_id=contact_list.id, phone=f"+1415555{1000 + i}",
                                   region="US", number_type="fixed_line_or_mobile",
                                   attributes=dict(fields, first_name=f"Person {i}")))
        for i, phone in enumerate(["+14155550101", "+442079460958", "+33612345678"]):
            db.session.add(Suppression(team_id=team.id, phone=phone, source=SuppressionSource.MANUAL,
                                       note=f"Asked by phone on the {i + 1}st call not to be contacted again, ever"))
        finished = ContactImport(team_id=team.id, filename="customers.csv", stored_name="gone.csv",
                                 status=ImportStatus.DONE, list_id=contact_list.id, headers=["phone", "first_name"],
                                 total_rows=13, rows_done=13, accepted=12, rejected=1)
        running = ContactImport(team_id=team.id, filename="more.csv", stored_name="gone-too.csv",
                                status=ImportStatus.RUNNING, list_id=contact_list.id, headers=["phone"],
                                total_rows=1000, rows_done=10)
        db.session.add_all([finished, running])
        db.session.flush()
        db.session.add(ImportIssue(import_id=finished.id, line=14, kind=IssueKind.REJECTED, reason_code="invalid",
                                   reason="Not a phone number", raw="[]"))
        db.session.commit()
        return {"list": contact_list.id, "import": finished.id, "running": running.id}


def _record_console_errors(page) -> list[str]:
    """Every CSP violation (Chromium logs each as a console error) and every uncaught script error.
    Under the CSP, wait_for_function needs a function ("() => ..."): a bare expression is eval'd, and refused."""
    errors: list[str] = []
    page.add_init_script("document.addEventListener('securitypolicyviolation', e => console.error("
                         "'CSP violation: ' + e.effectiveDirective + ' blocked ' + e.blockedURI))")
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    return errors


def _main_pages(app, ids: dict) -> list[str]:
    with app.test_request_context():
        return [url_for("dashboard.index"), url_for("contacts.lists"), url_for("contacts.show", list_id=ids["list"]),
                url_for("imports.index"), url_for("imports.new"), url_for("imports.show", import_id=ids["import"]),
                url_for("imports.show", import_id=ids["running"]), url_for("optouts.index"),
                url_for("settings.index"), url_for("users.index")]


def test_every_page_runs_under_the_csp_without_violations(app, page):
    """Each main page is served with the CSP and loads with no violation and no script error; htmx still works."""
    ids = _seed(app)
    errors = _record_console_errors(page)
    _sign_in(page, "owner@example.com")
    page.wait_for_url("**/")
    for path in _main_pages(app, ids):
        response = page.goto(path)
        assert response.status == 200, path
        assert response.headers.get("content-security-policy") == CONTENT_SECURITY_POLICY, path
        page.wait_for_function("() => typeof htmx === 'object'")
        assert errors == [], f"{path}: {errors}"
    # htmx works under the policy: the running import's fragment is polled and swapped in place.
    page.goto(f"/imports/{ids['running']}")
    page.evaluate("document.querySelector('#import-status').dataset.old = 'yes'")
    page.wait_for_function("() => !document.querySelector('#import-status').dataset.old")  # replaced by a poll
    assert errors == []


def test_confirmations_work_without_inline_handlers(app, page):
    """data-confirm forms ask first (the CSP forbids onsubmit): cancelling keeps the list, accepting deletes it."""
    from webapp.models import ContactImport, ContactList, ImportStatus

    ids = _seed(app)
    with app.app_context():  # a running import would keep the list from being deleted
        db.session.get(ContactImport, ids["running"]).status = ImportStatus.CANCELLED
        db.session.commit()
    errors = _record_console_errors(page)
    _sign_in(page, "owner@example.com")
    page.goto(f"/lists/{ids['list']}")
    asked: list[str] = []

    def answer(accept: bool):
        def handle(dialog):
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()
        return handle

    page.once("dialog", answer(False))
    page.get_by_role("button", name="Delete list").click()
    assert asked == ["Delete this list and its contacts?"]
    assert page.get_by_role("heading", name=LONG_NAME).is_visible()
    with app.app_context():
        assert db.session.get(ContactList, ids["list"]) is not None

    page.once("dialog", answer(True))
    page.get_by_role("button", name="Delete list").click()
    page.wait_for_url("**/lists")
    assert len(asked) == 2
    with app.app_context():
        assert db.session.get(ContactList, ids["list"]) is None
    assert errors == []


def test_oversized_file_is_refused_before_upload(app, page):
    """The upload page refuses a file over the limit in the browser (from static JS, not an inline script)."""
    _seed(app)
    app.config["IMPORT_MAX_BYTES"] = 1024 * 1024
    errors = _record_console_errors(page)
    _sign_in(page, "owner@example.com")
    page.goto("/imports/new")
    file_input = page.get_by_label("CSV or TSV file")
    file_input.set_input_files({"name": "big.csv", "mimeType": "text/csv", "buffer": b"phone\n" + b"1" * 1_100_000})
    assert file_input.evaluate("input => input.validationMessage") == "The file is larger than the 1 MB limit."
    file_input.set_input_files({"name": "small.csv", "mimeType": "text/csv", "buffer": b"phone\n+14155550100\n"})
    assert file_input.evaluate("input => input.validationMessage") == ""
    assert errors == []


def _mains(page) -> int:
    return page.evaluate("document.querySelectorAll('main').length")


def test_list_search_updates_the_table_in_place(app, page):
    """Typing in a list's search box swaps only the table: one <main>, same document, the matching row."""
    ids = _seed(app)
    errors = _record_console_errors(page)
    _sign_in(page, "owner@example.com")
    page.goto(f"/lists/{ids['list']}")
    page.evaluate("window.sameDocument = true")
    page.get_by_label("Search by number or field").fill("Person 7")
    page.wait_for_function("() => document.querySelector('#contacts-table')?.textContent.includes('matching')")
    assert _mains(page) == 1
    assert page.evaluate("document.querySelectorAll('#contacts-table').length") == 1
    assert page.locator("#contacts-table tbody tr").count() == 1
    assert page.evaluate("window.sameDocument") is True
    assert "q=Person+7" in page.url or "q=Person%207" in page.url
    assert errors == []


def test_optout_search_updates_the_table_in_place(app, page):
    """Typing in the opt-outs search box (live, item 19) swaps only the table: one <main>, same document."""
    _seed(app)
    errors = _record_console_errors(page)
    _sign_in(page, "owner@example.com")
    page.goto("/opt-outs/")
    page.evaluate("window.sameDocument = true")
    rows = "main table tbody tr"
    assert page.locator(rows).count() == 3
    page.locator("main input[name=q]").fill("2079460958")
    page.wait_for_function(f"() => document.querySelectorAll('{rows}').length === 1")
    assert _mains(page) == 1
    assert page.evaluate("window.sameDocument") is True
    assert "+442079460958" in page.locator(rows).inner_text()
    assert errors == []


def test_pages_fit_a_phone_screen(app, page):
    """At 390 px wide (lists and opt-outs above all), wide tables scroll inside their own box: the page itself
    never scrolls sideways."""
    ids = _seed(app)
    page.set_viewport_size({"width": 390, "height": 844})
    _sign_in(page, "owner@example.com")
    for path in _main_pages(app, ids):
        page.goto(path)
        widths = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"{path} is {widths[0]} px wide on a {widths[1]} px screen"
        screenshot(page, "phone" + path.replace("/", "-").rstrip("-"))


def test_session_ended_during_a_search_never_nests_the_login_page(app, page):
    """A search after the session is gone leads to the login page as a page, never inside the table."""
    ids = _seed(app)
    _sign_in(page, "owner@example.com")
    page.goto(f"/lists/{ids['list']}")
    page.context.clear_cookies()
    page.get_by_label("Search by number or field").fill("Person 7")
    page.wait_for_url("**/login**")
    page.get_by_label("Email").wait_for()
    assert _mains(page) == 1
    assert page.locator("#contacts-table").count() == 0


def test_fragment_redirected_to_a_whole_page_opens_it_as_a_page(app, page):
    """A fragment request the server redirects to a whole page (Flask-Login's redirect to the login page, or
    any other) goes to that page instead of nesting it inside the fragment."""
    ids = _seed(app)
    _sign_in(page, "owner@example.com")
    page.goto(f"/lists/{ids['list']}")
    page.route("**/lists/*?q=*", lambda route: route.fulfill(status=302, headers={"Location": "/opt-outs/"}))
    page.get_by_label("Search by number or field").fill("Person 7")
    page.wait_for_url("**/opt-outs/")
    page.get_by_role("heading", name="Opt-outs").wait_for()
    assert _mains(page) == 1 and page.locator("#contacts-table").count() == 0


def test_forbidden_fragment_shows_a_message_not_a_page(app, page):
    """An htmx button answered 403 leaves its fragment alone and says why in one small message."""
    from webapp.models import User

    _seed(app)
    _sign_in(page, "owner@example.com")
    page.goto("/settings/")
    with app.app_context():  # demoted in another tab by another owner
        user = db.session.scalar(select(User).where(User.email == "owner@example.com"))
        user.role = Role.EDITOR
        db.session.commit()
    page.get_by_role("button", name="Test connection").click()
    message = page.locator("#request-error")
    message.wait_for(state="visible")
    assert "permission" in message.inner_text()
    assert _mains(page) == 1
    assert page.locator("#connection-result").inner_text() == ""


def test_unavailable_poll_keeps_the_fragment_and_recovers(app, page, live_server):
    """A 503 whole page (a proxy's or the app's) answering a poll is not swapped in; polling goes on and the
    message clears once the server answers again."""
    ids = _seed(app)
    _sign_in(page, "owner@example.com")
    whole_page = page.goto("/lists").text()  # any whole page of the app, as a 503 body
    page.goto(f"/imports/{ids['running']}")
    page.route("**/progress", lambda route: route.fulfill(status=503, content_type="text/html", body=whole_page))
    message = page.locator("#request-error")
    message.wait_for(state="visible")
    assert "unavailable" in message.inner_text()
    assert _mains(page) == 1 and page.locator("#import-progress").count() == 1
    page.unroute("**/progress")
    message.wait_for(state="hidden")
    assert _mains(page) == 1 and page.locator("#import-status").inner_text() == "running"


def test_optout_dates_stay_on_one_line_on_a_desktop(app, page):
    """Beside long notes, the opt-outs "Since" date is one line, not broken at its hyphens."""
    _seed(app)
    page.set_viewport_size({"width": 1280, "height": 900})
    _sign_in(page, "owner@example.com")
    page.goto("/opt-outs/")
    lines = page.evaluate("""() => [...document.querySelectorAll('main table tbody tr')].map(row => {
        const range = document.createRange();
        range.selectNodeContents(row.cells[3]);
        return new Set([...range.getClientRects()].map(rect => Math.round(rect.top))).size;
    })""")
    assert lines == [1, 1, 1]


def test_mapping_preview_keeps_the_phone_column_in_view(app, page, tmp_path):
    """A huge cell before the phone column is cut to a narrow column: the phone column stays on screen."""
    _seed(app)
    path = tmp_path / "wide.csv"
    path.write_text("notes,phone,city\r\n" + "x" * 100_000 + ",+14155550100,Paris\r\n", encoding="utf-8")
    page.set_viewport_size({"width": 1280, "height": 900})
    _sign_in(page, "owner@example.com")
    page.goto("/imports/new")
    page.get_by_label("CSV or TSV file").set_input_files(str(path))
    page.get_by_role("button", name="Upload and preview").click()
    preview = page.get_by_role("table", name="First rows of the file")
    preview.wait_for()
    visible_right = preview.evaluate("table => table.parentElement.getBoundingClientRect().right")
    phone_header = preview.locator("th", has_text="phone").first.bounding_box()
    assert phone_header["x"] + phone_header["width"] <= visible_right
    phone_cell = preview.locator("td", has_text="+14155550100").bounding_box()
    assert phone_cell["x"] + phone_cell["width"] <= visible_right
    assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")


def test_test_connection_tries_what_is_typed_before_it_is_saved(app, page, sandbox):
    """Typing the sandbox's username and password and clicking Test connection (htmx posts the form as it is)
    connects, says nothing is saved yet, stores nothing, and never writes the password into the page."""
    from webapp.models import Team

    with app.app_context():
        make_user(make_team("Acme"), Role.OWNER, "owner@example.com")
    _sign_in(page, "owner@example.com")
    page.wait_for_url("**/")
    page.goto("/settings/")
    page.get_by_label("API username").fill("sandbox")
    page.get_by_label("API password").fill("sandbox")
    page.get_by_role("button", name="Test connection").click()
    result = page.locator("#connection-result")
    result.get_by_text("Connected.").wait_for()
    assert "not saved yet" in result.inner_text()
    assert 'value="sandbox"' not in page.locator("#api_password").evaluate("e => e.outerHTML")
    with app.app_context():
        assert db.session.scalar(select(Team.api_password_encrypted)) is None
