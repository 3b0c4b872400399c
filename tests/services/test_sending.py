"""The campaign engine against the sandbox over real HTTP: every recipient exactly once, whatever happens.

The sandbox's log of accepted sends is the witness: each recipient's reference must appear there once.
Batches are driven directly (the job bodies), so each test controls the interleaving it proves.
"""

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests
from sqlalchemy import func, select, update

from tests.factories import (
    make_campaign,
    make_contact,
    make_list,
    make_message,
    make_sender,
    make_suppression,
    make_team,
    make_user,
)
from webapp.encryption import encrypt
from webapp.extensions import db
from webapp.models import (
    AuditEntry,
    Campaign,
    CampaignStatus,
    ContactList,
    Message,
    MessageKind,
    MessageStatus,
    Team,
    utcnow,
)
from webapp.provider.multitel import Credentials, MultitelClient
from webapp.services import campaign_states, recipients, sending, tallies
from webapp.services.ratelimit import RateLimiter


def _team_on_sandbox(app, sandbox, contacts: int = 20, lists: int = 1):
    """A team with sandbox credentials, a sender, `lists` lists of `contacts` US mobiles and a draft."""
    with app.app_context():
        team = make_team()
        team.api_username, team.api_password_encrypted = "sandbox", encrypt("sandbox")
        team.send_rate = Decimal(1000)
        db.session.commit()
        user = make_user(team)
        sender = make_sender(team)
        made = []
        for index in range(lists):
            contact_list = make_list(team)
            for n in range(contacts):
                make_contact(contact_list, phone=f"+1415555{index}{n:03d}", first_name=f"Ana{n}")
            made.append(contact_list)
        campaign = make_campaign(team, made, body="Hi {{ first_name }}", sender=sender)
        campaign.quiet_hours = False
        db.session.commit()
        return team.id, user.id, campaign.id


def _run_until_done(app, campaign_id: int, rounds: int = 200, client=None) -> None:
    """Drive the engine: freeze, then batches until nothing is due (a backoff is skipped forward)."""
    with app.app_context():
        recipients.freeze(campaign_id)
        for _ in range(rounds):
            report = sending.send_batch(campaign_id, client=client)
            if report.stopped == "nothing due":
                due, later, in_flight = sending.next_due(campaign_id, utcnow())
                if later is None and not due:
                    break
                db.session.execute(update(Message).where(Message.campaign_id == campaign_id)
                                   .values(not_before=None))
                db.session.commit()
            elif report.stopped not in (None, "rate limit"):
                break
        campaign_states.complete_if_done(campaign_id)


def _accepted_references(sandbox) -> Counter:
    sends = requests.get(f"{sandbox.url}/_sandbox/sends", timeout=10).json()
    return Counter(send["reference"] for send in sends)


def _statuses(campaign_id: int) -> Counter:
    return Counter(dict(db.session.execute(
        select(Message.status, func.count()).where(Message.campaign_id == campaign_id).group_by(Message.status)
    ).all()))


def test_a_campaign_sends_every_recipient_once(app, sandbox):
    """Launch, freeze and send: one accepted send per recipient, the campaign completed and audited."""
    _, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=30)
    with app.app_context():
        assert campaign_states.launch(campaign_id, user_id) is CampaignStatus.SENDING
    _run_until_done(app, campaign_id)
    with app.app_context():
        references = set(db.session.scalars(select(Message.reference).where(Message.campaign_id == campaign_id)))
        witnessed = _accepted_references(sandbox)
        assert len(references) == 30
        assert {ref: witnessed[ref] for ref in references} == dict.fromkeys(references, 1)
        assert _statuses(campaign_id) == {MessageStatus.ACCEPTED: 30}
        campaign = db.session.get(Campaign, campaign_id)
        assert campaign.status is CampaignStatus.COMPLETED
        actions = db.session.scalars(select(AuditEntry.action).where(AuditEntry.campaign_id == campaign_id)
                                     .order_by(AuditEntry.id)).all()
        assert actions == ["launched", "completed"]


