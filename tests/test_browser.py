"""The dashboard in a real browser: login, navigation, htmx loaded from our own static files."""

import pytest

from tests.conftest import screenshot
from tests.factories import PASSWORD, make_team, make_user
from webapp.models import Role

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
