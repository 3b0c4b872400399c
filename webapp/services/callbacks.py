"""What the provider's webhooks keep: status callbacks and inbound messages, within stated bounds.

A status callback is stored as it arrived, with what the tolerant parser read from it, in one INSERT
(plus the token check and the commit: three round trips). Nothing a provider sends about a real
message is dropped, so only what cannot be one is bounded (README, "Webhooks"):

- a status callback's body is at most MAX_BODY_BYTES (8 KB) and its query string MAX_QUERY_BYTES
  (4 KB); a real one is well under 2 KB. The view refuses larger ones (413, 414) without storing;
- unmatched callbacks are kept up to CALLBACK_ORPHAN_LIMIT per team (default 100,000); beyond it the
  oldest expire first and Team.callbacks_expired counts them. prune_orphans() is the periodic sweep;
  between sweeps, an INSERT whose row id is a multiple of CALLBACK_PRUNE_EVERY prunes its own team,
  so a flood is cut back every ~1,000 rows at the cost of one indexed query, not one per request.

Every stored callback is unmatched until callbacks are matched to messages: `_unmatched` is the one
place that says which rows may expire.
"""

import hmac
import logging
from dataclasses import dataclass
from typing import Literal

from flask import current_app
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from webapp.extensions import db
from webapp.models import InboundMessage, ProviderCallback, Team
from webapp.provider.delivery_reports import ParsedCallback, parse_callback
from webapp.services.delivery import apply_callback
from webapp.services.optouts import record_inbound

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024
MAX_QUERY_BYTES = 4 * 1024
# An inbound SMS can be a long concatenated message in a non-Latin script: 1,600 characters
# percent-encoded as UTF-8 is up to ~15 KB, so inbound bounds are wider than status ones.
INBOUND_MAX_BODY_BYTES = 32 * 1024
INBOUND_MAX_QUERY_BYTES = 16 * 1024
PRUNE_BATCH = 10_000  # rows deleted per statement, so no prune holds locks for long
MAX_TEAM_ID = 2**31 - 1  # team.id is a 32-bit integer on PostgreSQL; a larger id is no team

TokenKind = Literal["callback", "inbound"]


@dataclass(frozen=True)
class StoredCallback:
    """The stored row's id and what the parser read from the callback."""

    id: int
    parsed: ParsedCallback


def token_matches(team_id: int, token: str, kind: TokenKind) -> bool:
    """True when `token` is the team's `kind` token, compared in constant time (the provider doesn't sign)."""
    if not 0 < team_id <= MAX_TEAM_ID:
        return False
    team = db.session.get(Team, team_id)  # kept in the session: the inbound path needs the row anyway
    expected = getattr(team, f"{kind}_token", None) if team else None
    return expected is not None and hmac.compare_digest(expected.encode(), token.encode())


def store_status_callback(
    team_id: int, content_type: str | None, query: str, body: bytes
) -> StoredCallback | None:
    """Keep one status callback raw with its parsed fields; None when it carried nothing at all."""
    if not body and not query:
        return None  # a bare GET (someone checking the URL) says nothing about any message
    parsed = parse_callback(body, content_type, query)
    try:
        row_id = _insert(team_id, content_type, query, body, parsed, apply_callback(team_id, parsed))
    except SQLAlchemyError:  # applying failed: the raw callback is still kept, as an orphan to match later
        db.session.rollback()
        logger.exception("applying a callback for team %s failed; kept unmatched", team_id)
        row_id = _insert(team_id, content_type, query, body, parsed, None)
    db.session.commit()
    if row_id % current_app.config["CALLBACK_PRUNE_EVERY"] == 0:
        try:
            prune_team(team_id, current_app.config["CALLBACK_ORPHAN_LIMIT"])
        except SQLAlchemyError:  # the callback is stored; the sweep will prune
            db.session.rollback()
            logger.exception("pruning team %s's callbacks failed", team_id)
    return StoredCallback(row_id, parsed)


