"""Opt-outs: the team's suppression list, kept by hand, by CSV and by inbound STOP messages.

A suppressed number is never sent to, whatever list it is in; the campaign engine checks
is_suppressed() again at send time.
"""

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from webapp.extensions import db
from webapp.models import InboundAction, InboundMessage, Suppression, SuppressionSource
from webapp.provider.delivery_reports import parse_callback
from webapp.services.csvfiles import guess_phone_column, iter_records, read_preview, sniff_format
from webapp.services.phones import Rejection, normalize

OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN_WORDS = frozenset({"START", "UNSTOP"})
_SENDER_KEYS = ("from", "sender", "msisdn", "originator", "source", "src", "mobile", "phone")
_TEXT_KEYS = ("text", "message", "body", "msg", "content", "sms")


def keyword_action(text: str | None) -> InboundAction:
    """'opt_out', 'opt_in' or 'none': the first word decides, case and punctuation ignored ('Stop.' opts out)."""
    words = (text or "").strip().split()
    word = "".join(ch for ch in words[0] if ch.isalnum()).upper() if words else ""
    if word in OPT_OUT_WORDS:
        return InboundAction.OPT_OUT
    if word in OPT_IN_WORDS:
        return InboundAction.OPT_IN
    return InboundAction.NONE


def is_suppressed(team_id: int, phone: str) -> bool:
    """True when the number opted out of this team's messages (checked again at send time)."""
    return db.session.scalar(
        select(Suppression.id).where(Suppression.team_id == team_id, Suppression.phone == phone)
    ) is not None


def suppress(team_id: int, phone: str, source: SuppressionSource, note: str = "") -> bool:
    """Add a number to the suppression list; False when it was already there.

    A savepoint absorbs the race of two STOPs for the same number arriving at once (providers retry).
    """
    if is_suppressed(team_id, phone):
        return False
    try:
        with db.session.begin_nested():
            db.session.add(Suppression(team_id=team_id, phone=phone, source=source, note=note[:500]))
    except IntegrityError:
        return False
    return True


def suppress_file(path: str, team_id: int, country: str) -> tuple[int, int, int]:
    """Opt out every number of a CSV file (its phone column, else its first): (added, already there, not a number)."""
    fmt = sniff_format(path)
    headers, _ = read_preview(path, fmt, rows=0)
    column = guess_phone_column(headers)
    records = iter_records(path, fmt)
    if column is None:  # no header we recognise: treat the first line as data too
        column = 0
        records = _with_first(headers, records)
    known = set(db.session.scalars(select(Suppression.phone).where(Suppression.team_id == team_id)))
    added = already = rejected = 0
    for _, record in records:
        try:
            phone = normalize(record[column] if column < len(record) else "", country).e164
        except Rejection:
            rejected += 1
            continue
        if phone in known:
            already += 1
            continue
        known.add(phone)
        db.session.add(Suppression(team_id=team_id, phone=phone, source=SuppressionSource.CSV))
        added += 1
    return added, already, rejected


def _with_first(first: list[str], records):
    yield 1, first
    yield from records


def record_inbound(team, body: bytes, content_type: str | None, query_string: str) -> InboundMessage:
    """Keep an inbound SMS raw; STOP and its synonyms opt the sender out, START and UNSTOP opt back in."""
    fields = parse_callback(body, content_type, query_string).fields
    sender = next((fields[key] for key in _SENDER_KEYS if fields.get(key)), None)
    text = next((fields[key] for key in _TEXT_KEYS if fields.get(key) is not None), None)
    action = keyword_action(text)
    message = InboundMessage(team_id=team.id, content_type=(content_type or "")[:200],
                             body=(body.decode("utf-8", "replace") or query_string).replace("\x00", ""),
                             sender=(sender or "").replace("\x00", "")[:40] or None,
                             text=text and text.replace("\x00", ""), action=action)
    db.session.add(message)
    if action == InboundAction.NONE or not sender:
        return message
    try:
        phone = normalize(sender, team.default_country).e164
    except Rejection:
        message.action = InboundAction.BAD_SENDER
        return message
    if action == InboundAction.OPT_OUT:
        suppress(team.id, phone, SuppressionSource.INBOUND, f"replied {text.strip()[:80]!r}")
    else:
        # START undoes only an opt-out that came by text message; one recorded by hand or from a
        # file stays until a person removes it.
        db.session.execute(delete(Suppression).where(Suppression.team_id == team.id, Suppression.phone == phone,
                                                     Suppression.source == SuppressionSource.INBOUND))
    return message
