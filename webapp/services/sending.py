"""Sending a campaign's messages exactly once: claim, check, mark in flight, POST, record.

Each message row exists before anything is sent (the audience is frozen at launch) and carries its own
`reference`, which MultiTEL echoes in callbacks. A batch job walks through these steps, and each step
is a guarded UPDATE, so a crash at any point leaves every row in a state that says what is safe:

1. claim: a batch takes up to `batch_size` CREATED rows by writing its random claim token on them
   (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite serialises writers). A claim that is never marked in
   flight is safe to release: nothing was posted.
2. per group of rows filling the free POST slots (at most `concurrency` on the wire): rows outside the
   recipient's quiet hours are held until their window opens, the shared rate limit and the budget
   cap are consulted.
3. mark in flight: CREATED -> SENDING for exactly the rows about to be posted, in one statement
   checked against the claim token, the campaign's state (pause and cancel take effect here, within
   one refill) and the opt-out list (a STOP that arrived after launch stops that recipient), and
   committed *before* the POSTs. After a crash, only SENDING rows may have reached the provider, and
   the sweeper makes them UNKNOWN, never CREATED. This is the one commit that waits for PostgreSQL's
   disk flush; the others need not (_relax_commit says why).
4. POST concurrently (a pool of `concurrency` threads, one kept-alive session per thread), refilling
   slots as POSTs finish rather than waiting for a whole group (_pipeline), and record the outcomes
   of a round of replies (one statement for the accepted ones) with the claim token in the WHERE
   clause, so a slow worker whose claim was taken over can never overwrite the worker that replaced it.

Outcomes (webapp.provider.multitel): ACCEPTED keeps uniqueid, parts and cost; NOT_SENT goes back to
CREATED with exponential backoff and jitter (Retry-After honoured) until `max_attempts`, then FAILED;
REFUSED fails that message; ACCOUNT pauses the campaign with the reason (the message was not taken,
so it goes back to CREATED); AMBIGUOUS becomes UNKNOWN: reconciled from callbacks, resent only by a
person's audited "resend unconfirmed". RQ's Retry never wraps any of this, and a job that runs twice
finds nothing left to claim.
"""