def test_transient_faults_are_retried_and_nothing_is_sent_twice(app, sandbox):
    """20% of POSTs answer 429/503 (nothing recorded): each is retried until accepted, never doubled."""
    _, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=60)
    requests.post(f"{sandbox.url}/_sandbox/config", json={"error_429_rate": 0.1, "error_503_rate": 0.1},
                  timeout=10).raise_for_status()
    with app.app_context():
        app.config["SEND_MAX_ATTEMPTS"] = 50
        campaign_states.launch(campaign_id, user_id)
    _run_until_done(app, campaign_id, rounds=400)
    with app.app_context():
        references = set(db.session.scalars(select(Message.reference).where(Message.campaign_id == campaign_id)))
        witnessed = _accepted_references(sandbox)
        assert all(witnessed[ref] == 1 for ref in references), "a recipient was sent twice"
        assert _statuses(campaign_id) == {MessageStatus.ACCEPTED: 60}
        assert db.session.scalar(select(func.sum(Message.attempts)).where(Message.campaign_id == campaign_id)) > 0


def test_a_double_launch_launches_once(app, sandbox):
    """Two clicks on Launch: the second is refused with the campaign's state, and one audience is frozen."""
    _, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=5)
    with app.app_context():
        campaign_states.launch(campaign_id, user_id)
        with pytest.raises(campaign_states.CampaignProblem, match="sending"):
            campaign_states.launch(campaign_id, user_id)
        assert recipients.freeze(campaign_id) is True
        assert recipients.freeze(campaign_id) is False
        assert db.session.scalar(select(func.count()).where(Message.campaign_id == campaign_id)) == 5


def test_cancel_racing_a_launch_sends_nothing(app, sandbox):
    """Cancelled before the audience is frozen: no row is created and nothing is posted."""
    _, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=5)
    with app.app_context():
        campaign_states.launch(campaign_id, user_id)
        campaign_states.cancel(campaign_id, user_id)
        assert recipients.freeze(campaign_id) is False
        assert sending.send_batch(campaign_id).stopped == "not sending"
    assert sum(_accepted_references(sandbox).values()) == 0


def test_pause_mid_batch_stops_before_the_next_refill_and_resume_keeps_the_place(app, sandbox):
    """A pause committed while a batch's POSTs are on the wire: they finish and are recorded, nothing more
    is posted (the next refill sees the pause); resume sends only the rest."""
    _, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=40)
    with app.app_context():
        app.config["SEND_CONCURRENCY"] = 4
        campaign_states.launch(campaign_id, user_id)
        recipients.freeze(campaign_id)
        real = _sandbox_client(app)
        posted, lock, paused = [], threading.Lock(), threading.Event()

        class PausingClient:
            """Pauses the campaign (as another request would) while the first 4 POSTs are on the wire."""

            def send(self, **message):
                with lock:
                    posted.append(message["reference"])
                    fourth = len(posted) == 4
                if fourth:
                    _elsewhere(app, lambda: campaign_states.pause(campaign_id, user_id))
                    paused.set()
                paused.wait(60)
                return real.send(**message)

        report = sending.send_batch(campaign_id, client=PausingClient(),
                                    limiter=RateLimiter(_redis(), 1000, 16))
        assert report.stopped == "campaign paused"
        assert report.posted == 4
        assert db.session.get(Campaign, campaign_id).status is CampaignStatus.PAUSED
        assert _statuses(campaign_id)[MessageStatus.CREATED] == 36
        assert db.session.scalar(select(func.count()).where(Message.campaign_id == campaign_id,
                                                            Message.claim_token.is_not(None))) == 0
        campaign_states.resume(campaign_id, user_id)
    _run_until_done(app, campaign_id)
    with app.app_context():
        assert _statuses(campaign_id) == {MessageStatus.ACCEPTED: 40}
        assert all(count == 1 for count in _accepted_references(sandbox).values())


def test_an_opt_out_after_launch_stops_that_recipient(app, sandbox):
    """A STOP that arrives after the audience was frozen is checked again at send time and counted."""
    team_id, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=10)
    with app.app_context():
        campaign_states.launch(campaign_id, user_id)
        recipients.freeze(campaign_id)
        make_suppression(db.session.get(Team, team_id), "+14155550003")
    _run_until_done(app, campaign_id)
    with app.app_context():
        assert _statuses(campaign_id) == {MessageStatus.ACCEPTED: 9, MessageStatus.OPTED_OUT: 1}
        assert db.session.get(Campaign, campaign_id).opt_outs_caused == 1
        assert "+14155550003" not in {send["to"] for send in requests.get(
            f"{sandbox.url}/_sandbox/sends", timeout=10).json()}


