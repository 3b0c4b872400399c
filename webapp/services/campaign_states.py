"""A campaign's life: launch, schedule, pause, resume, cancel, complete, fail; every move guarded and audited.

Each transition is one UPDATE ... WHERE status IN (allowed states): of two editors clicking at once, or
a launch racing a cancel, exactly one statement changes the row and the other is told the campaign
has moved on. Every action a person takes, and every pause the engine makes, is written to the audit
log shown on the campaign page.

    draft --launch--> sending (prepared by a job, then sent in batches) --> completed
    draft --launch at--> scheduled --time comes--> sending;  scheduled --unschedule--> draft
    sending <--pause / resume--> paused;  draft, scheduled, sending, paused --cancel--> cancelled
    sending, paused --its list or sender number deleted--> failed (with the reason)
"""

import logging
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import func, select, update

from webapp.extensions import db
from webapp.models import (
    AuditEntry,
    Campaign,
    CampaignList,
    CampaignStatus,
    Message,
    MessageKind,
    MessageStatus,
    SenderNumber,
    utcnow,
)
from webapp.queues import get_queue
from webapp.services.campaigns import frozen_values
from webapp.services.quiet_hours import Window

logger = logging.getLogger(__name__)

ACTIVE = (CampaignStatus.SENDING, CampaignStatus.PAUSED)
SEND_QUEUE = "sends"
RESERVE_TRIES = 100  # reservations another worker made between our reading and our guarded UPDATE
HALF_UNIT = Decimal("0.000005")  # half the last place of Campaign.reserved_cost and budget_cap (5 decimals)


class CampaignProblem(ValueError):
    """An action that can't be done now; the message says why, for the page."""


# --- audit -----------------------------------------------------------------------------------------


def audit(campaign_id: int, user_id: int | None, action: str, detail: str = "") -> None:
    """Record who did what to a campaign (user None: the engine itself)."""
    team_id = db.session.scalar(select(Campaign.team_id).where(Campaign.id == campaign_id))
    db.session.add(AuditEntry(team_id=team_id, campaign_id=campaign_id, user_id=user_id, action=action,
                              detail=detail[:1000]))


def _move(campaign_id: int, allowed: tuple[CampaignStatus, ...], target: CampaignStatus, **values) -> bool:
    """The guarded UPDATE every transition is made of; True when this call made the move."""
    moved = db.session.execute(
        update(Campaign).where(Campaign.id == campaign_id, Campaign.status.in_(allowed))
        .values(status=target, updated_at=utcnow(), **values)
    ).rowcount
    return bool(moved)


def _refuse(campaign_id: int, action: str) -> None:
    db.session.rollback()
    status = db.session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    raise CampaignProblem(f"The campaign is {status} now, so it can't be {action}. Reload to see its state.")


# --- launching -------------------------------------------------------------------------------------


def launch_problems(campaign: Campaign) -> list[str]:
    """What stops a draft from launching; empty when it can go."""
    problems = []
    if not campaign.audience:
        problems.append("Choose at least one list.")
    if campaign.sender_number_id is None or db.session.get(SenderNumber, campaign.sender_number_id) is None:
        problems.append("Choose the number to send from.")
    if not (campaign.body or "").strip():
        problems.append("Write the message.")
    else:
        from webapp.services.templating import TemplateError, compile_template

        try:
            compile_template(campaign.body)
        except TemplateError as error:
            problems.append(f"The message is refused: {error}")
    return problems


