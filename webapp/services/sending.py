"""Sending a campaign's messages exactly once: claim, check, mark in flight, POST, record.

Each message row exists before anything is sent (the audience is frozen at launch) and carries its own
`reference`, which MultiTEL echoes in callbacks. A batch job walks through these steps, and each step
is a guarded UPDATE, so a crash at any point leaves every row in a state that says what is safe:

1. claim: a batch takes up to `batch_size` CREATED rows by writing its random claim token on them
   (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite serialises writers). A claim that is never marked in
   flight is safe to release: nothing was posted.
2. per group of rows filling the free POST slots (at most `concurrency` on the wire): the campaign must
   still be sending (pause and cancel take effect here, within one refill), opted-out numbers are
   dropped (a STOP that arrived after launch), rows outside the recipient's quiet hours are held until
   their window opens, the shared rate limit and the budget cap are consulted.
3. mark in flight: CREATED -> SENDING for exactly the rows about to be posted, checked against the
   claim token and the campaign's state, committed *before* the POSTs. After a crash, only SENDING
   rows may have reached the provider, and the sweeper makes them UNKNOWN, never CREATED. This is the
   one commit that waits for PostgreSQL's disk flush; the others need not (_relax_commit says why).
4. POST concurrently (a pool of `concurrency` threads, one kept-alive session per thread), refilling
   slots as POSTs finish rather than waiting for a whole group (_pipeline), and record each outcome
   with the claim token in the WHERE clause, so a slow worker whose claim was taken over can never
   overwrite the worker that replaced it.

Outcomes (webapp.provider.multitel): ACCEPTED keeps uniqueid, parts and cost; NOT_SENT goes back to
CREATED with exponential backoff and jitter (Retry-After honoured) until `max_attempts`, then FAILED;
REFUSED fails that message; ACCOUNT pauses the campaign with the reason (the message was not taken,
so it goes back to CREATED); AMBIGUOUS becomes UNKNOWN: reconciled from callbacks, resent only by a
person's audited "resend unconfirmed". RQ's Retry never wraps any of this, and a job that runs twice
finds nothing left to claim.
"""

import contextlib
import logging
import random
import secrets
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from flask import current_app
from sqlalchemy import and_, bindparam, case, exists, func, or_, select, text, update

from webapp.extensions import db
from webapp.models import (
    Campaign,
    CampaignStatus,
    Message,
    MessageKind,
    MessageStatus,
    SenderNumber,
    Suppression,
    Team,
    utcnow,
)
from webapp.provider.multitel import MultitelClient, Outcome, SendResult
from webapp.services import campaign_states
from webapp.services.campaigns import image_path
from webapp.services.quiet_hours import Window
from webapp.services.quiet_hours import check as quiet_check
from webapp.services.ratelimit import RateLimiter
from webapp.services.teams import notify_url, team_credentials

logger = logging.getLogger(__name__)

AFTER_ACCEPTED = (MessageStatus.SENDING, MessageStatus.ACCEPTED, MessageStatus.DELIVERED, MessageStatus.UNDELIVERED)
LONG_WAIT = 1.0  # seconds: a wait longer than this re-queues the batch instead of sleeping in it


@dataclass(frozen=True)
class BatchReport:
    """What one batch did; the job logs it and decides whether to queue the next one."""

    claimed: int = 0
    posted: int = 0
    accepted: int = 0
    held: int = 0
    opted_out: int = 0
    stopped: str | None = None  # why the batch ended early (paused, cancelled, rate limit, budget)
    next_in: float | None = None  # seconds until the next batch should run; None: as soon as possible


@dataclass
class _Settings:
    batch_size: int
    concurrency: int
    max_attempts: int
    backoff_base: float
    backoff_cap: float


def _settings() -> _Settings:
    config = current_app.config
    return _Settings(config["SEND_BATCH_SIZE"], config["SEND_CONCURRENCY"], config["SEND_MAX_ATTEMPTS"],
                     config["SEND_BACKOFF_SECONDS"], config["SEND_BACKOFF_CAP_SECONDS"])


def now_utc() -> datetime:
    """Naive UTC, as every timestamp column stores it."""
    return utcnow()


