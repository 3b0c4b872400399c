"""What a launched campaign's page shows, at any size, without counting its messages.

Totals come from the tallies (webapp.services.tallies); figures that depend on the clock (the first
held message's opening, unconfirmed messages, sent messages still without a final report) come from
index ranges bounded by what the page lists or caps, never from a scan of the campaign's rows.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select

from webapp.extensions import db
from webapp.models import Campaign, CampaignStatus, Message, MessageKind, MessageStatus, utcnow
from webapp.services import campaign_states, tallies

COUNT_CAP = 1_000  # counts of listed rows stop here ("1,000 or more"): bounded by what is shown
LISTED = 20  # sent messages still without a final report, listed by the oldest


@dataclass
class Progress:
    """Everything the status fragment renders, computed in a bounded number of indexed queries."""

    figures: tallies.Figures
    held_until: datetime | None = None
    unconfirmed: int = 0
    awaiting: list[Message] = field(default_factory=list)  # sent longer ago than the coverage window
    awaiting_count: int = 0  # how many such messages, up to COUNT_CAP
    rate: float = 0.0  # messages posted per second over the last minute
    seconds_left: float | None = None  # at that rate, for what is still queued
    timeline: list[tuple] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return self.figures.count("delivered")

    @property
    def reported(self) -> int:
        """Sent messages whose delivery report gave the last word (delivered or undelivered)."""
        return self.figures.count(*tallies.FINAL)

    @property
    def delivery_rate(self) -> int | None:
        """Delivered, as a share of the messages with a final report (rounded down: 299 of 300 is not 100%)."""
        return self.delivered * 100 // self.reported if self.reported else None

    @property
    def coverage(self) -> int | None:
        """The share of sent messages that have a final state."""
        sent = self.figures.sent
        return int(self.reported * 100 / sent) if sent else None

    @property
    def awaiting_reports(self) -> int:
        """Posted messages that still expect a report (in flight, accepted, or unknown)."""
        return self.figures.count("sending", "accepted", "unknown")


def progress(campaign: Campaign, coverage_seconds: int, now: datetime | None = None) -> Progress:
    """The page's figures for one campaign, as of `now`."""
    now = now or utcnow()
    result = Progress(figures=tallies.figures(campaign.id))
    if result.figures.count("held"):
        result.held_until = db.session.scalar(
            select(Message.not_before).where(Message.campaign_id == campaign.id,
                                             Message.status == MessageStatus.CREATED,
                                             Message.not_before > now, Message.held.is_(True))
            .order_by(Message.not_before).limit(1))
    if result.figures.count("unknown") and campaign.status in (CampaignStatus.SENDING, CampaignStatus.PAUSED,
                                                                 CampaignStatus.COMPLETED):
        result.unconfirmed = _capped(campaign_states.unconfirmed(campaign.id, now).with_only_columns(Message.id))
    if result.figures.count("accepted"):
        overdue = select(Message).where(
            Message.campaign_id == campaign.id, Message.kind == MessageKind.CAMPAIGN,
            Message.status == MessageStatus.ACCEPTED, Message.sent_at <= now - timedelta(seconds=coverage_seconds))
        result.awaiting = db.session.scalars(overdue.order_by(Message.sent_at).limit(LISTED)).all()
        if result.awaiting:
            result.awaiting_count = _capped(overdue.with_only_columns(Message.id))
    if campaign.launched_at is not None:
        result.timeline = tallies.minutes(campaign.id)
    if campaign.status is CampaignStatus.SENDING and result.timeline:
        result.rate = _rate(result.timeline, campaign.launched_at, now)
        queued = result.figures.count("created")
        result.seconds_left = queued / result.rate if result.rate and queued else None
    return result


def _rate(timeline: list[tuple], launched_at: datetime, now: datetime) -> float:
    """Messages posted per second over the current minute and the one before (the timeline's resolution)."""
    since = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    posted = sum(row[1] for row in timeline if row[0] >= since)
    seconds = (now - max(since, launched_at)).total_seconds()
    return posted / seconds if seconds >= 1 else 0.0


def _capped(query) -> int:
    """COUNT of at most COUNT_CAP rows of a query: a figure for the page, bounded whatever the campaign."""
    return db.session.scalar(select(func.count()).select_from(query.limit(COUNT_CAP).subquery()))


def spend_against(figures: tallies.Figures, cap: Decimal | None) -> int | None:
    """Spend as a share of the budget cap, for its bar; None without a cap."""
    return min(100, int(figures.spend * 100 / cap)) if cap else None
