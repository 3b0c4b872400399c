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
