"""Workers SIGKILLed mid-campaign never send a recipient twice, and after "resend unconfirmed" every
recipient has been sent exactly once. Real `campaigns worker` processes, the sandbox over real HTTP
(with latency, so kills land mid-batch) and callbacks flowing back to the app over HTTP; the sandbox's
log of accepted sends is the witness.
"""

import os
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from sqlalchemy import func, select

from tests.factories import make_campaign, make_contact, make_list, make_sender, make_team, make_user
from tests.processes import Workers, wait_until
from webapp.encryption import encrypt
from webapp.extensions import db
from webapp.models import Campaign, CampaignStatus, Message, MessageStatus, utcnow
from webapp.provider.sandbox import SandboxConfig, SandboxServer
from webapp.services import campaign_states, sending

pytestmark = pytest.mark.slow

RECIPIENTS = 300
KILLS = 3
DEADLINE = 240  # seconds for the whole campaign on a busy two-core machine


def _count(campaign_id: int, *statuses: MessageStatus) -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Message).where(
        Message.campaign_id == campaign_id, Message.status.in_(statuses)))


def test_killed_workers_never_send_twice_and_resend_completes_exactly_once(app, app_config, live_server):
    sandbox = SandboxServer(SandboxConfig(callback_delay=0.05, latency_ms=40, seed=3)).start()
    app.config.update(MULTITEL_API_URL=sandbox.url, PUBLIC_BASE_URL=live_server.url)
    env = dict(os.environ, DATABASE_URL=app_config["SQLALCHEMY_DATABASE_URI"], REDIS_URL=app_config["REDIS_URL"],
               INSTANCE_PATH=app_config["INSTANCE_PATH"], SECRET_KEY=app_config["SECRET_KEY"],
               UPLOAD_FOLDER=app.config["UPLOAD_FOLDER"], MULTITEL_API_URL=sandbox.url,
               PUBLIC_BASE_URL=live_server.url, SEND_CONCURRENCY="4", SEND_BATCH_SIZE="64")
    workers = Workers(env)
    try:
        with app.app_context():
            team = make_team()
            team.api_username, team.api_password_encrypted = "sandbox", encrypt("sandbox")
            team.send_rate = Decimal(1000)
            db.session.commit()
            user = make_user(team)
            contacts = make_list(team)
            for n in range(RECIPIENTS):
                make_contact(contacts, phone=f"+1415556{n:04d}", first_name=f"N{n}")
            campaign = make_campaign(team, [contacts], body="Hi {{ first_name }}", sender=make_sender(team))
            campaign.quiet_hours = False
            db.session.commit()
            campaign_id, user_id = campaign.id, user.id
            campaign_states.launch(campaign_id, user_id)

        workers.start()
        made_unknown = 0
        with app.app_context():
            for kill in range(1, KILLS + 1):
                # Let the engine get a share further each time, then kill it mid-batch.
                target = RECIPIENTS * kill // (KILLS + 2)
                wait_until(lambda target=target: _count(campaign_id, MessageStatus.ACCEPTED, MessageStatus.DELIVERED,
                                                       MessageStatus.UNDELIVERED) >= target,
                          DEADLINE, f"{target} sent")
                # Kill while a POST is in flight: that is the moment that can make a message uncertain.
                wait_until(lambda: _count(campaign_id, MessageStatus.SENDING) > 0, DEADLINE, "a POST in flight",
                          interval=0.005)
                workers.kill()
                # What the periodic sweep does once its time limits have passed: in flight -> unknown.
                later = utcnow() + timedelta(hours=1)
                made_unknown += sending.recover(later).unknown
                workers.start()
                campaign_states.enqueue_batches(campaign_id)

            wait_until(lambda: _count(campaign_id, MessageStatus.CREATED, MessageStatus.SENDING) == 0,
                      DEADLINE, "every message posted or unknown")
            # Callbacks for unknown messages that did reach the sandbox arrive and confirm them.
            wait_until(lambda: _callbacks_settled(sandbox, campaign_id), 60, "callbacks to settle")
            assert made_unknown > 0, "no kill landed while a POST was in flight: the test proved nothing"
            unknown_left = _count(campaign_id, MessageStatus.UNKNOWN)
            resent = campaign_states.resend_unconfirmed(campaign_id, user_id, later + timedelta(days=1))
            assert resent == unknown_left
            wait_until(lambda: _count(campaign_id, MessageStatus.CREATED, MessageStatus.SENDING) == 0,
                      DEADLINE, "the resends posted")
            sends = requests.get(f"{sandbox.url}/_sandbox/sends", timeout=30).json()
            per_phone = Counter(send["to"] for send in sends)
            assert len(per_phone) == RECIPIENTS, "every recipient was sent to"
            doubled = {phone: n for phone, n in per_phone.items() if n > 1}
            assert doubled == {}, f"sent twice: {doubled}"
            assert db.session.scalar(select(func.count()).where(Message.campaign_id == campaign_id,
                                                                Message.sent_twice.is_(True))) == 0
            wait_until(lambda: sending.recover() and db.session.get(Campaign, campaign_id).status
                      is CampaignStatus.COMPLETED, 60, "the campaign to complete")
    finally:
        workers.stop()
        sandbox.stop()


def _callbacks_settled(sandbox, campaign_id: int) -> bool:
    """Every reference the sandbox accepted belongs to a message that is no longer unknown."""
    accepted = {send["reference"] for send in requests.get(f"{sandbox.url}/_sandbox/sends", timeout=30).json()}
    db.session.expire_all()
    still_unknown = set(db.session.scalars(select(Message.reference).where(
        Message.campaign_id == campaign_id, Message.status == MessageStatus.UNKNOWN)))
    return not (accepted & still_unknown)