def test_exclusions_are_counted_by_reason_at_freeze(app, sandbox):
    """Opted out, landline, and a duplicate across lists are left out and counted; the first list wins."""
    team_id, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=3, lists=2)
    with app.app_context():
        team = db.session.get(Team, team_id)
        campaign = db.session.get(Campaign, campaign_id)
        first, second = campaign.list_ids
        make_contact(db.session.get(ContactList, second), phone="+14155550000")
        make_suppression(team, "+14155550001")
        make_contact(db.session.get(ContactList, first), phone="+14155559999",
                     number_type="fixed_line")
        campaign_states.launch(campaign_id, user_id)
        recipients.freeze(campaign_id)
        campaign = db.session.get(Campaign, campaign_id)
        assert campaign.exclusions == {"opted_out": 1, "landline": 1, "duplicate": 1}
        assert campaign.recipients == 5


def test_an_account_error_pauses_the_campaign_with_the_reason(app, sandbox):
    """A refused password pauses the campaign (nothing counted as sent) and says why."""
    team_id, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=5)
    with app.app_context():
        team = db.session.get(Team, team_id)
        team.api_password_encrypted = encrypt("wrong password")
        db.session.commit()
        campaign_states.launch(campaign_id, user_id)
    _run_until_done(app, campaign_id)
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        assert campaign.status is CampaignStatus.PAUSED
        assert "password" in campaign.paused_reason.lower() or "credential" in campaign.paused_reason.lower()
        assert _statuses(campaign_id) == {MessageStatus.CREATED: 5}


def test_the_budget_cap_pauses_before_it_would_be_passed(app, sandbox):
    """At 0.015 a part and a cap of 0.10, six one-part messages go and the seventh waits, paused."""
    _, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=20)
    with app.app_context():
        app.config["SEND_CONCURRENCY"] = 1
        campaign = db.session.get(Campaign, campaign_id)
        campaign.budget_cap = Decimal("0.10")
        campaign.include_footer = False
        db.session.commit()
        campaign_states.launch(campaign_id, user_id)
    _run_until_done(app, campaign_id)
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        assert campaign.status is CampaignStatus.PAUSED and "budget" in campaign.paused_reason
        assert _statuses(campaign_id)[MessageStatus.ACCEPTED] == 6
        assert campaign.reserved_cost <= Decimal("0.10")


def test_a_dead_worker_leaves_in_flight_rows_unknown_and_claims_released(app, sandbox):
    """The sweep turns a long in-flight row into UNKNOWN (never resent) and frees a stale claim."""
    _, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=3)
    with app.app_context():
        campaign_states.launch(campaign_id, user_id)
        recipients.freeze(campaign_id)
        ids = db.session.scalars(select(Message.id).where(Message.campaign_id == campaign_id)
                                 .order_by(Message.id)).all()
        long_ago = utcnow() - timedelta(hours=1)
        db.session.execute(update(Message).where(Message.id == ids[0]).values(
            status=MessageStatus.SENDING, sent_at=long_ago, claim_token="dead", claimed_at=long_ago))
        db.session.execute(update(Message).where(Message.id == ids[1]).values(
            claim_token="dead", claimed_at=long_ago))
        db.session.commit()
        found = sending.recover()
        assert (found.unknown, found.released) == (1, 1)
    _run_until_done(app, campaign_id)
    with app.app_context():
        assert _statuses(campaign_id) == {MessageStatus.UNKNOWN: 1, MessageStatus.ACCEPTED: 2}


def test_a_scheduled_campaign_starts_when_its_time_comes_even_if_redis_lost_the_job(app, sandbox):
    """The sweep starts a scheduled campaign whose time has passed; unschedule goes back to draft."""
    _, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=2)
    with app.app_context():
        at = datetime.now(UTC) + timedelta(hours=1)
        assert campaign_states.launch(campaign_id, user_id, at) is CampaignStatus.SCHEDULED
        campaign_states.unschedule(campaign_id, user_id)
        assert db.session.get(Campaign, campaign_id).status is CampaignStatus.DRAFT
        campaign_states.launch(campaign_id, user_id, at)
        assert sending.recover().started == []
        later = utcnow() + timedelta(hours=2)
        assert sending.recover(later).started == [campaign_id]
        assert db.session.get(Campaign, campaign_id).status is CampaignStatus.SENDING


def _elsewhere(app, action) -> None:
    """Run `action` as another request would: its own thread, app context and database session."""
    import threading

    def run():
        with app.app_context():
            action()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)


def _sandbox_client(app) -> MultitelClient:
    """The client a batch would make for the sandbox, for tests that wrap it."""
    return MultitelClient(app.config["MULTITEL_API_URL"], Credentials("sandbox", "sandbox"))


