"""`campaigns reconcile` and the engine's periodic sweeps: campaigns carry on from the database."""

from datetime import timedelta

from rq.job import Job
from sqlalchemy import select, update

from jobs.maintenance import PERIODIC, prune_callbacks, rematch_callbacks
from tests.factories import (
    make_callback,
    make_campaign,
    make_contact,
    make_launched_campaign,
    make_list,
    make_message,
    make_sender,
    make_team,
    make_user,
)
from webapp.extensions import db
from webapp.models import Campaign, CampaignStatus, Message, MessageStatus, ProviderCallback, SendBatch, utcnow
from webapp.queues import get_queue, redis_connection
from webapp.services import campaign_states, recipients, sending


def _campaign_with_a_dead_worker(app) -> tuple[int, list[int]]:
    """A sending campaign of three messages: one in flight and one claimed by a worker gone for an hour."""
    with app.app_context():
        team = make_team()
        user = make_user(team)
        contacts = make_list(team)
        for n in range(3):
            make_contact(contacts, f"+1415555020{n}")
        campaign = make_campaign(team, [contacts], body="Hi", sender=make_sender(team))
        campaign_states.launch(campaign.id, user.id)
        recipients.freeze(campaign.id)
        ids = db.session.scalars(select(Message.id).where(Message.campaign_id == campaign.id)
                                 .order_by(Message.id)).all()
        long_ago = utcnow() - timedelta(hours=1)
        db.session.execute(update(Message).where(Message.id == ids[0]).values(
            status=MessageStatus.SENDING, sent_at=long_ago, claim_token="dead", claimed_at=long_ago))
        db.session.execute(update(Message).where(Message.id == ids[1]).values(claim_token="dead",
                                                                              claimed_at=long_ago))
        db.session.execute(update(Campaign).where(Campaign.id == campaign.id).values(heartbeat_at=long_ago))
        db.session.commit()
        get_queue("sends").empty()
        return campaign.id, ids


def test_reconcile_marks_in_flight_unknown_releases_claims_and_queues_batches(app, runner):
    """The command runs the sweep and says each thing it did; the in-flight row is unknown, never CREATED."""
    campaign_id, ids = _campaign_with_a_dead_worker(app)
    result = runner.invoke(args=["reconcile"])
    assert result.exit_code == 0, result.output
    assert "1 messages in flight when their worker stopped: now unknown" in result.output
    assert "1 messages claimed by a stopped worker and never posted: released" in result.output
    assert f"Campaigns whose batches were queued again: {campaign_id}." in result.output
    assert "Scheduled campaigns started: none." in result.output
    with app.app_context():
        statuses = dict(db.session.execute(select(Message.id, Message.status).where(Message.id.in_(ids))).all())
        assert statuses == {ids[0]: MessageStatus.UNKNOWN, ids[1]: MessageStatus.CREATED,
                            ids[2]: MessageStatus.CREATED}
        assert db.session.scalar(select(Message.claim_token).where(Message.id == ids[1])) is None
        connection = redis_connection()
        queued = {Job.fetch(job_id, connection=connection).func_name for job_id in get_queue("sends").job_ids}
        assert queued == {"jobs.sending.send_batch"}
        assert db.session.get(Campaign, campaign_id).status is CampaignStatus.SENDING


def test_reconcile_releases_the_claims_of_a_batch_that_is_gone_and_queues_batches_at_once(app, runner):
    """A batch cut off a minute ago (far less than SEND_JOB_TIMEOUT) in a campaign heard from 30 s ago (less
    than SEND_STALL_SECONDS): its claims are released and batches queued now, not 11 minutes later."""
    with app.app_context():
        campaign_id = make_launched_campaign(make_team(), 3).id
        minute_ago = utcnow() - timedelta(minutes=1)
        sending.claim(campaign_id, "cut-off", 2, minute_ago)
        db.session.execute(update(Campaign).where(Campaign.id == campaign_id)
                           .values(heartbeat_at=utcnow() - timedelta(seconds=30)))
        db.session.commit()
        get_queue("sends").empty()
    result = runner.invoke(args=["reconcile"])
    assert result.exit_code == 0, result.output
    assert "2 messages claimed by a stopped worker and never posted: released" in result.output
    assert f"Campaigns whose batches were queued again: {campaign_id}." in result.output
    with app.app_context():
        assert db.session.scalar(select(Message.id).where(Message.claim_token.is_not(None))) is None
        assert db.session.scalars(select(SendBatch)).all() == []
        assert len(get_queue("sends").job_ids) == app.config["SEND_PARALLEL_BATCHES"]


def test_reconcile_twice_changes_nothing_more(app, runner):
    """A second run finds nothing left to mark or release (safe to run at any time)."""
    _campaign_with_a_dead_worker(app)
    runner.invoke(args=["reconcile"])
    result = runner.invoke(args=["reconcile"])
    assert result.exit_code == 0
    assert "0 messages in flight" in result.output and "0 messages claimed" in result.output


def test_the_engine_sweeps_are_registered_with_their_periods():
    """The campaign sweep every 15 s, callback rematching every minute, pruning hourly."""
    every = {periodic.job: periodic.every for periodic in PERIODIC}
    assert every["jobs.sending.sweep_campaigns"] == 15
    assert every["jobs.maintenance.rematch_callbacks"] == 60
    assert every["jobs.maintenance.prune_callbacks"] == 3600


def test_the_callback_sweeps_match_late_rows_and_bound_orphans(app):
    """rematch_callbacks applies a report that came before its row; prune_callbacks expires past the limit."""
    with app.app_context():
        team = make_team()
        message = make_message(team)
        early = make_callback(team, reference=message.reference)  # stored unmatched, as if before the row
        assert early.message_id is None
        assert rematch_callbacks() == 1
        assert db.session.get(ProviderCallback, early.id).message_id == message.id
        assert db.session.get(Message, message.id).status is MessageStatus.DELIVERED
        for n in range(3):
            make_callback(team, reference=f"nobody-{n}")
        app.config["CALLBACK_ORPHAN_LIMIT"] = 1
        assert prune_callbacks() == {team.id: 2}


def test_the_campaign_sweep_says_what_it_did_in_the_worker_log(app, caplog):
    """The periodic sweep logs a warning when it made in-flight messages unknown (operators watch for it)."""
    from jobs.sending import sweep_campaigns

    campaign_id, _ = _campaign_with_a_dead_worker(app)
    with app.app_context(), caplog.at_level("INFO", logger="jobs.sending"):
        found = sweep_campaigns()
    assert (found["unknown"], found["released"], found["restarted"]) == (1, 1, [campaign_id])
    [record] = [r for r in caplog.records if r.name == "jobs.sending"]
    assert record.levelname == "WARNING"
    assert record.getMessage() == (f"sweep: 1 in flight when their worker stopped made unknown, 1 stale claims "
                                   f"released, campaigns started [], restarted [{campaign_id}], completed []")