def launch(campaign_id: int, user_id: int | None, at: datetime | None = None) -> CampaignStatus:
    """Launch a draft now, or schedule it for `at` (aware); raises CampaignProblem when it can't."""
    campaign = db.session.get(Campaign, campaign_id)
    problems = launch_problems(campaign)
    if problems:
        raise CampaignProblem(" ".join(problems))
    now = datetime.now(UTC)
    frozen = frozen_values(campaign)
    if at is not None and at > now + timedelta(seconds=30):
        if not _move(campaign_id, (CampaignStatus.DRAFT,), CampaignStatus.SCHEDULED,
                     scheduled_at=at.astimezone(UTC).replace(tzinfo=None), **frozen):
            _refuse(campaign_id, "scheduled")
        audit(campaign_id, user_id, "scheduled", f"for {at:%Y-%m-%d %H:%M} {at.tzname()}")
        db.session.commit()
        _enqueue("jobs.sending.start_campaign", campaign_id, at=at)
        return CampaignStatus.SCHEDULED
    if not _move(campaign_id, (CampaignStatus.DRAFT,), CampaignStatus.SENDING, launched_at=utcnow(), **frozen):
        _refuse(campaign_id, "launched")
    audit(campaign_id, user_id, "launched")
    db.session.commit()
    _enqueue("jobs.sending.prepare_campaign", campaign_id)
    return CampaignStatus.SENDING


def start_scheduled(campaign_id: int, now: datetime | None = None) -> bool:
    """The scheduled time has come: SCHEDULED -> SENDING (a second call, or one after unschedule, is a no-op)."""
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None or campaign.status is not CampaignStatus.SCHEDULED:
        return False
    if campaign.scheduled_at and campaign.scheduled_at > (now or utcnow()) + timedelta(seconds=5):
        return False  # rescheduled since this job was queued: the newer job will start it
    if not _move(campaign_id, (CampaignStatus.SCHEDULED,), CampaignStatus.SENDING, launched_at=utcnow()):
        db.session.rollback()
        return False
    audit(campaign_id, None, "started", "its scheduled time came")
    db.session.commit()
    return True


def unschedule(campaign_id: int, user_id: int | None) -> None:
    """A scheduled campaign goes back to draft, to be edited."""
    if not _move(campaign_id, (CampaignStatus.SCHEDULED,), CampaignStatus.DRAFT, scheduled_at=None,
                 frozen_text=None, footer_text=None):
        _refuse(campaign_id, "moved back to draft")
    audit(campaign_id, user_id, "unscheduled", "back to draft")
    db.session.commit()


# --- pausing, resuming, cancelling -----------------------------------------------------------------


def pause(campaign_id: int, user_id: int | None, reason: str = "") -> bool:
    """SENDING -> PAUSED; a batch in progress stops before its next group (within seconds)."""
    if not _move(campaign_id, (CampaignStatus.SENDING,), CampaignStatus.PAUSED, paused_reason=reason or None):
        if user_id is None:
            db.session.rollback()
            return False
        _refuse(campaign_id, "paused")
    audit(campaign_id, user_id, "paused", reason)
    db.session.commit()
    if user_id is None:
        logger.warning("campaign %s paused: %s", campaign_id, reason)
    return True


def resume(campaign_id: int, user_id: int | None) -> None:
    """PAUSED -> SENDING, from where it stopped: only rows still CREATED are ever sent."""
    if not _move(campaign_id, (CampaignStatus.PAUSED,), CampaignStatus.SENDING, paused_reason=None):
        _refuse(campaign_id, "resumed")
    audit(campaign_id, user_id, "resumed")
    db.session.commit()
    campaign = db.session.get(Campaign, campaign_id)
    if campaign.prepared_at is None:
        enqueue_prepare(campaign_id)
    else:
        enqueue_batches(campaign_id)


def cancel(campaign_id: int, user_id: int | None) -> int:
    """Stop for good; messages not yet posted are cancelled, what was sent stays accounted for."""
    allowed = (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED, CampaignStatus.SENDING, CampaignStatus.PAUSED)
    if not _move(campaign_id, allowed, CampaignStatus.CANCELLED, finished_at=utcnow()):
        _refuse(campaign_id, "cancelled")
    db.session.flush()
    # Rows a batch already marked in flight are SENDING and keep going; the rest never leave.
    cancelled = db.session.execute(
        update(Message).where(Message.campaign_id == campaign_id, Message.status == MessageStatus.CREATED)
        .values(status=MessageStatus.CANCELLED, claim_token=None)
    ).rowcount
    prepared = db.session.scalar(select(Campaign.prepared_at).where(Campaign.id == campaign_id)) is not None
    audit(campaign_id, user_id, "cancelled",
          f"{cancelled} messages not sent" if prepared else "before sending started: nothing was sent")
    db.session.commit()
    return cancelled


