"""A campaign's messages as people read them: keyset pages filtered by status or searched by number prefix,
each message's callback history, and the whole campaign as a streamed CSV.

Bounded at any size: a page reads at most PAGE_SIZE + 1 rows along an index (never OFFSET, never a count),
and a page whose filter the index can't apply (held vs queued, or a status within a number search) looks
through at most SCAN_LIMIT rows, then says so and offers to look further. Indexes used (models.Message):
ix_message_campaign_id_id, ix_message_campaign_status_id, ix_message_campaign_phone (varchar_pattern_ops).
"""

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Select, any_, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import UnaryExpression

from webapp.extensions import db
from webapp.models import CampaignList, Contact, Message, MessageKind, MessageStatus, ProviderCallback
from webapp.services.contacts import SEARCH_MAX_CHARS
from webapp.services.csvfiles import field_headers
from webapp.services.imports import field_labels

PAGE_SIZE = 50
# Rows a page with a filter the index can't apply reads before it stops and says so (about 20 ms on
# PostgreSQL when every row is a random heap read), in chunks that start at two pages' worth and double.
SCAN_LIMIT = 2_000
SCAN_FIRST_CHUNK = 2 * (PAGE_SIZE + 1)
EXPORT_CHUNK = 5_000
HISTORY_LIMIT = 50
E164_MAX_DIGITS = 15
BIGINT_MAX = 2**63 - 1  # an id cursor beyond it is refused before PostgreSQL answers "out of range"

# Filter value -> (status, held): held None means either. The labels are the words a marketer reads.
FILTERS: dict[str, tuple[MessageStatus, bool | None]] = {
    "queued": (MessageStatus.CREATED, False),
    "held": (MessageStatus.CREATED, True),
    "in_flight": (MessageStatus.SENDING, None),
    "sent": (MessageStatus.ACCEPTED, None),
    "delivered": (MessageStatus.DELIVERED, None),
    "undelivered": (MessageStatus.UNDELIVERED, None),
    "failed": (MessageStatus.FAILED, None),
    "unknown": (MessageStatus.UNKNOWN, None),
    "opted_out": (MessageStatus.OPTED_OUT, None),
    "cancelled": (MessageStatus.CANCELLED, None),
}
STATUS_WORDS = {
    MessageStatus.SENDING: "in flight",
    MessageStatus.ACCEPTED: "sent",
    MessageStatus.DELIVERED: "delivered",
    MessageStatus.UNDELIVERED: "undelivered",
    MessageStatus.FAILED: "failed",
    MessageStatus.UNKNOWN: "unknown",
    MessageStatus.OPTED_OUT: "opted out",
    MessageStatus.CANCELLED: "cancelled",
}
# The export's columns in the words of the page; contact fields go between the number and these.
# {currency} and {zone} are the team's, so a figure or a time never needs the README to be read.
EXPORT_COLUMNS = ["Phone number", "Status", "Reason", "Parts", "Estimated cost ({currency})", "Billed parts",
                  "Billed cost ({currency})", "Cost in the send reply ({currency})", "Sent at ({zone})",
                  "Last change ({zone})", "Provider message ID", "Our reference"]
CONTACT_CHUNK = 500  # contacts whose fields are read at once: a contact may hold up to 200 long fields


def status_word(status: MessageStatus, held: bool) -> str:
    """'queued', 'held', 'in flight', 'sent', ...: the status as the page and the export say it."""
    if status is MessageStatus.CREATED:
        return "held" if held else "queued"
    return STATUS_WORDS.get(status, str(status))


def number_prefix(typed: str | None) -> str:
    """The E.164 prefix a number search looks for: '+' and the digits typed, '' when there are none.

    Stored numbers are E.164, so spaces, dashes, brackets and a leading apostrophe (our exports write
    "'+1415…") are dropped, digits typed without '+' are read as starting with the country code, and a
    leading 00 (the international prefix) as '+'. Anything else, % and _ included, is dropped: they are
    never in a number, so they can't act as wildcards either. At most 15 digits, the longest number."""
    text = (typed or "")[:SEARCH_MAX_CHARS]
    digits = "".join(char for char in text if char.isascii() and char.isdigit())
    if not text.lstrip(" '").startswith("+") and digits.startswith("00"):
        digits = digits[2:]
    return "+" + digits[:E164_MAX_DIGITS] if digits else ""


