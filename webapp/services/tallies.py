"""A campaign's figures without counting its messages: folded tallies plus the deltas not folded yet.

Triggers on `message` (webapp.tally_triggers) append what every statement changed to tally_delta. fold()
adds those deltas into campaign_tally (by bucket and failure reason) and campaign_minute (the timeline),
every few seconds from the scheduler; figures() reads tally + unfolded deltas, so it is exact at any
moment and costs an index range of a few rows plus whatever arrived since the last fold. recount()
rebuilds a campaign's tally from its messages, for operators (`campaigns recount`); differences() is
what a test (and an operator) compares with.

Test sends are tallied too, in buckets of their own (tally_triggers.TEST_BUCKETS): they count in the
campaign's spend and billed figures (money is money), never among its messages, recipients or estimate.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import case, delete, func, insert, literal, select, text, union_all
from sqlalchemy.exc import DBAPIError

from webapp.extensions import db
from webapp.models import (
    Campaign,
    CampaignMinute,
    CampaignStatus,
    CampaignTally,
    Message,
    MessageKind,
    TallyDelta,
)
from webapp.tally_triggers import BUCKETS, REASON_LENGTH, TEST_POSTED

MEASURES = ("messages", "parts", "estimated", "billed", "unbilled", "mismatched", "sent_twice")
# Buckets whose messages were posted: what the provider billed for them is spent. "test": posted test sends.
POSTED = ("sending", "accepted", "delivered", "undelivered", "unknown", "replaced", "test")
# The provider took these: spent is billed where known, else estimated. A posted test send counts at its
# estimate until billed (a person clicked it and saw the answer).
TAKEN = ("accepted", "delivered", "undelivered", "test")
# Attempts whose fate is unknown (in flight, no answer, replaced by a resend): their estimate is not spent,
# only "up to" that much more; a late report that confirms one moves it into TAKEN, billed.
UNCONFIRMED = ("sending", "unknown", "replaced")
FINAL = ("delivered", "undelivered")  # the delivery report's last word
FAILED = ("failed", "undelivered")
STOPPED = (CampaignStatus.CANCELLED, CampaignStatus.FAILED)  # ended for good: what was left is never sent


@dataclass
class Figures:
    """A campaign's messages by bucket, with spend, and failures by reason; what the campaign page shows."""

    buckets: dict[str, dict[str, Decimal | int]] = field(default_factory=dict)
    reasons: list[tuple[str, str, int]] = field(default_factory=list)  # (bucket, reason, messages), most first

    def count(self, *buckets: str) -> int:
        return sum(int(self.buckets.get(bucket, {}).get("messages", 0)) for bucket in buckets)

    def total(self, measure: str, buckets=BUCKETS) -> Decimal:
        return sum((Decimal(self.buckets.get(bucket, {}).get(measure, 0)) for bucket in buckets), Decimal(0))

    @property
    def messages(self) -> int:
        """One per recipient: a replaced attempt, or one confirmed after it was replaced, is no recipient of its own."""
        return self.count(*(bucket for bucket in BUCKETS if bucket != "replaced")) - int(self.total("sent_twice"))

    @property
    def waiting(self) -> int:
        """Not dealt with yet: queued, held for quiet hours, or being posted."""
        return self.count("created", "held", "sending")

    @property
    def done(self) -> int:
        """Dealt with: sent, failed or skipped; everything not queued, held or being posted."""
        return self.messages - self.waiting

    @property
    def percent_done(self) -> int | None:
        """Dealt with, of all its messages (rounded down); None while it has none."""
        return self.done * 100 // self.messages if self.messages else None

    @property
    def posted(self) -> int:
        """Recipients whose message left or may have left: sent, or on the wire (one per recipient)."""
        return self.sent + self.count("sending") - int(self.total("sent_twice"))

    @property
    def to_send(self) -> int:
        """Recipients who were to be sent a message: all but those who opted out after launch."""
        return self.messages - self.count("opted_out")

    @property
    def percent_sent(self) -> int | None:
        """Posted, of what was to be sent (rounded down); None while nothing was to be sent."""
        return min(100, self.posted * 100 // self.to_send) if self.to_send > 0 else None

    def percent_for(self, status: CampaignStatus) -> int | None:
        """The progress a campaign's bar shows: dealt with, of all its messages; once it was stopped for good
        (cancelled, or failed), what was sent of what was to be sent, since the messages it never sent are
        dealt with only in the sense that they never will be."""
        return self.percent_sent if status in STOPPED else self.percent_done

    @property
    def sent(self) -> int:
        """Posted and not known to have failed to leave: every bucket the provider took or may have taken."""
        return self.count("accepted", "delivered", "undelivered", "unknown")

    @property
    def test_sends(self) -> int:
        """Test messages posted to the team's test numbers (not recipients: counted apart)."""
        return self.count("test")

    @property
    def test_spend(self) -> Decimal:
        """What the posted test sends cost (billed where known, else estimated); included in spend."""
        return self.total("billed", ("test",)) + self.total("unbilled", ("test",))

    @property
    def spend(self) -> Decimal:
        """Billed where the provider said, estimated where it took a message but has not billed it yet; test
        sends included."""
        return self.total("billed", POSTED) + self.total("unbilled", TAKEN)

    @property
    def unconfirmed_spend(self) -> Decimal:
        """Up to this much more: the estimates of attempts whose fate is unknown, not billed."""
        return self.total("unbilled", UNCONFIRMED)

    @property
    def resends(self) -> int:
        """Attempts replaced by "resend unconfirmed" (still unknown, or confirmed late: sent twice)."""
        return self.count("replaced") + int(self.total("sent_twice"))

    @property
    def billed(self) -> Decimal:
        return self.total("billed", POSTED)

    @property
    def estimated(self) -> Decimal:
        """What the whole campaign costs by the estimate: everything but what will never be sent. A resent
        attempt carries no estimate (its resend does, webapp.tally_triggers), so resending keeps it as launched."""
        return self.total("estimated", tuple(b for b in BUCKETS if b not in ("failed", "opted_out", "cancelled")))


def spend_of(bucket, billed, unbilled):
    """SQL for Figures.spend of tally or delta rows (the timeline and the dashboard's months add up the same)."""
    return (case((bucket.in_(POSTED), billed), else_=0) + case((bucket.in_(TAKEN), unbilled), else_=0))


def _rows(campaign_id: int):
    """Folded tally rows and unfolded deltas of one campaign, as one UNION ALL (same columns)."""
    columns = lambda model: [model.bucket, model.reason, *(getattr(model, m) for m in MEASURES)]  # noqa: E731
    return union_all(
        select(*columns(CampaignTally)).where(CampaignTally.campaign_id == campaign_id),
        select(*columns(TallyDelta)).where(TallyDelta.campaign_id == campaign_id),
    ).subquery()


def figures(campaign_id: int) -> Figures:
    """The campaign's figures as of now: one indexed query (kept()), whatever the campaign's size."""
    out = Figures()
    buckets: dict[str, dict] = defaultdict(lambda: dict.fromkeys(MEASURES, 0))
    for (bucket, reason), values in kept(campaign_id).items():
        for name, value in values.items():
            buckets[bucket][name] += value
        if reason and values["messages"]:
            out.reasons.append((bucket, reason, int(values["messages"])))
    out.buckets = {bucket: values for bucket, values in buckets.items() if any(values.values())}
    out.reasons.sort(key=lambda item: (-item[2], item[1]))
    return out


# --- folding ---------------------------------------------------------------------------------------

_FOLD_POSTGRESQL = text(f"""
WITH gone AS (DELETE FROM tally_delta RETURNING *),
live AS (SELECT gone.* FROM gone JOIN campaign ON campaign.id = gone.campaign_id),
tallied AS (
  INSERT INTO campaign_tally (campaign_id, bucket, reason, {", ".join(MEASURES)})
  SELECT campaign_id, bucket, reason, {", ".join(f"sum({m})" for m in MEASURES)} FROM live
  GROUP BY campaign_id, bucket, reason
  ON CONFLICT (campaign_id, bucket, reason) DO UPDATE SET
  {", ".join(f"{m} = campaign_tally.{m} + excluded.{m}" for m in MEASURES)}
  RETURNING 1
)
INSERT INTO campaign_minute (campaign_id, minute, posted, delivered, failed, spend)
SELECT campaign_id, date_trunc('minute', at),
  sum(CASE WHEN bucket = 'sending' AND messages > 0 THEN messages ELSE 0 END),
  sum(CASE WHEN bucket = 'delivered' AND messages > 0 THEN messages ELSE 0 END),
  sum(CASE WHEN bucket IN {FAILED!r} AND messages > 0 THEN messages ELSE 0 END),
  sum(CASE WHEN bucket IN {POSTED!r} THEN billed ELSE 0 END + CASE WHEN bucket IN {TAKEN!r} THEN unbilled ELSE 0 END)
FROM live
GROUP BY campaign_id, date_trunc('minute', at)
ON CONFLICT (campaign_id, minute) DO UPDATE SET posted = campaign_minute.posted + excluded.posted,
  delivered = campaign_minute.delivered + excluded.delivered, failed = campaign_minute.failed + excluded.failed,
  spend = campaign_minute.spend + excluded.spend
""")  # noqa: S608 - every name in it is one of this module's constants


def fold() -> None:
    """Add every appended delta into the tallies and the timeline, and delete it; safe side by side.

    On PostgreSQL one statement: a delta is deleted and added in the same step, and a second fold
    running at the same time waits for the first's row locks and skips what it deleted. SQLite has
    one writer at a time, and the DELETE ... RETURNING takes the write lock first.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(_FOLD_POSTGRESQL)
        db.session.commit()
        return
    gone = db.session.execute(delete(TallyDelta).returning(
        TallyDelta.campaign_id, TallyDelta.bucket, TallyDelta.reason, TallyDelta.at,
        *(getattr(TallyDelta, m) for m in MEASURES))).all()
    live = set(db.session.scalars(select(Campaign.id).where(Campaign.id.in_({row.campaign_id for row in gone}))))
    tallies: dict[tuple, list] = defaultdict(lambda: [0] * len(MEASURES))
    minutes: dict[tuple, list] = defaultdict(lambda: [0, 0, 0, Decimal(0)])
    for row in gone:
        if row.campaign_id not in live:
            continue
        sums = tallies[(row.campaign_id, row.bucket, row.reason)]
        for index, name in enumerate(MEASURES):
            sums[index] += getattr(row, name) or 0
        minute = minutes[(row.campaign_id, row.at.replace(second=0, microsecond=0))]
        if row.messages > 0:
            minute[0] += row.messages if row.bucket == "sending" else 0
            minute[1] += row.messages if row.bucket == "delivered" else 0
            minute[2] += row.messages if row.bucket in FAILED else 0
        if row.bucket in POSTED:
            minute[3] += Decimal(str(row.billed or 0))
        if row.bucket in TAKEN:
            minute[3] += Decimal(str(row.unbilled or 0))
    for (campaign_id, bucket, reason), sums in tallies.items():
        _add(CampaignTally, dict(campaign_id=campaign_id, bucket=bucket, reason=reason),
             dict(zip(MEASURES, sums, strict=True)))
    for (campaign_id, minute), (posted, delivered, failed, spend) in minutes.items():
        _add(CampaignMinute, dict(campaign_id=campaign_id, minute=minute),
             dict(posted=posted, delivered=delivered, failed=failed, spend=spend))
    db.session.commit()


def _add(model, key: dict, amounts: dict) -> None:
    """Upsert one row, adding `amounts` to what it holds (SQLite's path of fold)."""
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    statement = sqlite_insert(model).values(**key, **amounts)
    db.session.execute(statement.on_conflict_do_update(
        index_elements=list(key), set_={name: getattr(model, name) + statement.excluded[name] for name in amounts}))


# --- the timeline ----------------------------------------------------------------------------------


def minutes(campaign_id: int) -> list[tuple[datetime, int, int, int, Decimal]]:
    """(minute, posted, delivered, failed, spend) of the campaign, oldest first: folded minutes plus the deltas
    not folded yet (added up by minute in the database: a few seconds' worth)."""
    folded = db.session.execute(
        select(CampaignMinute.minute, CampaignMinute.posted, CampaignMinute.delivered, CampaignMinute.failed,
               CampaignMinute.spend).where(CampaignMinute.campaign_id == campaign_id)
        .order_by(CampaignMinute.minute)).all()
    entered = lambda *buckets: func.sum(case((TallyDelta.bucket.in_(buckets) & (TallyDelta.messages > 0),  # noqa: E731
                                              TallyDelta.messages), else_=0))
    minute = (func.date_trunc("minute", TallyDelta.at) if db.session.get_bind().dialect.name == "postgresql"
              else func.strftime("%Y-%m-%d %H:%M:00", TallyDelta.at))
    unfolded = db.session.execute(
        select(minute, entered("sending"), entered("delivered"), entered(*FAILED),
               func.sum(spend_of(TallyDelta.bucket, TallyDelta.billed, TallyDelta.unbilled)))
        .where(TallyDelta.campaign_id == campaign_id).group_by(minute)).all()
    merged: dict[datetime, list] = {row[0]: list(row[1:]) for row in folded}
    for at, *values in unfolded:
        at = at if isinstance(at, datetime) else datetime.fromisoformat(at)
        sums = merged.setdefault(at, [0, 0, 0, Decimal(0)])
        for index, value in enumerate(values):
            sums[index] += Decimal(str(value or 0)) if index == 3 else int(value or 0)
    return [(at, *values) for at, values in sorted(merged.items()) if any(values)]


# --- recount ---------------------------------------------------------------------------------------


def counted(campaign_id: int) -> dict[tuple[str, str], dict]:
    """The tally recomputed from the messages themselves (one GROUP BY over the campaign's rows)."""
    bucket = case((Message.kind == MessageKind.TEST, case((Message.status.in_(TEST_POSTED), literal("test")),
                                                            else_=literal("test_unsent"))),
                  (Message.status == "created", case((Message.held, literal("held")), else_=literal("created"))),
                  (Message.status == "unknown", case((Message.resent, literal("replaced")), else_=literal("unknown"))),
                  else_=Message.status)
    reason = case(((Message.kind == MessageKind.CAMPAIGN) & Message.status.in_(("failed", "undelivered")),
                   func.substr(func.coalesce(Message.error, ""), 1, REASON_LENGTH)), else_=literal(""))
    one = lambda condition: case((condition, 1), else_=0)  # noqa: E731
    rows = db.session.execute(
        select(bucket.label("bucket"), reason.label("reason"), func.count(), func.sum(Message.parts),
               func.sum(case((Message.resent.is_(True), 0), else_=Message.estimated_cost)),
               func.sum(func.coalesce(Message.billed_cost, 0)),
               func.sum(case((Message.billed_cost.is_(None), Message.estimated_cost), else_=0)),
               func.sum(one(Message.billed_cost.is_not(None) & (Message.billed_cost != Message.estimated_cost))),
               func.sum(one(Message.sent_twice.is_(True))))
        .where(Message.campaign_id == campaign_id)
        .group_by(text("bucket"), text("reason"))  # the labels: PostgreSQL can't match two bound CASEs
    ).all()
    return {(row[0], row[1]): dict(zip(MEASURES, (value or 0 for value in row[2:]), strict=True)) for row in rows}


def kept(campaign_id: int) -> dict[tuple[str, str], dict]:
    """The tally as kept: folded plus unfolded, per (bucket, reason), rows that add up to nothing left out."""
    rows = _rows(campaign_id)
    result = db.session.execute(
        select(rows.c.bucket, rows.c.reason, *(func.sum(rows.c[m]) for m in MEASURES))
        .group_by(rows.c.bucket, rows.c.reason)).all()
    return {(row[0], row[1]): dict(zip(MEASURES, (value or 0 for value in row[2:]), strict=True))
            for row in result if any(row[2:])}


def differences(campaign_id: int) -> dict[tuple[str, str], tuple[dict, dict]]:
    """Where the kept tally and a recount disagree: {(bucket, reason): (kept, counted)}; empty when they agree."""
    have, want = kept(campaign_id), counted(campaign_id)
    return {key: (have.get(key), want.get(key)) for key in set(have) | set(want)
            if not _same(have.get(key), want.get(key))}


def _same(a: dict | None, b: dict | None) -> bool:
    zero = dict.fromkeys(MEASURES, 0)
    a, b = a or zero, b or zero
    return all(round(Decimal(str(a[m])), 4) == round(Decimal(str(b[m])), 4) for m in MEASURES)


def recount(campaign_id: int, attempts: int = 5) -> int:
    """Rebuild the campaign's tally from its messages; returns how many (bucket, reason) rows were wrong.

    On PostgreSQL in one REPEATABLE READ transaction: the messages counted and the deltas deleted are
    those of the same snapshot, so writes committed meanwhile keep their deltas and fold on top.
    """
    for attempt in range(attempts):
        db.session.commit()  # a new transaction, so its isolation level can be set
        try:
            if db.session.get_bind().dialect.name == "postgresql":
                db.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            have = kept(campaign_id)
            # Deleting first takes SQLite's write lock before the count, so no write slips in between.
            db.session.execute(delete(TallyDelta).where(TallyDelta.campaign_id == campaign_id))
            db.session.execute(delete(CampaignTally).where(CampaignTally.campaign_id == campaign_id))
            want = counted(campaign_id)
            wrong = sum(1 for key in set(have) | set(want) if not _same(have.get(key), want.get(key)))
            if want:
                db.session.execute(insert(CampaignTally), [
                    dict(campaign_id=campaign_id, bucket=bucket, reason=reason, **values)
                    for (bucket, reason), values in want.items()])
            db.session.commit()
            return wrong
        except DBAPIError:  # a concurrent fold or write touched the same rows: take a new snapshot
            db.session.rollback()
            if attempt == attempts - 1:
                raise
    return 0


def figures_of(campaign_ids) -> dict[int, Figures]:
    """Figures of many campaigns in one indexed query (by bucket, without failure reasons), for lists of campaigns."""
    ids = sorted(set(campaign_ids))
    out = {campaign_id: Figures() for campaign_id in ids}
    if not ids:
        return out
    columns = lambda model: [model.campaign_id, model.bucket, *(getattr(model, m) for m in MEASURES)]  # noqa: E731
    rows = union_all(
        select(*columns(CampaignTally)).where(CampaignTally.campaign_id.in_(ids)),
        select(*columns(TallyDelta)).where(TallyDelta.campaign_id.in_(ids)),
    ).subquery()
    result = db.session.execute(
        select(rows.c.campaign_id, rows.c.bucket, *(func.sum(rows.c[m]) for m in MEASURES))
        .group_by(rows.c.campaign_id, rows.c.bucket)).all()
    for campaign_id, bucket, *values in result:
        if any(values):
            out[campaign_id].buckets[bucket] = dict(zip(MEASURES, (value or 0 for value in values), strict=True))
    return out
