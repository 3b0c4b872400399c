"""Batches' own heartbeats: a stopped batch's claims are released while a live one keeps its own, a batch
whose claims were released learns it and its late writes change nothing, and a campaign that waits says
for what and since when."""

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select, update

from jobs.sending import send_batch as send_batch_job
from tests.factories import make_launched_campaign, make_team
from webapp.encryption import encrypt
from webapp.extensions import db
from webapp.models import Campaign, Message, MessageStatus, SendBatch, Team, Waiting, utcnow
from webapp.queues import redis_connection
from webapp.services import batches, sending


def _claims(campaign_id: int) -> dict[int, str | None]:
    db.session.expire_all()
    return dict(db.session.execute(select(Message.id, Message.claim_token)
                                   .where(Message.campaign_id == campaign_id)).all())


def _silent_for(seconds: float):
    return utcnow() - timedelta(seconds=seconds)


def test_a_stopped_batch_has_its_claims_released_while_a_live_batch_of_the_campaign_keeps_its_own(app):
    """The campaign's shared heartbeat is fresh (a live batch), yet the dead batch's rows go back at once."""
    with app.app_context():
        campaign_id = make_launched_campaign(make_team(), 6).id
        silent = batches.stale_seconds() + 1
        dead = sending.claim(campaign_id, "dead", 2, _silent_for(silent))
        sending.claim(campaign_id, "live", 2, utcnow())
        db.session.execute(update(Message).where(Message.id == dead[0].id)
                           .values(status=MessageStatus.SENDING, sent_at=_silent_for(silent)))
        db.session.execute(update(Campaign).where(Campaign.id == campaign_id).values(heartbeat_at=utcnow()))
        db.session.commit()

        found = sending.recover()
        claims = _claims(campaign_id)
        assert found.released == 1  # the dead batch's row never marked in flight
        assert claims[dead[1].id] is None and list(claims.values()).count("live") == 2
        assert claims[dead[0].id] == "dead"  # in flight: unknown only after SEND_IN_FLIGHT_SECONDS, never released
        assert db.session.scalars(select(SendBatch.token)).all() == ["live"]


def test_a_claim_of_a_batch_with_no_heartbeat_row_is_released_once_older_than_the_limit(app):
    """A token without its row (a batch gone, or a worker from before send_batch) holds nothing for long."""
    with app.app_context():
        campaign_id = make_launched_campaign(make_team(), 3).id
        rows = sending.claim(campaign_id, "gone", 3, utcnow())
        db.session.execute(SendBatch.__table__.delete())
        db.session.commit()
        assert sending.recover().released == 0  # younger than the limit: kept
        db.session.execute(update(Message).where(Message.id.in_([row.id for row in rows]))
                           .values(claimed_at=_silent_for(batches.stale_seconds() + 1)))
        db.session.commit()
        assert sending.recover().released == 3


def test_a_released_batch_learns_it_at_its_next_beat_and_its_late_writes_change_nothing(app):
    """Its heartbeat says the claims are gone; marking in flight and releasing with its token touch no row."""
    with app.app_context():
        team = make_team()
        campaign_id = make_launched_campaign(team, 2).id
        stale = sending.claim(campaign_id, "stale", 2, _silent_for(batches.stale_seconds() + 1))
        heartbeat = batches.Heartbeat("stale", campaign_id)
        sending.recover()
        taken = sending.claim(campaign_id, "newer", 2, utcnow())
        assert [row.id for row in taken] == [row.id for row in stale]

        assert heartbeat.beat(utcnow()) is False
        marked = db.session.execute(sending._MARK_IN_FLIGHT[True, db.engine.dialect.name == "postgresql"], {
            "b_ids": [row.id for row in stale], "b_token": "stale", "b_campaign_id": campaign_id,
            "b_team_id": team.id, "b_now": utcnow()}).all()
        db.session.commit()
        assert marked == [] and sending.release("stale") == 0
        assert set(_claims(campaign_id).values()) == {"newer"}
        assert db.session.get(SendBatch, "newer") is not None


def test_a_batch_keeps_its_heartbeat_row_while_it_runs_and_drops_it_at_its_end(app, sandbox):
    """The row commits with the claim and goes with the release: a finished batch leaves nothing to sweep."""
    with app.app_context():
        team = make_team()
        team.api_username, team.api_password_encrypted = "sandbox", encrypt("sandbox")
        team.send_rate = Decimal(1000)
        campaign_id = make_launched_campaign(team, 3).id
        report = sending.send_batch(campaign_id)
        assert (report.claimed, report.accepted) == (3, 3)
        assert db.session.scalars(select(SendBatch)).all() == []


def test_a_batch_that_gets_no_rate_notes_the_wait_and_one_that_posts_clears_it(app, sandbox):
    """The campaign waits for the team's send rate since the first batch that could post nothing."""
    with app.app_context():
        team = make_team()
        team.api_username, team.api_password_encrypted = "sandbox", encrypt("sandbox")
        team.send_rate = Decimal("0.01")  # one message, then one per 100 s
        campaign_id = make_launched_campaign(team, 3).id
        team_id = team.id
        send_batch_job(campaign_id)
        send_batch_job(campaign_id)
        campaign = db.session.get(Campaign, campaign_id)
        db.session.refresh(campaign)
        assert campaign.waiting_for is Waiting.RATE
        since = campaign.waiting_since
        send_batch_job(campaign_id)
        db.session.refresh(campaign)
        assert (campaign.waiting_for, campaign.waiting_since) == (Waiting.RATE, since)  # still, since the first
        assert batches.waiting(campaign, utcnow()) == (Waiting.RATE, since)

        db.session.execute(update(Team).where(Team.id == team_id).values(send_rate=Decimal(1000)))
        db.session.commit()
        redis_connection().flushdb()  # the bucket starts again at the new rate
        send_batch_job(campaign_id)
        db.session.refresh(campaign)
        assert campaign.waiting_for is None and batches.waiting(campaign, utcnow()) is None


def test_a_stalled_batch_is_what_the_campaign_waits_for_since_its_last_heartbeat(app):
    with app.app_context():
        campaign_id = make_launched_campaign(make_team(), 2).id
        last_beat = _silent_for(3 * batches.beat_seconds())
        sending.claim(campaign_id, "silent", 2, last_beat)
        campaign = db.session.get(Campaign, campaign_id)
        assert batches.waiting(campaign, utcnow()) == (Waiting.STALLED_BATCH, last_beat)


def test_a_campaign_whose_batch_ended_on_a_redis_error_is_restarted_by_the_next_sweep_once(app):
    """Its chain of batches died with Redis: the sweep queues new ones without waiting SEND_STALL_SECONDS."""
    with app.app_context():
        campaign_id = make_launched_campaign(make_team(), 2).id
        db.session.execute(update(Campaign).where(Campaign.id == campaign_id).values(heartbeat_at=_silent_for(10)))
        db.session.commit()
        assert sending.recover().restarted == []  # heard from 10 s ago: its batches may still be queued
        batches.note_waiting(campaign_id, Waiting.REDIS, _silent_for(10))
        assert sending.recover().restarted == [campaign_id]
        assert sending.recover().restarted == []
