"""A team's provider account and the URLs the provider calls back, built without a request.

The notify and inbound URLs leave the app (they travel with every message, or are set up once at
MultiTEL), so they are built from PUBLIC_BASE_URL: a send job has no request to ask url_for.
"""

from flask import current_app

from webapp.encryption import decrypt
from webapp.models import Team
from webapp.provider.multitel import Credentials

NOTIFY_PATH = "/callbacks/multitel/{team_id}/{token}"
INBOUND_PATH = "/callbacks/inbound/{team_id}/{token}"


def team_credentials(team: Team) -> Credentials | None:
    """The team's API credentials, decrypted, or None when not set."""
    if not team.api_username or not team.api_password_encrypted:
        return None
    return Credentials(team.api_username, decrypt(team.api_password_encrypted))


def credentials_to_test(team: Team, username: str | None, password: str | None) -> tuple[Credentials, bool]:
    """What 'Test connection' tries: the username and password typed on the form, saved or not, an empty
    password meaning the stored one (as saving does). Returns them and whether they are the saved ones;
    raises ValueError saying what is missing (and DecryptionError for an unreadable stored password)."""
    stored = team_credentials(team) if not password else None
    password = password or (stored.password if stored else "")
    missing = [name for name, value in (("username", username), ("password", password)) if not value]
    if missing:
        raise ValueError(f"Enter the API {' and '.join(missing)} first: none is typed on the form or stored.")
    return Credentials(username, password), stored is not None and username == team.api_username


def notify_url(team: Team) -> str:
    """The notify URL sent with every message of this team."""
    return current_app.config["PUBLIC_BASE_URL"] + NOTIFY_PATH.format(team_id=team.id, token=team.callback_token)


def inbound_url(team: Team) -> str:
    """Where the provider should post the team's inbound messages (set up once at MultiTEL)."""
    return current_app.config["PUBLIC_BASE_URL"] + INBOUND_PATH.format(team_id=team.id, token=team.inbound_token)
