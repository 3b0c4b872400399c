"""Jobs that send campaigns: prepare (freeze the audience), start a scheduled one, send a batch, sweep.

Each job takes a campaign id, re-reads the database and is safe to run twice: freezing happens once,
batches claim rows atomically, and the sweep only touches rows that need it. No job here is ever
wrapped in RQ's Retry: a re-run after a dead worker must not re-post (webapp.services.sending).
"""

import contextlib
import logging

from redis.exceptions import RedisError

from jobs import with_app
from webapp.extensions import db
from webapp.models import Campaign, CampaignStatus, Waiting, utcnow
from webapp.services import batches, campaign_states, recipients, sending

logger = logging.getLogger(__name__)
PREPARE_LOCK_SECONDS = 1800  # longer than freezing the biggest audience takes


@with_app
def prepare_campaign(campaign_id: int) -> bool:
    """Freeze the audience into message rows, then queue the first batches.

    One preparation at a time per campaign (a Redis lock): freezing a million rows outlasts the sweep's
    patience, and a second job copying the same audience only to roll back would double the load.
    """
    from webapp.queues import redis_connection

    lock = redis_connection().lock(f"campaign:{campaign_id}:preparing", timeout=PREPARE_LOCK_SECONDS)
    if not lock.acquire(blocking=False):
        return False
    try:
        recipients.freeze(campaign_id)
    finally:
        lock.release()
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is not None and campaign.status is CampaignStatus.SENDING and campaign.prepared_at is not None:
        campaign_states.enqueue_batches(campaign_id)
        return True
    return False


@with_app
def start_campaign(campaign_id: int) -> bool:
    """A scheduled campaign's time has come (RQ's enqueue_at; the sweep does it too if Redis lost the job)."""
    if campaign_states.start_scheduled(campaign_id):
        campaign_states.enqueue_prepare(campaign_id)
        return True
    return False


@with_app
def send_batch(campaign_id: int) -> dict:
    """Send one batch; queue the next (at the end of the queue, so campaigns take turns) or complete."""
    started_at = utcnow()
    try:
        report = sending.send_batch(campaign_id)
        _carry_on(campaign_id, report)
    except sending.DATABASE_DOWN as error:
        return _database_down(campaign_id, started_at, error)
    except RedisError:
        with contextlib.suppress(Exception):  # the page says so; the sweep queues batches once Redis is back
            db.session.rollback()
            batches.note_waiting(campaign_id, Waiting.REDIS, started_at)
        raise
    logger.info("campaign %s batch: %s", campaign_id, report)
    return report.__dict__


def _carry_on(campaign_id: int, report: sending.BatchReport) -> None:
    """Queue the next batch, note what the campaign waits for, or complete it."""
    if report.stopped in (None, "rate limit", sending.CAP_SET, sending.CLAIM_RELEASED):
        if report.stopped == "rate limit" and not report.posted:
            batches.note_waiting(campaign_id, Waiting.RATE, utcnow())
        campaign_states.enqueue_next(campaign_id, report.next_in)
    elif report.stopped == "nothing due":
        due, later, in_flight = sending.next_due(campaign_id, utcnow())
        if due:
            campaign_states.enqueue_next(campaign_id, None)
        elif later is not None:
            # Held for quiet hours or backing off: come back when the first one is due (the sweep also would).
            batches.note_later(campaign_id, later, utcnow())
            campaign_states.enqueue_next(campaign_id, max(1.0, (later - utcnow()).total_seconds()))
        elif not in_flight:
            campaign_states.complete_if_done(campaign_id)


def _database_down(campaign_id: int, started_at, error: Exception) -> dict:
    """The database went away under the batch (a restart, a crash): keep this campaign's chain of batches
    alive by queueing the next one shortly, which finds the database back or does the same again; the
    batch released its claims if the database came back in time, else the sweep does."""
    logger.warning("campaign %s batch: the database is unreachable (%s); the next batch tries again",
                   campaign_id, type(error).__name__)
    back = False
    with contextlib.suppress(Exception):  # the database may be back already: say what the campaign waited for
        db.session.rollback()
        batches.note_waiting(campaign_id, Waiting.DATABASE, started_at)
        back = True
    # Not at once even when it answers again: an error that lasts (a full disk, a lock timeout) must not spin.
    campaign_states.enqueue_next(campaign_id, sending.LONG_WAIT if back else batches.beat_seconds())
    return {"stopped": "database unreachable"}


@with_app
def sweep_campaigns() -> dict:
    """Periodic: carry campaigns on after dead workers or a lost Redis (webapp.services.sending.recover)."""
    found = sending.recover()
    if found.unknown or found.released or found.restarted or found.started or found.completed:
        log = logger.warning if found.unknown else logger.info
        log("sweep: %s in flight when their worker stopped made unknown, %s stale claims released, "
            "campaigns started %s, restarted %s, completed %s", found.unknown, found.released, found.started or [],
            found.restarted or [], found.completed or [])
    return found.__dict__
