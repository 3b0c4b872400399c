"""Freezing a campaign's audience at launch: one message row per eligible recipient, in bulk.

Each row holds the text that recipient gets (rendered and with the footer), its parts, its estimated
cost and a unique reference, so what is sent never depends on the lists, the template or the prices
changing later. The rows come from the same iterator as the audience preview and summary
(webapp.services.audience.recipient_messages), with the text frozen at launch: lists in order, a
number met in an earlier list is a duplicate, then opted out, landline, invalid, and the team's
frequency cap. Every exclusion is counted by reason on the campaign.

The whole audience is written in one transaction (COPY on PostgreSQL, multi-row INSERTs elsewhere)
together with `prepared_at`, so a job killed half-way leaves nothing and its re-run starts clean.
"""

import secrets
from collections import Counter
from datetime import datetime

from sqlalchemy import insert, update

from webapp.extensions import db
from webapp.models import (
    Campaign,
    CampaignStatus,
    Message,
    MessageKind,
    MessageStatus,
    SenderNumber,
    Team,
    utcnow,
)
from webapp.services.audience import recently_messaged, recipient_messages
from webapp.services.campaign_states import fail, sending_problem
from webapp.services.quiet_hours import zones_for

CHUNK = 5_000  # rows per INSERT or COPY write
_COLUMNS = ("team_id", "campaign_id", "contact_id", "kind", "phone", "sender", "text", "encoding", "parts",
            "estimated_cost", "is_mms", "reference", "status", "attempts", "held", "resent", "sent_twice",
            "created_at", "updated_at")


def freeze(campaign_id: int, now: datetime | None = None) -> bool:
    """Create the campaign's message rows once; False when it was already done or is not sending."""
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None or campaign.status is not CampaignStatus.SENDING or campaign.prepared_at is not None:
        return False
    problem = sending_problem(campaign)
    if problem:  # its sender or lists were deleted since launch: it can't go on, and says why
        fail(campaign_id, problem)
        return False
    now = now or utcnow()
    team = db.session.get(Team, campaign.team_id)
    sender = db.session.get(SenderNumber, campaign.sender_number_id).number
    excluded: Counter = Counter()
    writer = _Writer(campaign.id, team.id, sender, campaign.is_mms, now)
    recipients = zone_fallbacks = 0
    for message in recipient_messages(campaign, excluded, frozenset(recently_messaged(team, now))):
        writer.add(message.contact_id, message.phone, message.text, message.encoding, message.parts, message.cost)
        recipients += 1
        if campaign.quiet_hours and not zones_for(message.phone):
            zone_fallbacks += 1
    writer.flush()
    prepared = db.session.execute(
        update(Campaign).where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.SENDING,
                               Campaign.prepared_at.is_(None))
        .values(prepared_at=now, recipients=recipients, exclusions=dict(excluded), zone_fallbacks=zone_fallbacks)
    ).rowcount
    if not prepared:  # cancelled (or prepared by another job) meanwhile: keep nothing of this run
        db.session.rollback()
        return False
    db.session.commit()
    return True


class _Writer:
    """Buffers message rows and writes them CHUNK at a time inside the caller's transaction."""

    def __init__(self, campaign_id: int, team_id: int, sender: str, is_mms: bool, now: datetime):
        self.fixed = (team_id, campaign_id)
        self.sender, self.is_mms, self.now = sender, is_mms, now
        self.rows: list[tuple] = []

    def add(self, contact_id, phone, text, encoding, parts, cost) -> None:
        self.rows.append((contact_id, phone, text, encoding, parts, cost, secrets.token_urlsafe(16)))
        if len(self.rows) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        rows, self.rows = self.rows, []
        team_id, campaign_id = self.fixed
        connection = db.session.connection()
        if connection.dialect.name == "postgresql":
            driver = connection.connection.driver_connection
            with driver.cursor() as cursor, cursor.copy(f"COPY message ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
                for contact_id, phone, text, encoding, parts, cost, reference in rows:
                    copy.write_row((team_id, campaign_id, contact_id, MessageKind.CAMPAIGN.value, phone, self.sender,
                                    text, encoding.value, parts, cost, self.is_mms, reference,
                                    MessageStatus.CREATED.value, 0, False, False, False, self.now, self.now))
            return
        db.session.execute(insert(Message), [
            dict(team_id=team_id, campaign_id=campaign_id, contact_id=contact_id, kind=MessageKind.CAMPAIGN,
                 phone=phone, sender=self.sender, text=text, encoding=encoding, parts=parts, estimated_cost=cost,
                 is_mms=self.is_mms, reference=reference, status=MessageStatus.CREATED, attempts=0, held=False,
                 resent=False, sent_twice=False, created_at=self.now, updated_at=self.now)
            for contact_id, phone, text, encoding, parts, cost, reference in rows
        ])
