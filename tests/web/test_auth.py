"""Signing in and out, throttling, cookies and CSRF."""

import time

import pytest

from tests.factories import PASSWORD, make_team, make_user
from webapp import create_app
from webapp.models import Role
from webapp.services.accounts import client_key


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
    """After LOGIN_MAX_FAILURES wrong passwords from one address even the right one is refused there."""
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


def _attempt(client, address: str, email="ann@example.com", password="nope", **headers):
    return client.post("/login", data={"email": email, "password": password},
                       environ_base={"REMOTE_ADDR": address}, headers=headers)


def test_a_lock_holds_one_address_only(app, client):
    """Failures from one address lock the email there, not for its owner elsewhere (no lockout by strangers)."""
    _user(app)
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        assert _attempt(client, "198.51.100.7").status_code == 401
    assert _attempt(client, "198.51.100.7", password=PASSWORD).status_code == 429
    assert _attempt(app.test_client(), "203.0.113.20", password=PASSWORD).status_code == 302


def test_attempts_during_a_lock_do_not_extend_it(app, client):
    """Retrying while locked never pushes the end of the lock back: it ends LOGIN_LOCK_SECONDS after it began."""
    _user(app)
    app.config["LOGIN_LOCK_SECONDS"] = 2
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        _attempt(client, "198.51.100.7")
    locked_at = time.monotonic()
    refused = 0
    while time.monotonic() - locked_at < 20:  # a generous deadline for a 2 s lock on a busy machine
        status = _attempt(client, "198.51.100.7", password=PASSWORD).status_code
        if status == 302:
            break
        assert status == 429
        refused += 1
        time.sleep(0.1)
    assert status == 302, "the lock never ended while attempts kept arriving"
    assert refused >= 1


def test_password_spraying_is_throttled_per_address(app, client):
    """One address trying ten emails once each is stopped after LOGIN_CLIENT_MAX_FAILURES failures in all;
    other addresses are not affected."""
    _user(app)
    app.config["LOGIN_CLIENT_MAX_FAILURES"] = 10
    for n in range(10):
        assert _attempt(client, "198.51.100.7", email=f"person{n}@example.com").status_code == 401
    response = _attempt(client, "198.51.100.7", password=PASSWORD)
    assert response.status_code == 429
    assert "from your network" in response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) > 0
    assert _attempt(app.test_client(), "198.51.100.8", password=PASSWORD).status_code == 302


def test_successes_do_not_count_against_an_address(app):
    """Many people signing in from one office address are never throttled by their own successes."""
    _user(app)
    app.config["LOGIN_CLIENT_MAX_FAILURES"] = 3
    for _ in range(6):
        office = app.test_client()
        assert _attempt(office, "198.51.100.7", password=PASSWORD).status_code == 302


def test_one_email_is_slowed_but_never_locked_for_a_known_browser(app, client):
    """Guesses at one email from many addresses hit a per-minute limit; a browser that signed in as that
    email before is exempt, so its owner always gets in; a new browser is told to wait seconds."""
    _user(app)
    app.config["LOGIN_EMAIL_ATTEMPTS_PER_MINUTE"] = 3
    _attempt(client, "203.0.113.20", password=PASSWORD)
    client.post("/logout")
    for n in range(3):
        _attempt(app.test_client(), f"198.51.100.{n + 1}")
    response = _attempt(app.test_client(), "198.51.100.99")
    assert response.status_code == 429
    assert "many sign-in attempts" in response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) <= 60
    assert _attempt(app.test_client(), "203.0.113.21", password=PASSWORD).status_code == 429
    assert _attempt(client, "203.0.113.20", password=PASSWORD).status_code == 302


def test_behind_a_proxy_the_forwarded_address_is_the_client(app_config, app):
    """With PROXY_COUNT=1 the lock follows X-Forwarded-For; with no proxy configured the header is ignored,
    so forging it does not escape a lock."""
    _user(app)
    proxied = create_app(dict(app_config, PROXY_COUNT=1)).test_client()
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        _attempt(proxied, "10.0.0.2", **{"X-Forwarded-For": "198.51.100.7"})
    assert _attempt(proxied, "10.0.0.2", password=PASSWORD, **{"X-Forwarded-For": "198.51.100.7"}).status_code == 429
    assert _attempt(proxied, "10.0.0.2", password=PASSWORD, **{"X-Forwarded-For": "203.0.113.20"}).status_code == 302

    direct = app.test_client()
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        _attempt(direct, "198.51.100.50")
    forged = _attempt(direct, "198.51.100.50", password=PASSWORD, **{"X-Forwarded-For": "203.0.113.99"})
    assert forged.status_code == 429


@pytest.mark.parametrize(("address", "key"), [
    ("198.51.100.7", "198.51.100.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),
    ("::ffff:198.51.100.7", "198.51.100.7"),
])
def test_client_key_groups_an_ipv6_subscriber(address, key):
    """One IPv6 subscriber (a /64) counts as one client, so rotating addresses inside it gains nothing."""
    assert client_key(address) == key
