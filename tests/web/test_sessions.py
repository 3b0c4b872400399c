"""Sign-ins end for good: logout, sign out everywhere, password changes and disabling revoke copied
session and remember cookies; the session and CSRF token are new at each login."""

import re

from sqlalchemy import func, select, update

from tests.factories import PASSWORD, make_team, make_user
from webapp import create_app
from webapp.extensions import db
from webapp.models import LoginSession, Role, Suppression, User

NEW_PASSWORD = "a brand new passphrase"


def _users(app):
    """Acme with an owner (ann) and a viewer (vic); returns their ids."""
    with app.app_context():
        team = make_team("Acme")
        return make_user(team, Role.OWNER, "ann@example.com").id, make_user(team, Role.VIEWER, "vic@example.com").id


def _sign_in(client, email="ann@example.com", password=PASSWORD, remember=False):
    data = {"email": email, "password": password}
    if remember:
        data["remember"] = "y"
    response = client.post("/login", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)
    return response


def _copy(source, name, target=None):
    """A stolen cookie: the value of `name` from one client, set in another (a new one by default)."""
    target = target or source.application.test_client()
    cookie = source.get_cookie(name)
    assert cookie is not None, f"{name} was not set"
    target.set_cookie(name, cookie.value)
    return target


def _signed_in(client) -> bool:
    response = client.get("/")
    assert response.status_code in (200, 302)
    return response.status_code == 200


def _suppressions(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Suppression))


def test_logout_ends_a_copied_session_cookie(app, client):
    """A session cookie copied before logout neither loads pages nor changes data after it."""
    _users(app)
    _sign_in(client)
    thief = _copy(client, "session")
    assert thief.post("/opt-outs/", data={"phone": "+14155550100"}).status_code == 302
    assert _suppressions(app) == 1  # the control: the copy works while the sign-in lasts

    client.post("/logout")
    assert not _signed_in(thief)
    response = thief.post("/opt-outs/", data={"phone": "+14155550101"})
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert _suppressions(app) == 1


def test_logout_leaves_other_browsers_signed_in(app, client):
    """Signing out on one browser ends that sign-in only."""
    _users(app)
    other = app.test_client()
    _sign_in(client)
    _sign_in(other)
    client.post("/logout")
    assert not _signed_in(client)
    assert _signed_in(other)


def test_sign_out_everywhere_ends_every_sign_in(app, client):
    """'Sign out everywhere' on the account page ends every browser's sign-in, remembered ones too."""
    _users(app)
    laptop, phone = app.test_client(), app.test_client()
    _sign_in(laptop, remember=True)
    _sign_in(phone)
    remembered = _copy(laptop, "remember_token")
    _sign_in(client)
    page = client.get("/account").get_data(as_text=True)
    assert "Sign out everywhere" in page and "signed in on 3 browsers" in page

    response = client.post("/account/sign-out-everywhere")
    assert "/login" in response.headers["Location"]
    assert not any(_signed_in(c) for c in (client, laptop, phone, remembered))


def test_remember_token_is_new_at_each_login(app, client):
    """Two logins with 'keep me signed in' give two different remember cookies."""
    _users(app)
    _sign_in(client, remember=True)
    first = client.get_cookie("remember_token").value
    client.post("/logout")
    _sign_in(client, remember=True)
    assert client.get_cookie("remember_token").value != first


def test_remember_cookie_dies_at_logout(app, client):
    """A copied remember cookie signs in a fresh browser until the owner logs out, never after."""
    _users(app)
    _sign_in(client, remember=True)
    assert _signed_in(_copy(client, "remember_token"))  # the control: it works before logout
    copied = _copy(client, "remember_token")
    client.post("/logout")
    assert not _signed_in(copied)