def _relax_commit() -> None:
    """Let this transaction commit without waiting for PostgreSQL's WAL flush (fsync): for writes safe to lose.

    Only the in-flight mark must be on disk before a POST (losing it could resend a message), and its
    ordinary commit flushes every earlier write with it. A claim, a heartbeat, a budget reservation, a
    release or a recorded reply lost with a crashed database server leaves rows unclaimed, claimed by a
    dead token (released by the sweep) or in flight (unknown after the sweep, never resent).
    """
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SET LOCAL synchronous_commit TO OFF"))


# --- claims ----------------------------------------------------------------------------------------


def claim(campaign_id: int, token: str, limit: int, now: datetime) -> list[int]:
    """Write `token` on up to `limit` due CREATED rows of the campaign; return their ids, oldest first."""
    due = (
        select(Message.id)
        .where(Message.campaign_id == campaign_id, Message.kind == MessageKind.CAMPAIGN,
               Message.status == MessageStatus.CREATED,
               Message.claim_token.is_(None), or_(Message.not_before.is_(None), Message.not_before <= now))
        .order_by(Message.id)
        .limit(limit)
    )
    if db.session.get_bind().dialect.name == "postgresql":
        # Locked and limited once, in a MATERIALIZED CTE: as a plain IN (subquery) the planner may run the
        # SKIP LOCKED subquery again per outer row, each run skipping what the last one locked, and claim
        # far more than `limit` rows.
        due = select(due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED").c.id)
    ids = db.session.scalars(
        update(Message).where(Message.id.in_(due.scalar_subquery()), Message.claim_token.is_(None))
        # A held row whose window has opened is due like any other: it is no longer waiting for quiet hours.
        .values(claim_token=token, claimed_at=now, held=False).returning(Message.id)
    ).all()
    _relax_commit()
    db.session.commit()
    return sorted(ids)


def release(token: str, ids: list[int] | None = None, not_before: datetime | None = None) -> int:
    """Give back claimed rows that were not marked in flight (nothing was posted for them)."""
    statement = update(Message).where(Message.claim_token == token, Message.status == MessageStatus.CREATED)
    if ids is not None:
        statement = statement.where(Message.id.in_(ids))
    values = {"claim_token": None, "claimed_at": None}
    if not_before is not None:
        values["not_before"] = not_before
    count = db.session.execute(statement.values(**values)).rowcount
    _relax_commit()
    db.session.commit()
    return count


# --- one batch -------------------------------------------------------------------------------------


def send_batch(campaign_id: int, *, client: MultitelClient | None = None, limiter: RateLimiter | None = None,
               clock=now_utc) -> BatchReport:
    """Claim and send one batch of the campaign's due messages; safe to run twice or concurrently."""
    settings = _settings()
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None or campaign.status is not CampaignStatus.SENDING or campaign.prepared_at is None:
        return BatchReport(stopped="not sending")
    team = db.session.get(Team, campaign.team_id)
    problem = campaign_states.sending_problem(campaign)
    if problem:
        campaign_states.fail(campaign_id, problem)
        return BatchReport(stopped=problem)
    if client is None:
        credentials = team_credentials(team)
        if credentials is None:
            campaign_states.pause(campaign_id, None, "The MultiTEL username and password are not set (Settings).")
            return BatchReport(stopped="no credentials")
        client = MultitelClient(current_app.config["MULTITEL_API_URL"], credentials)
    if limiter is None:
        limiter = team_limiter(team)
    sender = db.session.get(SenderNumber, campaign.sender_number_id).number
    media = _media(campaign)
    if campaign.is_mms and media is None:
        campaign_states.fail(campaign_id, "Its image is missing from the server; the MMS can't be sent.")
        return BatchReport(stopped="image missing")
    context = _Context(campaign_id=campaign_id, team_id=team.id, team_zone=team.timezone or "UTC",
                       window=campaign_states.window_of(campaign) if campaign.quiet_hours else None,
                       sender=sender, notify_url=notify_url(team), media=media,
                       settings=settings, client=client, limiter=limiter, clock=clock)
    token = secrets.token_hex(16)
    ids = claim(campaign_id, token, settings.batch_size, clock())
    if not ids:
        return BatchReport(stopped="nothing due")
    db.session.execute(update(Campaign).where(Campaign.id == campaign_id).values(heartbeat_at=clock()))
    _relax_commit()
    db.session.commit()
    totals = dict(claimed=len(ids), posted=0, accepted=0, held=0, opted_out=0)
    stopped, next_in = None, None
    try:
        with ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="send") as pool:
            stopped, next_in = _pipeline(context, token, ids, pool, totals) or (None, None)
    finally:
        # Rows still claimed were never marked in flight: give them back now rather than at the sweep.
        db.session.rollback()
        release(token)
    return BatchReport(**totals, stopped=stopped, next_in=next_in)