def _insert(team_id: int, content_type: str | None, query: str, body: bytes, parsed: ParsedCallback,
            message_id: int | None) -> int:
    return db.session.execute(
        insert(ProviderCallback)
        .values(
            team_id=team_id,
            content_type=_fit(content_type or "", 200),
            query_string=_fit(query, MAX_QUERY_BYTES),
            # Kept as text for people to read; NUL is the one character PostgreSQL text can't hold.
            body=_fit(body.decode("utf-8", "replace"), MAX_BODY_BYTES),
            unique_id=_fit(parsed.unique_id, 100),
            reference=_fit(parsed.reference, 100),
            state=parsed.state,
            raw_status=_fit(parsed.raw_status, 100),
            cause_code=_fit(parsed.cause_code, 100),
            message_id=message_id,
        )
        .returning(ProviderCallback.id)
    ).scalar_one()


def rematch_orphans(limit: int = 10_000) -> int:
    """The periodic sweep: apply unmatched callbacks whose message exists now (newest first); how many matched."""
    matched = 0
    orphans = db.session.execute(
        select(ProviderCallback.id, ProviderCallback.team_id, ProviderCallback.reference, ProviderCallback.unique_id,
               ProviderCallback.state, ProviderCallback.received_at)
        .where(ProviderCallback.message_id.is_(None),
               (ProviderCallback.reference.is_not(None)) | (ProviderCallback.unique_id.is_not(None)))
        .order_by(ProviderCallback.id.desc()).limit(limit)
    ).all()
    for orphan in orphans:
        parsed = ParsedCallback(unique_id=orphan.unique_id, reference=orphan.reference, state=orphan.state,
                                raw_status=None, cause_code=None, cost=None, parts=None)
        message_id = apply_callback(orphan.team_id, parsed, orphan.received_at)
        if message_id is not None:
            db.session.execute(update(ProviderCallback).where(ProviderCallback.id == orphan.id)
                               .values(message_id=message_id))
            matched += 1
    db.session.commit()
    return matched


def store_inbound_message(team_id: int, content_type: str | None, query: str, body: bytes) -> InboundMessage | None:
    """Keep an inbound SMS and act on STOP/START (services.optouts); None when it carried nothing at all."""
    if not body and not query:
        return None
    team = db.session.get(Team, team_id)  # already in the session after token_matches: no query
    if team is None:
        return None
    message = record_inbound(team, body, content_type, query)
    db.session.commit()
    return message


def prune_orphans(limit: int | None = None) -> dict[int, int]:
    """The periodic sweep: every team back to CALLBACK_ORPHAN_LIMIT unmatched callbacks; {team id: expired}."""
    limit = current_app.config["CALLBACK_ORPHAN_LIMIT"] if limit is None else limit
    expired: dict[int, int] = {}
    for team_id in db.session.scalars(select(Team.id).order_by(Team.id)).all():
        total = 0
        while True:
            deleted = prune_team(team_id, limit)
            total += deleted
            if deleted < PRUNE_BATCH:
                break
        if total:
            expired[team_id] = total
    return expired


def prune_team(team_id: int, limit: int, batch: int = PRUNE_BATCH) -> int:
    """Expire up to `batch` of the team's oldest unmatched callbacks beyond the newest `limit`, counted; commits."""
    newest_expiring = db.session.scalar(
        select(ProviderCallback.id)
        .where(*_unmatched(team_id))
        .order_by(ProviderCallback.id.desc())
        .offset(max(limit, 0))
        .limit(1)
    )
    if newest_expiring is None:
        return 0
    oldest = (
        select(ProviderCallback.id)
        .where(*_unmatched(team_id), ProviderCallback.id <= newest_expiring)
        .order_by(ProviderCallback.id)
        .limit(batch)
    )
    deleted = db.session.execute(delete(ProviderCallback).where(ProviderCallback.id.in_(oldest))).rowcount
    if deleted:
        db.session.execute(
            update(Team).where(Team.id == team_id).values(callbacks_expired=Team.callbacks_expired + deleted)
        )
    db.session.commit()
    return deleted


def _unmatched(team_id: int) -> tuple:
    """Which of the team's callbacks may expire: those no message claimed (a matched one is its history)."""
    return (ProviderCallback.team_id == team_id, ProviderCallback.message_id.is_(None))


def _fit(value: str | None, length: int) -> str | None:
    """Fit a value into its column; PostgreSQL refuses what is longer, and NUL anywhere."""
    return None if value is None else value.replace("\x00", "")[:length]