import contextlib
import logging
import math
import queue
import random
import secrets
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from flask import current_app
from sqlalchemy import (
    Integer,
    and_,
    any_,
    bindparam,
    case,
    column,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import InterfaceError, OperationalError

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
from webapp.services import batches, campaign_states
from webapp.services.campaigns import image_path
from webapp.services.quiet_hours import Window
from webapp.services.quiet_hours import check as quiet_check
from webapp.services.ratelimit import RateLimiter, team_limiter
from webapp.services.teams import notify_url, team_credentials

logger = logging.getLogger(__name__)

AFTER_ACCEPTED = (MessageStatus.SENDING, MessageStatus.ACCEPTED, MessageStatus.DELIVERED, MessageStatus.UNDELIVERED)
LONG_WAIT = 1.0  # seconds: a wait longer than this re-queues the batch instead of sleeping in it
BATCH_SECONDS = 60  # a batch claims no more than its team's rate posts in this long (SEND_JOB_TIMEOUT: 600 s)
DRAIN_SECONDS = 60  # longer than any POST can take (MultitelClient's timeouts): a failed batch waits for replies
RECORD_SECONDS = 0.5  # a reply waits at most about this long to be recorded with the next round
HEARTBEAT_SECONDS = 5.0  # how often a batch tells the sweep it is alive (SEND_STALL_SECONDS is far longer)
CAP_SET = "budget cap set"  # a batch that reserved its whole claim ends; the next reserves group by group
CLAIM_RELEASED = "claim released"  # the sweep took a silent batch's claims: it stops (webapp.services.batches)
DATABASE_DOWN = (OperationalError, InterfaceError)  # the connection is gone (a restart, a crash, the network)


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


def _relax_commit() -> None:
    """Let this transaction commit without waiting for PostgreSQL's WAL flush (fsync): for writes safe to lose.

    Only the in-flight mark must be on disk before a POST (losing it could resend a message), and its
    ordinary commit flushes every earlier write with it. A claim, a heartbeat, a budget reservation, a
    release or a recorded reply lost with a crashed database server leaves rows unclaimed, claimed by a
    dead token (released by the sweep) or in flight (unknown after the sweep, never resent).
    """
    if _is_postgresql():
        db.session.execute(text("SET LOCAL synchronous_commit TO OFF"))


def _is_postgresql() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


# The hot statements are Core statements on the tables, built once: the ORM's bulk UPDATE path (which
# synchronises the session's objects) and rebuilding statements per group cost more than the POSTs.
_message = Message.__table__
_campaign = Campaign.__table__
_suppression = Suppression.__table__


def _mark_in_flight(uncapped: bool, postgresql: bool):
    """CREATED -> SENDING for the given claimed rows, while the campaign is sending (and, for a batch that
    reserved its whole claim, still has no budget cap), unless the number opted out since launch.

    On PostgreSQL the ids go as one array (= ANY), so the statement's text is the same for any number of
    rows and stays prepared, instead of being planned again for each count as IN (...) would be.
    """
    campaign = [_campaign.c.id == bindparam("b_campaign_id"), _campaign.c.status == CampaignStatus.SENDING]
    if uncapped:
        campaign.append(_campaign.c.budget_cap.is_(None))
    ids = (_message.c.id == any_(bindparam("b_ids", type_=ARRAY(Integer))) if postgresql
           else _message.c.id.in_(bindparam("b_ids", expanding=True)))
    return (
        update(_message)
        .where(ids, _message.c.claim_token == bindparam("b_token"),
               _message.c.status == MessageStatus.CREATED, exists().where(*campaign),
               ~exists().where(_suppression.c.team_id == bindparam("b_team_id"),
                               _suppression.c.phone == _message.c.phone))
        .values(status=MessageStatus.SENDING, sent_at=bindparam("b_now"))
        .returning(_message.c.id)
    )


_MARK_IN_FLIGHT = {(uncapped, postgresql): _mark_in_flight(uncapped, postgresql)
                   for uncapped in (False, True) for postgresql in (False, True)}
_RECORD_OTHER = (
    update(_message)
    .where(_message.c.id == bindparam("b_id"), _message.c.claim_token == bindparam("b_token"),
           _message.c.status == MessageStatus.SENDING)
)


# --- claims ----------------------------------------------------------------------------------------


def claim(campaign_id: int, token: str, limit: int, now: datetime) -> list:
    """Write `token` on up to `limit` due CREATED rows of the campaign; return them (what a POST needs), by id."""
    due = (
        select(_message.c.id)
        .where(_message.c.campaign_id == campaign_id, _message.c.kind == MessageKind.CAMPAIGN,
               _message.c.status == MessageStatus.CREATED, _message.c.claim_token.is_(None),
               or_(_message.c.not_before.is_(None), _message.c.not_before <= now))
        .order_by(_message.c.id)
        .limit(limit)
    )
    if _is_postgresql():
        # Locked and limited once, in a MATERIALIZED CTE: as a plain IN (subquery) the planner may run the
        # SKIP LOCKED subquery again per outer row, each run skipping what the last one locked, and claim
        # far more than `limit` rows.
        due = select(due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED").c.id)
    rows = db.session.execute(
        update(_message).where(_message.c.id.in_(due.scalar_subquery()), _message.c.claim_token.is_(None))
        # A held row whose window has opened is due like any other: it is no longer waiting for quiet hours.
        .values(claim_token=token, claimed_at=now, held=False)
        .returning(_message.c.id, _message.c.phone, _message.c.text, _message.c.reference,
                   _message.c.estimated_cost, _message.c.attempts)
    ).all()
    if rows:  # the batch's heartbeat row commits with its claim
        batches.begin(token, campaign_id, now)
    _relax_commit()
    db.session.commit()
    return sorted(rows, key=lambda row: row.id)


def release(token: str, ids: list[int] | None = None, not_before: datetime | None = None) -> int:
    """Give back claimed rows that were not marked in flight (nothing was posted for them); without ids,
    all of them and the batch's heartbeat row: the batch is over."""
    statement = update(_message).where(_message.c.claim_token == token, _message.c.status == MessageStatus.CREATED)
    if ids is not None:
        statement = statement.where(_message.c.id.in_(ids))
    else:
        batches.end(token)
    values = {"claim_token": None, "claimed_at": None}
    if not_before is not None:
        values["not_before"] = not_before
    count = db.session.execute(statement.values(**values)).rowcount
    _relax_commit()
    db.session.commit()
    return count


# --- one batch -------------------------------------------------------------------------------------


def send_batch(campaign_id: int, *, client: MultitelClient | None = None, limiter: RateLimiter | None = None,
               clock=utcnow) -> BatchReport:
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
    rows = claim(campaign_id, token, claim_size(settings.batch_size, settings.concurrency, limiter.per_second),
                 clock())
    if not rows:
        return BatchReport(stopped="nothing due")
    context.heartbeat = batches.Heartbeat(token, campaign_id)
    spend = _Spend(campaign_id, sum(row.estimated_cost for row in rows), clock())
    totals = dict(claimed=len(rows), posted=0, accepted=0, held=0, opted_out=0)
    stopped, next_in = None, None
    try:
        with ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="send") as pool:
            stopped, next_in = _pipeline(context, token, rows, pool, totals, spend) or (None, None)
    finally:
        # Rows still claimed were never marked in flight: give them back now rather than at the sweep.
        when_reachable(lambda: release(token), context.heartbeat.release_deadline())
        spend.close(clock())
    return BatchReport(**totals, stopped=stopped, next_in=next_in)


def when_reachable(write, deadline: float) -> None:
    """Run `write` (which commits), retried with backoff while the database is unreachable (a restart
    takes seconds), until `deadline` (monotonic): past it the sweep does the same, the batch's heartbeat
    having stopped (its claims released, its rows in flight made unknown)."""
    delay = 0.1
    while True:
        try:
            db.session.rollback()
            write()
            return
        except DATABASE_DOWN:
            if time.monotonic() + delay > deadline:
                raise
            logger.info("the database is unreachable; the batch's last writes are retried in %.1f s", delay)
            time.sleep(delay)
            delay = min(2 * delay, 2.0)


def claim_size(batch_size: int, concurrency: int, per_second: float) -> int:
    """What a batch claims: SEND_BATCH_SIZE, or what the team's rate lets it post in BATCH_SECONDS when
    that is less, so a batch of a slow team ends long before RQ's job timeout (a team at one message a
    second would take 17 minutes over 1,024)."""
    return max(1, min(batch_size, max(concurrency, math.ceil(per_second * BATCH_SECONDS))))


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
    heartbeat: batches.Heartbeat | None = None  # set once the batch has claimed rows


class _Spend:
    """A batch's part of the campaign's reserved spend, which the budget cap is checked against.

    With a cap, each group reserves the estimated cost of the rows that fit, in its in-flight mark's
    transaction (campaign_states.reserve_budget: a guarded UPDATE, so workers together can't pass the
    cap); those rows are posted, and the campaign pauses exactly where the next message would pass it.
    Without one, the batch reserves everything it claimed at once and gives back at its end what it did
    not post, so a cap set later starts from the right figure; if a cap appears meanwhile, the in-flight
    mark refuses and the batch ends (the next one reserves group by group). A batch killed mid-way
    leaves its unposted reservation counted: a later cap would pause early, never late. What replies
    change (a message not sent after all, a billed cost other than the estimate) is written at once when
    it raises the spend or under a cap, else with the heartbeat the sweep watches, every
    HEARTBEAT_SECONDS.
    """

    def __init__(self, campaign_id: int, claimed_cost: Decimal, now: datetime):
        self.campaign_id = campaign_id
        self.whole = bool(db.session.execute(
            update(_campaign).where(_campaign.c.id == campaign_id, _campaign.c.budget_cap.is_(None))
            .values(reserved_cost=_campaign.c.reserved_cost + claimed_cost, heartbeat_at=now)
        ).rowcount)
        if not self.whole:
            db.session.execute(update(_campaign).where(_campaign.c.id == campaign_id).values(heartbeat_at=now))
        _relax_commit()
        db.session.commit()
        self.unposted = claimed_cost if self.whole else Decimal(0)  # reserved, not yet marked in flight
        self.pending = Decimal(0)  # changes to the reserved spend not yet written
        self.written = time.monotonic()

    def reserve(self, costs: list[Decimal]) -> int:
        """Before marking in flight: how many of these rows, in order, fit under the cap (all without one).

        Under a cap the reservation is written in the caller's transaction, which the in-flight mark
        commits (campaign_states.reserve_budget)."""
        if self.whole:
            self.unposted -= sum(costs, Decimal(0))
            return len(costs)
        return campaign_states.reserve_budget(self.campaign_id, costs)

    def unmarked(self, cost: Decimal) -> None:
        """Reserved for rows that were not marked in flight after all; under a cap, given back in the mark's
        transaction, so another worker never pauses at a cap that only these rows filled."""
        if self.whole:
            self.unposted += cost
        elif cost:
            db.session.execute(update(_campaign).where(_campaign.c.id == self.campaign_id)
                               .values(reserved_cost=_campaign.c.reserved_cost - cost))

    @contextlib.contextmanager
    def settling(self, change: Decimal, now: datetime, force: bool = False):
        """Add what replies changed and write it, in the caller's transaction, when due: under a cap, when
        it raises the spend (a billed cost above the estimate must count at once), or every
        HEARTBEAT_SECONDS. The caller commits inside the block; if that fails, nothing was added."""
        saved = self.pending, self.written
        self.pending += change
        if force or not self.whole or self.pending > 0 or time.monotonic() - self.written >= HEARTBEAT_SECONDS:
            db.session.execute(update(_campaign).where(_campaign.c.id == self.campaign_id).values(
                reserved_cost=_campaign.c.reserved_cost + self.pending, heartbeat_at=now))
            self.pending = Decimal(0)
            self.written = time.monotonic()
        try:
            yield
        except BaseException:
            self.pending, self.written = saved
            raise

    def close(self, now: datetime) -> None:
        """The batch is over: give back what it reserved and never posted, and write what is pending."""
        with self.settling(-self.unposted, now, force=True):
            _relax_commit()
            db.session.commit()
        self.unposted = Decimal(0)


def _media(campaign: Campaign) -> bytes | None:
    """The MMS image's bytes (where the draft page stored it), or None without one or when it is gone."""
    path = image_path(campaign, current_app.config["UPLOAD_FOLDER"])
    try:
        return path.read_bytes() if path is not None else None
    except OSError:
        return None


def _pipeline(context: _Context, token: str, rows: list, pool: ThreadPoolExecutor, totals: dict,
              spend: _Spend) -> tuple[str, float | None] | None:
    """Keep up to `concurrency` POSTs on the wire: refill free slots and record finished POSTs meanwhile.

    The database work (checks, the in-flight mark, recording replies) runs in this thread while the
    pool's threads wait on the provider, so a slow reply holds one slot, not the whole group. A refill
    waits for up to a quarter of the slots to be free (fewer against a slow provider), so each round trip
    to the database serves several rows, and comes before recording, which waits for a whole round of
    replies (or RECORD_SECONDS) and is one statement for them all. Replies come back through one queue
    (concurrent.futures.wait would watch every POST on the wire at each reply). A stop (pause, cancel,
    rate limit, budget, an account error) ends refilling; what is on the wire is still recorded, and
    claimed rows never marked are released by the caller.
    """
    concurrency = context.settings.concurrency
    refill_at = most_at_once = max(1, concurrency // 4)
    refill_seconds = None  # how long a refill takes (moving average)
    began, replied = time.monotonic(), 0
    waiting = deque(rows)
    replies: queue.SimpleQueue = queue.SimpleQueue()  # (row, SendResult or the exception _post raised)
    on_wire = 0
    finished: list[tuple[object, SendResult]] = []
    oldest_reply = 0.0
    stop = None

    def collect(timeout: float | None) -> None:
        """Move the replies that have come (waiting up to `timeout` for the first) into `finished`."""
        nonlocal on_wire, oldest_reply, replied
        arrived = []
        try:
            arrived.append(replies.get(timeout=timeout))
            while True:
                arrived.append(replies.get_nowait())
        except queue.Empty:
            pass
        on_wire -= len(arrived)
        replied += len(arrived)
        if arrived and not finished:
            oldest_reply = time.monotonic()
        failure = next((result for _, result in arrived if isinstance(result, BaseException)), None)
        finished.extend(reply for reply in arrived if not isinstance(reply[1], BaseException))
        if failure is not None:  # a bug, not an answer: that row stays in flight, made unknown by the sweep
            raise failure

    def record() -> None:
        nonlocal finished, stop
        finished.sort(key=lambda item: item[0].id)  # rows locked in id order, as every writer does
        outcome = _record(context, token, [row for row, _ in finished], [result for _, result in finished],
                          totals, spend)
        finished = []
        stop = stop or outcome

    try:
        while on_wire or (waiting and stop is None):
            if context.heartbeat.due() and not context.heartbeat.beat(context.clock()) and stop is None:
                stop = (CLAIM_RELEASED, None)  # what is on the wire is still recorded: by reference and token
                continue
            free = concurrency - on_wire
            if waiting and stop is None and (free >= refill_at or not on_wire):
                group = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                started = time.monotonic()
                marked, stop = _prepare(context, token, group, totals, spend)
                for row in marked:
                    pool.submit(_post_into, replies, context, row)
                    on_wire += 1
                    totals["posted"] += 1
                took = time.monotonic() - started
                refill_seconds = took if refill_seconds is None else 0.8 * refill_seconds + 0.2 * took
                continue
            collect(RECORD_SECONDS)
            # Wait for as many free slots as replies bring in during two refills' worth of database work:
            # a quarter of the slots against a fast provider, fewer against a slow one, whose free slots
            # would otherwise idle while the others take their time.
            reply_rate = replied / max(time.monotonic() - began, 1e-3)
            refill_at = min(most_at_once, max(1, math.ceil(2 * reply_rate * (refill_seconds or 0.0))))
            draining = not waiting or stop is not None
            if finished and (len(finished) >= (refill_at if draining else concurrency) or not on_wire
                             or time.monotonic() - oldest_reply >= RECORD_SECONDS):
                record()
        if finished:
            record()
    except BaseException:
        # A failure here (Redis or the database gone, the job's timeout) must not throw away replies to
        # POSTs that left: wait for them and record them in a fresh transaction, if the database lets us.
        db.session.rollback()
        deadline = time.monotonic() + DRAIN_SECONDS
        while on_wire > 0 and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                collect(1.0)
            with contextlib.suppress(Exception):  # still alive (if the database answers): keep the claims
                if context.heartbeat.due():
                    context.heartbeat.beat(context.clock())
        if finished:  # retried while the database restarts; else the sweep makes them unknown, never resent
            with contextlib.suppress(Exception):
                when_reachable(record, context.heartbeat.release_deadline())
        raise
    return stop


def _prepare(context: _Context, token: str, group: list, totals: dict,
             spend: _Spend) -> tuple[list, tuple[str, float | None] | None]:
    """Check a group and mark in flight the rows to post now; returns (rows marked, why to stop or None).

    One statement marks them, and only those whose number has not opted out since launch, while the
    campaign is still sending (pause and cancel take effect here); its commit is on disk before any POST.
    """
    rows = _hold_quiet_hours(context, token, group, totals)
    if not rows:
        return [], None
    granted, wait_for = _take_rate(context, len(rows))
    stop = ("rate limit", wait_for) if granted < len(rows) else None
    if not granted:
        return [], stop
    rows = rows[:granted]
    fit = spend.reserve([row.estimated_cost for row in rows])
    if fit < len(rows):  # the messages that fit go; the campaign pauses once they are marked
        rows, stop = rows[:fit], ("budget cap", None)
    marked = set(db.session.execute(_MARK_IN_FLIGHT[spend.whole, _is_postgresql()], {
        "b_ids": [row.id for row in rows], "b_token": token, "b_campaign_id": context.campaign_id,
        "b_team_id": context.team_id, "b_now": context.clock()}).scalars()) if rows else set()
    unmarked = [row for row in rows if row.id not in marked]
    spend.unmarked(sum((row.estimated_cost for row in unmarked), Decimal(0)))
    db.session.commit()  # the reservation, the mark and what was given back, together
    if marked:
        context.heartbeat.has_posted()
    if unmarked:
        stop = _not_marked(context, token, unmarked, totals, spend) or stop
    if stop is not None and stop[0] == "budget cap":
        campaign_states.pause_at_budget_cap(context.campaign_id)
    return [row for row in rows if row.id in marked], stop


def _not_marked(context: _Context, token: str, rows: list, totals: dict,
                spend: _Spend) -> tuple[str, float | None] | None:
    """Why rows were not marked: the campaign stopped or got a budget cap (end the batch), or numbers
    opted out (count them)."""
    status, cap = db.session.execute(select(_campaign.c.status, _campaign.c.budget_cap)
                                     .where(_campaign.c.id == context.campaign_id)).one()
    if status is not CampaignStatus.SENDING:
        db.session.commit()
        return f"campaign {status}", None
    if spend.whole and cap is not None:
        db.session.commit()
        return CAP_SET, 0.0
    opted_out = set(db.session.scalars(select(_suppression.c.phone).where(
        _suppression.c.team_id == context.team_id, _suppression.c.phone.in_({row.phone for row in rows}))))
    count = db.session.execute(
        update(_message)
        .where(_message.c.id.in_([row.id for row in rows if row.phone in opted_out]),
               _message.c.claim_token == token, _message.c.status == MessageStatus.CREATED)
        .values(status=MessageStatus.OPTED_OUT, claim_token=None, error="Opted out after the campaign was launched")
    ).rowcount
    if count:
        db.session.execute(update(_campaign).where(_campaign.c.id == context.campaign_id)
                           .values(opt_outs_caused=_campaign.c.opt_outs_caused + count))
        totals["opted_out"] += count
    db.session.commit()
    return None


def _post_into(replies: queue.SimpleQueue, context: _Context, row) -> None:
    """One POST, in a pool thread; its reply (or what it raised) goes back to the batch's queue."""
    try:
        result = context.client.send(sender=context.sender, to=row.phone, text=row.text, media=context.media,
                                     notify_url=context.notify_url, reference=row.reference)
    except BaseException as error:  # noqa: BLE001 - handed to the batch's thread, which raises it
        result = error
    replies.put((row, result))


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
            update(_message).where(_message.c.id.in_(ids), _message.c.claim_token == token)
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


_REPLY_COLUMNS = {"id": Integer, "unique_id": _message.c.unique_id.type, "pid": _message.c.pid.type,
                  "parts": _message.c.reply_parts.type, "cost": _message.c.reply_cost.type}


def _accepted_statement(postgresql: bool):
    """The UPDATE that records accepted replies, guarded by the claim token (see record_accepted).

    On PostgreSQL one UPDATE ... FROM unnest(arrays) takes the whole round: one statement, one firing of
    the tally trigger, the same SQL text whatever the count (so PostgreSQL keeps it prepared). On SQLite
    the same UPDATE runs once per row (executemany), its triggers being per row anyway.
    """
    if postgresql:
        arrays = (bindparam(f"b_{name}", type_=ARRAY(type_)) for name, type_ in _REPLY_COLUMNS.items())
        reply = func.unnest(*arrays).table_valued(
            *(column(name, type_) for name, type_ in _REPLY_COLUMNS.items())).render_derived(name="reply")
        source = reply.c
    else:
        source = {name: bindparam(f"b_{name}", type_=type_) for name, type_ in _REPLY_COLUMNS.items()}
    was_unknown = _message.c.status == MessageStatus.UNKNOWN
    moving = or_(_message.c.status == MessageStatus.SENDING, was_unknown)
    return (
        update(_message)
        .where(_message.c.id == source["id"],
               or_(and_(_message.c.claim_token == bindparam("b_token"),
                        or_(*(_message.c.status == status for status in AFTER_ACCEPTED))),
                   was_unknown))
        .values(claim_token=None, claimed_at=None,
                # A faster callback's final state keeps its reason (why it was undelivered).
                error=case((moving, None), else_=_message.c.error),
                sent_twice=case((was_unknown, _message.c.resent), else_=_message.c.sent_twice),
                status=case((moving, MessageStatus.ACCEPTED), else_=_message.c.status),
                unique_id=source["unique_id"], pid=source["pid"], reply_parts=source["parts"],
                reply_cost=source["cost"], billed_parts=func.coalesce(_message.c.billed_parts, source["parts"]),
                billed_cost=func.coalesce(_message.c.billed_cost, source["cost"]))
    )


_RECORD_ACCEPTED = {postgresql: _accepted_statement(postgresql) for postgresql in (False, True)}


def record_accepted(token: str, accepted: list[dict]) -> None:
    """Record accepted rows ({id, unique_id, pid, parts, cost} each) in one statement, guarded by the claim.

    A fast callback may have moved the row on already (webapp.services.delivery): keep its status and the
    billed figures it brought (the provider's latest word), and add what only the reply carries. The
    reply's own parts and cost are kept in reply_* either way, so a disagreement stays visible; they are
    the billed figures only until a callback brings its own. A reply so slow that the sweep already
    called the row unknown (its claim cleared) is still the provider's word that it was sent: take it, and
    if a person had resent it meanwhile, count the message as sent twice.
    """
    if _is_postgresql():
        parameters = {f"b_{name}": [row[name] for row in accepted] for name in _REPLY_COLUMNS} | {"b_token": token}
        db.session.execute(_RECORD_ACCEPTED[True], parameters)
    else:
        db.session.execute(_RECORD_ACCEPTED[False],
                           [{f"b_{name}": row[name] for name in _REPLY_COLUMNS} | {"b_token": token}
                            for row in accepted])


def _record(context: _Context, token: str, rows: list, results: list[SendResult], totals: dict,
            spend: _Spend) -> tuple[str, float | None] | None:
    """Write each outcome, guarded by the claim token; returns a stop reason for account errors."""
    now = context.clock()
    account_problem = None
    change = Decimal(0)  # to the campaign's reserved spend
    accepted, others = [], []
    for row, result in zip(rows, results, strict=True):
        values: dict = {"b_id": row.id, "b_token": token, "claim_token": None, "claimed_at": None}
        if result.outcome is Outcome.ACCEPTED:
            accepted.append({"id": row.id, "unique_id": result.unique_id, "pid": result.pid,
                             "parts": result.parts, "cost": result.cost})
            if result.cost is not None:
                change += result.cost - row.estimated_cost
            continue
        elif result.outcome is Outcome.NOT_SENT and row.attempts + 1 < context.settings.max_attempts:
            delay = _backoff(context.settings, row.attempts + 1, result.retry_after)
            values.update(status=MessageStatus.CREATED, attempts=row.attempts + 1, error=result.reason,
                          not_before=now + timedelta(seconds=delay), sent_at=None)
            change -= row.estimated_cost
        elif result.outcome in (Outcome.NOT_SENT, Outcome.REFUSED):
            values.update(status=MessageStatus.FAILED, attempts=row.attempts + 1, error=result.reason,
                          finished_at=now)
            change -= row.estimated_cost
        elif result.outcome is Outcome.ACCOUNT:
            values.update(status=MessageStatus.CREATED, error=result.reason, sent_at=None)
            change -= row.estimated_cost
            account_problem = result.reason
        else:  # AMBIGUOUS: it may have been sent
            values.update(status=MessageStatus.UNKNOWN, error=result.reason)
        others.append(values)
    for values in others:  # the uncommon outcomes, each with its own columns
        db.session.execute(_RECORD_OTHER.values(**{k: v for k, v in values.items() if not k.startswith("b_")}),
                           {"b_id": values["b_id"], "b_token": token})
    if accepted:
        record_accepted(token, accepted)
    with spend.settling(change, now, force=account_problem is not None):
        _relax_commit()
        db.session.commit()
    totals["accepted"] += len(accepted)
    if any(values.get("status") is MessageStatus.CREATED for values in others):
        campaign_states.cancel_leftovers(context.campaign_id)  # only if it was cancelled meanwhile
    if account_problem:
        campaign_states.pause(context.campaign_id, None, f"Paused by the provider's answer: {account_problem}")
        return "account", None
    return None


def warm_up() -> None:
    """Run the batch's statements once against no row, in a worker before it forks its work horses.

    Each horse is a fresh fork that dies after its job: without this, each compiles every statement of
    a batch again (about 100 ms, a tenth of a 1,024-message batch's CPU). Forked from a process that
    has them compiled, it finds them in SQLAlchemy's cache.
    """
    token, now = "warm-up", utcnow()
    send_batch(0)  # the campaign lookup
    claim(0, token, 1, now)
    _Spend(0, Decimal(0), now).close(now)
    for uncapped in (False, True):
        db.session.execute(_MARK_IN_FLIGHT[uncapped, _is_postgresql()],
                           {"b_ids": [0], "b_token": token, "b_campaign_id": 0, "b_team_id": 0, "b_now": now})
    record_accepted(token, [{"id": 0, "unique_id": None, "pid": None, "parts": None, "cost": None}])
    db.session.rollback()
    release(token)


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


def recover(now: datetime | None = None, queue_idle: bool = False) -> Recovery:
    """Carry every campaign on from the database after a dead worker, a lost Redis or a restart.

    Safe to run at any time and twice: a row in flight longer than any POST can take becomes UNKNOWN
    (never CREATED: it may have reached the provider), the claims of a batch whose heartbeat stopped
    (or older than any job can live) are released (nothing was posted for them), and campaigns with
    work due and no live batch get new jobs once silent for SEND_STALL_SECONDS (with `queue_idle`, as
    `campaigns reconcile` asks, at once: the operator knows no batch is queued; likewise, once, when its
    last batch ended on a Redis error, which its chain of batches did not survive).
    """
    config = current_app.config
    now = now or utcnow()
    in_flight_limit = now - timedelta(seconds=config["SEND_IN_FLIGHT_SECONDS"])
    claim_limit = now - timedelta(seconds=config["SEND_JOB_TIMEOUT"] + 60)
    # 'sending' as a literal, as in ix_message_sending_sent_at's predicate: a generic plan can use it too.
    stale = select(Message.id).where(Message.status == literal_column("'sending'"), Message.sent_at < in_flight_limit)
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
    released += batches.release_gone(now)
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
        silent = queue_idle or campaign.heartbeat_at is None or campaign.heartbeat_at <= quiet_since
        if due and not batches.live(campaign.id, now) and (silent or batches.lost_to_redis(campaign.id)):
            campaign_states.enqueue_batches(campaign.id)
            restarted.append(campaign.id)
        elif not due and not in_flight and campaign_states.complete_if_done(campaign.id):
            completed.append(campaign.id)
    return Recovery(unknown, released, restarted, completed, started)
