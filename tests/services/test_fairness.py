"""One team's big campaign does not starve another team's small one: batches take turns on the queue.

Each batch job queues its successor at the end of the "sends" queue, so a campaign launched while a
big one is sending waits behind at most the big one's parallel batches, however many rows it has left.
The jobs run in queue order in a real RQ SimpleWorker, one job at a time, against the sandbox over HTTP.
"""

from collections import Counter
from decimal import Decimal

from rq import SimpleWorker
from sqlalchemy import func, insert, select

from tests.factories import make_campaign, make_list, make_sender, make_team
from webapp.encryption import encrypt
from webapp.extensions import db
from webapp.models import Campaign, CampaignStatus, Contact, Message, MessageStatus
from webapp.queues import get_queue, redis_connection
from webapp.services import campaign_states

BIG, SMALL, BATCH = 2_000, 20, 100
SENT = (MessageStatus.ACCEPTED, MessageStatus.DELIVERED, MessageStatus.UNDELIVERED)


def _campaign_of(recipients: int, area: str) -> int:
    """A draft of a new team (sandbox credentials, no rate limit to speak of) to `recipients` US mobiles."""
    team = make_team()
    team.api_username, team.api_password_encrypted = "sandbox", encrypt("sandbox")
    team.send_rate = Decimal(100_000)
    db.session.commit()
    contacts = make_list(team)
    db.session.execute(insert(Contact), [
        {"team_id": team.id, "list_id": contacts.id, "phone": f"+1{area}555{n:04d}", "region": "US",
         "number_type": "mobile", "attributes": {"first_name": f"N{n}"}} for n in range(recipients)])
    campaign = make_campaign(team, [contacts], body="Hi {{ first_name }}", sender=make_sender(team))
    campaign.quiet_hours = False
    db.session.commit()
    return campaign.id


def _sent(campaign_id: int) -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Message).where(
        Message.campaign_id == campaign_id, Message.status.in_(SENT)))


def _status(campaign_id: int) -> CampaignStatus:
    db.session.expire_all()
    return db.session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))


def _run_one_job() -> bool:
    """The job at the head of the "sends" queue, in this process; False when the queue is empty."""
    queue = get_queue(campaign_states.SEND_QUEUE)
    if not queue.count:
        return False
    SimpleWorker([queue], connection=redis_connection()).work(burst=True, max_jobs=1)
    return True


def test_a_small_campaign_completes_while_a_big_one_is_still_sending(app, sandbox):
    """Team B's 20 recipients are all sent, and B completed, before team A's 2,000 are half sent."""
    with app.app_context():
        app.config.update(SEND_BATCH_SIZE=BATCH, SEND_PARALLEL_BATCHES=2)
        big = _campaign_of(BIG, "415")
        small = _campaign_of(SMALL, "646")
        campaign_states.launch(big, None)
        _run_one_job()  # A's audience is frozen and its first batches are queued
        assert get_queue(campaign_states.SEND_QUEUE).count == 2
        campaign_states.launch(small, None)

        jobs = 0
        while _status(small) is not CampaignStatus.COMPLETED:
            assert _run_one_job(), "the queue ran dry before team B's campaign completed"
            jobs += 1
            assert jobs < 200, "team B's campaign never completed"
        big_sent_then = _sent(big)

        assert _sent(small) == SMALL
        assert _status(big) is CampaignStatus.SENDING
        assert 0 < big_sent_then < BIG // 2, f"A had sent {big_sent_then} of {BIG} when B completed"
        # B waited behind A's parallel batches once, and their successors once more: never behind A's rest.
        assert big_sent_then <= 2 * 2 * BATCH

        while _run_one_job():
            jobs += 1
            assert jobs < 400, "team A's campaign never finished"
        assert _status(big) is CampaignStatus.COMPLETED
        references = set(db.session.scalars(select(Message.reference).where(
            Message.campaign_id.in_((big, small)))))
        witnessed = Counter(send.reference for send in sandbox.state.sends_for())
        assert len(references) == BIG + SMALL
        assert {reference: witnessed[reference] for reference in references} == dict.fromkeys(references, 1)
