"""Signing in and out, throttling, cookies and CSRF."""

import pytest

from tests.factories import PASSWORD, make_team, make_user
from webapp import create_app
from webapp.models import Role


def _user(app, role=Role.EDITOR, email="ann@example.com"):
    with app.app_context():
        make_user(make_team("Acme"), role, email)


def test_login_page_renders(client):
    """The login page has labelled email and password fields."""
    page = client.get("/login").get_data(as_text=True)
    assert '<label for="email">Email</label>' in page
    assert '<label for="password">Password</label>' in page


def test_dashboard_requires_login(client):
    """Anonymous visitors are sent to the login page."""
    response = client.get("/")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_login_and_logout(app, client, auth):
    """A correct password opens the dashboard; signing out closes it."""
    _user(app)
    response = auth.login("Ann@Example.com ")
    assert response.status_code == 302
    assert "Acme" in client.get("/").get_data(as_text=True)
    auth.logout()
    assert client.get("/").status_code == 302


def test_wrong_password_is_refused(app, client, auth):
    """A wrong password says so without telling whether the email exists."""
    _user(app)
    response = auth.login("ann@example.com", "wrong password")
    assert response.status_code == 401
    assert "Wrong email or password" in response.get_data(as_text=True)


def test_repeated_failures_lock_the_email(app, client, auth):
    """After LOGIN_MAX_FAILURES wrong passwords even the right one is refused for a while."""
    _user(app)
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        assert auth.login("ann@example.com", "nope").status_code == 401
    response = auth.login("ann@example.com", PASSWORD)
    assert response.status_code == 429
    assert "Too many failed attempts" in response.get_data(as_text=True)


def test_success_resets_the_failure_count(app, client, auth):
    """A successful login forgets earlier failures."""
    _user(app)
    for _ in range(app.config["LOGIN_MAX_FAILURES"] - 1):
        auth.login("ann@example.com", "nope")
    assert auth.login("ann@example.com").status_code == 302
    auth.logout()
    assert auth.login("ann@example.com", "nope").status_code == 401


def test_logout_is_not_a_get(app, client, auth):
    """A link or an image cannot sign anyone out."""
    _user(app)
    auth.login("ann@example.com")
    assert client.get("/logout").status_code == 405


def test_session_cookie_flags(app, client, auth):
    """The session cookie is HttpOnly and SameSite=Lax."""
    _user(app)
    response = auth.login("ann@example.com")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_production_cookies_are_secure(app_config, monkeypatch):
    """In production the session cookie is also Secure."""
    monkeypatch.setenv("APP_ENV", "production")
    config = dict(app_config, APP_ENV="production", SQLALCHEMY_DATABASE_URI=app_config["SQLALCHEMY_DATABASE_URI"])
    app = create_app(config)
    assert app.config["SESSION_COOKIE_SECURE"] is True


@pytest.mark.parametrize("target", ["//evil.example/x", "/\\evil.example", "/\t/evil.example", "https://evil.example"])
def test_next_only_follows_local_paths(app, client, target):
    """?next= cannot send a user to another site after login, however the URL is disguised."""
    _user(app)
    response = client.post("/login", query_string={"next": target},
                           data={"email": "ann@example.com", "password": PASSWORD})
    assert response.headers["Location"] == "/"


def test_next_follows_a_local_path(app, client):
    """?next= brings the user back to the page they asked for."""
    _user(app)
    response = client.post("/login?next=/lists", data={"email": "ann@example.com", "password": PASSWORD})
    assert response.headers["Location"] == "/lists"


def test_csrf_token_is_required(app_config):
    """With CSRF on (as in production), a POST without the token is refused."""
    app = create_app(dict(app_config, WTF_CSRF_ENABLED=True))
    with app.app_context():
        make_user(make_team("Acme"), Role.EDITOR, "csrf@example.com")
    response = app.test_client().post("/login", data={"email": "csrf@example.com", "password": PASSWORD})
    assert response.status_code == 400