@dataclass
class _Context:
    campaign_id: int
    team_id: int
    team_zone: str
    window: Window | None
    sender: str
    notify_url: str
    media: bytes | None
    settings: _Settings
    client: MultitelClient
    limiter: RateLimiter
    clock: object


def _media(campaign: Campaign) -> bytes | None:
    """The MMS image's bytes (where the draft page stored it), or None without one or when it is gone."""
    path = image_path(campaign, current_app.config["UPLOAD_FOLDER"])
    try:
        return path.read_bytes() if path is not None else None
    except OSError:
        return None


def team_limiter(team: Team) -> RateLimiter:
    from webapp.queues import redis_connection

    rate = float(team.send_rate or current_app.config["SEND_RATE_DEFAULT"])
    burst = max(1, min(current_app.config["SEND_CONCURRENCY"], int(rate)))
    return RateLimiter(redis_connection(), rate, burst)


def _pipeline(context: _Context, token: str, ids: list[int], pool: ThreadPoolExecutor,
              totals: dict) -> tuple[str, float | None] | None:
    """Keep up to `concurrency` POSTs on the wire: refill free slots and record finished POSTs meanwhile.

    The database work (checks, the in-flight mark, recording replies) runs in this thread while the
    pool's threads wait on the provider, so a slow reply holds one slot, not the whole group. A refill
    waits for a quarter of the slots to be free, so each round trip to the database serves several rows.
    A stop (pause, cancel, rate limit, budget, an account error) ends refilling; what is on the wire is
    still recorded, and claimed rows never marked are released by the caller.
    """
    concurrency = context.settings.concurrency
    refill_at = max(1, concurrency // 4)
    waiting = deque(ids)
    flying: dict[Future, object] = {}
    finished: list[tuple[object, SendResult]] = []
    stop = None
    try:
        while flying or (waiting and stop is None):
            free = concurrency - len(flying)
            if waiting and stop is None and (free >= refill_at or not flying):
                group = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                rows, stop = _prepare(context, token, group, totals)
                for row in rows:
                    flying[pool.submit(_post, context, row)] = row
                totals["posted"] += len(rows)
                continue
            done, _ = wait(flying, return_when=FIRST_COMPLETED)
            finished.extend((flying.pop(future), future.result()) for future in done)
            if len(finished) >= refill_at or not flying or stop is not None:
                finished.sort(key=lambda item: item[0].id)  # rows locked in id order, as every writer does
                outcome = _record(context, token, [row for row, _ in finished],
                                  [result for _, result in finished], totals)
                finished = []
                stop = stop or outcome
    except BaseException:
        # A failure here (Redis or the database gone, the job's timeout) must not throw away replies to
        # POSTs that left: wait for them and record them in a fresh transaction, if the database lets us.
        db.session.rollback()
        finished.extend((row, future.result()) for future, row in flying.items())
        if finished:
            with contextlib.suppress(Exception):  # else the sweep makes them unknown: never resent blindly
                _record(context, token, [row for row, _ in finished], [result for _, result in finished], totals)
        raise
    return stop


def _prepare(context: _Context, token: str, group: list[int],
             totals: dict) -> tuple[list, tuple[str, float | None] | None]:
    """Check a group and mark in flight the rows to post now; returns (rows marked, why to stop or None)."""
    # One round trip: the rows, whether each number opted out since launch, and only while still sending.
    opted_out = exists().where(Suppression.team_id == context.team_id, Suppression.phone == Message.phone)
    rows = db.session.execute(
        select(Message.id, Message.phone, Message.text, Message.reference, Message.estimated_cost,
               Message.attempts, opted_out.label("opted_out"))
        .where(Message.id.in_(group), Message.claim_token == token, Message.status == MessageStatus.CREATED,
               exists().where(Campaign.id == context.campaign_id, Campaign.status == CampaignStatus.SENDING))
        .order_by(Message.id)
    ).all()
    if not rows:
        status = db.session.scalar(select(Campaign.status).where(Campaign.id == context.campaign_id))
        return [], (None if status is CampaignStatus.SENDING else (f"campaign {status}", None))
    rows = _drop_opted_out(context, token, rows, totals)
    rows = _hold_quiet_hours(context, token, rows, totals)
    if not rows:
        return [], None
    granted, wait_for = _take_rate(context, len(rows))
    stop = ("rate limit", wait_for) if granted < len(rows) else None
    if not granted:
        return [], stop
    rows = rows[:granted]
    _relax_commit()  # reserve_budget commits in this transaction; the in-flight mark's commit flushes it
    if not campaign_states.reserve_budget(context.campaign_id, sum(row.estimated_cost for row in rows)):
        return [], ("budget cap", None)
    in_flight = set(db.session.scalars(
        update(Message)
        .where(Message.id.in_([row.id for row in rows]), Message.claim_token == token,
               Message.status == MessageStatus.CREATED,
               exists().where(Campaign.id == context.campaign_id, Campaign.status == CampaignStatus.SENDING))
        .values(status=MessageStatus.SENDING, sent_at=context.clock())
        .returning(Message.id)
    ).all())
    db.session.commit()
    unsent = [row for row in rows if row.id not in in_flight]
    if unsent:  # the campaign stopped between the check and the mark: give their reservation back
        campaign_states.release_budget(context.campaign_id, sum(row.estimated_cost for row in unsent))
        stop = stop or ("campaign stopped", None)
    return [row for row in rows if row.id in in_flight], stop


def _post(context: _Context, row) -> SendResult:
    return context.client.send(sender=context.sender, to=row.phone, text=row.text, media=context.media,
                               notify_url=context.notify_url, reference=row.reference)


def _drop_opted_out(context: _Context, token: str, rows: list, totals: dict) -> list:
    """The opt-out list checked again just before sending: a STOP after launch stops that recipient."""
    stopped = {row.phone for row in rows if row.opted_out}
    if not stopped:
        return rows
    ids = [row.id for row in rows if row.phone in stopped]
    count = db.session.execute(
        update(Message)
        .where(Message.id.in_(ids), Message.claim_token == token, Message.status == MessageStatus.CREATED)
        .values(status=MessageStatus.OPTED_OUT, claim_token=None, error="Opted out after the campaign was launched")
    ).rowcount
    db.session.execute(update(Campaign).where(Campaign.id == context.campaign_id)
                       .values(opt_outs_caused=Campaign.opt_outs_caused + count))
    db.session.commit()
    totals["opted_out"] += count
    return [row for row in rows if row.phone not in stopped]


def _hold_quiet_hours(context: _Context, token: str, rows: list, totals: dict) -> list:
    """Rows outside their recipient's sending window wait (released, not_before set) until it opens."""
    if context.window is None or not rows:
        return rows
    now = context.clock().replace(tzinfo=UTC)
    ready, held = [], {}
    for row in rows:
        verdict = quiet_check(row.phone, now, context.team_zone, context.window)
        if verdict.send_now:
            ready.append(row)
        else:
            held.setdefault(verdict.next_open.astimezone(UTC).replace(tzinfo=None), []).append(row.id)
    for opening, ids in held.items():
        db.session.execute(
            update(Message).where(Message.id.in_(ids), Message.claim_token == token)
            .values(claim_token=None, claimed_at=None, not_before=opening, held=True))
    if held:
        db.session.commit()
        totals["held"] += sum(len(ids) for ids in held.values())
    return ready


def _take_rate(context: _Context, count: int) -> tuple[int, float]:
    """Take up to `count` send slots of the team's shared rate, waiting at most LONG_WAIT in all.

    Returns (slots granted, seconds until the next slot when fewer than asked); the batch sends what it
    was granted and re-queues itself for the rest instead of sleeping through a long wait.
    """
    granted = 0
    deadline = time.monotonic() + LONG_WAIT
    while granted < count:
        chunk = min(count - granted, context.limiter.burst)
        ok, wait = context.limiter.take(f"team:{context.team_id}", chunk)
        if ok:
            granted += chunk
        elif time.monotonic() + wait <= deadline:
            time.sleep(wait)
        else:
            return granted, wait
    return granted, 0.0


def _backoff(settings: _Settings, attempts: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; never sooner than the provider's Retry-After."""
    ceiling = min(settings.backoff_cap, settings.backoff_base * (2 ** max(0, attempts - 1)))
    delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret
    return max(delay, min(retry_after or 0.0, settings.backoff_cap))  # a year-long Retry-After is not obeyed


def _accepted_update(token: str):
    """Record an accepted row (executemany: b_id, b_unique_id, b_pid, b_parts, b_cost), guarded by the claim.

    A fast callback may have moved the row on already (webapp.services.delivery): keep its status and the
    billed figures it brought (the provider's latest word), and add what only the reply carries. The
    reply's own parts and cost are kept in reply_* either way, so a disagreement stays visible; they are
    the billed figures only until a callback brings its own. A reply so slow that the sweep already
    called the row unknown (its claim cleared) is still the provider's word that it was sent: take it, and
    if a person had resent it meanwhile, count the message as sent twice.
    """
    table = Message.__table__
    was_unknown = table.c.status == MessageStatus.UNKNOWN
    return (
        update(table)
        .where(table.c.id == bindparam("b_id"),
               or_(and_(table.c.claim_token == token,
                        or_(*(table.c.status == status for status in AFTER_ACCEPTED))),  # IN () can't executemany
                   was_unknown))
        .values(claim_token=None, claimed_at=None,
                # A faster callback's final state keeps its reason (why it was undelivered).
                error=case((or_(table.c.status == MessageStatus.SENDING, was_unknown), None), else_=table.c.error),
                sent_twice=case((was_unknown, table.c.resent), else_=table.c.sent_twice),
                status=case((or_(table.c.status == MessageStatus.SENDING, was_unknown), MessageStatus.ACCEPTED),
                            else_=table.c.status),
                unique_id=bindparam("b_unique_id"), pid=bindparam("b_pid"),
                reply_parts=bindparam("b_parts", type_=table.c.reply_parts.type),
                reply_cost=bindparam("b_cost", type_=table.c.reply_cost.type),
                billed_parts=func.coalesce(table.c.billed_parts, bindparam("b_parts", type_=table.c.billed_parts.type)),
                billed_cost=func.coalesce(table.c.billed_cost, bindparam("b_cost", type_=table.c.billed_cost.type)))
    )


def _record(context: _Context, token: str, rows: list, results: list[SendResult],
            totals: dict) -> tuple[str, float | None] | None:
    """Write each outcome, guarded by the claim token; returns a stop reason for account errors."""
    now = context.clock()
    account_problem = None
    released_cost = Decimal(0)
    billed_delta = Decimal(0)
    guard = and_(Message.claim_token == token, Message.status == MessageStatus.SENDING)
    accepted = []
    for row, result in zip(rows, results, strict=True):
        values: dict = {"claim_token": None, "claimed_at": None}
        if result.outcome is Outcome.ACCEPTED:
            totals["accepted"] += 1
            accepted.append({"b_id": row.id, "b_unique_id": result.unique_id, "b_pid": result.pid,
                             "b_parts": result.parts, "b_cost": result.cost})
            if result.cost is not None:
                billed_delta += result.cost - row.estimated_cost
            continue
        elif result.outcome is Outcome.NOT_SENT and row.attempts + 1 < context.settings.max_attempts:
            delay = _backoff(context.settings, row.attempts + 1, result.retry_after)
            values.update(status=MessageStatus.CREATED, attempts=row.attempts + 1, error=result.reason,
                          not_before=now + timedelta(seconds=delay), sent_at=None)
            released_cost += row.estimated_cost
        elif result.outcome in (Outcome.NOT_SENT, Outcome.REFUSED):
            values.update(status=MessageStatus.FAILED, attempts=row.attempts + 1, error=result.reason,
                          finished_at=now)
            released_cost += row.estimated_cost
        elif result.outcome is Outcome.ACCOUNT:
            values.update(status=MessageStatus.CREATED, error=result.reason, sent_at=None)
            released_cost += row.estimated_cost
            account_problem = result.reason
        else:  # AMBIGUOUS: it may have been sent
            values.update(status=MessageStatus.UNKNOWN, error=result.reason)
        db.session.execute(update(Message).where(Message.id == row.id, guard).values(**values))
    if accepted:  # the common case: one statement for the group (executemany), not one round trip per row
        db.session.execute(_accepted_update(token), accepted)
    db.session.execute(update(Campaign).where(Campaign.id == context.campaign_id).values(
        reserved_cost=Campaign.reserved_cost - released_cost + billed_delta, heartbeat_at=now))
    _relax_commit()
    db.session.commit()
    if account_problem:
        campaign_states.pause(context.campaign_id, None, f"Paused by the provider's answer: {account_problem}")
        return "account", None
    return None


# --- what is left ----------------------------------------------------------------------------------


def next_due(campaign_id: int, now: datetime) -> tuple[int, datetime | None, int]:
    """(unclaimed rows due now, the earliest later not_before, rows in flight) of a campaign."""
    due = db.session.scalar(select(func.count()).select_from(Message).where(
        Message.campaign_id == campaign_id, Message.kind == MessageKind.CAMPAIGN,
        Message.status == MessageStatus.CREATED, Message.claim_token.is_(None),
        or_(Message.not_before.is_(None), Message.not_before <= now)))
    later = db.session.scalar(select(func.min(Message.not_before)).where(
        Message.campaign_id == campaign_id, Message.status == MessageStatus.CREATED, Message.not_before > now))
    in_flight = db.session.scalar(select(func.count()).select_from(Message).where(
        Message.campaign_id == campaign_id, Message.status == MessageStatus.SENDING))
    return due, later, in_flight


# --- recovery --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recovery:
    """What one sweep found and did (logged, and returned by `campaigns reconcile`)."""

    unknown: int = 0  # in flight when their worker died: may have been sent
    released: int = 0  # claimed by a dead worker before being marked in flight: safe to send
    restarted: list[int] | None = None  # campaigns whose batches were queued again
    completed: list[int] | None = None
    started: list[int] | None = None  # scheduled campaigns whose time had come


def recover(now: datetime | None = None) -> Recovery:
    """Carry every campaign on from the database after a dead worker, a lost Redis or a restart.

    Safe to run at any time and twice: a row in flight longer than any POST can take becomes UNKNOWN
    (never CREATED: it may have reached the provider), a claim older than any job can live is
    released (nothing was posted), and campaigns with work due and no recent batch get new jobs.
    """
    config = current_app.config
    now = now or utcnow()
    in_flight_limit = now - timedelta(seconds=config["SEND_IN_FLIGHT_SECONDS"])
    claim_limit = now - timedelta(seconds=config["SEND_JOB_TIMEOUT"] + 60)
    stale = select(Message.id).where(Message.status == MessageStatus.SENDING, Message.sent_at < in_flight_limit)
    if db.session.get_bind().dialect.name == "postgresql":  # lock in id order, as the engine does: no deadlock
        stale = stale.order_by(Message.id).with_for_update()
    unknown = db.session.execute(
        update(Message).where(Message.id.in_(stale.scalar_subquery()), Message.status == MessageStatus.SENDING)
        .values(status=MessageStatus.UNKNOWN, claim_token=None,
                error="The worker stopped while this message was being posted; it may have been sent.")
    ).rowcount
    released = db.session.execute(
        update(Message).where(Message.status == MessageStatus.CREATED, Message.claim_token.is_not(None),
                              Message.claimed_at < claim_limit)
        .values(claim_token=None, claimed_at=None)
    ).rowcount
    db.session.commit()

    started = []
    for campaign_id in db.session.scalars(select(Campaign.id).where(
            Campaign.status == CampaignStatus.SCHEDULED, Campaign.scheduled_at <= now)).all():
        if campaign_states.start_scheduled(campaign_id, now):
            started.append(campaign_id)
    restarted, completed = [], []
    quiet_since = now - timedelta(seconds=config["SEND_STALL_SECONDS"])
    finished_since = now - timedelta(days=2)
    for campaign_id in db.session.scalars(select(Campaign.id).where(
            Campaign.status == CampaignStatus.COMPLETED, Campaign.finished_at >= finished_since)).all():
        campaign_states.reopen_if_waiting(campaign_id)
    for campaign in db.session.scalars(select(Campaign).where(Campaign.status == CampaignStatus.SENDING)).all():
        if campaign.prepared_at is None:
            if campaign.id in started or (campaign.launched_at or now) <= quiet_since:
                campaign_states.enqueue_prepare(campaign.id)
                restarted.append(campaign.id)
            continue
        due, _later, in_flight = next_due(campaign.id, now)
        if due and (campaign.heartbeat_at is None or campaign.heartbeat_at <= quiet_since):
            campaign_states.enqueue_batches(campaign.id)
            restarted.append(campaign.id)
        elif not due and not in_flight and campaign_states.complete_if_done(campaign.id):
            completed.append(campaign.id)
    return Recovery(unknown, released, restarted, completed, started)
