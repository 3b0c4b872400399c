"""The team's overview (the dashboard): recent campaigns with their figures, what runs now, spend by month and sender.

Nothing here reads the message table, so the page costs the same for ten messages or a billion. A
campaign's figures come from its tallies, for every listed campaign in one query (tallies.figures_of);
spend over time from the timeline (campaign_minute) plus the deltas not folded into it yet
(tally_delta), so the months add up to the campaigns' own spend at any moment, not 5 s later. The
month sums read whole-campaign tallies where a campaign's timeline lies in one month (see _spend), so
their cost follows the number of campaigns, not the minutes they ran.
"""

from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Integer, case, func, literal_column, select, union_all
from sqlalchemy.orm import joinedload

from webapp.extensions import db
from webapp.models import (
    Campaign,
    CampaignMinute,
    CampaignStatus,
    CampaignTally,
    SenderNumber,
    TallyDelta,
    Team,
    utcnow,
)
from webapp.services import tallies

RECENT = 20  # launched campaigns listed, the latest first
RUNNING_SHOWN = 25  # running campaigns listed; the others are counted
MONTHS = 12  # the current month and the 11 before it, in the team's zone
STARTS_SOON = timedelta(minutes=10)  # a scheduled campaign due this soon counts as live (the section polls)
RUNNING = (CampaignStatus.SENDING, CampaignStatus.SCHEDULED, CampaignStatus.PAUSED)
# Stored moments are compared as "<= the microsecond before a boundary", never "< boundary": SQLite keeps
# them as text, the triggers write "2025-02-01 05:00:00" and SQLAlchemy "2025-02-01 05:00:00.000000",
# and only a bound with microseconds sorts both forms where they belong.
JUST_BEFORE = timedelta(microseconds=1)


@dataclass
class CampaignLine:
    """One campaign as the dashboard lists it: its row and its figures from the tallies."""

    campaign: Campaign
    figures: tallies.Figures

    @property
    def total(self) -> int:
        return self.figures.messages

    @property
    def done(self) -> int:
        return self.figures.done

    @property
    def percent(self) -> int | None:
        """Dealt with, or once stopped for good what was sent of what was to be sent (tallies.Figures.percent_for);
        None while it has no messages (scheduled, or its audience not frozen yet)."""
        return self.figures.percent_for(self.campaign.status)

    @property
    def stopped(self) -> bool:
        """Cancelled or failed: its percent counts what was sent, not what was dealt with."""
        return self.campaign.status in tallies.STOPPED

    @property
    def sent(self) -> int:
        return self.figures.sent

    @property
    def delivered(self) -> int:
        return self.figures.count("delivered")

    @property
    def spend(self) -> Decimal:
        return self.figures.spend


@dataclass
class Running:
    """Campaigns sending, scheduled or paused: the first RUNNING_SHOWN of them, and how many in all."""

    campaigns: list[CampaignLine]
    counts: dict[CampaignStatus, int]
    live: bool  # one sends or starts within STARTS_SOON: the section refreshes itself

    @property
    def more(self) -> int:
        return sum(self.counts.get(status, 0) for status in RUNNING) - len(self.campaigns)


@dataclass
class MonthSpend:
    month: date  # its first day, in the team's zone
    spend: Decimal


@dataclass
class SenderSpend:
    sender: SenderNumber | None  # None: campaigns whose number was deleted since
    spend: Decimal


@dataclass
class Overview:
    recent: list[CampaignLine]
    launched: int  # campaigns that are not drafts, listed or not
    drafts: int
    running: Running
    months: list[MonthSpend]  # oldest first
    senders: list[SenderSpend]  # most spent first

    @property
    def spend(self) -> Decimal:
        """Spent in the MONTHS months shown (the senders' figures add up to the same)."""
        return sum((month.spend for month in self.months), Decimal(0))


def team_zone(timezone: str | None) -> ZoneInfo:
    """The team's zone, or UTC when its name is empty or unknown to this machine."""
    try:
        return ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def overview(team_id: int, now: datetime | None = None) -> Overview:
    """Everything the dashboard shows about campaigns, in nine queries whatever the team's size."""
    now = now or utcnow()
    counts = campaign_counts(team_id)
    recent, running = _recent(team_id), _running(team_id)
    figures = tallies.figures_of(campaign.id for campaign in recent + running)
    by_month, by_sender = _spend(team_id, now)
    return Overview(
        recent=[CampaignLine(campaign, figures[campaign.id]) for campaign in recent],
        launched=sum(count for status, count in counts.items() if status is not CampaignStatus.DRAFT),
        drafts=counts.get(CampaignStatus.DRAFT, 0),
        running=Running([CampaignLine(campaign, figures[campaign.id]) for campaign in running], counts,
                        _live(running, now)),
        months=by_month, senders=by_sender)


