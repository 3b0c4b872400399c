"""Applying a delivery callback to its message: matched by reference or uniqueid, moved only upwards.

Callbacks arrive duplicated, out of order and late (DOMAIN.md §5). A message's status therefore only
ever climbs this order, and a callback that would move it down or sideways changes nothing:

    created, sending  <  unknown  <  accepted  <  delivered | undelivered (final)

An UNKNOWN message (the reply never came, or its worker died mid-POST) becomes accepted or final when
its callback arrives: that is how the engine learns it was sent. If a person had meanwhile resent it
("resend unconfirmed"), the first attempt is marked sent twice, so the campaign counts it honestly.
An unrecognised status word is stored with the callback and never applied.

The cost and parts a callback reports are the billed figures (the provider's latest word counts: the
last to arrive, except that a report from before the message's state, a late "sent" after "delivered",
is older news and doesn't replace the figures of the report that moved it on); the send reply's own
figures stay in reply_parts / reply_cost and the estimate in estimated_cost, so a difference is kept,
and a callback that disagrees with the reply is flagged (REPLY_DISAGREES).

Everything here is Core SQL on a connection the caller gives (one transaction, or PostgreSQL's single
statement in webapp.services.callbacks), and every change is a plain UPDATE of `message`, so the
database's triggers on that table see each one. The UPDATE is guarded: its WHERE clause lets through
only a row the callback changes (a higher status, new billed figures, a first uniqueid), so a duplicate
writes nothing, and two callbacks racing each other can't move a message down (PostgreSQL re-checks
the guard and recomputes the CASE on the row version it finally updates).
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache

from sqlalchemy import (
    Connection,
    DateTime,
    Integer,
    Numeric,
    String,
    Text,
    Update,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
    update,
)

from webapp.models import Message, MessageStatus, utcnow
from webapp.provider.delivery_reports import DeliveryState, ParsedCallback

RANK = {
    MessageStatus.CREATED: 0,
    MessageStatus.SENDING: 0,
    MessageStatus.UNKNOWN: 1,
    MessageStatus.ACCEPTED: 2,
    MessageStatus.DELIVERED: 3,
    MessageStatus.UNDELIVERED: 3,
}
TARGET = {
    DeliveryState.SENT: MessageStatus.ACCEPTED,
    DeliveryState.DELIVERED: MessageStatus.DELIVERED,
    DeliveryState.FAILED: MessageStatus.UNDELIVERED,
}
_LOWER = {state: [s for s, rank in RANK.items() if rank < RANK[target]] for state, target in TARGET.items()}
_HIGHER = {state: [s for s, rank in RANK.items() if rank > RANK[target]] for state, target in TARGET.items()}
REPLY_DISAGREES = "billed differs from send reply"

MESSAGE = Message.__table__
# The parameters every statement here takes (apply_params builds them), named "cb_" + key: SQLAlchemy
# keeps a column's own name for itself in INSERT and UPDATE.
PARAMETERS = {
    "team_id": Integer(), "reference": String(), "unique_id": String(), "message_id": Integer(),
    "parts": Integer(), "cost": Numeric(12, 5), "at": DateTime(), "error": Text(),
}


@dataclass(frozen=True)
class Applied:
    """The message a callback was matched to, the send reply's figures, and whether the row changed."""

    message_id: int
    reply_parts: int | None
    reply_cost: Decimal | None
    changed: bool

    def disagrees(self, parsed: ParsedCallback) -> bool:
        """True when the callback's cost or parts differ from what the send reply said."""
        return ((parsed.cost is not None and self.reply_cost is not None and parsed.cost != self.reply_cost)
                or (parsed.parts is not None and self.reply_parts is not None and parsed.parts != self.reply_parts))


def param(name: str):
    """The typed bound parameter `name` of PARAMETERS (cost cast in SQL: psycopg sends no type for a
    Decimal that is None, and PostgreSQL can't guess one in `IS NOT NULL`)."""
    value = bindparam(f"cb_{name}", type_=PARAMETERS[name])
    return cast(value, PARAMETERS[name]) if name == "cost" else value


def matched_message_id():
    """The team's message a callback is about: by our reference first, else the provider's uniqueid.

    A scalar expression (two indexed probes; COALESCE skips the second when the first finds the row)."""
    by_reference = (select(MESSAGE.c.id)
                    .where(MESSAGE.c.reference == param("reference"), MESSAGE.c.team_id == param("team_id"))
                    .scalar_subquery())
    by_unique_id = (select(MESSAGE.c.id)
                    .where(MESSAGE.c.team_id == param("team_id"), MESSAGE.c.unique_id == param("unique_id"))
                    .order_by(MESSAGE.c.id).limit(1).scalar_subquery())
    return func.coalesce(by_reference, by_unique_id)