def cancel_leftovers(campaign_id: int) -> int:
    """Messages that came back unsent after their campaign was stopped for good (a POST on the wire at the
    cancel whose reply said "try again") are cancelled too, so nothing stays queued in a campaign that
    will never send it; one guarded UPDATE, run after the reply's commit, so a cancel committed on either
    side of it is seen by one of the two statements."""
    stopped = select(Campaign.id).where(Campaign.id == campaign_id,
                                        Campaign.status.in_((CampaignStatus.CANCELLED, CampaignStatus.FAILED)))
    cancelled = db.session.execute(
        update(Message).where(Message.campaign_id == campaign_id, Message.status == MessageStatus.CREATED,
                              stopped.exists())
        .values(status=MessageStatus.CANCELLED, claim_token=None, claimed_at=None)
    ).rowcount
    if cancelled:
        audit(campaign_id, None, "not sent", f"{cancelled} message{'s' if cancelled != 1 else ''} on the wire "
              "when it ended came back unsent; they will not be sent")
    db.session.commit()
    return cancelled


def cancel_held(campaign_id: int, user_id: int | None) -> int:
    """A person's choice: the messages held for quiet hours are not sent at their window; the rest goes on.

    Only rows still held and unclaimed are cancelled (one guarded UPDATE): a held row a batch claimed
    meanwhile, its window having opened, is the batch's to send. The campaign completes at once when
    nothing else remains."""
    if not _move(campaign_id, (CampaignStatus.SENDING,), CampaignStatus.SENDING) and not _move(
            campaign_id, (CampaignStatus.PAUSED,), CampaignStatus.PAUSED):
        _refuse(campaign_id, "changed")
    cancelled = db.session.execute(
        update(Message).where(Message.campaign_id == campaign_id, Message.kind == MessageKind.CAMPAIGN,
                              Message.status == MessageStatus.CREATED, Message.held.is_(True),
                              Message.claim_token.is_(None))
        .values(status=MessageStatus.CANCELLED)
    ).rowcount
    if not cancelled:
        db.session.rollback()
        raise CampaignProblem("No message is held for quiet hours any more: they were sent or are being sent. "
                              "Reload to see the campaign.")
    audit(campaign_id, user_id, "cancelled held messages",
          f"{cancelled} message{'s' if cancelled != 1 else ''} held for quiet hours will not be sent")
    db.session.commit()
    complete_if_done(campaign_id)
    return cancelled


def fail(campaign_id: int, reason: str) -> bool:
    """The campaign can't go on at all (its lists or sender number are gone)."""
    if not _move(campaign_id, ACTIVE, CampaignStatus.FAILED, failed_reason=reason, finished_at=utcnow()):
        db.session.rollback()
        return False
    db.session.execute(
        update(Message).where(Message.campaign_id == campaign_id, Message.status == MessageStatus.CREATED)
        .values(status=MessageStatus.CANCELLED, claim_token=None))
    audit(campaign_id, None, "failed", reason)
    db.session.commit()
    return True


def complete_if_done(campaign_id: int) -> bool:
    """SENDING -> COMPLETED once no message is waiting or in flight (checked in the same UPDATE, so a
    resend adding rows at that moment either keeps it sending or reopens it; see resend_unconfirmed)."""
    waiting = (select(Message.id).where(Message.campaign_id == campaign_id, Message.kind == MessageKind.CAMPAIGN,
                                        Message.status.in_((MessageStatus.CREATED, MessageStatus.SENDING)))
               .exists())
    done = db.session.execute(
        update(Campaign).where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.SENDING,
                               Campaign.prepared_at.is_not(None), ~waiting)
        .values(status=CampaignStatus.COMPLETED, finished_at=utcnow(), updated_at=utcnow())
    ).rowcount
    if not done:
        db.session.rollback()
        return False
    audit(campaign_id, None, "completed")
    db.session.commit()
    return True


