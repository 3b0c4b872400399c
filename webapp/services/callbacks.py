"""What the provider's webhooks keep: status callbacks and inbound messages, within stated bounds.

A status callback is stored raw, with what the tolerant parser read from it, and applied to its message
(webapp.services.delivery) in the same transaction; if applying fails, the raw row is still stored,
unmatched, for rematch_orphans() to apply later. Once its team's token is cached (token_matches) a
callback reads nothing else first. On PostgreSQL storing and applying are one statement (a
data-modifying WITH: find the message, UPDATE it, INSERT the raw row), autocommitted on the request
thread's own connection: one round trip (_store_on_postgresql). SQLite has no data-modifying WITH:
there it is an UPDATE ... RETURNING (a SELECT when that changed nothing), the INSERT and the commit,
all in process.

A callback a person should look at is flagged in `problem` (PROBLEMS) and listed on the review page:
a body the parser can't read (still stored, still answered 200), one naming no message, one without a
status word or with a word the parser doesn't know (stored, not applied), and one whose cost or parts
disagree with the send reply's (both kept; the callback's counts as billed).

Nothing a provider sends about a real message is dropped, so only what cannot be one is bounded
(README, "Webhooks"):

- a status callback's body is at most MAX_BODY_BYTES (8 KB) and its query string MAX_QUERY_BYTES
  (4 KB); a real one is well under 2 KB. The view refuses larger ones (413, 414) without storing;
- unmatched callbacks are kept up to CALLBACK_ORPHAN_LIMIT per team (default 100,000); beyond it the
  oldest expire first and Team.callbacks_expired counts them. prune_orphans() is the periodic sweep;
  between sweeps, an INSERT whose row id is a multiple of CALLBACK_PRUNE_EVERY prunes its own team,
  so a flood is cut back every ~1,000 rows at the cost of one indexed query, not one per request.

`_unmatched` is the one place that says which rows may expire.
"""

import hmac
import logging
import threading
import time
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import Enum
from functools import cache
from typing import Literal

import psycopg
from flask import current_app
from sqlalchemy import Executable, Insert, bindparam, case, delete, exists, func, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from webapp.extensions import db
from webapp.models import InboundMessage, Message, ProviderCallback, Team
from webapp.provider.delivery_reports import DeliveryState, ParsedCallback, parse_callback
from webapp.services import delivery
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
TOKEN_CACHE_SECONDS = 30.0  # how long a process trusts a team token it read (see token_matches)
TOKEN_CACHE_SIZE = 10_000  # teams whose tokens one process keeps; past it the cache starts over

# Why a stored callback is flagged for a person (ProviderCallback.problem).
UNREADABLE = "unreadable body"
NO_MESSAGE_ID = "no reference or uniqueid"
NO_STATUS_WORD = "no status word"
UNKNOWN_WORD = "unknown status word"
REPLY_DISAGREES = delivery.REPLY_DISAGREES
PROBLEMS = (UNREADABLE, NO_MESSAGE_ID, NO_STATUS_WORD, UNKNOWN_WORD, REPLY_DISAGREES)

CALLBACK = ProviderCallback.__table__
MESSAGE = Message.__table__

TokenKind = Literal["callback", "inbound"]


@dataclass(frozen=True)
class StoredCallback:
    """The stored row's id, the message it was applied to, why it is flagged, and what the parser read."""

    id: int
    message_id: int | None
    problem: str | None
    parsed: ParsedCallback


def token_matches(team_id: int, token: str, kind: TokenKind) -> bool:
    """True when `token` is the team's `kind` token, compared in constant time (the provider doesn't sign).

    Each process keeps the tokens it read for TOKEN_CACHE_SECONDS (30 s), so a steady stream of callbacks
    costs no query here. A token that doesn't match the cached one is read again before it is refused,
    so a new token works at once; a replaced (or revoked) one keeps working for up to 30 s in each process
    that had cached it.
    """
    if not 0 < team_id <= MAX_TEAM_ID:
        return False
    tokens = current_app.extensions.setdefault("team_tokens", {})
    key = (team_id, kind)
    cached = tokens.get(key)
    if cached is not None and time.monotonic() - cached[1] < TOKEN_CACHE_SECONDS and _same(cached[0], token):
        return True
    column = Team.callback_token if kind == "callback" else Team.inbound_token
    with db.engine.connect() as connection:
        expected = connection.scalar(select(column).where(Team.id == team_id))
    if expected is None:
        tokens.pop(key, None)
        return False
    if len(tokens) >= TOKEN_CACHE_SIZE:
        tokens.clear()
    tokens[key] = (expected, time.monotonic())
    return _same(expected, token)


def _same(expected: str, token: str) -> bool:
    return hmac.compare_digest(expected.encode(), token.encode("utf-8", "replace"))


