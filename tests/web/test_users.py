"""Team members: the admin page and the CLI."""

from sqlalchemy import select

from tests.factories import PASSWORD, make_team, make_user
from webapp.extensions import db
from webapp.models import Role, User


def _signed_in_admin(app, auth, role=Role.ADMIN):
    with app.app_context():
        team = make_team("Acme")
        admin = make_user(team, role, "admin@example.com")
        other = make_user(team, Role.EDITOR, "ed@example.com")
        ids = admin.id, other.id
    auth.login("admin@example.com")
    return ids


def test_admin_adds_a_user_who_can_sign_in(app, client, auth):
    """An admin adds a viewer; the viewer signs in and lands in the same team."""
    _signed_in_admin(app, auth)
    response = client.post(
        "/users/", data={"email": "new@example.com", "password": "a long password", "role": "viewer", "name": "Neu"}
    )
    assert response.status_code == 302
    auth.logout()
    assert auth.login("new@example.com", "a long password").status_code == 302
    assert "Acme" in client.get("/").get_data(as_text=True)


def test_duplicate_email_is_explained(app, client, auth):
    """Adding an email that already has an account shows why, on the form."""
    _signed_in_admin(app, auth)
    page = client.post("/users/", data={"email": "ed@example.com", "password": "a long password", "role": "editor"})
    assert "already has an account" in page.get_data(as_text=True)


def test_admin_cannot_create_owner(app, client, auth):
    """Only an owner may add another owner."""
    _signed_in_admin(app, auth)
    page = client.post("/users/", data={"email": "o@example.com", "password": "a long password", "role": "owner"})
    assert "Only an owner" in page.get_data(as_text=True)


def test_disabled_user_is_signed_out_and_cannot_sign_in(app, client, auth):
    """Disabling ends the user's open session and refuses new logins; enabling restores access."""
    _, editor_id = _signed_in_admin(app, auth)
    other = app.test_client()
    other.post("/login", data={"email": "ed@example.com", "password": PASSWORD})
    assert other.get("/").status_code == 200

    client.post(f"/users/{editor_id}/disable")
    assert other.get("/").status_code == 302
    assert other.post("/login", data={"email": "ed@example.com", "password": PASSWORD}).status_code == 401

    client.post(f"/users/{editor_id}/enable")
    assert other.post("/login", data={"email": "ed@example.com", "password": PASSWORD}).status_code == 302


def test_admin_cannot_disable_self(app, client, auth):
    """An admin cannot lock themselves out."""
    admin_id, _ = _signed_in_admin(app, auth)
    client.post(f"/users/{admin_id}/disable")
    with app.app_context():
        assert db.session.get(User, admin_id).disabled is False


def test_editor_cannot_manage_users(app, client, auth):
    """The users page is for owners and admins."""
    with app.app_context():
        make_user(make_team("Acme"), Role.EDITOR, "ed@example.com")
    auth.login("ed@example.com")
    assert client.get("/users/").status_code == 403


def test_cli_creates_user(app, runner):
    """`campaigns users create` makes the team when needed and the user can sign in."""
    result = runner.invoke(
        args=["users", "create", "--email", "cli@example.com", "--password", "a long password",
              "--team", "CLI team", "--role", "admin"]
    )
    assert result.exit_code == 0, result.output
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "cli@example.com"))
        assert user.role == "admin" and user.team.name == "CLI team"
        assert user.check_password("a long password")


def test_cli_refuses_short_password(app, runner):
    """The CLI explains a password that is too short."""
    result = runner.invoke(
        args=["users", "create", "--email", "x@example.com", "--password", "short", "--team", "T"]
    )
    assert result.exit_code != 0
    assert "at least 10 characters" in result.output


def test_password_is_hashed(app):
    """Passwords are stored as scrypt hashes, never as text."""
    with app.app_context():
        user = make_user(make_team(), Role.EDITOR)
        assert user.password_hash.startswith("scrypt:")
        assert PASSWORD not in user.password_hash
