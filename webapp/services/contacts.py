"""Contacts and lists: the queries the list pages, exports and the campaign engine share."""

from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Suppression

# A search box looks for a name or a number, never a page of text. SQLite refuses LIKE patterns over
# 50,000 bytes ("LIKE or GLOB pattern too complex", a 500), and a long pattern is slow everywhere.
SEARCH_MAX_CHARS = 100


def search_text(raw: str | None) -> tuple[str, bool]:
    """What a search box searches for: trimmed and cut to SEARCH_MAX_CHARS; True when it was cut (say so)."""
    text = (raw or "").strip()
    return text[:SEARCH_MAX_CHARS].strip(), len(text) > SEARCH_MAX_CHARS


def contains_pattern(text: str) -> str:
    """A LIKE pattern (escape character \\) matching `text` anywhere, with % and _ taken literally.

    Only the first SEARCH_MAX_CHARS characters count, so no caller can build a pattern the database refuses.
    """
    text = text[:SEARCH_MAX_CHARS]
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def suppressed_phones(team_id: int, phones: list[str]) -> set[str]:
    """Which of these numbers opted out of the team's messages."""
    if not phones:
        return set()
    return set(db.session.scalars(
        select(Suppression.phone).where(Suppression.team_id == team_id, Suppression.phone.in_(phones))
    ))