def test_password_change_signs_out_other_browsers_and_keeps_this_one(app, client):
    """A new password ends every other sign-in (remembered ones too); this browser stays signed in."""
    _users(app)
    other = app.test_client()
    _sign_in(other, remember=True)
    copied_session, copied_remember = _copy(other, "session"), _copy(other, "remember_token")
    _sign_in(client)

    response = client.post("/account", data={"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                                             "confirm": NEW_PASSWORD})
    assert response.status_code == 302
    assert "password is changed" in client.get("/account").get_data(as_text=True)
    assert not any(_signed_in(c) for c in (other, copied_session, copied_remember))

    client.post("/logout")
    assert client.post("/login", data={"email": "ann@example.com", "password": PASSWORD}).status_code == 401
    _sign_in(client, password=NEW_PASSWORD)


def test_password_change_needs_the_current_password(app, client):
    """A wrong current password or two different new ones change nothing, and say why."""
    _users(app)
    _sign_in(client)
    page = client.post("/account", data={"current_password": "not it at all", "new_password": NEW_PASSWORD,
                                         "confirm": NEW_PASSWORD}).get_data(as_text=True)
    assert "current password is wrong" in page
    page = client.post("/account", data={"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                                         "confirm": NEW_PASSWORD + "!"}).get_data(as_text=True)
    assert "The two new passwords differ" in page
    with app.app_context():
        assert db.session.scalar(select(User).where(User.email == "ann@example.com")).check_password(PASSWORD)


def test_viewer_manages_own_sign_ins(app, client):
    """A viewer, read-only elsewhere, may change their own password and sign out everywhere."""
    _users(app)
    _sign_in(client, "vic@example.com")
    response = client.post("/account", data={"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                                             "confirm": NEW_PASSWORD})
    assert response.status_code == 302
    assert client.post("/account/sign-out-everywhere").status_code == 302
    assert not _signed_in(client)


def test_disabling_revokes_remember_cookies_for_good(app, client):
    """A remember cookie copied before a user was disabled stays dead after they are enabled again."""
    _, viewer_id = _users(app)
    victim = app.test_client()
    _sign_in(victim, "vic@example.com", remember=True)
    copied = _copy(victim, "remember_token")
    _sign_in(client)
    client.post(f"/users/{viewer_id}/disable")
    client.post(f"/users/{viewer_id}/enable")
    assert not _signed_in(copied)
    assert not _signed_in(victim)


def test_expired_sign_in_loads_nobody(app, client):
    """A sign-in past its lifetime on the server is over, whatever the cookie says."""
    _users(app)
    _sign_in(client, remember=True)
    with app.app_context():
        db.session.execute(update(LoginSession).values(expires_at=LoginSession.created_at))
        db.session.commit()
    assert not _signed_in(client)


def test_cookies_carry_a_token_not_the_user_id(app, client):
    """The session stores a random per-login token, and the database keeps only its hash."""
    owner_id, _ = _users(app)
    _sign_in(client)
    with client.session_transaction() as session:
        token = session["_user_id"]
    assert token != str(owner_id) and len(token) >= 40
    with app.app_context():
        stored = db.session.scalars(select(LoginSession.token_hash)).all()
    assert len(stored) == 1 and token not in stored[0]


def test_login_starts_a_new_session_and_csrf_token(app_config, app):
    """Nothing planted in the session before login survives it, and the pre-login CSRF token is dead."""
    _users(app)
    client = create_app(dict(app_config, WTF_CSRF_ENABLED=True)).test_client()
    before = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"',
                       client.get("/login").get_data(as_text=True)).group(1)
    with client.session_transaction() as session:
        session["planted"] = "by someone else"
    response = client.post("/login", data={"email": "ann@example.com", "password": PASSWORD, "csrf_token": before})
    assert response.status_code == 302
    with client.session_transaction() as session:
        assert "planted" not in session

    assert client.post("/account/sign-out-everywhere", data={"csrf_token": before}).status_code == 400
    after = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"',
                      client.get("/account").get_data(as_text=True)).group(1)
    assert after != before
    assert client.post("/logout", data={"csrf_token": after}).status_code == 302


def test_open_sessions_do_not_need_redis(app_config, app, client):
    """Pages of a signed-in user load with Redis down: who is signed in lives in the database."""
    _users(app)
    _sign_in(client)
    down = create_app(dict(app_config, REDIS_URL="redis://127.0.0.1:1/0")).test_client()
    _copy(client, "session", down)
    assert down.get("/").status_code == 200
    assert down.get("/lists").status_code == 200