def cursor_id(value: str | None) -> int | None:
    """An after/before id from the query string, or None if it isn't one (so a typo is not a 500)."""
    if not value or not value.isascii() or not value.isdigit() or len(value) > 19:
        return None
    number = int(value)
    return number if 0 < number <= BIGINT_MAX else None


@dataclass(frozen=True)
class MessagePage:
    """One page of messages in order, with the cursors of its neighbours (None: there is none)."""

    messages: list[Message]
    next_after: int | None
    prev_before: int | None
    # The page stopped after reading SCAN_LIMIT rows without finding PAGE_SIZE matches: more may follow.
    partial: bool = False
    scanned: int = 0


class _Walk:
    """The order a page walks and its keyset: by id, or by number then id when searching by number.

    A search walks ix_message_campaign_phone, so a prefix matching a million rows still reads only a
    page of them. That index uses varchar_pattern_ops (LIKE 'prefix%' can use it in any collation), so
    on PostgreSQL the order and the keyset are written with the pattern operators (~<~, ~>=~) it sorts
    by; the default < would sort by the collation and force a sort of every match."""

    def __init__(self, by_number: bool, backward: bool):
        self.by_number, self.backward = by_number, backward
        self.pattern_ops = _on_postgres()

    def order(self) -> list:
        """campaign_id first: see in_campaign."""
        by_campaign = Message.campaign_id.desc() if self.backward else Message.campaign_id.asc()
        by_id = Message.id.desc() if self.backward else Message.id.asc()
        if not self.by_number:
            return [by_campaign, by_id]
        if self.pattern_ops:
            by_number = UnaryExpression(Message.phone, modifier=operators.custom_op(
                "USING ~>~" if self.backward else "USING ~<~"))
        else:
            by_number = Message.phone.desc() if self.backward else Message.phone.asc()
        return [by_campaign, by_number, by_id]

    def beyond(self, key: tuple | None) -> list:
        """Rows after the key in walking order (before it when walking backward); all rows for None."""
        if key is None:
            return []
        if not self.by_number:
            return [Message.id < key[0] if self.backward else Message.id > key[0]]
        phone, message_id = key
        if self.pattern_ops:
            at_or_beyond = Message.phone.op("~<=~" if self.backward else "~>=~", is_comparison=True)(phone)
            strictly = Message.phone.op("~<~" if self.backward else "~>~", is_comparison=True)(phone)
        else:
            at_or_beyond = Message.phone <= phone if self.backward else Message.phone >= phone
            strictly = Message.phone < phone if self.backward else Message.phone > phone
        # The first condition is the index's range; the second breaks ties between equal numbers.
        return [at_or_beyond, or_(strictly, Message.id < message_id if self.backward else Message.id > message_id)]

    def key_of(self, campaign_id: int, message_id: int) -> tuple | None:
        if not self.by_number:
            return (message_id,)
        phone = db.session.scalar(select(Message.phone).where(Message.id == message_id,
                                                              Message.campaign_id == campaign_id))
        return None if phone is None else (phone, message_id)

    def prefix(self, prefix: str) -> list:
        """Numbers starting with `prefix`, % and _ taken literally."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conditions = [Message.phone.like(escaped, escape="\\")]
        if not self.pattern_ops:
            # SQLite's LIKE ignores case, so it can't use the index as a range: give it the range too.
            conditions += [Message.phone >= prefix, Message.phone < prefix[:-1] + chr(ord(prefix[-1]) + 1)]
        return conditions


def _on_postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def in_campaign(campaign_id: int):
    """The campaign's rows, written so that only the campaign's own indexes can give them in order.

    On PostgreSQL, `campaign_id = ANY(ARRAY[c])`, not `campaign_id = c`: with `=` the planner takes
    campaign_id for a constant, reduces ORDER BY campaign_id, id to ORDER BY id, and may walk the primary
    key instead, reading other campaigns' rows (measured: 100,000 rows read for a page of 31 when the
    campaign's newest rows interleave with another's; 50 ms instead of 0.1 ms). With ANY it keeps
    campaign_id in the order, which only ix_message_campaign_* provide, each positioned at the cursor."""
    if _on_postgres():
        return Message.campaign_id == any_(postgresql.array([campaign_id]))
    return Message.campaign_id == campaign_id


def page(campaign_id: int, status_filter: str = "", prefix: str = "", after: int | None = None,
         before: int | None = None) -> MessagePage:
    """A page of the campaign's messages: the first, the one after message `after`, or the one before `before`.

    Ordered by id, or by number when searching (prefix from number_prefix). Unknown filters show every
    status. A page before the first one is the first page, full."""
    backward = before is not None
    walk = _Walk(bool(prefix), backward)
    cursor = before if backward else after
    key = walk.key_of(campaign_id, cursor) if cursor is not None else None
    if cursor is not None and key is None:  # a cursor from another campaign or a deleted row: start over
        return page(campaign_id, status_filter, prefix)
    where = [in_campaign(campaign_id), Message.kind == MessageKind.CAMPAIGN]
    if prefix:
        where += walk.prefix(prefix)
    status, held = FILTERS.get(status_filter, (None, None))
    if status is not None and not prefix:
        where.append(Message.status == status)  # ix_message_campaign_status_id walks it in id order
    if held is None and (status is None or not prefix):
        rows = list(db.session.scalars(select(Message).where(*where, *walk.beyond(key)).order_by(*walk.order())
                                       .limit(PAGE_SIZE + 1)))
        partial, scanned, edge = False, 0, None
    else:
        # The index can't tell held from queued, nor (walking numbers) one status from another.
        rows, partial, scanned, edge = _scan(walk, where, key, status, held)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    if not backward:
        next_after = rows[-1].id if more else edge
        prev_before = (rows[0].id if rows else after) if after is not None else None
        return MessagePage(rows, next_after, prev_before, partial, scanned)
    if not more and not partial:
        return page(campaign_id, status_filter, prefix)
    rows.reverse()
    return MessagePage(rows, rows[-1].id if rows else edge, rows[0].id if more else edge, partial, scanned)


def _scan(walk: _Walk, where: list, key: tuple | None, status: MessageStatus | None,
          held: bool | None) -> tuple[list[Message], bool, int, int | None]:
    """Walk the index in chunks of narrow rows, keeping those of this status (and held or not) until
    PAGE_SIZE + 1 match or SCAN_LIMIT rows were read: (matches, stopped early, rows read, last row read)."""
    matched: list[int] = []
    scanned, last, exhausted, chunk_size = 0, key, False, SCAN_FIRST_CHUNK
    while not exhausted and scanned < SCAN_LIMIT and len(matched) <= PAGE_SIZE:
        wanted = min(chunk_size, SCAN_LIMIT - scanned)
        chunk_size *= 2
        chunk = db.session.execute(select(Message.id, Message.phone, Message.status, Message.held)
                                   .where(*where, *walk.beyond(last)).order_by(*walk.order()).limit(wanted)).all()
        exhausted = len(chunk) < wanted
        for row in chunk:
            scanned += 1
            last = (row.phone, row.id) if walk.by_number else (row.id,)
            if (status is None or row.status == status) and (held is None or row.held is held):
                matched.append(row.id)
                if len(matched) > PAGE_SIZE:
                    break
    by_id = {message.id: message for message in db.session.scalars(select(Message).where(Message.id.in_(matched)))}
    partial = len(matched) <= PAGE_SIZE and not exhausted
    return [by_id[i] for i in matched if i in by_id], partial, scanned, last[-1] if partial else None


def cost_flags(message: Message) -> dict[str, bool]:
    """Which billing figures disagree: the provider's billed figure with our estimate, the send reply with it."""
    billed_known = message.billed_cost is not None or message.billed_parts is not None
    differs_from_estimate = billed_known and (
        (message.billed_cost is not None and message.billed_cost != message.estimated_cost)
        or (message.billed_parts is not None and message.billed_parts != message.parts))
    reply_known = message.reply_cost is not None or message.reply_parts is not None
    reply_differs = billed_known and reply_known and (
        message.reply_cost != message.billed_cost or message.reply_parts != message.billed_parts)
    return {"estimate": bool(differs_from_estimate), "reply": bool(reply_differs)}


