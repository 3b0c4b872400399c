"""Callbacks applied to messages: matched by reference or uniqueid, status only moves up, billed figures kept."""

from datetime import timedelta
from decimal import Decimal

import pytest

from tests.factories import make_campaign, make_list, make_message, make_team, make_user
from webapp.extensions import db
from webapp.models import Campaign, CampaignStatus, Message, MessageKind, MessageStatus, utcnow
from webapp.provider.delivery_reports import DeliveryState, ParsedCallback
from webapp.services import campaign_states
from webapp.services.delivery import RANK, apply_callback


def _callback(state: DeliveryState, reference=None, unique_id=None, parts=None, cost=None,
              raw_status=None) -> ParsedCallback:
    return ParsedCallback(unique_id=unique_id, reference=reference, state=state, raw_status=raw_status or str(state),
                          cause_code=None, cost=cost, parts=parts)


def _apply(team_id: int, parsed: ParsedCallback, **kwargs):
    """Apply in the session's transaction and commit, as a caller would."""
    applied = apply_callback(db.session.connection(), team_id, parsed, **kwargs)
    db.session.commit()
    return applied


def _row(message_id: int) -> Message:
    db.session.expire_all()
    return db.session.get(Message, message_id)


@pytest.fixture
def message(app):
    with app.app_context():
        team = make_team()
        row = make_message(team, status=MessageStatus.ACCEPTED, unique_id="u-1")
        yield team, row.id, row.reference


def test_a_final_state_is_never_overwritten_by_a_late_sent(app, message):
    """Delivered, then a late 'sent': still delivered; a duplicate 'delivered' changes nothing."""
    team, message_id, reference = message
    first = _apply(team.id, _callback(DeliveryState.DELIVERED, reference))
    assert (first.message_id, first.changed) == (message_id, True)
    finished_at = _row(message_id).finished_at
    late = _apply(team.id, _callback(DeliveryState.SENT, reference))
    duplicate = _apply(team.id, _callback(DeliveryState.DELIVERED, reference))
    assert (late.message_id, late.changed, duplicate.changed) == (message_id, False, False)
    row = _row(message_id)
    assert row.status is MessageStatus.DELIVERED and row.finished_at == finished_at


@pytest.mark.parametrize("final", [DeliveryState.DELIVERED, DeliveryState.FAILED])
def test_every_order_of_reports_ends_in_the_highest_state(app, final):
    """Sent, final and their duplicates in any order: the message ends final, and each report is matched."""
    import itertools

    with app.app_context():
        team = make_team()
        for order in itertools.permutations([DeliveryState.SENT, final, DeliveryState.SENT, final]):
            row = make_message(team, status=MessageStatus.SENDING)
            for state in order:
                assert _apply(team.id, _callback(state, row.reference)).message_id == row.id
            expected = MessageStatus.DELIVERED if final is DeliveryState.DELIVERED else MessageStatus.UNDELIVERED
            assert _row(row.id).status is expected, order


def test_an_unknown_word_is_not_applied(app, message):
    """A status word the parser does not know leaves the message as it was, figures included, but is matched."""
    team, message_id, reference = message
    applied = _apply(team.id, _callback(DeliveryState.UNKNOWN, reference, parts=9, cost=Decimal("9"),
                                        raw_status="WEIRD"))
    assert (applied.message_id, applied.changed) == (message_id, False)
    row = _row(message_id)
    assert (row.status, row.billed_parts, row.billed_cost) == (MessageStatus.ACCEPTED, None, None)


def test_matched_by_unique_id_when_the_reference_is_missing(app, message):
    """No reference echoed: the provider's uniqueid finds the message; billed figures and the reason are kept."""
    team, message_id, _ = message
    failed = ParsedCallback(unique_id="u-1", reference=None, state=DeliveryState.FAILED, raw_status="UNDELIV",
                            cause_code="1", cost=Decimal("0.03"), parts=2)
    _apply(team.id, failed)
    _apply(team.id, _callback(DeliveryState.SENT, unique_id="u-1"))
    row = _row(message_id)
    assert row.status is MessageStatus.UNDELIVERED
    assert (row.billed_parts, row.billed_cost) == (2, Decimal("0.03"))
    assert row.error == "Not delivered: the provider reported UNDELIV (cause 1)"


def test_a_reference_that_matches_nothing_falls_back_to_the_unique_id(app, message):
    """A reference we never issued (another system's) does not hide the uniqueid that does match."""
    team, message_id, _ = message
    assert _apply(team.id, _callback(DeliveryState.DELIVERED, "not-ours", unique_id="u-1")).message_id == message_id
    assert _row(message_id).status is MessageStatus.DELIVERED


