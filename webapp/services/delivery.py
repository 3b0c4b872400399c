"""Applying a delivery callback to its message: matched by reference or uniqueid, moved only upwards.

Callbacks arrive duplicated, out of order and late (DOMAIN.md §5). A message's status therefore only
ever climbs this order, and a callback that would move it down or sideways changes nothing:

    created, sending  <  unknown  <  accepted  <  delivered | undelivered (final)

An UNKNOWN message (the reply never came, or its worker died mid-POST) becomes accepted or final when
its callback arrives: that is how the engine learns it was sent. If a person had meanwhile resent it
("resend unconfirmed"), the first attempt is marked sent twice, so the campaign counts it honestly.
An unrecognised status word is stored with the callback and never applied.
"""

from datetime import datetime

from sqlalchemy import case, select, update

from webapp.extensions import db
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


def find_message(team_id: int, reference: str | None, unique_id: str | None) -> int | None:
    """The id of the team's message this callback is about: by our reference first, else the provider's id."""
    if reference:
        found = db.session.scalar(select(Message.id).where(Message.reference == reference,
                                                           Message.team_id == team_id))
        if found is not None:
            return found
    if unique_id:
        return db.session.scalar(select(Message.id).where(Message.team_id == team_id,
                                                          Message.unique_id == unique_id).limit(1))
    return None


def apply_callback(team_id: int, parsed: ParsedCallback, at: datetime | None = None) -> int | None:
    """Move the matching message up to what the callback says; returns its id, or None when unmatched.

    One guarded UPDATE: the WHERE clause lists the statuses below the target, so a duplicate or a late
    "sent" after "delivered" matches no row, and two callbacks racing each other can't move it down.
    """
    message_id = find_message(team_id, parsed.reference, parsed.unique_id)
    if message_id is None:
        return None
    target = TARGET.get(parsed.state)
    values: dict = {"updated_at": at or utcnow()}
    if parsed.unique_id:
        values["unique_id"] = case((Message.unique_id.is_(None), parsed.unique_id), else_=Message.unique_id)
    # The provider's latest figures are the billed truth; the estimate stays beside them.
    if parsed.parts is not None:
        values["billed_parts"] = parsed.parts
    if parsed.cost is not None:
        values["billed_cost"] = parsed.cost
    if target is not None:
        if target is MessageStatus.UNDELIVERED:  # say why, for the campaign page and the export
            values["error"] = _undelivered_reason(parsed)
        moved = db.session.execute(
            update(Message).where(Message.id == message_id, Message.status.in_(_LOWER[parsed.state]))
            .values(status=target, sent_twice=Message.resent, **_final(target, at), **values)
        ).rowcount
        if moved:
            return message_id
    values.pop("error", None)  # a late or duplicate report never rewrites the reason of a final state
    db.session.execute(update(Message).where(Message.id == message_id).values(**values))
    return message_id


def _undelivered_reason(parsed: ParsedCallback) -> str:
    """The provider's own words for a failed delivery: its status word and cause code, as reported."""
    word = (parsed.raw_status or "undelivered").strip()[:100]
    return f"Not delivered: the provider reported {word}" + (f" (cause {parsed.cause_code[:40]})"
                                                              if parsed.cause_code else "")


def _final(target: MessageStatus, at: datetime | None) -> dict:
    return {"finished_at": at or utcnow()} if RANK[target] == 3 else {}
