"""Campaign figures kept by triggers: they always equal a full recount, whatever writes them and when.

The engine's statements, callbacks, the recovery sweep, a person's resend and the fold run in random
interleavings (and, on PostgreSQL, at the same time from several threads); the kept figures are compared
with a GROUP BY over the messages at checkpoints and at the end.
"""

import random
import threading
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from sqlalchemy import select, update

from tests.factories import make_launched_campaign, make_message, make_team, make_user
from webapp.extensions import db
from webapp.models import Campaign, CampaignStatus, CampaignTally, Message, MessageStatus, TallyDelta, Team, utcnow
from webapp.services import callbacks, campaign_states, sending, tallies

RECIPIENTS = 60


def _launched(app, recipients_count: int = RECIPIENTS) -> tuple[int, int, int]:
    """A sending campaign whose audience is frozen: (team id, user id, campaign id)."""
    with app.app_context():
        team = make_team()
        return team.id, make_user(team).id, make_launched_campaign(team, recipients_count).id


def _ids(campaign_id: int, *statuses: MessageStatus) -> list[int]:
    return db.session.scalars(select(Message.id).where(Message.campaign_id == campaign_id,
                                                       Message.status.in_(statuses))).all()


def _engine_step(rng: random.Random, campaign_id: int) -> None:
    """One of the engine's writes, with the statements the engine itself runs."""
    token = f"{rng.getrandbits(64):016x}"
    claimed = [row.id for row in sending.claim(campaign_id, token, rng.randint(1, 12), utcnow())]
    if not claimed:
        return
    choice = rng.random()
    if choice < 0.1:
        sending.release(token)
        return
    if choice < 0.2:  # quiet hours: held until the window opens
        db.session.execute(update(Message).where(Message.id.in_(claimed)).values(
            claim_token=None, held=True, not_before=utcnow() + timedelta(hours=rng.randint(1, 9))))
        db.session.commit()
        return
    db.session.execute(update(Message).where(Message.id.in_(claimed), Message.claim_token == token)
                       .values(status=MessageStatus.SENDING, sent_at=utcnow()))
    db.session.commit()
    accepted = []
    for message_id in claimed:
        outcome = rng.random()
        if outcome < 0.6:
            cost = rng.choice([None, Decimal("0.0075"), Decimal("0.0150")])
            accepted.append({"id": message_id, "unique_id": f"u{message_id}", "pid": None,
                             "parts": 1 if cost else None, "cost": cost})
            continue
        values = ({"status": MessageStatus.FAILED, "error": rng.choice(["Refused (HTTP 400)", "Not sent"])}
                  if outcome < 0.75 else {"status": MessageStatus.UNKNOWN, "error": "No answer"}
                  if outcome < 0.9 else {"status": MessageStatus.CREATED, "sent_at": None})
        db.session.execute(update(Message).where(Message.id == message_id, Message.claim_token == token)
                           .values(claim_token=None, **values))
    if accepted:
        sending.record_accepted(token, accepted)
    db.session.commit()


def _callback(rng: random.Random, team_id: int, campaign_id: int) -> None:
    """A delivery report for a random posted message: duplicated, late or out of order as it comes."""
    posted = _ids(campaign_id, MessageStatus.SENDING, MessageStatus.ACCEPTED, MessageStatus.UNKNOWN,
                  MessageStatus.DELIVERED, MessageStatus.UNDELIVERED)
    if not posted:
        return
    message = db.session.get(Message, rng.choice(posted))
    fields = {"reference": message.reference,
              "status": rng.choice(["sent", "DELIVRD", "delivered", "UNDELIV", "failed", "ENROUTE?"])}
    if rng.random() < 0.5:
        fields.update(cost=rng.choice(["0.0075", "0.0225"]), parts=rng.choice(["1", "3"]))
    if rng.random() < 0.3:
        fields["errorcode"] = rng.choice(["34", "1"])
    callbacks.store_status_callback(team_id, "application/x-www-form-urlencoded", "", urlencode(fields).encode())