@cache
def update_statement(state: DeliveryState, by_id: bool = False) -> Update:
    """The guarded UPDATE for a callback in `state` (a known one), matched as matched_message_id() says or
    by :message_id, RETURNING the row's id and reply figures; built once per state."""
    which = and_(MESSAGE.c.id == param("message_id"), MESSAGE.c.team_id == param("team_id")) if by_id \
        else MESSAGE.c.id == matched_message_id()
    return guarded_update(state, which).returning(MESSAGE.c.id, MESSAGE.c.reply_parts, MESSAGE.c.reply_cost)


def guarded_update(state: DeliveryState, which) -> Update:
    """UPDATE the message `which` selects to what a callback in `state` says, only if that changes it."""
    c = MESSAGE.c
    at = param("at")
    target = TARGET[state]
    below = c.status.in_(_constants(_LOWER[state]))
    # A report from before the message's current state (a late "sent" after "delivered") is older news:
    # its figures don't replace those of the report that moved it further.
    current = [c.status.not_in(_constants(_HIGHER[state]))] if _HIGHER[state] else []

    def billed(column, value):
        figure = func.coalesce(value, column)
        return case((current[0], figure), else_=column) if current else figure

    values: dict = {
        "unique_id": func.coalesce(c.unique_id, param("unique_id")),
        "billed_parts": billed(c.billed_parts, param("parts")),
        "billed_cost": billed(c.billed_cost, param("cost")),
        "updated_at": at,
    }
    changes = [
        and_(c.unique_id.is_(None), param("unique_id").is_not(None)),
        and_(*current, param("parts").is_not(None), c.billed_parts.is_distinct_from(param("parts"))),
        and_(*current, param("cost").is_not(None), c.billed_cost.is_distinct_from(param("cost"))),
    ]
    values["status"] = case((below, constant(target)), else_=c.status)
    values["sent_twice"] = case((below, c.resent), else_=c.sent_twice)
    if RANK[target] == 3:
        values["finished_at"] = case((below, at), else_=c.finished_at)
    if target is MessageStatus.UNDELIVERED:  # say why; a late report never rewrites the reason
        values["error"] = case((below, param("error")), else_=c.error)
    return update(MESSAGE).where(which, or_(below, *changes)).values(**values)


def constant(value: str):
    """One of our own fixed words written into the SQL, not bound: the statement above repeats each status
    test in several places, and a bound value is sent (and encoded) once per place, every time."""
    return literal_column("'" + str(value).replace("'", "''") + "'")


def _constants(values) -> list:
    return [constant(value) for value in values]


def apply_params(team_id: int, parsed: ParsedCallback, at: datetime | None = None,
                 message_id: int | None = None) -> dict:
    """The bound values of the statements above for one callback."""
    failed = TARGET.get(parsed.state) is MessageStatus.UNDELIVERED
    return {"cb_team_id": team_id, "cb_reference": parsed.reference, "cb_unique_id": parsed.unique_id,
            "cb_message_id": message_id, "cb_parts": parsed.parts, "cb_cost": parsed.cost, "cb_at": at or utcnow(),
            "cb_error": undelivered_reason(parsed) if failed else None}


def apply_callback(connection: Connection, team_id: int, parsed: ParsedCallback, at: datetime | None = None,
                   message_id: int | None = None) -> Applied | None:
    """Move the matching message up to what the callback says; None when no message matches.

    The guarded UPDATE comes first (a write first: SQLite takes its write lock at once rather than
    upgrading a read); only when it changed nothing does a SELECT say whether the message exists.
    With `message_id` the message is that row of the team (the rematch sweep, which matched it)."""
    params = apply_params(team_id, parsed, at, message_id)
    by_id = message_id is not None
    if parsed.state in TARGET:  # an unknown word is never applied, not even its figures
        row = connection.execute(update_statement(parsed.state, by_id), params).first()
        if row is not None:
            return Applied(row.id, row.reply_parts, row.reply_cost, changed=True)
    which = (MESSAGE.c.id == message_id) & (MESSAGE.c.team_id == team_id) if by_id \
        else MESSAGE.c.id == matched_message_id()
    row = connection.execute(select(MESSAGE.c.id, MESSAGE.c.reply_parts, MESSAGE.c.reply_cost).where(which),
                             params).first()
    return None if row is None else Applied(row.id, row.reply_parts, row.reply_cost, changed=False)


def undelivered_reason(parsed: ParsedCallback) -> str:
    """The provider's own words for a failed delivery: its status word and cause code, as reported."""
    word = (parsed.raw_status or "undelivered").strip()[:100]
    return f"Not delivered: the provider reported {word}" + (f" (cause {parsed.cause_code[:40]})"
                                                              if parsed.cause_code else "")