def store_status_callback(
    team_id: int, content_type: str | None, query: str, body: bytes
) -> StoredCallback | None:
    """Keep one status callback raw, apply it to its message, flag it if a person should look; None when
    it carried nothing at all."""
    if not body and not query:
        return None  # a bare GET (someone checking the URL) says nothing about any message
    parsed, params = callback_params(team_id, content_type, query, body)
    stored = _store_and_apply(parsed, params)
    if stored.id % current_app.config["CALLBACK_PRUNE_EVERY"] == 0:
        try:
            prune_team(team_id, current_app.config["CALLBACK_ORPHAN_LIMIT"])
        except SQLAlchemyError:  # the callback is stored; the sweep will prune
            db.session.rollback()
            logger.exception("pruning team %s's callbacks failed", team_id)
    return stored


def callback_params(team_id: int, content_type: str | None, query: str, body: bytes) -> tuple[ParsedCallback, dict]:
    """What the parser read, fitted to the columns, and the bound values of the statements that store it."""
    parsed = _fitted(parse_callback(body, content_type, query))
    return parsed, delivery.apply_params(team_id, parsed) | {
        "cb_content_type": _fit(content_type or "", 200),
        "cb_query_string": _fit(query, MAX_QUERY_BYTES),
        # Kept as text for people to read; NUL is the one character PostgreSQL text can't hold.
        "cb_body": _fit(body.decode("utf-8", "replace"), MAX_BODY_BYTES),
        "cb_state": parsed.state.value,
        "cb_raw_status": parsed.raw_status,
        "cb_cause_code": parsed.cause_code,
        "cb_problem": flag(parsed),
    }


def flag(parsed: ParsedCallback) -> str | None:
    """What a person should look at in this callback before it meets any message; None for a good one."""
    if not parsed.fields:
        return UNREADABLE
    if not parsed.reference and not parsed.unique_id:
        return NO_MESSAGE_ID
    if parsed.raw_status is None:
        return NO_STATUS_WORD
    if parsed.state is DeliveryState.UNKNOWN:
        return UNKNOWN_WORD
    return None


def _store_and_apply(parsed: ParsedCallback, params: dict) -> StoredCallback:
    """Apply and store in one transaction: one statement on PostgreSQL, three on SQLite."""
    dsn = _postgresql_dsn()
    if dsn:
        try:
            return StoredCallback(*_store_on_postgresql(dsn, parsed.state, params), parsed)
        except psycopg.Error:  # the connection broke, or could not store at all: this one goes through the pool
            logger.warning("a callback connection failed; storing through the pool", exc_info=True)
    try:
        with db.engine.begin() as connection:
            applied = delivery.apply_callback(connection, params["cb_team_id"], parsed, params["cb_at"])
            problem = params["cb_problem"] or (REPLY_DISAGREES if applied and applied.disagrees(parsed) else None)
            row_id = connection.execute(_raw_insert(), params | {
                "cb_message_id": applied.message_id if applied else None, "cb_problem": problem}).scalar()
        return StoredCallback(row_id, applied.message_id if applied else None, problem, parsed)
    except SQLAlchemyError:  # applying failed: the raw callback is still kept, as an orphan to match later
        logger.exception("applying a callback for team %s failed; kept unmatched", params["cb_team_id"])
        with db.engine.begin() as connection:
            row_id = connection.execute(_raw_insert(), params | {"cb_message_id": None}).scalar()
        return StoredCallback(row_id, None, params["cb_problem"], parsed)


def _store_on_postgresql(dsn: str, state: DeliveryState, params: dict) -> tuple:
    """(row id, message id, problem): the one statement, autocommitted, on this thread's own connection.

    One round trip per callback: no BEGIN or COMMIT (one statement is atomic by itself) and no pool
    pre-ping (a SELECT 1 per checkout, as many round trips again). The durable commit before the 200 is
    kept (a provider doesn't resend what was acknowledged); concurrent callbacks share WAL flushes, as
    PostgreSQL groups the commits that wait together. If the statement fails (a deadlock, a refused
    UPDATE) it changed nothing, and the callback is stored raw and unmatched on the same connection, for
    rematch_orphans(); a connection that is lost, or can't store even that, is closed and the error raised.
    """
    connection = _thread_connection(dsn)
    try:
        try:
            return connection.execute(*_driver_sql(_apply_and_insert(state), params)).fetchone()
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            logger.exception("applying a callback for team %s failed; kept unmatched", params["cb_team_id"])
            return connection.execute(*_driver_sql(_raw_insert(), params | {"cb_message_id": None})).fetchone()
    except psycopg.Error:  # lost, or unable to store at all: never use this connection again
        _threads.connections.pop(dsn, None)
        connection.close()
        raise


_threads = threading.local()