def campaign_counts(team_id: int) -> dict[CampaignStatus, int]:
    """How many of the team's campaigns are in each state."""
    rows = db.session.execute(select(Campaign.status, func.count()).where(Campaign.team_id == team_id)
                              .group_by(Campaign.status)).all()
    return {status: count for status, count in rows}


def recent_campaigns(team_id: int) -> list[CampaignLine]:
    """The RECENT latest launched campaigns (any state but draft), by launch or else last change, with figures."""
    campaigns = _recent(team_id)
    figures = tallies.figures_of(campaign.id for campaign in campaigns)
    return [CampaignLine(campaign, figures[campaign.id]) for campaign in campaigns]


def running_now(team_id: int, now: datetime | None = None) -> Running:
    """Sending campaigns first, then scheduled ones (soonest first), then paused ones; with their figures."""
    now = now or utcnow()
    campaigns = _running(team_id)
    figures = tallies.figures_of(campaign.id for campaign in campaigns)
    return Running([CampaignLine(campaign, figures[campaign.id]) for campaign in campaigns],
                   campaign_counts(team_id), _live(campaigns, now))


def spend_by_month(team_id: int, now: datetime | None = None) -> list[MonthSpend]:
    """Spend in each of the last MONTHS months (this one included) in the team's zone, oldest first."""
    return _spend(team_id, now or utcnow())[0]


def spend_by_sender(team_id: int, now: datetime | None = None) -> list[SenderSpend]:
    """Spend per sender number over the same MONTHS months as spend_by_month (not all time), most first."""
    return _spend(team_id, now or utcnow())[1]


def _recent(team_id: int) -> list[Campaign]:
    return db.session.scalars(
        select(Campaign).options(joinedload(Campaign.sender_number))
        .where(Campaign.team_id == team_id, Campaign.status != CampaignStatus.DRAFT)
        .order_by(func.coalesce(Campaign.launched_at, Campaign.updated_at).desc(), Campaign.id.desc())
        .limit(RECENT)).all()


def _running(team_id: int) -> list[Campaign]:
    group = case((Campaign.status == CampaignStatus.SENDING, 0), (Campaign.status == CampaignStatus.SCHEDULED, 1),
                 else_=2)
    moment = case((Campaign.status == CampaignStatus.SCHEDULED, Campaign.scheduled_at), else_=Campaign.launched_at)
    return db.session.scalars(
        select(Campaign).options(joinedload(Campaign.sender_number))
        .where(Campaign.team_id == team_id, Campaign.status.in_(RUNNING))
        .order_by(group, moment, Campaign.id).limit(RUNNING_SHOWN)).all()


def _live(running: list[Campaign], now: datetime) -> bool:
    """Something changes by itself soon: a campaign sends, or a scheduled one is due (sending comes first in the list,
    then the soonest scheduled, so the listed ones decide). A paused one waits for a person."""
    return any(campaign.status is CampaignStatus.SENDING
               or (campaign.status is CampaignStatus.SCHEDULED and campaign.scheduled_at is not None
                   and campaign.scheduled_at <= now + STARTS_SOON) for campaign in running)


def month_starts(zone: ZoneInfo, now: datetime) -> list[datetime]:
    """Midnight of the 1st of each of the MONTHS months up to `now`'s, and of the month after, as naive UTC."""
    local = now.replace(tzinfo=UTC).astimezone(zone)
    starts = []
    for back in range(MONTHS - 1, -2, -1):
        year, month = divmod(local.year * 12 + local.month - 1 - back, 12)
        starts.append(datetime(year, month + 1, 1, tzinfo=zone).astimezone(UTC).replace(tzinfo=None))
    return starts


