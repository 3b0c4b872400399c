"""Test sends: a per-team limit a minute and a day, the team's send rate, the budget cap, and their spend in
the campaign's and the team's figures (which still equal a recount)."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from sqlalchemy import select

from tests.factories import make_campaign, make_message, make_sender, make_team
from webapp.encryption import encrypt
from webapp.extensions import db
from webapp.models import Campaign, Message, MessageStatus, Team, utcnow
from webapp.queues import redis_connection
from webapp.services import campaigns, overview, tallies, test_sends
from webapp.services.ratelimit import RateLimiter

NO_SAMPLE = campaigns.SampleValues({}, None)


@pytest.fixture
def draft(app):
    """A draft of a team with sandbox credentials and one test number."""
    with app.app_context():
        team = make_team("Acme")
        team.api_username, team.api_password_encrypted = "sandbox", encrypt("sandbox")
        team.test_numbers = ["+14155550901"]
        db.session.commit()
        yield make_campaign(team, [], body="Hi", sender=make_sender(team))


def _sends(sandbox) -> list:
    return requests.get(f"{sandbox.url}/_sandbox/sends", timeout=5).json()


def _send(draft, sandbox, limits):
    return campaigns.send_test(draft, NO_SAMPLE, sandbox.url, "/tmp", limits=limits)


def test_a_loop_of_test_sends_is_refused_past_the_minute_limit(app, draft, sandbox):
    """Three a minute: the fourth click is refused with the reason and when to retry, and nothing more is posted."""
    limits = test_sends.Limits(per_minute=3, per_day=100)
    for _ in range(3):
        [message] = _send(draft, sandbox, limits)
        assert message.status is MessageStatus.ACCEPTED
    for _ in range(2):
        with pytest.raises(test_sends.Refused, match="Test send limit reached") as refused:
            _send(draft, sandbox, limits)
        assert refused.value.status == 429 and 1 <= refused.value.retry_after <= 60
        assert "0 are left now" in str(refused.value) and "Nothing was sent" in str(refused.value)
    assert len(_sends(sandbox)) == 3
    assert db.session.scalar(select(db.func.count()).select_from(Message)) == 3
    left = test_sends.allowance(draft.team_id, limits)
    assert (left.left, left.minute_left, left.day_left) == (0, 0, 97) and 0 < left.frees_in <= 60


def test_the_day_limit_counts_the_last_24_hours_of_the_whole_team(app, draft):
    """Test messages of any campaign of the team in the last 24 hours count; older ones and other teams' don't."""
    team, other = db.session.get(Team, draft.team_id), make_team("Other")
    now = utcnow()
    for hours in (1, 23, 25):
        make_message(team, campaign=make_campaign(team), created_at=now - timedelta(hours=hours))
    make_message(other, created_at=now - timedelta(hours=1))
    left = test_sends.allowance(team.id, test_sends.Limits(per_minute=10, per_day=3), now)
    assert (left.minute_left, left.day_left, left.left) == (10, 1, 1)
    left = test_sends.allowance(team.id, test_sends.Limits(per_minute=10, per_day=2), now)
    assert left.left == 0 and left.frees_in == pytest.approx(3600, abs=1)  # when the 23-hour-old one leaves


def test_two_clicks_at_once_never_both_take_the_last_test_send(app, draft, sandbox):
    """The allowance is checked again under the team's lock, so concurrent requests can't pass it together."""
    limits = test_sends.Limits(per_minute=1, per_day=100)
    campaign_id = draft.id
    barrier, outcomes = threading.Barrier(2), []

    def click():
        with app.app_context():
            campaign = db.session.get(Campaign, campaign_id)
            barrier.wait()
            try:
                outcomes.append(len(_send(campaign, sandbox, limits)))
            except test_sends.Refused:
                outcomes.append("refused")
            finally:
                db.session.remove()

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes, key=str) == [1, "refused"]
    assert len(_sends(sandbox)) == 1


def test_a_test_send_takes_its_turn_in_the_team_send_rate(app, draft, sandbox):
    """A campaign holding the team's rate leaves no slot: the test is refused after a short wait, nothing written."""
    limiter = RateLimiter(redis_connection(), per_second=0.1)  # one message per 10 s
    assert limiter.take(f"team:{draft.team_id}")[0]  # a campaign just took the slot
    limits = test_sends.Limits(per_minute=10, per_day=100, rate_wait_seconds=0.5)
    with pytest.raises(test_sends.Refused, match="send rate") as refused:
        campaigns.send_test(draft, NO_SAMPLE, sandbox.url, "/tmp", limits=limits, limiter=limiter)
    assert refused.value.retry_after >= 1
    assert _sends(sandbox) == [] and db.session.scalar(select(Message.id)) is None


def test_a_test_send_counts_against_the_budget_cap(app, draft, sandbox):
    """It reserves its estimate like a campaign message: refused when it would pass the cap, billed when sent."""
    limits = test_sends.Limits(per_minute=10, per_day=100)
    draft.budget_cap, draft.reserved_cost = Decimal("0.02"), Decimal("0.01")
    db.session.commit()
    with pytest.raises(test_sends.Refused, match="budget cap") as refused:
        _send(draft, sandbox, limits)
    assert refused.value.status == 409 and _sends(sandbox) == []
    assert db.session.get(Campaign, draft.id).reserved_cost == Decimal("0.01")

    draft.budget_cap = Decimal("1")
    db.session.commit()
    [message] = _send(draft, sandbox, limits)
    assert message.billed_cost == Decimal("0.015")
    assert db.session.get(Campaign, draft.id).reserved_cost == Decimal("0.025")


def test_a_test_send_not_sent_gives_its_reservation_back(app, draft, sandbox):
    """Refused by the provider: it costs nothing, in the budget and in spend (but it used its allowance)."""
    requests.post(f"{sandbox.url}/_sandbox/config", json={"refuse_prefix": "+14155550901"}, timeout=5)
    [message] = _send(draft, sandbox, test_sends.Limits(per_minute=10, per_day=100))
    assert message.status is MessageStatus.FAILED
    assert db.session.get(Campaign, draft.id).reserved_cost == 0
    assert tallies.figures(draft.id).spend == 0 and tallies.differences(draft.id) == {}
    assert test_sends.allowance(draft.team_id, test_sends.Limits(10, 100)).minute_left == 9


def test_test_sends_count_in_the_campaign_and_team_spend_and_equal_a_recount(app, draft, sandbox):
    """Billed test sends are in the campaign's spend and billed figures, apart from its messages, and in the
    team's spend by month (a draft's too); kept figures equal a recount before and after a fold."""
    limits = test_sends.Limits(per_minute=10, per_day=100)
    team_id = draft.team_id
    for _ in range(2):
        _send(draft, sandbox, limits)
    figures = tallies.figures(draft.id)
    assert (figures.test_sends, figures.messages) == (2, 0)
    assert figures.spend == figures.billed == figures.test_spend == Decimal("0.03")
    assert figures.estimated == 0  # the campaign's own estimate leaves tests out
    assert tallies.differences(draft.id) == {}
    assert overview.spend_by_month(team_id)[-1].spend == Decimal("0.03")
    tallies.fold()
    assert tallies.differences(draft.id) == {}
    assert overview.spend_by_month(team_id)[-1].spend == Decimal("0.03")
    assert tallies.recount(draft.id) == 0
    assert tallies.figures(draft.id).spend == Decimal("0.03")
