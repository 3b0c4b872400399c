"""Teams and users: creating them, signing in and out, passwords, and throttling password guessing.

A sign-in is a LoginSession row. Flask-Login keeps its token (User.get_id) in the session and in the
remember cookie, so ending a sign-in is deleting rows in the database: pages never need Redis to know
who is signed in. Only the throttle lives in Redis, and sign-in refuses to run without it.
"""

import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import cache

from flask import current_app
from sqlalchemy import delete, func, select
from werkzeug.security import check_password_hash, generate_password_hash

from webapp.extensions import db
from webapp.models import LoginSession, Role, Team, User, utcnow
from webapp.queues import redis_connection
from webapp.services.countries import main_zone

MIN_PASSWORD_LENGTH = 10


class AccountError(ValueError):
    """A user or team could not be created or changed; the message says why."""


def normalize_email(email: str) -> str:
    return email.strip().lower()


def _check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"The password must be at least {MIN_PASSWORD_LENGTH} characters.")


def get_or_create_team(name: str, default_country: str = "US") -> Team:
    """The team of this name; a new one starts in its default country's main time zone, not silently UTC,
    and Settings asks to confirm it (timezone_chosen stays False until someone saves it)."""
    team = db.session.scalar(select(Team).where(func.lower(Team.name) == name.strip().lower()))
    if team is None:
        team = Team(name=name.strip(), default_country=default_country, timezone=main_zone(default_country),
                    timezone_chosen=False)
        db.session.add(team)
        db.session.flush()
    return team


def create_user(team: Team, email: str, password: str, role: Role | str = Role.EDITOR, name: str = "") -> User:
    """Add a user to a team; raises AccountError for a taken email or a weak password."""
    email = normalize_email(email)
    if "@" not in email or len(email) > 254:
        raise AccountError("Enter a valid email address.")
    _check_new_password(password)
    if db.session.scalar(select(User.id).where(User.email == email)) is not None:
        raise AccountError(f"{email} already has an account.")
    user = User(team_id=team.id, email=email, name=name.strip(), role=Role(role))
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    return user


# --- sign-ins -------------------------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def login_lifetime(remember: bool) -> timedelta:
    """How long a sign-in lasts on the server; the remember cookie is given the same lifetime."""
    config = current_app.config
    return timedelta(days=config["LOGIN_REMEMBER_DAYS"]) if remember else timedelta(hours=config["LOGIN_SESSION_HOURS"])


def start_login_session(user: User, remember: bool) -> str:
    """Record a new sign-in for the user, set its token on the user (for Flask-Login) and return it.

    The user's expired sign-ins are deleted here, so rows stay bounded without a sweeper.
    """
    now = utcnow()
    db.session.execute(delete(LoginSession).where(LoginSession.user_id == user.id, LoginSession.expires_at <= now))
    token = secrets.token_urlsafe(32)
    db.session.add(LoginSession(user_id=user.id, token_hash=_token_hash(token),
                                expires_at=now + login_lifetime(remember)))
    user.session_token = token
    return token


def user_for_login_session(token: str) -> User | None:
    """The user of an unexpired sign-in with this token, or None (ended, expired or never issued)."""
    user = db.session.scalar(
        select(User).join(LoginSession, LoginSession.user_id == User.id)
        .where(LoginSession.token_hash == _token_hash(token), LoginSession.expires_at > utcnow())
    )
    if user is not None:
        user.session_token = token
    return user


def end_login_session(token: str) -> None:
    """Sign out one browser: its session and remember cookies stop working, copied or not."""
    db.session.execute(delete(LoginSession).where(LoginSession.token_hash == _token_hash(token)))


def end_all_login_sessions(user_id: int) -> int:
    """Sign the user out on every browser; returns how many sign-ins ended."""
    return db.session.execute(delete(LoginSession).where(LoginSession.user_id == user_id)).rowcount


def count_login_sessions(user_id: int) -> int:
    """How many browsers the user is signed in on now."""
    return db.session.scalar(
        select(func.count()).select_from(LoginSession)
        .where(LoginSession.user_id == user_id, LoginSession.expires_at > utcnow())
    )


def set_user_disabled(user_id: int, disabled: bool) -> None:
    """Disable a user (and end every sign-in, so no old cookie returns on re-enabling) or enable them."""
    db.session.get_one(User, user_id).disabled = disabled
    if disabled:
        end_all_login_sessions(user_id)


# --- passwords and throttling ---------------------------------------------------------------------


def client_key(address: str | None) -> str:
    """The client address as the throttle counts it: an IPv4 address, or the /64 of an IPv6 one
    (one subscriber holds a whole /64, so single IPv6 addresses would be free to rotate)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Refusal(StrEnum):
    BAD_CREDENTIALS = "bad_credentials"
    LOCKED = "locked"  # this email from this client address failed too often
    CLIENT = "client"  # this client address failed too often across emails (password spraying)
    EMAIL = "email"  # this email is getting too many attempts per minute from unknown browsers


# Counted before the password is checked, so parallel guesses can't slip past a limit; a success
# refunds the count. A lock or a full window refuses without counting, so retrying never extends it.
_BEGIN = """
local pttl = redis.call('PTTL', KEYS[2])
if pttl > 0 then return {1, pttl} end
if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[3]) then
  return {2, redis.call('PTTL', KEYS[3])}