def _thread_connection(dsn: str) -> psycopg.Connection:
    """This thread's autocommit connection to the database `dsn`, opened on first use and kept.

    Outside the pool, so holding it never starves other requests: a gunicorn worker of 8 threads keeps
    up to 8 of them beside its pool. Keyed by the database, so the apps a test run creates one after
    another share one connection per thread rather than leaving one each.
    """
    connections = getattr(_threads, "connections", None)
    if connections is None:
        connections = _threads.connections = {}
    connection = connections.get(dsn)
    if connection is None or connection.closed:
        connection = connections[dsn] = psycopg.connect(dsn, autocommit=True)
    return connection


def _postgresql_dsn() -> str:
    """The app's database as a libpq URL when it is PostgreSQL, else ""; worked out once per app."""
    dsn = current_app.extensions.get("callback_dsn")
    if dsn is None:
        url = db.engine.url
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False) \
            if url.get_backend_name() == "postgresql" else ""
        current_app.extensions["callback_dsn"] = dsn
    return dsn


def _driver_sql(statement: Executable, params: dict) -> tuple[str, dict]:
    """The statement as PostgreSQL SQL for psycopg, with its constant parameters added to `params`."""
    sql, constants = _compiled(statement)
    return sql, params | constants


@cache
def _compiled(statement: Executable) -> tuple[str, dict]:
    """Compiled once per statement: the SQL, and the values SQLAlchemy bound itself (statuses, limits),
    as plain values (psycopg would send an Enum's name, not its value)."""
    from sqlalchemy.dialects import postgresql

    compiled = statement.compile(dialect=postgresql.psycopg.dialect())
    constants = {name: value.value if isinstance(value, Enum) else value
                 for name, value in compiled.params.items() if not name.startswith("cb_")}
    return compiled.string, constants


_RAW_COLUMNS = ("team_id", "content_type", "query_string", "body", "unique_id", "reference", "state",
                "raw_status", "cause_code", "cost", "parts")


def _raw_value(name: str):
    """The bound parameter for one raw column, typed as the column (PostgreSQL wants types in a SELECT)."""
    if name in delivery.PARAMETERS:
        return delivery.param(name)
    return bindparam(f"cb_{name}", type_=CALLBACK.c[name].type)


@cache
def _raw_insert() -> Insert:
    """INSERT one raw callback from the parameters store_status_callback builds, RETURNING its id."""
    return insert(CALLBACK).values(
        {name: _raw_value(name) for name in _RAW_COLUMNS}
        | {"received_at": _raw_value("at"), "message_id": _raw_value("message_id"), "problem": _raw_value("problem")}
    ).returning(CALLBACK.c.id, CALLBACK.c.message_id, CALLBACK.c.problem)


@cache
def _apply_and_insert(state: DeliveryState) -> Insert:
    """PostgreSQL, one statement: find the message, move it (a guarded UPDATE), INSERT the raw row with
    the message's id and its flag, RETURNING id, message_id, problem. Built once per state."""
    found = (select(MESSAGE.c.id, MESSAGE.c.reply_parts, MESSAGE.c.reply_cost)
             .where(MESSAGE.c.id == delivery.matched_message_id()).cte("found"))
    found_id = select(found.c.id).scalar_subquery()
    disagrees = or_(select(found.c.reply_cost).scalar_subquery() != _raw_value("cost"),
                    select(found.c.reply_parts).scalar_subquery() != _raw_value("parts"))
    problem = func.coalesce(_raw_value("problem"), case((disagrees, delivery.constant(REPLY_DISAGREES))))
    row = select(*(_raw_value(name) for name in _RAW_COLUMNS), _raw_value("at"), found_id, problem)
    statement = (insert(CALLBACK)
                 .from_select([*_RAW_COLUMNS, "received_at", "message_id", "problem"], row)
                 .returning(CALLBACK.c.id, CALLBACK.c.message_id, CALLBACK.c.problem))
    if state in delivery.TARGET:  # an unknown word is stored, never applied
        moved = delivery.guarded_update(state, MESSAGE.c.id == found_id).returning(MESSAGE.c.id).cte("moved")
        statement = statement.add_cte(moved)
    return statement