def _redis():
    from webapp.queues import redis_connection

    return redis_connection()


def test_the_frequency_cap_holds_out_recipients_messaged_recently(app, sandbox):
    """With a 24-hour cap, a number sent a campaign message an hour ago is left out and counted."""
    team_id, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=4)
    with app.app_context():
        team = db.session.get(Team, team_id)
        team.frequency_cap_hours = 24
        db.session.commit()
        make_message(team, phone="+14155550001", kind=MessageKind.CAMPAIGN, status=MessageStatus.DELIVERED,
                     sent_at=utcnow() - timedelta(hours=1))
        make_message(team, phone="+14155550002", kind=MessageKind.CAMPAIGN, status=MessageStatus.DELIVERED,
                     sent_at=utcnow() - timedelta(hours=30))
        campaign_states.launch(campaign_id, user_id)
        recipients.freeze(campaign_id)
        campaign = db.session.get(Campaign, campaign_id)
        assert campaign.exclusions == {"frequency_cap": 1}
        assert campaign.recipients == 3


def test_an_mms_campaign_sends_its_image_and_is_billed_as_estimated(app, sandbox):
    """The stored image goes out base64 with every message; each is billed one MMS, as estimated."""
    from tests.factories import PNG_1X1

    team_id, user_id, _ = _team_on_sandbox(app, sandbox, contacts=0)
    with app.app_context():
        team = db.session.get(Team, team_id)
        contacts = make_list(team)
        for n in range(3):
            make_contact(contacts, phone=f"+1415557{n:04d}", first_name="Ana")
        sender = make_sender(team, "+14155550222")
        campaign = make_campaign(team, [contacts], body="Look {{ first_name }}", sender=sender, image=PNG_1X1)
        campaign.quiet_hours = False
        db.session.commit()
        campaign_id = campaign.id
        campaign_states.launch(campaign_id, user_id)
    _run_until_done(app, campaign_id)
    with app.app_context():
        sends = requests.get(f"{sandbox.url}/_sandbox/sends", timeout=10).json()
        assert len(sends) == 3 and all(send["media_bytes"] == len(PNG_1X1) for send in sends)
        rows = db.session.scalars(select(Message).where(Message.campaign_id == campaign_id)).all()
        assert all(row.billed_cost == row.estimated_cost and row.is_mms for row in rows)


def test_a_sender_deleted_before_the_freeze_fails_the_campaign_with_the_reason(app, sandbox):
    """No crash loop: the campaign fails once, saying why, and nothing is created or sent."""
    from webapp.models import SenderNumber

    _, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=3)
    with app.app_context():
        campaign_states.launch(campaign_id, user_id)
        db.session.delete(db.session.get(SenderNumber, db.session.get(Campaign, campaign_id).sender_number_id))
        db.session.commit()
        assert recipients.freeze(campaign_id) is False
        campaign = db.session.get(Campaign, campaign_id)
        assert campaign.status is CampaignStatus.FAILED and "sender" in campaign.failed_reason
        assert db.session.scalar(select(func.count()).where(Message.campaign_id == campaign_id)) == 0


def test_a_year_long_retry_after_is_capped_by_the_backoff(app, sandbox):
    """A 429 asking to wait 10^12 seconds parks the message for at most the backoff cap, and the batch
    still records every outcome."""
    _, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=2)
    requests.post(f"{sandbox.url}/_sandbox/config", json={"error_429_rate": 1.0, "retry_after": 10**12},
                  timeout=10).raise_for_status()
    with app.app_context():
        campaign_states.launch(campaign_id, user_id)
        recipients.freeze(campaign_id)
        report = sending.send_batch(campaign_id)
        assert report.posted == 2
        latest = db.session.scalar(select(func.max(Message.not_before)).where(Message.campaign_id == campaign_id))
        assert latest <= utcnow() + timedelta(seconds=app.config["SEND_BACKOFF_CAP_SECONDS"] + 5)
        assert _statuses(campaign_id) == {MessageStatus.CREATED: 2}


