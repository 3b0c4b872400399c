"""Batches in progress, by claim token: their heartbeats, the release of a stopped batch's claims, and
what a sending campaign is waiting for.

Campaign.heartbeat_at is shared by all the batches of a campaign, so one live batch hid a dead one,
whose claims then waited SEND_JOB_TIMEOUT + 60 s. Each batch keeps its own send_batch row instead:
written in the transaction of its claim, beaten every beat_seconds() and deleted with its release. A
claim whose token has no row beaten within stale_seconds() belongs to a batch that is gone (killed,
SIGSTOPped, cut off from the database while releasing): the sweep releases its rows never marked in
flight, which nothing was posted for, and deletes the row, so a batch that comes back learns at its next
beat that its claims are gone and stops (its later writes are refused by the claim token anyway).
"""

import time
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import case, delete, exists, insert, select, text, update

from webapp.extensions import db
from webapp.models import Campaign, CampaignStatus, Message, MessageStatus, SendBatch, Waiting

STALE_BEATS = 3  # a batch that missed this many heartbeats is gone
HEARTBEAT_SECONDS = 5.0  # at most; shorter when SEND_STALL_SECONDS is short

_batch = SendBatch.__table__
_campaign = Campaign.__table__


def stale_seconds() -> float:
    """How long a batch may go without a heartbeat before its claims are released: well below
    SEND_STALL_SECONDS, so a stopped batch's rows go out again before the campaign counts as stalled."""
    return min(STALE_BEATS * HEARTBEAT_SECONDS, current_app.config["SEND_STALL_SECONDS"] / 2)


def beat_seconds() -> float:
    return stale_seconds() / STALE_BEATS


def begin(token: str, campaign_id: int, now: datetime) -> None:
    """The batch's row, in the transaction of its claim (committed with it, or lost with it)."""
    db.session.execute(insert(_batch).values(token=token, campaign_id=campaign_id, started_at=now, heartbeat_at=now))


def end(token: str) -> None:
    """The batch's row goes, in the transaction of its release."""
    db.session.execute(delete(_batch).where(_batch.c.token == token))


def _relaxed_commit() -> None:
    """A heartbeat lost with a crashed database server only makes the batch look older: no flush needed."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SET LOCAL synchronous_commit TO OFF"))
    db.session.commit()


class Heartbeat:
    """A batch's heartbeat: written when due, and the news that the sweep released its claims."""

    def __init__(self, token: str, campaign_id: int):
        self.token = token
        self.campaign_id = campaign_id
        self.every = beat_seconds()
        self.stale_after = stale_seconds()
        self.last = time.monotonic()
        self.posted = False  # since the last beat: the campaign is no longer waiting for anything
        self.ever_posted = False

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every

    def beat(self, now: datetime) -> bool:
        """Write the heartbeat (committed); False when the batch's claims were released by the sweep."""
        try:
            alive = db.session.execute(update(_batch).where(_batch.c.token == self.token)
                                       .values(heartbeat_at=now)).rowcount
            if self.posted:
                clear_waiting(self.campaign_id)
            _relaxed_commit()
        except Exception:
            db.session.rollback()  # the session stays usable for the next try (the database may be restarting)
            raise
        self.last = time.monotonic()
        self.posted = False
        return bool(alive)

    def has_posted(self) -> None:
        """Rows were marked in flight: the campaign waits for nothing (cleared at once the first time in
        a batch, then with each beat, in case another batch noted a wait meanwhile)."""
        if not self.ever_posted:
            self.ever_posted = True
            clear_waiting(self.campaign_id)
            _relaxed_commit()
        self.posted = True

    def release_deadline(self) -> float:
        """Until when (monotonic) a failed release is worth retrying: after it, the sweep releases them."""
        return self.last + self.stale_after


# --- what a campaign waits for ----------------------------------------------------------------------


def note_waiting(campaign_id: int, what: Waiting, now: datetime) -> None:
    """The campaign waits for `what`: kept with since when (unchanged while it waits for the same thing)."""
    db.session.execute(
        update(_campaign).where(_campaign.c.id == campaign_id, _campaign.c.status == CampaignStatus.SENDING)
        .values(waiting_for=what, waiting_since=case((_campaign.c.waiting_for == what, _campaign.c.waiting_since),
                                                     else_=now)))
    _relaxed_commit()


def clear_waiting(campaign_id: int) -> None:
    """A batch posted: the campaign waits for nothing (no write at all when nothing was noted)."""
    db.session.execute(update(_campaign).where(_campaign.c.id == campaign_id, _campaign.c.waiting_for.is_not(None))
                       .values(waiting_for=None, waiting_since=None))


def waiting(campaign: Campaign, now: datetime) -> tuple[Waiting, datetime] | None:
    """What a sending campaign waits for and since when, for its page: a stalled batch first (from the
    heartbeats), else what the last batch noted."""
    if campaign.status is not CampaignStatus.SENDING or campaign.prepared_at is None:
        return None
    late = now - timedelta(seconds=2 * beat_seconds())
    stalled = db.session.scalar(select(_batch.c.heartbeat_at).where(
        _batch.c.campaign_id == campaign.id, _batch.c.heartbeat_at < late).order_by(_batch.c.heartbeat_at).limit(1))
    if stalled is not None:
        return Waiting.STALLED_BATCH, stalled
    if campaign.waiting_for is not None:
        return campaign.waiting_for, campaign.waiting_since or now
    return None


# --- the sweep ---------------------------------------------------------------------------------------


def live(campaign_id: int, now: datetime) -> bool:
    """Whether a batch of the campaign is beating (then the sweep queues no other)."""
    fresh = now - timedelta(seconds=stale_seconds())
    return bool(db.session.scalar(select(exists().where(_batch.c.campaign_id == campaign_id,
                                                        _batch.c.heartbeat_at >= fresh))))


def lost_to_redis(campaign_id: int) -> bool:
    """Whether the campaign's last batch ended on a Redis error (so it queued no next one); True once, the
    note being taken away, so the sweep queues new batches once and not at every run."""
    taken = db.session.execute(update(_campaign).where(_campaign.c.id == campaign_id,
                                                       _campaign.c.waiting_for == Waiting.REDIS)
                               .values(waiting_for=None, waiting_since=None)).rowcount
    db.session.commit()
    return bool(taken)


def release_gone(now: datetime) -> int:
    """Release the rows claimed, never marked in flight, by batches that are gone; drop their rows.

    Deleted first: a batch beating at this moment either beats first (and keeps its claims) or finds its
    row gone and stops. A claim younger than stale_seconds() is never released, whatever its token (the
    batch row commits with it; a worker older than send_batch writes none).
    """
    stale = now - timedelta(seconds=stale_seconds())
    db.session.execute(delete(_batch).where(_batch.c.heartbeat_at < stale))
    return db.session.execute(
        update(Message).where(Message.status == MessageStatus.CREATED, Message.claim_token.is_not(None),
                              Message.claimed_at < stale,
                              ~exists().where(_batch.c.token == Message.claim_token))
        .values(claim_token=None, claimed_at=None)
    ).rowcount


def note_later(campaign_id: int, later: datetime, now: datetime) -> None:
    """Nothing is due before `later`: the campaign waits for quiet hours (a held row opens then) or for a retry."""
    held = db.session.scalar(select(exists().where(
        Message.campaign_id == campaign_id, Message.status == MessageStatus.CREATED, Message.held.is_(True),
        Message.not_before <= later)))
    note_waiting(campaign_id, Waiting.QUIET_HOURS if held else Waiting.RETRY, now)