def reopen_if_waiting(campaign_id: int) -> bool:
    """COMPLETED -> SENDING when rows still wait to be sent (the safety net behind complete_if_done)."""
    waiting = (select(Message.id).where(Message.campaign_id == campaign_id, Message.kind == MessageKind.CAMPAIGN,
                                        Message.status == MessageStatus.CREATED).exists())
    if not db.session.execute(
        update(Campaign).where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.COMPLETED, waiting)
        .values(status=CampaignStatus.SENDING, finished_at=None, updated_at=utcnow())
    ).rowcount:
        db.session.rollback()
        return False
    audit(campaign_id, None, "reopened", "messages were still waiting to be sent")
    db.session.commit()
    return True


def sending_problem(campaign: Campaign) -> str | None:
    """Why a sending campaign cannot go on at all, or None."""
    if campaign.sender_number_id is None or db.session.get(SenderNumber, campaign.sender_number_id) is None:
        return "Its sender number was deleted."
    if campaign.prepared_at is None:
        lists = db.session.scalar(select(func.count()).select_from(CampaignList)
                                  .where(CampaignList.campaign_id == campaign.id))
        if not lists:
            return "Its lists were deleted."
    return None


def unconfirmed(campaign_id: int, now: datetime | None = None):
    """A SELECT of the campaign's UNKNOWN messages past the grace period and not resent yet.

    Only the campaign's own messages: a draft's test sends carry its id too, and must never be resent
    to the test numbers as part of the campaign."""
    limit = (now or utcnow()) - timedelta(seconds=current_app.config["UNCONFIRMED_GRACE_SECONDS"])
    return select(Message).where(Message.campaign_id == campaign_id, Message.kind == MessageKind.CAMPAIGN,
                                 Message.status == MessageStatus.UNKNOWN,
                                 Message.resent.is_(False), Message.sent_at <= limit)


def resend_unconfirmed(campaign_id: int, user_id: int | None, now: datetime | None = None) -> int:
    """A person's explicit, audited choice: send again the messages no callback confirmed.

    Each resend is a new row with its own reference; the original is marked resent, so if its
    callback arrives after all, the message is counted as sent twice instead of silently.
    """
    campaign = db.session.get(Campaign, campaign_id)
    if campaign.status not in (CampaignStatus.SENDING, CampaignStatus.PAUSED, CampaignStatus.COMPLETED):
        raise CampaignProblem(f"The campaign is {campaign.status}; only a sending, paused or completed campaign "
                              "can resend unconfirmed messages.")
    # Take the campaign row first (and reopen a completed one), so completion can't slip in between.
    if not _move(campaign_id, (CampaignStatus.SENDING, CampaignStatus.COMPLETED), CampaignStatus.SENDING,
                 finished_at=None) and not _move(campaign_id, (CampaignStatus.PAUSED,), CampaignStatus.PAUSED):
        _refuse(campaign_id, "resent")
    originals = db.session.scalars(unconfirmed(campaign_id, now).with_for_update()).all()
    if not originals:
        db.session.rollback()
        return 0
    ids = [original.id for original in originals]
    marked = db.session.execute(update(Message).where(Message.id.in_(ids), Message.resent.is_(False),
                                                      Message.status == MessageStatus.UNKNOWN)
                                .values(resent=True)).rowcount
    if marked != len(ids):  # another person clicked at the same moment
        db.session.rollback()
        raise CampaignProblem("These messages are being resent already. Reload to see the campaign.")
    for original in originals:
        db.session.add(Message(
            team_id=original.team_id, campaign_id=campaign_id, contact_id=original.contact_id, kind=original.kind,
            phone=original.phone, sender=original.sender, text=original.text, encoding=original.encoding,
            parts=original.parts, estimated_cost=original.estimated_cost, is_mms=original.is_mms,
            resend_of_id=original.id))
    audit(campaign_id, user_id, "resent unconfirmed", f"{len(originals)} messages")
    db.session.commit()
    if db.session.get(Campaign, campaign_id).status is CampaignStatus.SENDING:
        enqueue_batches(campaign_id)
    return len(originals)