def _other_step(rng: random.Random, team_id: int, user_id: int, campaign_id: int) -> None:
    """The sweep, a person's resend, an opt-out after launch, or a fold."""
    choice = rng.random()
    if choice < 0.3:
        tallies.fold()
    elif choice < 0.5:
        sending.recover(now=utcnow() + timedelta(hours=1))  # in flight "too long": unknown
    elif choice < 0.7:
        campaign_states.resend_unconfirmed(campaign_id, user_id, now=utcnow() + timedelta(days=1))
        db.session.execute(update(Campaign).where(Campaign.id == campaign_id)
                           .values(status=CampaignStatus.SENDING))
        db.session.commit()
    else:
        waiting = _ids(campaign_id, MessageStatus.CREATED)
        if waiting:
            db.session.execute(update(Message).where(Message.id == rng.choice(waiting))
                               .values(status=MessageStatus.OPTED_OUT, error="Opted out after launch"))
            db.session.commit()


def _agree(campaign_id: int) -> None:
    assert tallies.differences(campaign_id) == {}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_interleavings_of_engine_writes_and_callbacks_agree_with_a_recount(app, seed):
    team_id, user_id, campaign_id = _launched(app)
    rng = random.Random(seed)
    with app.app_context():
        _agree(campaign_id)
        for step in range(250):
            roll = rng.random()
            if roll < 0.4:
                _engine_step(rng, campaign_id)
            elif roll < 0.8:
                _callback(rng, team_id, campaign_id)
            else:
                _other_step(rng, team_id, user_id, campaign_id)
            if step % 25 == 0:
                _agree(campaign_id)
        _agree(campaign_id)
        tallies.fold()
        assert db.session.scalar(select(TallyDelta.id).limit(1)) is None
        _agree(campaign_id)
        figures = tallies.figures(campaign_id)
        assert figures.messages == RECIPIENTS  # a replaced attempt is not a recipient
        twice = int(figures.total("sent_twice"))
        assert figures.messages + figures.count("replaced") + twice == len(_ids(campaign_id, *MessageStatus))


def test_writers_and_folds_at_the_same_time_agree_with_a_recount(app):
    """Threads send, report and fold side by side (on PostgreSQL truly concurrently); nothing is lost."""
    team_id, user_id, campaign_id = _launched(app, 200)
    errors = []

    def run(kind: str, seed: int) -> None:
        rng = random.Random(seed)
        try:
            with app.app_context():
                for _ in range(60):
                    if kind == "engine":
                        _engine_step(rng, campaign_id)
                    elif kind == "callbacks":
                        _callback(rng, team_id, campaign_id)
                    else:
                        tallies.fold()
                db.session.remove()
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    sqlite = app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite")
    kinds = ["engine", "callbacks", "fold"] if sqlite else ["engine", "engine", "callbacks", "callbacks", "fold"]
    threads = [threading.Thread(target=run, args=(kind, seed)) for seed, kind in enumerate(kinds)]
    if sqlite:  # one writer at a time: the same interleaving, one thread after another
        for thread in threads:
            thread.start()
            thread.join()
    else:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    assert not errors
    with app.app_context():
        _agree(campaign_id)
        tallies.fold()
        _agree(campaign_id)


def test_the_timeline_counts_posts_deliveries_and_failures_by_minute(app):
    team_id, _user_id, campaign_id = _launched(app, 5)
    with app.app_context():
        ids = _ids(campaign_id, MessageStatus.CREATED)
        db.session.execute(update(Message).where(Message.id.in_(ids)).values(status=MessageStatus.SENDING))
        db.session.execute(update(Message).where(Message.id.in_(ids[:3])).values(status=MessageStatus.DELIVERED))
        db.session.execute(update(Message).where(Message.id == ids[3]).values(
            status=MessageStatus.UNDELIVERED, error="Not delivered: the provider reported UNDELIV (cause 34)"))
        db.session.commit()
        tallies.fold()
        minutes = tallies.minutes(campaign_id)
        assert sum(row[1] for row in minutes) == 5 and sum(row[2] for row in minutes) == 3
        assert sum(row[3] for row in minutes) == 1
        figures = tallies.figures(campaign_id)
        assert figures.reasons == [("undelivered", "Not delivered: the provider reported UNDELIV (cause 34)", 1)]
        assert figures.count("sending") == 1 and figures.sent == 4


