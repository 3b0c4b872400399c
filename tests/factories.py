"""Test data made through the same services the app uses. Call inside an app context."""

import itertools
from functools import cache

from werkzeug.security import generate_password_hash

from webapp.extensions import db
from webapp.models import Role, Team, User
from webapp.services.accounts import get_or_create_team

PASSWORD = "correct horse battery"
_sequence = itertools.count(1)


def make_team(name: str | None = None) -> Team:
    team = get_or_create_team(name or f"Team {next(_sequence)}")
    db.session.commit()
    return team


@cache
def _password_hash() -> str:
    """One real scrypt hash of PASSWORD, reused: hashing per user made the URL-map walk slow."""
    return generate_password_hash(PASSWORD, method="scrypt")


def make_user(team: Team, role: Role | str = Role.EDITOR, email: str | None = None) -> User:
    user = User(team_id=team.id, email=email or f"user{next(_sequence)}@example.com", role=Role(role).value,
                password_hash=_password_hash())
    db.session.add(user)
    db.session.commit()
    return user