# --- budget ----------------------------------------------------------------------------------------


def reserve_budget(campaign_id: int, costs: list[Decimal]) -> int:
    """Reserve the estimated cost of as many of the next messages, in order, as fit under the cap; how many.

    One guarded UPDATE, read again and retried when another worker reserved in between, so workers
    posting at once never pass the cap together and the last messages that fit are still sent. It does
    not commit: the caller's in-flight mark commits with it, so whoever finds the cap reached and pauses
    (pause_at_budget_cap) sees every reservation together with its mark, never one without the other.
    """
    for _ in range(RESERVE_TRIES):  # each retry follows another worker's reservation
        cap, reserved = db.session.execute(
            select(Campaign.budget_cap, Campaign.reserved_cost).where(Campaign.id == campaign_id)).one()
        fit, amount = 0, Decimal(0)
        for cost in costs:
            if cap is not None and reserved + amount + cost > cap:
                break
            fit, amount = fit + 1, amount + cost
        if not fit:
            return 0
        if db.session.execute(
            update(Campaign).where(
                Campaign.id == campaign_id,
                # Half the column's last place: SQLite adds these figures as floats, whose 0.24 + 0.015
                # can exceed 0.255; PostgreSQL's exact numerics are unaffected.
                Campaign.budget_cap.is_(None) | (Campaign.reserved_cost + amount <= Campaign.budget_cap + HALF_UNIT))
            .values(reserved_cost=Campaign.reserved_cost + amount)
        ).rowcount:
            return fit
    return 0  # contended beyond reason: pausing a message early is the safe side


def pause_at_budget_cap(campaign_id: int) -> bool:
    """The next message would pass the cap: pause, saying so (every message that fitted was marked first)."""
    cap = db.session.scalar(select(Campaign.budget_cap).where(Campaign.id == campaign_id))
    return pause(campaign_id, None, f"The budget cap of {cap} would be passed by the next messages. "
                                    "Raise the cap and resume, or cancel.")


def window_of(campaign: Campaign) -> Window:
    return Window(_clock(campaign.quiet_start, time(8)), _clock(campaign.quiet_end, time(21)))


def _clock(value: str | None, default: time) -> time:
    try:
        return time.fromisoformat(value) if value else default
    except ValueError:
        return default


# --- queueing --------------------------------------------------------------------------------------


def enqueue_prepare(campaign_id: int) -> None:
    """Queue the job that freezes the audience (safe twice: it does its work once)."""
    _enqueue("jobs.sending.prepare_campaign", campaign_id)


def enqueue_batches(campaign_id: int, count: int | None = None) -> None:
    """Queue `count` batch jobs (SEND_PARALLEL_BATCHES by default); extra jobs find nothing to claim."""
    for _ in range(count or current_app.config["SEND_PARALLEL_BATCHES"]):
        _enqueue("jobs.sending.send_batch", campaign_id)


def enqueue_next(campaign_id: int, delay: float | None) -> None:
    """The batch after this one, at the end of the queue so other campaigns get their turn."""
    _enqueue("jobs.sending.send_batch", campaign_id, delay=delay)


def _enqueue(job: str, campaign_id: int, at: datetime | None = None, delay: float | None = None) -> None:
    """Queue by dotted name; with Redis down the periodic sweep starts it later (the database is the truth)."""
    try:
        queue = get_queue(SEND_QUEUE)
        timeout = current_app.config["SEND_JOB_TIMEOUT"]
        if at is not None:
            queue.enqueue_at(at.astimezone(UTC), job, campaign_id, job_timeout=timeout)
        elif delay:
            queue.enqueue_in(timedelta(seconds=delay), job, campaign_id, job_timeout=timeout)
        else:
            queue.enqueue(job, campaign_id, job_timeout=timeout)
    except RedisError:
        logger.warning("could not queue %s for campaign %s; the sweep will", job, campaign_id)