def test_a_late_billed_cost_changes_spend_not_the_deliveries(app):
    """A report that only brings a delivered message's billed cost moves no message into "delivered" again."""
    _team_id, _user_id, campaign_id = _launched(app, 2)
    with app.app_context():
        ids = _ids(campaign_id, MessageStatus.CREATED)
        db.session.execute(update(Message).where(Message.id.in_(ids)).values(status=MessageStatus.DELIVERED))
        db.session.commit()
        db.session.execute(update(Message).where(Message.id == ids[0]).values(billed_cost=Decimal("0.05")))
        db.session.commit()
        assert sum(row[2] for row in tallies.minutes(campaign_id)) == 2
        tallies.fold()
        assert sum(row[2] for row in tallies.minutes(campaign_id)) == 2
        assert tallies.figures(campaign_id).billed == Decimal("0.05")
        _agree(campaign_id)


def test_test_sends_are_not_counted(app):
    """A draft's test sends carry its campaign id; they are no recipient's campaign message."""
    team_id, _user_id, campaign_id = _launched(app, 2)
    with app.app_context():
        make_message(db.session.get(Team, team_id), campaign=db.session.get(Campaign, campaign_id))
        assert tallies.figures(campaign_id).messages == 2
        _agree(campaign_id)


def test_recount_command_rebuilds_a_hand_edited_tally(app):
    _team_id, _user_id, campaign_id = _launched(app, 3)
    with app.app_context():
        tallies.fold()
        db.session.execute(update(CampaignTally).where(CampaignTally.campaign_id == campaign_id)
                           .values(messages=CampaignTally.messages + 7))
        db.session.commit()
        assert tallies.differences(campaign_id)
    result = app.test_cli_runner().invoke(args=["recount", str(campaign_id)])
    assert result.exit_code == 0 and f"Campaign {campaign_id}: 1 figure corrected." in result.output
    result = app.test_cli_runner().invoke(args=["recount"])
    assert f"Campaign {campaign_id}: figures were right." in result.output
    with app.app_context():
        _agree(campaign_id)
    assert "There is no campaign 999999" in app.test_cli_runner().invoke(args=["recount", "999999"]).output


def test_resending_keeps_the_launch_estimate_and_spend_counts_only_what_was_taken(app):
    """Against a provider that never took the first attempts: "resend unconfirmed" leaves the estimated total
    as launched, spend is what was billed, and the first attempts are only "up to" that much more; a late report
    that confirms one moves it into billed (sent twice), the estimate still as launched."""
    team_id, user_id, campaign_id = _launched(app, 10)
    with app.app_context():
        launched = tallies.figures(campaign_id).estimated
        ids = _ids(campaign_id, MessageStatus.CREATED)
        price = db.session.get(Message, ids[0]).estimated_cost
        db.session.execute(update(Message).where(Message.id.in_(ids[:7])).values(
            status=MessageStatus.DELIVERED, billed_cost=Message.estimated_cost, sent_at=utcnow()))
        db.session.execute(update(Message).where(Message.id.in_(ids[7:])).values(
            status=MessageStatus.UNKNOWN, sent_at=utcnow() - timedelta(days=1)))
        db.session.commit()
        assert campaign_states.resend_unconfirmed(campaign_id, user_id) == 3
        for fold in (False, True):
            if fold:
                tallies.fold()
            figures = tallies.figures(campaign_id)
            assert figures.estimated == launched == 10 * price
            assert figures.billed == figures.spend == 7 * price
            assert figures.unconfirmed_spend == 3 * price and figures.count("replaced") == 3
            _agree(campaign_id)
        original = db.session.get(Message, ids[7])
        fields = {"reference": original.reference, "status": "DELIVRD", "cost": str(price)}
        callbacks.store_status_callback(team_id, "application/x-www-form-urlencoded", "", urlencode(fields).encode())
        figures = tallies.figures(campaign_id)
        assert int(figures.total("sent_twice")) == 1 and figures.resends == 3
        assert figures.billed == figures.spend == 8 * price and figures.unconfirmed_spend == 2 * price
        assert figures.estimated == launched
        _agree(campaign_id)