end
if tonumber(ARGV[4]) > 0 then
  local seen = redis.call('INCR', KEYS[4])
  if seen == 1 then redis.call('EXPIRE', KEYS[4], 60) end
  if seen > tonumber(ARGV[4]) then return {3, redis.call('PTTL', KEYS[4])} end
end
local failures = redis.call('INCR', KEYS[1])
if failures == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if failures >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
  redis.call('DEL', KEYS[1])
end
if redis.call('INCR', KEYS[3]) == 1 then redis.call('EXPIRE', KEYS[3], ARGV[2]) end
return {0, 0}
"""

_SUCCEEDED = """
redis.call('DEL', KEYS[1], KEYS[2])
if tonumber(redis.call('GET', KEYS[3]) or '0') > 0 then redis.call('DECR', KEYS[3]) end
"""


class LoginThrottle:
    """Bounds password guessing in Redis, three ways, none of which lets a stranger lock an owner out.

    - email + client address: LOGIN_MAX_FAILURES failures lock that pair for LOGIN_LOCK_SECONDS,
      counted from the last counted failure; attempts during the lock do not extend it;
    - client address: LOGIN_CLIENT_MAX_FAILURES failures across all emails within LOGIN_LOCK_SECONDS;
    - email: LOGIN_EMAIL_ATTEMPTS_PER_MINUTE attempts per minute from all addresses together, except
      from a browser that has signed in as that email before (the web layer's device cookie).

    Emails are counted whether or not they have an account, so probing addresses is throttled alike.
    """

    def __init__(self, max_failures: int, lock_seconds: int, client_max_failures: int, email_per_minute: int):
        self.limits = (max_failures, lock_seconds, client_max_failures, email_per_minute)

    @classmethod
    def from_config(cls) -> "LoginThrottle":
        config = current_app.config
        return cls(config["LOGIN_MAX_FAILURES"], config["LOGIN_LOCK_SECONDS"],
                   config["LOGIN_CLIENT_MAX_FAILURES"], config["LOGIN_EMAIL_ATTEMPTS_PER_MINUTE"])

    @staticmethod
    def _keys(email: str, client: str) -> list[str]:
        who = hashlib.sha256(normalize_email(email).encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return [f"login:failures:{client}:{who}", f"login:lock:{client}:{who}",
                f"login:client:{client}", f"login:email:{who}"]

    def begin(self, email: str, client: str, trusted_device: bool = False) -> tuple[Refusal | None, int]:
        """Count an attempt; (None, 0) when it may go ahead, else (why not, seconds to wait)."""
        max_failures, lock_seconds, client_max, email_per_minute = self.limits
        script = redis_connection().register_script(_BEGIN)
        code, pttl = script(keys=self._keys(email, client),
                            args=[max_failures, lock_seconds, client_max, 0 if trusted_device else email_per_minute])
        if code == 0:
            return None, 0
        refusal = {1: Refusal.LOCKED, 2: Refusal.CLIENT, 3: Refusal.EMAIL}[code]
        return refusal, max(1, -(-int(pttl) // 1000))

    def succeeded(self, email: str, client: str) -> None:
        """The password was right: forget this pair's failures and refund the address's count."""
        redis_connection().register_script(_SUCCEEDED)(keys=self._keys(email, client)[:3])


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


@dataclass(frozen=True)
class SignIn:
    """What a sign-in attempt came to: a user carrying a fresh login token, or why not."""

    user: User | None = None
    refused: Refusal | None = None
    retry_after: int = 0


def sign_in(email: str, password: str, client: str, remember: bool, trusted_device: bool = False) -> SignIn:
    """Check the throttle and the password; on success record a new sign-in. Raises RedisError when
    the throttle can't be reached: without it, guessing would be unbounded, so nobody signs in."""
    throttle = LoginThrottle.from_config()
    refused, retry_after = throttle.begin(email, client, trusted_device)
    if refused:
        return SignIn(refused=refused, retry_after=retry_after)
    user = authenticate(email, password)
    if user is None:
        return SignIn(refused=Refusal.BAD_CREDENTIALS)
    throttle.succeeded(email, client)
    start_login_session(user, remember)
    return SignIn(user=user)


def change_password(user_id: int, current_password: str, new_password: str, client: str, remember: bool) -> User:
    """Set a new password after checking the current one (throttled like sign-in), end every sign-in
    of the user and start a new one for the browser that asked; returns the user carrying its token."""
    user = db.session.get_one(User, user_id)
    throttle = LoginThrottle.from_config()
    refused, retry_after = throttle.begin(user.email, client, trusted_device=True)
    if refused:
        raise AccountError(f"Too many wrong passwords. Try again in {wait_text(retry_after)}.")
    if not user.check_password(current_password):
        raise AccountError("The current password is wrong.")
    throttle.succeeded(user.email, client)
    _check_new_password(new_password)
    user.set_password(new_password)
    end_all_login_sessions(user_id)
    start_login_session(user, remember)
    return user


def wait_text(seconds: int) -> str:
    """'40 seconds', '1 minute', '15 minutes': how long a refused attempt must wait, in words."""
    if seconds < 60:
        return "1 second" if seconds == 1 else f"{seconds} seconds"
    minutes = -(-seconds // 60)
    return "1 minute" if minutes == 1 else f"{minutes} minutes"
