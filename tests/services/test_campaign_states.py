"""How a campaign ends: held messages cancelled on request, and in-flight work after a cancel draining to a
final figure (replies recorded, nothing left queued in a campaign that will never send it)."""

import threading
from collections import Counter
from datetime import timedelta

import pytest
import requests
from sqlalchemy import func, select, update

from tests.factories import make_launched_campaign, make_team, make_user
from tests.services.test_sending import _elsewhere, _sandbox_client, _team_on_sandbox
from webapp.extensions import db
from webapp.models import AuditEntry, Campaign, CampaignStatus, Message, MessageStatus, utcnow
from webapp.services import campaign_states, recipients, sending, tallies
from webapp.services.ratelimit import RateLimiter


def _statuses(campaign_id: int) -> Counter:
    return Counter(dict(db.session.execute(
        select(Message.status, func.count()).where(Message.campaign_id == campaign_id).group_by(Message.status)
    ).all()))


def _actions(campaign_id: int) -> list[str]:
    return db.session.scalars(select(AuditEntry.action).where(AuditEntry.campaign_id == campaign_id)
                              .order_by(AuditEntry.id)).all()


def test_a_post_answered_try_again_after_the_cancel_is_not_left_queued(app, sandbox):
    """Cancelled while 3 POSTs are on the wire and the provider answers 503 to each: the rows come back
    cancelled (never queued in a campaign that will never send them), logged, and the figures are final."""
    from webapp.queues import redis_connection

    _, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=8)
    requests.post(f"{sandbox.url}/_sandbox/config", json={"error_503_rate": 1.0}, timeout=10).raise_for_status()
    with app.app_context():
        app.config["SEND_CONCURRENCY"] = 3
        campaign_states.launch(campaign_id, user_id)
        recipients.freeze(campaign_id)
        real, posted, lock, cancelled = _sandbox_client(app), [], threading.Lock(), threading.Event()

        class CancellingClient:
            """Cancels the campaign (as another request would) while the first 3 POSTs are on the wire."""

            def send(self, **message):
                with lock:
                    posted.append(message["reference"])
                    third = len(posted) == 3
                if third:
                    _elsewhere(app, lambda: campaign_states.cancel(campaign_id, user_id))
                    cancelled.set()
                cancelled.wait(60)
                return real.send(**message)

        report = sending.send_batch(campaign_id, client=CancellingClient(),
                                    limiter=RateLimiter(redis_connection(), 1000, 16))
        assert report.posted == 3
        assert _statuses(campaign_id) == {MessageStatus.CANCELLED: 8}
        assert "not sent" in _actions(campaign_id)
        figures = tallies.figures(campaign_id)
        assert figures.count("created", "sending") == 0 and figures.percent_for(CampaignStatus.CANCELLED) == 0


def test_an_in_flight_row_of_a_cancelled_campaign_becomes_unknown_at_the_sweep(app):
    """A worker that died with a row in flight: after the cancel the sweep still makes it unknown, so the
    cancelled campaign's in-flight figure drains to 0 and its progress counts it as sent."""
    with app.app_context():
        team = make_team()
        user_id, campaign_id = make_user(team).id, make_launched_campaign(team, 4).id
        ids = db.session.scalars(select(Message.id).where(Message.campaign_id == campaign_id)
                                 .order_by(Message.id)).all()
        db.session.execute(update(Message).where(Message.id == ids[0])
                           .values(status=MessageStatus.SENDING, sent_at=utcnow(), claim_token="dead"))
        db.session.execute(update(Message).where(Message.id == ids[1]).values(status=MessageStatus.ACCEPTED))
        db.session.commit()
        campaign_states.cancel(campaign_id, user_id)
        assert tallies.figures(campaign_id).count("sending") == 1
        sending.recover(utcnow() + timedelta(seconds=app.config["SEND_IN_FLIGHT_SECONDS"] + 1))
        figures = tallies.figures(campaign_id)
        assert figures.count("sending") == 0 and figures.count("unknown") == 1
        assert figures.percent_for(CampaignStatus.CANCELLED) == 50  # 2 sent of 4 to send, not 100%
        assert figures.percent_done == 100


def _held(app, count: int = 3) -> tuple[int, int, list[int]]:
    """A sending campaign whose messages but `count` are accepted and whose last `count` wait for quiet hours."""
    with app.app_context():
        team = make_team()
        user_id, campaign_id = make_user(team).id, make_launched_campaign(team, 6).id
        ids = db.session.scalars(select(Message.id).where(Message.campaign_id == campaign_id)
                                 .order_by(Message.id)).all()
        db.session.execute(update(Message).where(Message.id.in_(ids[:-count]))
                           .values(status=MessageStatus.ACCEPTED, sent_at=utcnow()))
        db.session.execute(update(Message).where(Message.id.in_(ids[-count:]))
                           .values(held=True, not_before=utcnow() + timedelta(hours=3)))
        db.session.commit()
        return user_id, campaign_id, ids[-count:]


def test_cancelling_held_messages_completes_the_campaign_and_is_logged(app):
    user_id, campaign_id, _ = _held(app)
    with app.app_context():
        assert campaign_states.cancel_held(campaign_id, user_id) == 3
        assert _statuses(campaign_id) == {MessageStatus.ACCEPTED: 3, MessageStatus.CANCELLED: 3}
        assert db.session.get(Campaign, campaign_id).status is CampaignStatus.COMPLETED
        assert _actions(campaign_id)[-2:] == ["cancelled held messages", "completed"]
        detail = db.session.scalar(select(AuditEntry.detail).where(AuditEntry.action == "cancelled held messages"))
        assert detail == "3 messages held for quiet hours will not be sent"


def test_a_held_message_claimed_meanwhile_is_not_cancelled(app):
    """Its window opened and a batch claimed it just before the click: that one is the batch's to send, the
    others are cancelled, and the campaign waits for it before it completes."""
    user_id, campaign_id, held = _held(app)
    with app.app_context():
        db.session.execute(update(Message).where(Message.id == held[0]).values(not_before=utcnow()))
        db.session.commit()
        assert [row.id for row in sending.claim(campaign_id, "batch", 10, utcnow())] == [held[0]]
        assert campaign_states.cancel_held(campaign_id, user_id) == 2
        assert db.session.get(Message, held[0]).status is MessageStatus.CREATED
        assert db.session.get(Campaign, campaign_id).status is CampaignStatus.SENDING
        with pytest.raises(campaign_states.CampaignProblem, match="No message is held"):
            campaign_states.cancel_held(campaign_id, user_id)


def test_held_messages_of_a_finished_campaign_cannot_be_cancelled(app):
    user_id, campaign_id, _ = _held(app)
    with app.app_context():
        campaign_states.cancel(campaign_id, user_id)
        with pytest.raises(campaign_states.CampaignProblem, match="cancelled now"):
            campaign_states.cancel_held(campaign_id, user_id)
