"""Callbacks applied to messages: matched by reference or uniqueid, status only moves up."""

from datetime import timedelta
from decimal import Decimal

import pytest

from tests.factories import make_campaign, make_list, make_message, make_team, make_user
from webapp.extensions import db
from webapp.models import Campaign, CampaignStatus, Message, MessageKind, MessageStatus, utcnow
from webapp.provider.delivery_reports import DeliveryState, ParsedCallback
from webapp.services import campaign_states
from webapp.services.delivery import apply_callback


def _callback(state: DeliveryState, reference=None, unique_id=None, parts=None, cost=None) -> ParsedCallback:
    return ParsedCallback(unique_id=unique_id, reference=reference, state=state, raw_status=str(state),
                          cause_code=None, cost=cost, parts=parts)


def _status(message_id: int) -> MessageStatus:
    db.session.expire_all()
    return db.session.get(Message, message_id).status


@pytest.fixture
def message(app):
    with app.app_context():
        team = make_team()
        row = make_message(team, status=MessageStatus.ACCEPTED, unique_id="u-1")
        yield team, row.id, row.reference


def test_a_final_state_is_never_overwritten_by_a_late_sent(app, message):
    """Delivered, then a late 'sent': still delivered; a duplicate 'delivered' changes nothing."""
    team, message_id, reference = message
    assert apply_callback(team.id, _callback(DeliveryState.DELIVERED, reference)) == message_id
    apply_callback(team.id, _callback(DeliveryState.SENT, reference))
    apply_callback(team.id, _callback(DeliveryState.DELIVERED, reference))
    db.session.commit()
    assert _status(message_id) is MessageStatus.DELIVERED


def test_an_unknown_word_is_not_applied(app, message):
    """A status word the parser does not know leaves the message where it was."""
    team, message_id, reference = message
    apply_callback(team.id, _callback(DeliveryState.UNKNOWN, reference))
    db.session.commit()
    assert _status(message_id) is MessageStatus.ACCEPTED


def test_matched_by_unique_id_when_the_reference_is_missing(app, message):
    """No reference echoed: the provider's uniqueid finds the message; billed figures and the reason are kept."""
    team, message_id, _ = message
    failed = ParsedCallback(unique_id="u-1", reference=None, state=DeliveryState.FAILED, raw_status="UNDELIV",
                            cause_code="1", cost=Decimal("0.03"), parts=2)
    apply_callback(team.id, failed)
    apply_callback(team.id, _callback(DeliveryState.SENT, unique_id="u-1"))
    db.session.commit()
    row = db.session.get(Message, message_id)
    assert row.status is MessageStatus.UNDELIVERED
    assert (row.billed_parts, row.billed_cost) == (2, Decimal("0.03"))
    assert row.error == "Not delivered: the provider reported UNDELIV (cause 1)"


def test_another_teams_reference_matches_nothing(app, message):
    """A callback posted with team B's token can't touch team A's message."""
    _team, message_id, reference = message
    other = make_team()
    assert apply_callback(other.id, _callback(DeliveryState.DELIVERED, reference)) is None
    assert _status(message_id) is MessageStatus.ACCEPTED


def test_an_unknown_message_becomes_delivered_when_its_callback_arrives(app):
    """The engine learns an ambiguous send went out from its callback, by our reference."""
    with app.app_context():
        team = make_team()
        row = make_message(team, status=MessageStatus.UNKNOWN)
        apply_callback(team.id, _callback(DeliveryState.DELIVERED, row.reference, unique_id="late-1"))
        db.session.commit()
        row = db.session.get(Message, row.id)
        assert row.status is MessageStatus.DELIVERED and row.unique_id == "late-1"


def test_resend_unconfirmed_then_a_late_confirmation_counts_sent_twice(app):
    """Resending makes a new row with its own reference; the original confirmed later is marked sent twice."""
    with app.app_context():
        team = make_team()
        user = make_user(team)
        campaign = make_campaign(team, [make_list(team)])
        campaign.status = CampaignStatus.PAUSED
        db.session.commit()
        old = utcnow() - timedelta(days=1)
        original = make_message(team, campaign=campaign, kind=MessageKind.CAMPAIGN, status=MessageStatus.UNKNOWN,
                                sent_at=old)
        recent = make_message(team, campaign=campaign, kind=MessageKind.CAMPAIGN, status=MessageStatus.UNKNOWN,
                              sent_at=utcnow())
        assert campaign_states.resend_unconfirmed(campaign.id, user.id) == 1
        copy = db.session.query(Message).filter(Message.resend_of_id == original.id).one()
        assert copy.reference != original.reference and copy.status is MessageStatus.CREATED
        assert db.session.get(Message, recent.id).resent is False, "still inside the grace period"
        assert campaign_states.resend_unconfirmed(campaign.id, user.id) == 0, "never resent twice"
        apply_callback(team.id, _callback(DeliveryState.DELIVERED, original.reference))
        db.session.commit()
        db.session.expire_all()
        assert db.session.get(Message, original.id).sent_twice is True
        assert db.session.get(Campaign, campaign.id).status is CampaignStatus.PAUSED
