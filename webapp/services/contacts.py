"""Contacts and lists: the queries the list pages, exports and the campaign engine share."""

from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Suppression


def contains_pattern(text: str) -> str:
    """A LIKE pattern (escape character \\) matching `text` anywhere, with % and _ taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def suppressed_phones(team_id: int, phones: list[str]) -> set[str]:
    """Which of these numbers opted out of the team's messages."""
    if not phones:
        return set()
    return set(db.session.scalars(
        select(Suppression.phone).where(Suppression.team_id == team_id, Suppression.phone.in_(phones))
    ))