def test_another_teams_reference_matches_nothing(app, message):
    """A callback posted with team B's token can't touch team A's message, by reference or uniqueid."""
    _team, message_id, reference = message
    other = make_team()
    assert _apply(other.id, _callback(DeliveryState.DELIVERED, reference)) is None
    assert _apply(other.id, _callback(DeliveryState.DELIVERED, unique_id="u-1")) is None
    assert _apply(other.id, _callback(DeliveryState.DELIVERED), message_id=message_id) is None
    assert _row(message_id).status is MessageStatus.ACCEPTED


def test_the_latest_provider_figure_is_billed_and_the_reply_stays_beside_it(app):
    """The reply said 1 part at 0.015; a callback says 2 at 0.030, a later one 3 at 0.045: billed is the last,
    the reply's figures and the estimate are untouched, and a repeat of the last changes nothing."""
    with app.app_context():
        team = make_team()
        row = make_message(team, status=MessageStatus.ACCEPTED, unique_id="u-9", estimated_cost=Decimal("0.015"),
                           reply_parts=1, reply_cost=Decimal("0.015"), billed_parts=1, billed_cost=Decimal("0.015"))
        first = _apply(team.id, _callback(DeliveryState.SENT, row.reference, parts=2, cost=Decimal("0.030")))
        assert first.changed and first.disagrees(_callback(DeliveryState.SENT, parts=2, cost=Decimal("0.030")))
        _apply(team.id, _callback(DeliveryState.DELIVERED, row.reference, parts=3, cost=Decimal("0.045")))
        again = _apply(team.id, _callback(DeliveryState.DELIVERED, row.reference, parts=3, cost=Decimal("0.045")))
        assert again.changed is False
        row = _row(row.id)
        assert (row.billed_parts, row.billed_cost) == (3, Decimal("0.045"))
        assert (row.reply_parts, row.reply_cost, row.estimated_cost) == (1, Decimal("0.015"), Decimal("0.015"))


def test_figures_alone_are_billed_without_moving_the_status(app, message):
    """A repeated 'delivered' that now carries the cost records it as billed; the status stays as it was."""
    team, message_id, reference = message
    _apply(team.id, _callback(DeliveryState.DELIVERED, reference))
    applied = _apply(team.id, _callback(DeliveryState.DELIVERED, reference, parts=1, cost=Decimal("0.015")))
    row = _row(message_id)
    assert applied.changed and row.status is MessageStatus.DELIVERED and row.billed_cost == Decimal("0.015")


def test_a_late_interim_report_does_not_replace_the_final_reports_figures(app, message):
    """Delivered billed 2 parts; the interim 'sent' (1 part) arriving after it is older news: still 2."""
    team, message_id, reference = message
    _apply(team.id, _callback(DeliveryState.DELIVERED, reference, parts=2, cost=Decimal("0.03")))
    late = _apply(team.id, _callback(DeliveryState.SENT, reference, parts=1, cost=Decimal("0.015")))
    row = _row(message_id)
    assert late.changed is False
    assert (row.status, row.billed_parts, row.billed_cost) == (MessageStatus.DELIVERED, 2, Decimal("0.03"))


def test_an_unknown_message_becomes_delivered_when_its_callback_arrives(app):
    """The engine learns an ambiguous send went out from its callback, by our reference."""
    with app.app_context():
        team = make_team()
        row = make_message(team, status=MessageStatus.UNKNOWN)
        _apply(team.id, _callback(DeliveryState.DELIVERED, row.reference, unique_id="late-1"))
        row = _row(row.id)
        assert row.status is MessageStatus.DELIVERED and row.unique_id == "late-1"


def test_an_unknown_message_becomes_accepted_by_a_sent_report(app):
    """An interim report is enough to know an ambiguous send reached the provider; no finish time yet."""
    with app.app_context():
        team = make_team()
        row = make_message(team, status=MessageStatus.UNKNOWN)
        _apply(team.id, _callback(DeliveryState.SENT, row.reference))
        row = _row(row.id)
        assert row.status is MessageStatus.ACCEPTED and row.finished_at is None


def test_statuses_outside_the_order_never_move(app):
    """A message the engine failed, cancelled or opted out is not revived by a report."""
    with app.app_context():
        team = make_team()
        for status in (MessageStatus.FAILED, MessageStatus.CANCELLED, MessageStatus.OPTED_OUT):
            assert status not in RANK
            row = make_message(team, status=status)
            _apply(team.id, _callback(DeliveryState.DELIVERED, row.reference))
            assert _row(row.id).status is status


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
        _apply(team.id, _callback(DeliveryState.DELIVERED, original.reference))
        db.session.expire_all()
        assert db.session.get(Message, original.id).sent_twice is True
        assert db.session.get(Campaign, campaign.id).status is CampaignStatus.PAUSED