def rematch_orphans(limit: int = 10_000) -> int:
    """The periodic sweep: apply unmatched callbacks whose message exists now; how many matched.

    One query finds which of the newest `limit` orphans have a message now; they are applied oldest
    first, and an orphan's billed figures only where no later callback of that message brought its own
    (the latest provider figure counts)."""
    by_reference = (select(MESSAGE.c.id)
                    .where(MESSAGE.c.reference == CALLBACK.c.reference, MESSAGE.c.team_id == CALLBACK.c.team_id)
                    .scalar_subquery())
    by_unique_id = (select(MESSAGE.c.id)
                    .where(MESSAGE.c.team_id == CALLBACK.c.team_id, MESSAGE.c.unique_id == CALLBACK.c.unique_id)
                    .order_by(MESSAGE.c.id).limit(1).scalar_subquery())
    newest = (select(CALLBACK.c.id)
              .where(CALLBACK.c.message_id.is_(None),
                     or_(CALLBACK.c.reference.is_not(None), CALLBACK.c.unique_id.is_not(None)))
              .order_by(CALLBACK.c.id.desc()).limit(limit))
    candidates = (select(CALLBACK, func.coalesce(by_reference, by_unique_id).label("found_id"))
                  .where(CALLBACK.c.id.in_(newest)).subquery())
    connection = db.session.connection()
    matched = 0
    matches = connection.execute(select(candidates).where(candidates.c.found_id.is_not(None))
                                 .order_by(candidates.c.id)).all()
    for orphan in matches:
        parsed = ParsedCallback(unique_id=orphan.unique_id, reference=orphan.reference, state=orphan.state,
                                raw_status=orphan.raw_status, cause_code=orphan.cause_code, cost=orphan.cost,
                                parts=orphan.parts)
        later = connection.scalar(select(exists().where(
            CALLBACK.c.message_id == orphan.found_id, CALLBACK.c.id > orphan.id,
            or_(CALLBACK.c.cost.is_not(None), CALLBACK.c.parts.is_not(None)))))
        applied = delivery.apply_callback(connection, orphan.team_id, replace(parsed, cost=None, parts=None)
                                          if later else parsed, orphan.received_at, message_id=orphan.found_id)
        if applied is None:  # deleted since
            continue
        problem = orphan.problem or (REPLY_DISAGREES if applied.disagrees(parsed) else None)
        connection.execute(update(CALLBACK).where(CALLBACK.c.id == orphan.id, CALLBACK.c.message_id.is_(None))
                           .values(message_id=applied.message_id, problem=problem))
        matched += 1
    db.session.commit()
    return matched


REVIEW_PAGE_SIZE = 50


@dataclass(frozen=True)
class ReviewPage:
    """One page of a team's flagged callbacks, newest first, with the cursors of the pages around it."""

    rows: list  # (ProviderCallback, campaign id of its message or None)
    older: int | None  # pass as `before` for the next page, None on the last
    newer: int | None  # pass as `after` for the previous page, None on the first


def flagged_callbacks(team_id: int, before: int | None = None, after: int | None = None,
                      size: int | None = None) -> ReviewPage:
    """A page of the team's callbacks flagged for a person, newest first, by keyset (id) so a deep page of
    a million rows costs what the first does (the partial index ix_provider_callback_team_flagged)."""
    size = size or REVIEW_PAGE_SIZE
    statement = (select(ProviderCallback, Message.campaign_id)
                 .outerjoin(Message, (Message.id == ProviderCallback.message_id) & (Message.team_id == team_id))
                 .where(ProviderCallback.team_id == team_id, ProviderCallback.problem.is_not(None)))
    if after is not None:  # the page before: the `size` oldest above `after`, shown newest first
        rows = db.session.execute(statement.where(ProviderCallback.id > after)
                                  .order_by(ProviderCallback.id).limit(size + 1)).all()
        newer_exists = len(rows) > size
        rows = rows[:size][::-1]
        return ReviewPage([tuple(row) for row in rows], rows[-1][0].id if rows else None,
                          rows[0][0].id if rows and newer_exists else None)
    if before is not None:
        statement = statement.where(ProviderCallback.id < before)
    rows = db.session.execute(statement.order_by(ProviderCallback.id.desc()).limit(size + 1)).all()
    older_exists = len(rows) > size
    rows = rows[:size]
    return ReviewPage([tuple(row) for row in rows], rows[-1][0].id if rows and older_exists else None,
                      rows[0][0].id if rows and before is not None else None)


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
    """Fit a value into its column; PostgreSQL refuses what is longer, NUL anywhere, and a lone surrogate
    (which a JSON body can spell as \\ud800)."""
    if value is None:
        return None
    if not value.isascii():  # ASCII can't hold a surrogate
        value = value.encode("utf-8", "replace").decode("utf-8")
    return (value.replace("\x00", "") if "\x00" in value else value)[:length]


def _fitted(parsed: ParsedCallback) -> ParsedCallback:
    """The parsed callback with every value fitted to its column, so matching and storing can't fail."""
    return replace(parsed, unique_id=_fit(parsed.unique_id, 100), reference=_fit(parsed.reference, 100),
                   raw_status=_fit(parsed.raw_status, 100), cause_code=_fit(parsed.cause_code, 100),
                   cost=_money(parsed.cost))


def _money(cost: Decimal | None) -> Decimal | None:
    """A cost as its column keeps it (5 decimals); 1e-999999999 is 0, not a database error."""
    return None if cost is None else cost.quantize(Decimal("0.00001"))