def test_a_reply_that_arrives_after_the_sweep_called_it_unknown_is_still_taken(app, sandbox):
    """The provider's acceptance is the truth even when late: unknown -> accepted, with its uniqueid."""
    from webapp.provider.multitel import Outcome, SendResult

    _, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=1)
    with app.app_context():
        campaign_states.launch(campaign_id, user_id)
        recipients.freeze(campaign_id)

        class SlowClient:
            """Stands for a reply that arrives after the sweep has given up on it."""

            def send(self, **message):
                _elsewhere(app, lambda: sending.recover(utcnow() + timedelta(hours=1)))
                return SendResult(Outcome.ACCEPTED, "queued", unique_id="late-u", parts=1, cost=Decimal("0.015"))

        sending.send_batch(campaign_id, client=SlowClient())
        row = db.session.scalar(select(Message).where(Message.campaign_id == campaign_id))
        db.session.refresh(row)
        assert (row.status, row.unique_id) == (MessageStatus.ACCEPTED, "late-u")


def test_a_claim_takes_exactly_its_limit_whatever_the_plan(app, sandbox):
    """FOR UPDATE SKIP LOCKED under IN (subquery) may be re-run per row and claim everything; the claim can't."""
    _team_id, _user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=30)
    with app.app_context():
        campaign_states.launch(campaign_id, None)
        recipients.freeze(campaign_id)
        for limit in (1, 2, 7):
            claimed = sending.claim(campaign_id, f"token-{limit}", limit, utcnow())
            assert len(claimed) == limit
        assert db.session.scalar(select(func.count()).select_from(Message).where(
            Message.campaign_id == campaign_id, Message.claim_token.is_not(None))) == 10


def test_warming_up_the_statements_touches_no_row(app, sandbox):
    """A worker runs each batch statement once before forking its work horses: against nothing at all."""
    _team_id, _user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=5)
    with app.app_context():
        campaign_states.launch(campaign_id, None)
        recipients.freeze(campaign_id)

        def state():
            db.session.expire_all()
            campaign = db.session.get(Campaign, campaign_id)
            rows = db.session.execute(select(Message.status, Message.claim_token, Message.updated_at)
                                      .where(Message.campaign_id == campaign_id).order_by(Message.id)).all()
            return campaign.reserved_cost, campaign.heartbeat_at, rows, tallies.figures(campaign_id).count("created")

        before = state()
        sending.warm_up()
        assert state() == before


def test_a_slow_team_claims_what_its_rate_posts_in_a_minute_not_a_whole_batch():
    """A batch ends long before RQ's job timeout whatever the team's rate, and a fast team claims a batch."""
    assert sending.claim_size(1024, 16, 1) == 60
    assert sending.claim_size(1024, 16, 0.1) == 16  # never fewer than the POSTs it may have open at once
    assert sending.claim_size(1024, 16, 10) == 600
    assert sending.claim_size(1024, 16, 200) == 1024


def test_a_cap_set_mid_batch_ends_an_uncapped_batch_and_its_unposted_reservation_is_given_back(app, sandbox):
    """An uncapped batch reserves its whole claim; a cap set while it posts stops its next mark, its
    unposted reservation is given back, and the next batch reserves group by group under the cap."""
    _, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=20)
    with app.app_context():
        app.config["SEND_CONCURRENCY"] = 1
        campaign_states.launch(campaign_id, user_id)
        recipients.freeze(campaign_id)
        real = _sandbox_client(app)
        posted = []

        def set_cap():
            db.session.execute(update(Campaign).where(Campaign.id == campaign_id).values(budget_cap=Decimal(100)))
            db.session.commit()

        class CappingClient:
            """Sets a budget cap (as a person would, elsewhere) during the third POST."""

            def send(self, **message):
                posted.append(message["reference"])
                if len(posted) == 3:
                    _elsewhere(app, set_cap)
                return real.send(**message)

        limiter = RateLimiter(_redis(), 1000, 16)
        report = sending.send_batch(campaign_id, client=CappingClient(), limiter=limiter)
        assert (report.stopped, report.posted, report.accepted) == (sending.CAP_SET, 3, 3)

        def spent() -> Decimal:
            return db.session.scalar(select(func.sum(Message.estimated_cost)).where(
                Message.campaign_id == campaign_id, Message.status == MessageStatus.ACCEPTED))

        db.session.expire_all()
        assert db.session.get(Campaign, campaign_id).reserved_cost == spent()  # the other 17 given back
        report = sending.send_batch(campaign_id, client=real, limiter=limiter)
        assert report.accepted == 17
        db.session.expire_all()
        assert _statuses(campaign_id)[MessageStatus.ACCEPTED] == 20
        assert db.session.get(Campaign, campaign_id).reserved_cost == spent()
