"""Teams and users: creating them, checking passwords, throttling failed logins."""

from functools import cache

from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from webapp.extensions import db
from webapp.models import Role, Team, User, utcnow
from webapp.queues import redis_connection


class AccountError(ValueError):
    """A user or team could not be created; the message says why."""


def normalize_email(email: str) -> str:
    return email.strip().lower()


def get_or_create_team(name: str) -> Team:
    team = db.session.scalar(select(Team).where(func.lower(Team.name) == name.strip().lower()))
    if team is None:
        team = Team(name=name.strip())
        db.session.add(team)
        db.session.flush()
    return team


def create_user(team: Team, email: str, password: str, role: Role | str = Role.EDITOR, name: str = "") -> User:
    """Add a user to a team; raises AccountError for a taken email or a weak password."""
    email = normalize_email(email)
    if "@" not in email or len(email) > 254:
        raise AccountError("Enter a valid email address.")
    if len(password) < 10:
        raise AccountError("The password must be at least 10 characters.")
    if db.session.scalar(select(User.id).where(User.email == email)) is not None:
        raise AccountError(f"{email} already has an account.")
    user = User(team_id=team.id, email=email, name=name.strip(), role=Role(role).value)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    return user


class LoginThrottle:
    """Counts login attempts per email in Redis and locks the email out for a while after too many.

    Every attempt is counted before the password is checked (a success clears the count), so
    parallel guesses can't slip past the limit. Counted per email, not per user row, so probing
    unknown addresses is throttled the same way.
    """

    def __init__(self, max_failures: int, lock_seconds: int):
        self.max_failures = max_failures
        self.lock_seconds = lock_seconds

    @staticmethod
    def _key(email: str) -> str:
        return f"login-failures:{normalize_email(email)}"

    def allow_attempt(self, email: str) -> bool:
        """Count this attempt; False once the email has had max_failures attempts without success."""
        key = self._key(email)
        pipe = redis_connection().pipeline()
        pipe.incr(key)
        pipe.expire(key, self.lock_seconds)
        count, _ = pipe.execute()
        return count <= self.max_failures

    def reset(self, email: str) -> None:
        redis_connection().delete(self._key(email))


@cache
def _unknown_user_hash() -> str:
    """Checked when the email is unknown, so a wrong email takes as long as a wrong password."""
    return generate_password_hash("unknown user", method="scrypt")


def authenticate(email: str, password: str) -> User | None:
    """The active user with this email and password, or None."""
    user = db.session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        check_password_hash(_unknown_user_hash(), password)
        return None
    if not user.check_password(password) or user.disabled:
        return None
    user.last_login_at = utcnow()
    return user
