"""The budget cap against the sandbox over real HTTP: every message that fits is sent, then the campaign
pauses with the reason, and workers posting at once never pass the cap together."""

import threading
from decimal import Decimal

from sqlalchemy import func, select, update

from tests.conftest import run_jobs
from tests.services.test_sending import _accepted_references, _statuses, _team_on_sandbox
from webapp.extensions import db
from webapp.models import Campaign, CampaignStatus, Message, MessageStatus
from webapp.services import campaign_states, recipients, sending


def _capped_campaign(app, sandbox, recipients_count: int, cap: str) -> tuple[int, int]:
    """A draft to `recipients_count` one-part SMS at 0.015 with a budget cap (default concurrency: 16)."""
    _, user_id, campaign_id = _team_on_sandbox(app, sandbox, contacts=recipients_count)
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        campaign.budget_cap = Decimal(cap)
        campaign.include_footer = False
        db.session.commit()
    return user_id, campaign_id


def _set_cap(campaign_id: int, cap: str) -> None:
    """What the campaign page's budget form does."""
    db.session.execute(update(Campaign).where(Campaign.id == campaign_id).values(budget_cap=Decimal(cap)))
    db.session.commit()


def test_a_cap_below_the_estimate_sends_what_fits_then_pauses_and_a_raise_sends_what_fits_more(app, sandbox):
    """9 messages at 0.015: a cap of 0.05 sends 3 and pauses saying why; 0.10 sends 6 in all; 0.135 all 9."""
    user_id, campaign_id = _capped_campaign(app, sandbox, 9, "0.05")
    with app.app_context():
        campaign_states.launch(campaign_id, user_id)
        run_jobs(app)  # the real jobs: prepare, then the batches it queues
        campaign = db.session.get(Campaign, campaign_id)
        assert campaign.status is CampaignStatus.PAUSED
        assert "budget cap of 0.05" in campaign.paused_reason
        assert _statuses(campaign_id) == {MessageStatus.ACCEPTED: 3, MessageStatus.CREATED: 6}

        _set_cap(campaign_id, "0.10")
        campaign_states.resume(campaign_id, user_id)
        run_jobs(app)
        db.session.expire_all()
        campaign = db.session.get(Campaign, campaign_id)
        assert campaign.status is CampaignStatus.PAUSED and "budget cap of 0.10" in campaign.paused_reason
        assert _statuses(campaign_id) == {MessageStatus.ACCEPTED: 6, MessageStatus.CREATED: 3}

        _set_cap(campaign_id, "0.135")  # exactly the whole estimate
        campaign_states.resume(campaign_id, user_id)
        run_jobs(app)
        db.session.expire_all()
        campaign = db.session.get(Campaign, campaign_id)
        assert campaign.status is CampaignStatus.COMPLETED
        assert _statuses(campaign_id) == {MessageStatus.ACCEPTED: 9}
        assert campaign.reserved_cost == Decimal("0.135")
        references = set(db.session.scalars(select(Message.reference).where(Message.campaign_id == campaign_id)))
    assert {ref: count for ref, count in _accepted_references(sandbox).items() if ref in references} == \
        dict.fromkeys(references, 1)


def test_batches_posting_at_once_never_pass_the_cap_together(app, sandbox):
    """Four batches at once on a campaign of 40 with a cap that fits 17: exactly 17 sent, none twice."""
    user_id, campaign_id = _capped_campaign(app, sandbox, 40, "0.255")
    with app.app_context():
        app.config["SEND_CONCURRENCY"] = 2  # many small reservations, so the batches interleave
        campaign_states.launch(campaign_id, user_id)
        recipients.freeze(campaign_id)
        # Each batch claims a quarter, so all four hold rows and reserve against the one cap at once.
        app.config["SEND_BATCH_SIZE"] = 10
    start, reports = threading.Barrier(4), []

    def batch():
        with app.app_context():
            start.wait(30)
            reports.append(sending.send_batch(campaign_id))

    threads = [threading.Thread(target=batch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    with app.app_context():
        assert sorted(report.claimed for report in reports) == [10, 10, 10, 10]
        assert sum(report.accepted for report in reports) == 17
        assert "budget cap" in {report.stopped for report in reports}
        campaign = db.session.get(Campaign, campaign_id)
        assert campaign.status is CampaignStatus.PAUSED and "budget cap" in campaign.paused_reason
        assert _statuses(campaign_id) == {MessageStatus.ACCEPTED: 17, MessageStatus.CREATED: 23}
        spent = db.session.scalar(select(func.sum(Message.estimated_cost)).where(
            Message.campaign_id == campaign_id, Message.status == MessageStatus.ACCEPTED))
        assert campaign.reserved_cost == spent == Decimal("0.255")
    assert all(count == 1 for count in _accepted_references(sandbox).values())
