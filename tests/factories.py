"""Test data made through the same services the app uses. Call inside an app context."""

import itertools

from webapp.accounts import create_user, get_or_create_team
from webapp.extensions import db
from webapp.models import Role, Team, User

PASSWORD = "correct horse battery"
_sequence = itertools.count(1)


def make_team(name: str | None = None) -> Team:
    team = get_or_create_team(name or f"Team {next(_sequence)}")
    db.session.commit()
    return team


def make_user(team: Team, role: Role | str = Role.EDITOR, email: str | None = None) -> User:
    user = create_user(team, email or f"user{next(_sequence)}@example.com", PASSWORD, role)
    db.session.commit()
    return user