def callback_history(message_id: int, team_id: int, limit: int = HISTORY_LIMIT) -> tuple[list[ProviderCallback], bool]:
    """The callbacks applied to a message, newest first, at most `limit`; True when there are more."""
    rows = list(db.session.scalars(
        select(ProviderCallback).where(ProviderCallback.message_id == message_id, ProviderCallback.team_id == team_id)
        .order_by(ProviderCallback.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def zone_of(name: str | None) -> ZoneInfo:
    """The team's time zone, UTC if its name is unknown to this machine."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_time(moment: datetime | None, zone: ZoneInfo, seconds: bool = True) -> str:
    """A stored (naive UTC) moment as wall-clock time in `zone`."""
    if moment is None:
        return ""
    return moment.replace(tzinfo=UTC).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


class _Clock:
    """local_time for a million rows: the zone's offset is looked up once per minute of UTC (offsets
    change on minute boundaries), at most CACHE minutes remembered."""

    CACHE = 4096

    def __init__(self, zone: ZoneInfo):
        self.zone, self.offsets = zone, {}

    def __call__(self, moment: datetime | None) -> str:
        if moment is None:
            return ""
        minute = moment.replace(second=0, microsecond=0)
        offset = self.offsets.get(minute)
        if offset is None:
            if len(self.offsets) >= self.CACHE:
                self.offsets.clear()
            offset = self.offsets[minute] = minute.replace(tzinfo=UTC).astimezone(self.zone).utcoffset()
        return (moment + offset).isoformat(" ", "seconds")


def _export_chunk(campaign_id: int, after_id: int) -> Select:
    return (select(Message.id, Message.contact_id, Message.phone, Message.status, Message.held, Message.parts,
                   Message.estimated_cost, Message.billed_parts, Message.billed_cost, Message.reply_cost,
                   Message.unique_id, Message.reference, Message.sent_at, Message.updated_at, Message.error)
            .where(in_campaign(campaign_id), Message.kind == MessageKind.CAMPAIGN, Message.id > after_id)
            .order_by(Message.campaign_id, Message.id).limit(EXPORT_CHUNK))


def export_header(field_labels: dict[str, str], zone: str, currency: str) -> list[str]:
    """The number, the contact fields as they were uploaded (csvfiles.field_headers keeps each name
    unique), then the message's columns."""
    ours = [name.format(zone=zone, currency=currency).replace(" ()", "") for name in EXPORT_COLUMNS]
    return [ours[0], *field_headers(ours, field_labels.values()), *ours[1:]]


def _contact_fields(contact_ids: list[int]) -> dict[int, dict]:
    return dict(db.session.connection().execute(
        select(Contact.id, Contact.attributes).where(Contact.id.in_(contact_ids))).all())


def export_rows(campaign_id: int, zone_name: str | None, currency: str = "") -> Iterator[list]:
    """export_header, then every message of the campaign once, in id order: its number, its contact's
    fields (empty for a contact deleted since), its status in words, costs and times in the team's zone.

    Read in keyset chunks of EXPORT_CHUNK narrow rows, and the chunk's contact fields CONTACT_CHUNK contacts
    at a time, so memory stays flat at any size; the read transaction ends after each read, so a long
    download never holds back PostgreSQL's vacuum of the busy message table. Feed it to
    csvfiles.stream_csv, which neutralises formula-looking cells."""
    zone = zone_of(zone_name)
    labels = field_labels(list(db.session.scalars(
        select(CampaignList.list_id).where(CampaignList.campaign_id == campaign_id))))
    keys = list(labels)
    clock, number = _Clock(zone), functools.lru_cache(maxsize=1024)(plain_number)
    yield export_header(labels, zone.key, currency)
    db.session.rollback()
    after_id = 0
    while True:
        rows = db.session.connection().execute(_export_chunk(campaign_id, after_id)).all()
        db.session.rollback()  # reads only: ends the transaction (and its snapshot) between chunks
        for start in range(0, len(rows), CONTACT_CHUNK):
            part = rows[start:start + CONTACT_CHUNK]
            fields = _contact_fields([row.contact_id for row in part if row.contact_id is not None]) if keys else {}
            db.session.rollback()
            for (_id, contact_id, phone, status, held, parts, estimated, billed_parts, billed, reply, unique_id,
                 reference, sent_at, updated_at, error) in part:
                values = fields.get(contact_id) or {}
                yield [phone, *(_text(values.get(key)) for key in keys), status_word(status, held), error or "",
                       parts, number(estimated), billed_parts, number(billed), number(reply), clock(sent_at),
                       clock(updated_at), unique_id or "", reference]
        if len(rows) < EXPORT_CHUNK:
            return
        after_id = rows[-1].id


def _text(value) -> str:
    """A contact field as a cell: imports store text; anything else (None, a number set by hand) as text."""
    return "" if value is None else value if isinstance(value, str) else str(value)


def plain_number(value: Decimal | None) -> Decimal | None:
    """A money figure without the column's trailing zeros (0.01500 -> 0.015, 2.00000 -> 2)."""
    if value is None:
        return None
    text = format(value, "f")
    return Decimal(text.rstrip("0").rstrip(".") if "." in text else text)