def _spend(team_id: int, now: datetime) -> tuple[list[MonthSpend], list[SenderSpend]]:
    """Spend by month and by sender over the last MONTHS months, without adding up every timeline row.

    A message's spend counts in the minute it was posted (its estimate), and a billed figure that differs
    from the estimate moves the difference to the minute its report arrived. Most campaigns begin and end
    within one month: the first and last minute of each campaign's timeline (two index probes) say so, and
    then its folded tally, which the fold fills from the same deltas as the timeline, is that month's.
    Only campaigns whose timeline crosses a month boundary have their minutes summed by month. The
    deltas not folded yet are added by the moment they were written, so nothing lags the campaigns' figures.
    """
    team = db.session.get(Team, team_id)
    zone = team_zone(team.timezone if team else None)
    starts = month_starts(zone, now)
    first = select(func.min(CampaignMinute.minute)).where(CampaignMinute.campaign_id == Campaign.id).scalar_subquery()
    last = select(func.max(CampaignMinute.minute)).where(CampaignMinute.campaign_id == Campaign.id).scalar_subquery()
    # Drafts too: their test sends cost money (a draft without any has no timeline and adds nothing).
    spans = db.session.execute(select(Campaign.id, Campaign.sender_number_id, first, last).where(
        Campaign.team_id == team_id)).all()
    sender_of = {campaign_id: sender_id for campaign_id, sender_id, _, _ in spans}
    within: dict[int, int] = {}  # campaign -> the month that holds its whole timeline
    crossing = []
    for campaign_id, _, begins, ends in spans:
        if begins is None or ends < starts[0] or begins >= starts[-1]:
            continue  # no timeline row in the window (unfolded deltas are added below)
        month = bisect_right(starts, begins) - 1
        if month >= 0 and month == bisect_right(starts, ends) - 1:
            within[campaign_id] = month
        else:
            crossing.append(campaign_id)

    amounts: dict[tuple[int, int | None], Decimal] = {}

    def add(month: int, campaign_id: int, amount) -> None:
        key = (month, sender_of[campaign_id])
        amounts[key] = amounts.get(key, Decimal(0)) + Decimal(str(amount or 0))

    for month, campaign_id, amount in _by_month(team_id, within, crossing, starts):
        add(within[campaign_id] if month < 0 else month, campaign_id, amount)

    per_month = [Decimal(0)] * MONTHS
    per_sender: dict[int | None, Decimal] = {}
    for (month, sender_id), amount in amounts.items():
        per_month[month] += amount
        per_sender[sender_id] = per_sender.get(sender_id, Decimal(0)) + amount
    senders = {sender.id: sender for sender in db.session.scalars(select(SenderNumber).where(
        SenderNumber.team_id == team_id, SenderNumber.id.in_([key for key in per_sender if key is not None])))}
    firsts = [start.replace(tzinfo=UTC).astimezone(zone).date() for start in starts[:-1]]
    return ([MonthSpend(first, amount) for first, amount in zip(firsts, per_month, strict=True)],
            sorted((SenderSpend(senders.get(key), amount) for key, amount in per_sender.items() if amount),
                   key=lambda line: (-line.spend, line.sender.number if line.sender else "")))


def _by_month(team_id: int, within: dict[int, int], crossing: list[int],
              starts: list[datetime]) -> list[tuple[int, int, Decimal]]:
    """(month, campaign, spend), months numbered from the window's first: the folded tallies of the campaigns
    `within` one month (month -1: the caller knows which), the timeline rows of the `crossing` ones, and every
    unfolded delta of the team. One statement, so a fold running meanwhile can't move a delta out of one read
    and into another: it is counted once, folded or not."""
    bounds = [start - JUST_BEFORE for start in starts]

    def month_of(moment):
        return case(*((moment <= bound, index) for index, bound in enumerate(bounds[1:-1])), else_=MONTHS - 1)

    parts = [select(month_of(TallyDelta.at).label("month"), TallyDelta.campaign_id,
                    tallies.spend_of(TallyDelta.bucket, TallyDelta.billed, TallyDelta.unbilled).label("spend"))
             .where(TallyDelta.campaign_id.in_(select(Campaign.id).where(Campaign.team_id == team_id)),
                    TallyDelta.at > bounds[0], TallyDelta.at <= bounds[-1])]
    if crossing:
        parts.append(select(month_of(CampaignMinute.minute), CampaignMinute.campaign_id, CampaignMinute.spend).where(
            CampaignMinute.campaign_id.in_(crossing), CampaignMinute.minute > bounds[0],
            CampaignMinute.minute <= bounds[-1]))
    if within:
        parts.append(select(literal_column("-1", Integer), CampaignTally.campaign_id,
                            tallies.spend_of(CampaignTally.bucket, CampaignTally.billed, CampaignTally.unbilled))
                     .where(CampaignTally.campaign_id.in_(within), CampaignTally.bucket.in_(tallies.POSTED)))
    # Grouped by the labels of a subquery: PostgreSQL doesn't take two CASEs with bound values as the same.
    spent = (union_all(*parts) if len(parts) > 1 else parts[0]).subquery()
    return db.session.execute(select(spent.c.month, spent.c.campaign_id, func.sum(spent.c.spend))
                              .group_by(spent.c.month, spent.c.campaign_id)).all()
