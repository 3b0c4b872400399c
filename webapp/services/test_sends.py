"""Test sends within bounds: a few per team a minute and a day (each one is billed), inside the team's send
rate, and counted against the campaign's budget cap like any message it posts.

The allowance is counted from the test messages themselves (an index holds only test sends), under a lock
on the team's row (SELECT ... FOR NO KEY UPDATE on PostgreSQL; on SQLite the budget UPDATE that comes
first takes the database's one write lock), so two web processes clicking at once can't both take the
last one, and a Redis restart doesn't hand out a new day's worth. Quiet hours don't apply: a person
clicked, and the messages go to the team's own test numbers.
"""

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from math import ceil

from redis.exceptions import RedisError
from sqlalchemy import func, literal_column, select, update

from webapp.extensions import db
from webapp.models import Campaign, Message, MessageStatus, Team, utcnow
from webapp.services.ratelimit import RateLimiter

MINUTE, DAY = timedelta(minutes=1), timedelta(days=1)
# A literal, not a bound value, so SQLite sees the partial index's own condition (ix_message_team_test_sends).
IS_TEST = Message.kind == literal_column("'test'")


@dataclass(frozen=True)
class Limits:
    """Test messages a team may send per minute and per day, and how long one may wait for the team's rate."""

    per_minute: int
    per_day: int
    rate_wait_seconds: float = 5.0

    @classmethod
    def from_config(cls, config) -> "Limits":
        return cls(config["TEST_SENDS_PER_MINUTE"], config["TEST_SENDS_PER_DAY"], config["TEST_SEND_RATE_WAIT_SECONDS"])


@dataclass(frozen=True)
class Allowance:
    """What is left of the team's test sends now, and when the next one frees up when nothing is."""

    limits: Limits
    minute_left: int
    day_left: int
    frees_in: float | None  # seconds until one more may go, when the tighter window is used up

    @property
    def left(self) -> int:
        return min(self.minute_left, self.day_left)


class Refused(ValueError):
    """A test send that was not made (nothing was posted, nothing counted); the message is for the user."""

    def __init__(self, message: str, retry_after: float | None = None, status: int = 429) -> None:
        super().__init__(message)
        self.retry_after = None if retry_after is None else max(1, ceil(retry_after))
        self.status = status


def allowance(team_id: int, limits: Limits, now: datetime | None = None) -> Allowance:
    """The team's test messages left in the last minute's and the last day's windows (two index ranges)."""
    now = now or utcnow()

    def window(length: timedelta) -> tuple[int, datetime | None]:
        since = now - length
        count, oldest = db.session.execute(select(func.count(), func.min(Message.created_at)).where(
            Message.team_id == team_id, IS_TEST, Message.created_at > since)).one()
        return count, oldest

    in_minute, oldest_in_minute = window(MINUTE)
    in_day, oldest_in_day = window(DAY)
    minute_left, day_left = max(0, limits.per_minute - in_minute), max(0, limits.per_day - in_day)
    frees_in = None
    if day_left == 0 and oldest_in_day is not None:
        frees_in = (oldest_in_day + DAY - now).total_seconds()
    elif minute_left == 0 and oldest_in_minute is not None:
        frees_in = (oldest_in_minute + MINUTE - now).total_seconds()
    return Allowance(limits, minute_left, day_left, frees_in)


def check(team_id: int, needed: int, limits: Limits) -> Allowance:
    """Refuse at once when the allowance can't cover `needed` messages (before any rate is taken)."""
    left = allowance(team_id, limits)
    if left.left < needed:
        raise Refused(_limit_text(left, needed), left.frees_in)
    return left


def _limit_text(left: Allowance, needed: int) -> str:
    limits = left.limits
    when = f" One more frees up in {ceil(left.frees_in)} s." if left.frees_in else ""
    return (f"Test send limit reached: your team may send {limits.per_minute} test "
            f"message{'' if limits.per_minute == 1 else 's'} a minute and "
            f"{limits.per_day} a day; {left.left} {'is' if left.left == 1 else 'are'} left now and this test needs "
            f"{needed} (one per test number).{when} Nothing was sent.")


def take_rate(limiter: RateLimiter, team_id: int, count: int, wait_seconds: float) -> None:
    """Take `count` slots of the team's send rate (the bucket its campaigns use), waiting at most wait_seconds."""
    granted = 0
    deadline = time.monotonic() + wait_seconds
    try:
        while granted < count:
            chunk = min(count - granted, limiter.burst)
            ok, wait = limiter.take(f"team:{team_id}", chunk)
            if ok:
                granted += chunk
            elif time.monotonic() + wait <= deadline:
                time.sleep(wait)
            else:
                raise Refused(f"The team's send rate ({limiter.per_second:g} a second) is taken by campaigns sending "
                              f"now; try again in a few seconds. Nothing was sent.", max(wait, 1))
    except RedisError as error:
        raise Refused("The team's send rate can't be checked right now (Redis is unreachable); nothing was "
                      "sent. Try again in a moment.", 5, status=503) from error


def reserve(team_id: int, campaign_id: int, messages: list[Message], limits: Limits) -> None:
    """Write the test messages only if the allowance and the campaign's budget cap both hold: one transaction.

    The caller has committed before, so this transaction starts with its lock (SQLite refuses to turn a
    transaction that has read into a writer once another process wrote meanwhile).
    """
    cost = sum((message.estimated_cost for message in messages), Decimal(0))
    # SQLite has no row locks (FOR UPDATE compiles to nothing there); its one writer at a time serialises this.
    db.session.execute(select(Team.id).where(Team.id == team_id).with_for_update(key_share=True))
    reserved = db.session.execute(update(Campaign).where(
        Campaign.id == campaign_id,
        Campaign.budget_cap.is_(None) | (Campaign.reserved_cost + cost <= Campaign.budget_cap))
        .values(reserved_cost=Campaign.reserved_cost + cost).execution_options(synchronize_session=False)).rowcount
    if not reserved:
        row = db.session.execute(select(Campaign.reserved_cost, Campaign.budget_cap)
                                 .where(Campaign.id == campaign_id)).first()
        db.session.rollback()
        if row is None:
            raise Refused("That campaign doesn't exist any more; nothing was sent.", status=404)
        spent, cap = row
        raise Refused(f"This test send ({cost.normalize():f}) would pass the campaign's budget cap: "
                      f"{spent.normalize():f} of {cap.normalize():f} is counted already. Raise the cap first; "
                      "nothing was sent.", status=409)
    left = allowance(team_id, limits)
    if left.left < len(messages):
        db.session.rollback()
        raise Refused(_limit_text(left, len(messages)), left.frees_in)
    db.session.add_all(messages)
    db.session.commit()


def settle(campaign_id: int, message: Message) -> None:
    """After its POST: the budget counts what the provider billed, and nothing for a message not sent."""
    if message.status is MessageStatus.FAILED:
        change = -message.estimated_cost
    elif message.billed_cost is not None:
        change = message.billed_cost - message.estimated_cost
    else:
        return
    if change:
        db.session.execute(update(Campaign).where(Campaign.id == campaign_id)
                           .values(reserved_cost=Campaign.reserved_cost + change)
                           .execution_options(synchronize_session=False))

