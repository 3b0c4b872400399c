"""Launching and steering a campaign from its pages: the confirmation, schedule, buttons, live status."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from sqlalchemy import func, select, update

from tests.conftest import run_jobs
from tests.factories import make_campaign, make_contact, make_list, make_sender, make_suppression, make_team, make_user
from webapp.encryption import encrypt
from webapp.extensions import db
from webapp.models import AuditEntry, Campaign, CampaignStatus, Message, MessageKind, MessageStatus, Role
from webapp.provider.segments import Encoding
from webapp.queues import get_queue, redis_connection
from webapp.services import campaign_states, recipients, sending

NEW_YORK = "America/New_York"

SIX_CENTS = '<span class="money" title="0.06 USD">0.06 USD</span>'  # four parts at 0.015


@pytest.fixture
def setup(app, auth):
    """A New York team (an editor, a viewer, an admin) with a saved draft to two lists, signed in as the editor."""
    with app.app_context():
        team = make_team("Acme")
        team.timezone = NEW_YORK
        team.send_rate = Decimal(1000)
        team.frequency_cap_hours = 24
        team.api_username, team.api_password_encrypted = "sandbox", encrypt("sandbox")
        db.session.commit()
        make_user(team, Role.EDITOR, "ed@example.com")
        make_user(team, Role.VIEWER, "viewer@example.com")
        make_user(team, Role.ADMIN, "admin@example.com")
        first, second = make_list(team, "Spring"), make_list(team, "Autumn")
        for n in range(4):
            make_contact(first, f"+1415555010{n}", first_name=f"Ana{n}")
        make_contact(first, "+14155550199", number_type="fixed_line", first_name="Desk")
        make_contact(first, "+14155550198", first_name="Gone")
        make_suppression(team, "+14155550198")
        make_contact(second, "+14155550100", first_name="Ana again")
        campaign = make_campaign(team, [first, second], body="Hi {{ first_name }}", name="Spring sale",
                                 sender=make_sender(team))
        other = make_team("Other")
        make_user(other, Role.OWNER, "other@example.com")
        ids = {"team": team.id, "campaign": campaign.id}
    auth.login("ed@example.com")
    return ids


def _launch(client, campaign_id, follow_redirects=False, **fields):
    """POST the confirmation form: quiet hours off unless a test sets them (the suite runs at any hour)."""
    return client.post(f"/campaigns/{campaign_id}/launch", follow_redirects=follow_redirects,
                       data={"when": "now", "quiet_start": "08:00", "quiet_end": "21:00", **fields})


def _campaign(app, campaign_id) -> Campaign:
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        db.session.expunge(campaign)
        return campaign


def _queued(app, queue="sends") -> list[str]:
    with app.app_context():
        connection = redis_connection()
        return [Job.fetch(job_id, connection=connection).func_name for job_id in get_queue(queue).job_ids]


def _audit(app, campaign_id) -> list[tuple[str, str]]:
    with app.app_context():
        return [(entry.action, entry.user.email if entry.user else "engine") for entry in db.session.scalars(
            select(AuditEntry).where(AuditEntry.campaign_id == campaign_id).order_by(AuditEntry.id))]


# --- the confirmation ------------------------------------------------------------------------------------


def test_the_draft_offers_review_and_launch(client, setup):
    """An editor's draft page links to the confirmation (the draft's composer stays as it was)."""
    page = client.get(f"/campaigns/{setup['campaign']}").get_data(as_text=True)
    assert 'id="review-launch"' in page and f'href="/campaigns/{setup["campaign"]}/launch"' in page
    assert 'id="composer-form"' in page


def test_the_confirmation_shows_recipients_exclusions_estimate_and_caps(client, setup):
    """Recipients, each exclusion by its label, the estimate, the schedule in the team's zone and the caps."""
    page = client.get(f"/campaigns/{setup['campaign']}/launch").get_data(as_text=True)
    assert '<dd id="launch-recipients">4</dd>' in page
    assert '<dd id="launch-excluded">3</dd>' in page
    assert "Opted out</th>" in page and "Landline (can&#39;t receive SMS)</th>" in page
    assert "Duplicate of a number in an earlier list</th>" in page
    assert 'id="launch-excluded-duplicate">1<' in page
    # Four one-part messages at the default 0.015 a part (the footer keeps each within one part).
    assert '<dd id="launch-parts">4</dd>' in page and f'<dd id="launch-cost">{SIX_CENTS}</dd>' in page
    assert "In the team&#39;s time zone, America/New_York" in page
    assert '<input checked id="quiet_hours" name="quiet_hours" type="checkbox"' in page
    assert 'value="08:00"' in page and 'value="21:00"' in page
    assert '<dd id="team-send-rate">1000.00 / s</dd>' in page
    assert '<dd id="team-frequency-cap">one message per 24 h</dd>' in page
    assert "An admin of the team changes them in Settings" in page  # an editor: no link to a page it can't open
    assert 'id="launch"' in page and 'id="launch-problems"' not in page


def test_an_admin_gets_a_link_to_the_sending_settings(client, auth, setup):
    """The read-only team caps link to Settings for someone who may change them."""
    auth.logout()
    auth.login("admin@example.com")
    page = client.get(f"/campaigns/{setup['campaign']}/launch").get_data(as_text=True)
    assert 'href="/settings/#sending-heading"' in page


def test_a_big_audience_is_counted_by_a_job_with_progress(app, client, setup):
    """Past the inline limit the confirmation polls a job's progress, then shows the figures without polling."""
    app.config["AUDIENCE_INLINE_LIMIT"] = 2
    page = client.get(f"/campaigns/{setup['campaign']}/launch").get_data(as_text=True)
    assert 'id="figures-status"' in page and 'hx-trigger="every 1s"' in page
    assert _queued(app, "default") == ["jobs.audience.summarize_audience"]
    run_jobs(app)
    fragment = client.get(f"/campaigns/{setup['campaign']}/launch/figures").get_data(as_text=True)
    assert '<dd id="launch-recipients">4</dd>' in fragment and "hx-trigger" not in fragment


def test_a_draft_that_cannot_launch_says_why(app, client, setup):
    """No sender: the confirmation lists the problem and a forced POST is refused with it, not a 500."""
    with app.app_context():
        db.session.execute(update(Campaign).where(Campaign.id == setup["campaign"]).values(sender_number_id=None))
        db.session.commit()
    page = client.get(f"/campaigns/{setup['campaign']}/launch").get_data(as_text=True)
    assert 'id="launch-problems"' in page and "Choose the number to send from." in page
    response = _launch(client, setup["campaign"], budget_cap="5")
    assert response.status_code == 302
    assert "Choose the number to send from." in client.get(response.headers["Location"]).get_data(as_text=True)
    campaign = _campaign(app, setup["campaign"])
    assert campaign.status is CampaignStatus.DRAFT and campaign.budget_cap is None  # caps not half-written


# --- launching and scheduling --------------------------------------------------------------------------


def test_launch_now_starts_sending_with_the_caps_and_queues_the_job(app, client, setup):
    """Launch now: the campaign is sending, its caps saved, the freeze job queued, the action audited."""
    response = _launch(client, setup["campaign"], budget_cap="12.5", quiet_hours="y", quiet_start="09:00",
                       quiet_end="20:30")
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/campaigns/{setup['campaign']}")
    campaign = _campaign(app, setup["campaign"])
    assert campaign.status is CampaignStatus.SENDING and campaign.launched_at is not None
    assert (campaign.budget_cap, campaign.quiet_hours, campaign.quiet_start, campaign.quiet_end) == (
        Decimal("12.5"), True, "09:00", "20:30")
    assert campaign.frozen_text == "Hi {{ first_name }}"
    assert _queued(app) == ["jobs.sending.prepare_campaign"]
    assert _audit(app, setup["campaign"]) == [("launched", "ed@example.com")]


def test_a_double_launch_answers_with_the_state(app, client, setup):
    """The second POST of a double click lands on the campaign's page saying it is sending; one job queued."""
    assert _launch(client, setup["campaign"]).status_code == 302
    response = _launch(client, setup["campaign"], follow_redirects=True)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "This campaign is sending already" in page and 'id="campaign-state"' in page
    assert _queued(app) == ["jobs.sending.prepare_campaign"]
    confirm = client.get(f"/campaigns/{setup['campaign']}/launch")
    assert confirm.status_code == 302  # the confirmation of a launched campaign is its page


def test_schedule_in_the_team_time_zone_is_stored_in_utc(app, client, setup):
    """09:30 in New York on a summer day is 13:30 UTC; the job waits for that moment; the page says until when."""
    response = _launch(client, setup["campaign"], when="later", send_date="2030-07-01", send_time="09:30")
    assert response.status_code == 302
    campaign = _campaign(app, setup["campaign"])
    assert campaign.status is CampaignStatus.SCHEDULED
    assert campaign.scheduled_at == datetime(2030, 7, 1, 13, 30)
    with app.app_context():
        registry = ScheduledJobRegistry(queue=get_queue("sends"))
        [job_id] = registry.get_job_ids()
        assert registry.get_scheduled_time(job_id) == datetime(2030, 7, 1, 13, 30, tzinfo=UTC)
        assert Job.fetch(job_id, connection=redis_connection()).func_name == "jobs.sending.start_campaign"
    page = client.get(f"/campaigns/{setup['campaign']}").get_data(as_text=True)
    assert "Held until <strong>2030-07-01 09:30</strong> (America/New_York)" in page
    assert 'id="unschedule"' in page and 'hx-trigger="every 30s"' in page  # years ahead: no need for 2 s


def test_a_winter_time_uses_the_winter_offset(app, client, setup):
    """09:30 in New York in January is 14:30 UTC (EST, not EDT)."""
    _launch(client, setup["campaign"], when="later", send_date="2030-01-15", send_time="09:30")
    assert _campaign(app, setup["campaign"]).scheduled_at == datetime(2030, 1, 15, 14, 30)


@pytest.mark.parametrize(("fields", "message"), [
    ({"send_date": "2030-03-10", "send_time": "02:30"}, "doesn&#39;t exist on that day in America/New_York"),
    ({"send_date": "2020-01-01", "send_time": "09:00"}, "That moment has passed in America/New_York"),
    ({"send_date": "", "send_time": ""}, "Choose the date and the time to send."),
])
def test_an_impossible_schedule_is_refused(app, client, setup, fields, message):
    """A time the clocks skip, a past moment or a missing date: 400 with the reason, still a draft."""
    response = _launch(client, setup["campaign"], when="later", **fields)
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    assert _campaign(app, setup["campaign"]).status is CampaignStatus.DRAFT
    assert _queued(app) == []


@pytest.mark.parametrize(("fields", "message"), [
    ({"budget_cap": "0"}, "Between 0.01 and 10,000,000"),
    ({"budget_cap": "NaN"}, "Type a number."),
    ({"quiet_hours": "y", "quiet_start": "09:00", "quiet_end": "09:00"}, "The window would be empty"),
    ({"quiet_hours": "y", "quiet_start": "", "quiet_end": "21:00"}, "Not a valid time value."),
])
def test_refused_caps_keep_the_draft(app, client, setup, fields, message):
    """A zero or NaN budget cap, or an empty quiet window: 400 with the reason, nothing launched."""
    response = _launch(client, setup["campaign"], **fields)
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    assert _campaign(app, setup["campaign"]).status is CampaignStatus.DRAFT


def test_quiet_hours_off_ignores_the_window_fields(app, client, setup):
    """With quiet hours off, empty window fields don't block the launch."""
    assert _launch(client, setup["campaign"], quiet_start="", quiet_end="").status_code == 302
    campaign = _campaign(app, setup["campaign"])
    assert campaign.status is CampaignStatus.SENDING and campaign.quiet_hours is False


# --- the buttons ---------------------------------------------------------------------------------------


def test_pause_resume_and_cancel_through_the_buttons(app, client, setup):
    """Each button moves the state, says so, shows the next buttons, and is in the log with who did it."""
    _launch(client, setup["campaign"])
    url = f"/campaigns/{setup['campaign']}"
    page = client.get(url).get_data(as_text=True)
    assert 'id="pause"' in page and 'id="resume"' not in page and 'id="cancel"' in page
    assert "data-confirm=\"Cancel “Spring sale”?" in page

    page = client.post(f"{url}/pause", follow_redirects=True).get_data(as_text=True)
    assert "Paused." in page and 'id="paused-reason"' in page and "Paused by ed@example.com." in page
    assert 'id="resume"' in page and 'id="pause"' not in page
    assert _campaign(app, setup["campaign"]).status is CampaignStatus.PAUSED
    assert 'hx-trigger="every 10s"' in page.split('id="campaign-status"')[1].split(">")[0]  # paused: slower

    page = client.post(f"{url}/resume", follow_redirects=True).get_data(as_text=True)
    assert "Resumed from where it stopped." in page
    assert _campaign(app, setup["campaign"]).status is CampaignStatus.SENDING

    page = client.post(f"{url}/cancel", follow_redirects=True).get_data(as_text=True)
    assert "Cancelled before sending started: nothing was sent." in page  # the audience was never frozen
    assert _campaign(app, setup["campaign"]).status is CampaignStatus.CANCELLED
    assert 'id="campaign-actions"' not in page
    assert [action for action, _ in _audit(app, setup["campaign"])] == [
        "launched", "paused", "resumed", "cancelled"]
    assert {who for _, who in _audit(app, setup["campaign"])} == {"ed@example.com"}


def test_a_refused_action_says_the_state(app, client, setup):
    """Resume on a sending campaign (another editor resumed first): a warning with the state, not an error page."""
    _launch(client, setup["campaign"])
    response = client.post(f"/campaigns/{setup['campaign']}/resume", follow_redirects=True)
    assert response.status_code == 200
    assert "The campaign is sending now, so it can&#39;t be resumed." in response.get_data(as_text=True)


def test_unschedule_goes_back_to_an_editable_draft(app, client, setup):
    """Unschedule: a draft again, with the composer, and the schedule cleared."""
    _launch(client, setup["campaign"], when="later", send_date="2030-07-01", send_time="09:30")
    page = client.post(f"/campaigns/{setup['campaign']}/unschedule", follow_redirects=True).get_data(as_text=True)
    assert "Back to draft" in page and 'id="composer-form"' in page
    campaign = _campaign(app, setup["campaign"])
    assert campaign.status is CampaignStatus.DRAFT and campaign.scheduled_at is None


def _freeze_and_make_unknown(app, campaign_id, count: int, hours_ago: float) -> None:
    """Freeze the audience, then leave `count` messages as a dead worker or an ambiguous answer would."""
    with app.app_context():
        recipients.freeze(campaign_id)
        ids = db.session.scalars(select(Message.id).where(Message.campaign_id == campaign_id)
                                 .order_by(Message.id).limit(count)).all()
        db.session.execute(update(Message).where(Message.id.in_(ids)).values(
            status=MessageStatus.UNKNOWN, sent_at=datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=hours_ago)))
        db.session.commit()


def test_resend_unconfirmed_is_offered_after_the_grace_period_and_audited(app, client, setup):
    """Unknown messages past the grace period: the count, the warning about new references and sent twice,
    and the button makes one new row per message, audited."""
    _launch(client, setup["campaign"])
    _freeze_and_make_unknown(app, setup["campaign"], 2, hours_ago=2)
    page = client.get(f"/campaigns/{setup['campaign']}").get_data(as_text=True)
    assert "2 messages unconfirmed." in page and "new reference" in page and "counted as sent twice" in page
    assert 'id="resend"' in page and "Resend 2 unconfirmed" in page
    assert '<dd id="count-unknown">2</dd>' in page and '<td class="num" id="recipients">4</td>' in page
    assert 'id="excluded-landline">1<' in page and 'id="excluded-opted_out">1<' in page

    page = client.post(f"/campaigns/{setup['campaign']}/resend", follow_redirects=True).get_data(as_text=True)
    assert "2 unconfirmed messages queued again, each with a new reference." in page
    with app.app_context():
        resends = db.session.scalar(select(func.count()).where(Message.campaign_id == setup["campaign"],
                                                               Message.resend_of_id.is_not(None)))
        assert resends == 2
    assert ("resent unconfirmed", "ed@example.com") in _audit(app, setup["campaign"])
    assert 'id="resend"' not in page  # nothing left to resend
    # The estimate stays as launched; the first attempts are not spent, only "up to" that much more.
    assert f'<td class="num" id="spend-estimated">{SIX_CENTS}</td>' in page
    zero, three_cents = (f'<span class="money" title="{amount} USD">{amount} USD</span>' for amount in ("0", "0.03"))
    assert f'<td class="num" id="spend-total">{zero.replace(">0 USD", ">0.00 USD")}</td>' in page
    assert f'<td class="num" id="spend-up-to">up to {three_cents} more</td>' in page
    assert "2 attempts whose fate is unknown" in page and f'id="spend-resends">{three_cents}<' in page


def test_unknown_messages_within_the_grace_period_are_not_offered_yet(app, client, setup):
    """An unknown message an hour short of the grace period: explained, no resend button."""
    _launch(client, setup["campaign"])
    _freeze_and_make_unknown(app, setup["campaign"], 1, hours_ago=0)
    page = client.get(f"/campaigns/{setup['campaign']}").get_data(as_text=True)
    assert 'id="unknown-waiting"' in page and 'id="resend"' not in page


def test_an_unconfirmed_test_send_is_never_offered_for_resend(app, client, setup):
    """A draft's test send left unknown carries the campaign's id: it is not the campaign's to resend."""
    _launch(client, setup["campaign"])
    _freeze_and_make_unknown(app, setup["campaign"], 1, hours_ago=2)
    with app.app_context():
        team = db.session.get(Campaign, setup["campaign"]).team_id
        db.session.add(Message(team_id=team, campaign_id=setup["campaign"], kind=MessageKind.TEST,
                               phone="+14155550901", text="Hi", encoding=Encoding.GSM7, parts=1,
                               estimated_cost=Decimal("0.015"), status=MessageStatus.UNKNOWN,
                               sent_at=datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=2)))
        db.session.commit()
    page = client.get(f"/campaigns/{setup['campaign']}").get_data(as_text=True)
    assert "1 message unconfirmed." in page and '<dd id="count-unknown">1</dd>' in page
    client.post(f"/campaigns/{setup['campaign']}/resend")
    with app.app_context():
        resent = db.session.scalars(select(Message.kind).where(Message.resend_of_id.is_not(None))).all()
        assert resent == [MessageKind.CAMPAIGN]


def test_the_budget_cap_can_be_raised_on_a_paused_campaign(app, client, setup):
    """The cap pause says to raise the cap and resume: the form on the page does it, audited."""
    _launch(client, setup["campaign"], budget_cap="0.01")
    client.post(f"/campaigns/{setup['campaign']}/pause")
    page = client.post(f"/campaigns/{setup['campaign']}/budget", data={"budget_cap": "20"},
                       follow_redirects=True).get_data(as_text=True)
    assert "Budget cap set to 20.00 USD. Resume the campaign to carry on." in page
    assert _campaign(app, setup["campaign"]).budget_cap == Decimal("20")
    assert ("budget cap", "ed@example.com") in _audit(app, setup["campaign"])


# --- the live status fragment --------------------------------------------------------------------------


def test_the_whole_campaign_through_the_pages_against_the_sandbox(app, client, setup, sandbox):
    """Launch, let the jobs send through the sandbox: the fragment shows every message accepted, the
    spend billed, the engine's 'completed' in the log in the team's zone, and polls every 10 s while the
    accepted messages await their delivery reports."""
    _launch(client, setup["campaign"])
    status_url = f"/campaigns/{setup['campaign']}/status"
    fragment = client.get(status_url).get_data(as_text=True)
    assert fragment.startswith("<section id=\"campaign-status\"") and 'hx-trigger="every 2s"' in fragment
    for _ in range(20):
        run_jobs(app)
        if _campaign(app, setup["campaign"]).status is CampaignStatus.COMPLETED:
            break
    fragment = client.get(status_url).get_data(as_text=True)
    assert '<span id="campaign-state" class="badge badge-ok" aria-live="polite">completed</span>' in fragment
    assert _trigger(fragment) == "every 10s"  # the sandbox's reports can't reach this test client
    assert '<dd id="count-accepted">4</dd>' in fragment and "4 of 4 messages dealt with." in fragment
    assert f'<td class="num" id="spend-billed">{SIX_CENTS}</td>' in fragment
    with app.app_context():
        completed_at = db.session.scalar(select(AuditEntry.at).where(AuditEntry.action == "completed"))
    new_york = completed_at.replace(tzinfo=UTC).astimezone(ZoneInfo(NEW_YORK))
    assert f"{new_york:%Y-%m-%d %H:%M}</td>\n        <td>the engine</td>" in fragment


def test_messages_held_for_quiet_hours_say_until_when_in_the_team_zone(app, client, setup):
    """Rows waiting for their recipients' window: how many, and the first opening in the team's zone."""
    _launch(client, setup["campaign"], quiet_hours="y")
    with app.app_context():
        recipients.freeze(setup["campaign"])
        ids = db.session.scalars(select(Message.id).where(Message.campaign_id == setup["campaign"])
                                 .order_by(Message.id)).all()
        db.session.execute(update(Message).where(Message.id.in_(ids[:2])).values(
            held=True, not_before=datetime(2030, 7, 2, 12, 0)))
        db.session.execute(update(Message).where(Message.id == ids[2]).values(
            held=True, not_before=datetime(2030, 7, 2, 15, 0)))
        db.session.commit()
    page = client.get(f"/campaigns/{setup['campaign']}").get_data(as_text=True)
    assert "3 messages wait for quiet hours to end" in page
    assert "the first go out at 2030-07-02 08:00 (America/New_York)" in page
    assert "Quiet hours: messages leave only between 08:00 and 21:00" in page


def test_a_failed_campaign_says_why_and_offers_nothing(app, client, setup):
    """Failed (its sender deleted): the reason, no buttons, no polling."""
    _launch(client, setup["campaign"])
    with app.app_context():
        campaign_states.fail(setup["campaign"], "Its sender number was deleted.")
    page = client.get(f"/campaigns/{setup['campaign']}").get_data(as_text=True)
    assert "It can't go on: Its sender number was deleted." in page
    assert 'id="campaign-actions"' not in page and "hx-trigger" not in page.split('id="campaign-status"')[1]
    assert ("failed", "engine") in _audit(app, setup["campaign"])
    assert "counted when sending starts" not in page  # it never started: nothing is still to be counted


def test_a_draft_page_is_the_composer_and_a_launched_page_is_not(app, client, setup):
    """Once launched the page shows the frozen text and the state, not the composer."""
    _launch(client, setup["campaign"])
    page = client.get(f"/campaigns/{setup['campaign']}").get_data(as_text=True)
    assert 'id="composer-form"' not in page and 'id="frozen-text">Hi {{ first_name }}\nReply STOP to opt out<' in page
    assert 'id="campaign-status"' in page and 'id="audit-log"' in page


# --- who may --------------------------------------------------------------------------------------------


ACTIONS = ["launch", "pause", "resume", "cancel", "unschedule", "resend", "budget", "cancel-held"]


@pytest.mark.parametrize("action", ACTIONS)
def test_a_viewer_is_refused_every_action(app, client, auth, setup, action):
    """A viewer of the same team gets 403 for each POST, and the campaign does not move."""
    auth.logout()
    auth.login("viewer@example.com")
    assert client.post(f"/campaigns/{setup['campaign']}/{action}").status_code == 403
    assert _campaign(app, setup["campaign"]).status is CampaignStatus.DRAFT


def test_a_viewer_sees_the_state_but_no_buttons(app, client, auth, setup):
    """A viewer may watch a launched campaign but gets no buttons and no confirmation page."""
    _launch(client, setup["campaign"])
    auth.logout()
    auth.login("viewer@example.com")
    page = client.get(f"/campaigns/{setup['campaign']}").get_data(as_text=True)
    assert 'id="campaign-state"' in page and 'id="campaign-actions"' not in page
    assert client.get(f"/campaigns/{setup['campaign']}/launch").status_code == 403


@pytest.mark.parametrize("action", ACTIONS)
def test_another_team_gets_404(app, client, auth, setup, action):
    """Another team's owner gets 404 for the pages and every action, and the campaign does not move."""
    auth.logout()
    auth.login("other@example.com")
    for path in ("", "/launch", "/status", "/launch/figures"):
        assert client.get(f"/campaigns/{setup['campaign']}{path}").status_code == 404
    assert client.post(f"/campaigns/{setup['campaign']}/{action}").status_code == 404
    assert _campaign(app, setup["campaign"]).status is CampaignStatus.DRAFT


# --- polling, stale texts and a cancelled or never-started campaign ---------------------------------------


def _trigger(fragment: str) -> str | None:
    """The status fragment's hx-trigger, or None when it no longer polls."""
    opening = fragment.split('id="campaign-status"')[1].split(">")[0]
    return opening.split('hx-trigger="')[1].split('"')[0] if "hx-trigger" in opening else None


def _finish(app, campaign_id, status: MessageStatus, hours_ago: float = 0) -> None:
    """Freeze the audience, give every message `status`, and mark the campaign completed `hours_ago`."""
    with app.app_context():
        recipients.freeze(campaign_id)
        db.session.execute(update(Message).where(Message.campaign_id == campaign_id).values(status=status))
        db.session.execute(update(Campaign).where(Campaign.id == campaign_id).values(
            status=CampaignStatus.COMPLETED,
            finished_at=datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=hours_ago)))
        db.session.commit()


@pytest.mark.parametrize(("status", "hours_ago", "trigger"), [
    (MessageStatus.ACCEPTED, 1, "every 10s"),  # delivery reports still to come: slower polling
    (MessageStatus.SENDING, 47, "every 10s"),
    (MessageStatus.ACCEPTED, 49, None),  # ended two days ago: a reload shows any late report
    (MessageStatus.DELIVERED, 0, None),  # every message final: nothing can change
    (MessageStatus.UNKNOWN, 0, "every 10s"),  # a late report may still confirm it
    (MessageStatus.UNDELIVERED, 0, None),
])
def test_a_completed_campaign_polls_slower_while_reports_are_awaited(app, client, setup, status, hours_ago, trigger):
    """Completed with messages in flight, accepted or unknown, ended under 48 h ago: every 10 s; else no polling."""
    _launch(client, setup["campaign"])
    _finish(app, setup["campaign"], status, hours_ago)
    assert _trigger(client.get(f"/campaigns/{setup['campaign']}/status").get_data(as_text=True)) == trigger
    assert _trigger(client.get(f"/campaigns/{setup['campaign']}").get_data(as_text=True)) == trigger


def test_a_test_send_awaiting_its_report_does_not_keep_a_campaign_polling(app, client, setup):
    """Only the campaign's own messages count: a test send left accepted is not awaited."""
    _launch(client, setup["campaign"])
    _finish(app, setup["campaign"], MessageStatus.DELIVERED)
    with app.app_context():
        db.session.add(Message(team_id=setup["team"], campaign_id=setup["campaign"], kind=MessageKind.TEST,
                               phone="+14155550901", text="Hi", encoding=Encoding.GSM7, parts=1,
                               estimated_cost=Decimal("0.015"), status=MessageStatus.ACCEPTED))
        db.session.commit()
    assert _trigger(client.get(f"/campaigns/{setup['campaign']}/status").get_data(as_text=True)) is None


def test_the_polled_fragment_clears_the_budget_form_once_final(app, client, setup):
    """While sending, the cap form is on the page; the fragment of a completed campaign removes it out of
    band, and the page itself has no form and no stale 'then sending starts'."""
    page = _launch(client, setup["campaign"], follow_redirects=True).get_data(as_text=True)
    assert "Save the budget cap" in page and "then sending starts" not in page
    assert 'hx-swap-oob' not in client.get(f"/campaigns/{setup['campaign']}/status").get_data(as_text=True)
    _finish(app, setup["campaign"], MessageStatus.DELIVERED)
    fragment = client.get(f"/campaigns/{setup['campaign']}/status").get_data(as_text=True)
    assert '<div id="budget-cap-form" hx-swap-oob="true"></div>' in fragment
    page = client.get(f"/campaigns/{setup['campaign']}").get_data(as_text=True)
    assert "Save the budget cap" not in page and 'hx-swap-oob' not in page and 'id="budget-cap-form"' in page


def test_a_cancelled_scheduled_campaign_says_nothing_was_sent(app, client, setup):
    """Scheduled, then cancelled: no leading comma in the times, 'nothing was sent' in the flash and the log,
    no 'counted when sending starts', and the review's estimate as the estimated total."""
    client.get(f"/campaigns/{setup['campaign']}/launch")  # the review computes the audience summary
    _launch(client, setup["campaign"], when="later", send_date="2030-07-01", send_time="09:30")
    page = client.post(f"/campaigns/{setup['campaign']}/cancel", follow_redirects=True).get_data(as_text=True)
    assert "Cancelled before sending started: nothing was sent." in page
    assert "0 messages will not be sent" not in page and "0 messages not sent" not in page
    assert ", ended" not in page and "Ended " in page and ", before sending started (America/New_York)." in page
    assert "counted when sending starts" not in page
    assert "none: it ended before the audience was counted" in page
    assert f'<td class="num" id="spend-estimated">{SIX_CENTS}</td>' in page
    assert "Estimated total (from the audience" in page
    assert "cancelled: before sending started: nothing was sent</td>" in page
    assert _trigger(page) is None


def test_cancelling_a_sending_campaign_says_what_was_and_was_not_sent(app, client, setup):
    """Two messages accepted, two waiting: the flash counts both."""
    _launch(client, setup["campaign"])
    with app.app_context():
        recipients.freeze(setup["campaign"])
        ids = db.session.scalars(select(Message.id).where(Message.campaign_id == setup["campaign"])
                                 .order_by(Message.id).limit(2)).all()
        db.session.execute(update(Message).where(Message.id.in_(ids)).values(status=MessageStatus.ACCEPTED))
        db.session.commit()
    page = client.post(f"/campaigns/{setup['campaign']}/cancel", follow_redirects=True).get_data(as_text=True)
    assert "Cancelled: 2 messages will not be sent; 2 had been sent." in page
    assert "cancelled: 2 messages not sent" in page  # the log's own detail, once messages existed
    assert _trigger(page) == "every 10s"  # the two accepted still await their reports


def test_the_estimated_total_before_and_after_the_audience_is_frozen(app, client, setup):
    """Just launched: the review's estimate, marked as such; frozen: the sum over the messages."""
    client.get(f"/campaigns/{setup['campaign']}/launch")
    _launch(client, setup["campaign"])
    page = client.get(f"/campaigns/{setup['campaign']}").get_data(as_text=True)
    assert "Estimate for every message" not in page
    assert "Estimated total (from the audience summary" in page and f'id="spend-estimated">{SIX_CENTS}<' in page
    with app.app_context():
        recipients.freeze(setup["campaign"])
    page = client.get(f"/campaigns/{setup['campaign']}").get_data(as_text=True)
    assert "<th scope=\"row\">Estimated total</th>" in page and f'id="spend-estimated">{SIX_CENTS}<' in page


def test_launched_without_a_summary_says_the_estimate_comes_later(app, client, setup):
    """No audience summary yet and not frozen: 'counted when sending starts', never 0.0000."""
    _launch(client, setup["campaign"])
    page = client.get(f"/campaigns/{setup['campaign']}").get_data(as_text=True)
    assert 'id="spend-estimated">counted when sending starts<' in page


def test_the_schedule_is_logged_readably_in_the_team_zone(app, client, setup):
    """The log says 'scheduled: for 2030-07-01 09:30 EDT', not an ISO timestamp."""
    _launch(client, setup["campaign"], when="later", send_date="2030-07-01", send_time="09:30")
    page = client.get(f"/campaigns/{setup['campaign']}").get_data(as_text=True)
    assert "scheduled: for 2030-07-01 09:30 EDT</td>" in page and "T09:30" not in page


def test_a_viewer_sees_no_budget_form_nor_resend_button(app, client, auth, setup):
    """A viewer watching a paused campaign with unconfirmed messages: text, no forms."""
    _launch(client, setup["campaign"])
    _freeze_and_make_unknown(app, setup["campaign"], 1, hours_ago=2)
    client.post(f"/campaigns/{setup['campaign']}/pause")
    auth.logout()
    auth.login("viewer@example.com")
    page = client.get(f"/campaigns/{setup['campaign']}").get_data(as_text=True)
    assert "1 message unconfirmed." in page
    main = page.split('<main id="main"')[1].split("</main>")[0]
    assert "<form" not in main and "<button" not in main
    assert 'id="resend"' not in page and "Save the budget cap" not in page and 'id="resume"' not in page


# --- how a campaign reads: only held messages left, and a cancel with messages on the wire -----------------


def _sent_and_held(app, campaign_id: int, held_for: timedelta = timedelta(hours=2)) -> datetime:
    """Freeze the 4 recipients: 3 accepted, the last held for quiet hours until `held_for` from now (returned)."""
    opening = datetime.now(UTC).replace(tzinfo=None, microsecond=0) + held_for
    with app.app_context():
        recipients.freeze(campaign_id)
        ids = db.session.scalars(select(Message.id).where(Message.campaign_id == campaign_id)
                                 .order_by(Message.id)).all()
        db.session.execute(update(Message).where(Message.id.in_(ids[:3])).values(status=MessageStatus.ACCEPTED))
        db.session.execute(update(Message).where(Message.id == ids[3]).values(held=True, not_before=opening))
        db.session.commit()
    return opening


def test_only_held_messages_left_the_state_line_says_so_names_them_and_offers_the_choice(app, client, setup):
    """Nothing left but one message held for quiet hours: the state line says what was sent and until when the
    rest waits (the team's clock), links to the held messages, and offers cancelling them beside the default."""
    campaign_id = setup["campaign"]
    _launch(client, campaign_id, quiet_hours="y")
    opening = _sent_and_held(app, campaign_id)
    local = opening.replace(tzinfo=UTC).astimezone(ZoneInfo(NEW_YORK))
    clock = f"{local:%H:%M}" if local.date() == datetime.now(ZoneInfo(NEW_YORK)).date() else f"{local:%Y-%m-%d %H:%M}"
    page = client.get(f"/campaigns/{campaign_id}/status").get_data(as_text=True)
    line = page.split('id="only-held"')[1].split("</div>")[0]
    assert f"<strong>3 sent; 1 waits for quiet hours until {clock} your time (America/New_York).</strong>" in line
    assert f'href="/campaigns/{campaign_id}/messages?status=held" id="held-messages">See the held message<' in line
    assert "By default it is <strong>sent at its window</strong>: nothing to do. Or:" in line
    assert f'action="/campaigns/{campaign_id}/cancel-held"' in line and 'name="csrf_token"' in line
    assert 'id="cancel-held">Cancel the held message</button>' in line
    assert 'id="held"' not in page  # the general note would say it twice
    held = client.get(f"/campaigns/{campaign_id}/messages?status=held").get_data(as_text=True)
    assert "+14155550103" in held and "+14155550100" not in held


def test_held_messages_wait_for_quiet_hours_alongside_queued_ones_without_the_choice(app, client, setup):
    """While other messages are still queued, the held ones are a note, not the state line."""
    campaign_id = setup["campaign"]
    _launch(client, campaign_id, quiet_hours="y")
    _sent_and_held(app, campaign_id)
    with app.app_context():
        first = db.session.scalar(select(func.min(Message.id)).where(Message.campaign_id == campaign_id))
        db.session.execute(update(Message).where(Message.id == first).values(status=MessageStatus.CREATED))
        db.session.commit()
    page = client.get(f"/campaigns/{campaign_id}/status").get_data(as_text=True)
    assert 'id="only-held"' not in page and 'id="cancel-held"' not in page and 'id="held"' in page


def test_cancelling_the_held_messages_completes_the_campaign_and_is_logged(app, client, setup):
    campaign_id = setup["campaign"]
    _launch(client, campaign_id, quiet_hours="y")
    _sent_and_held(app, campaign_id)
    page = client.post(f"/campaigns/{campaign_id}/cancel-held", follow_redirects=True).get_data(as_text=True)
    assert "1 held message will not be sent." in page
    assert _campaign(app, campaign_id).status is CampaignStatus.COMPLETED
    assert _audit(app, campaign_id)[-2:] == [("cancelled held messages", "ed@example.com"), ("completed", "engine")]
    assert "cancelled held messages: 1 message held for quiet hours will not be sent</td>" in page
    again = client.post(f"/campaigns/{campaign_id}/cancel-held", follow_redirects=True).get_data(as_text=True)
    assert "The campaign is completed now, so it can&#39;t be changed." in again


def test_a_viewer_sees_the_held_line_but_not_the_choice(app, client, auth, setup):
    campaign_id = setup["campaign"]
    _launch(client, campaign_id, quiet_hours="y")
    _sent_and_held(app, campaign_id)
    auth.logout()
    auth.login("viewer@example.com")
    page = client.get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    assert "3 sent; 1 waits for quiet hours until" in page and 'id="cancel-held"' not in page
    assert client.post(f"/campaigns/{campaign_id}/cancel-held").status_code == 403
    assert _campaign(app, campaign_id).status is CampaignStatus.SENDING


def test_cancelling_held_messages_needs_the_csrf_token(app, client, setup):
    """With CSRF on (as in production), a POST without the token is refused and nothing is cancelled."""
    campaign_id = setup["campaign"]
    _launch(client, campaign_id, quiet_hours="y")
    _sent_and_held(app, campaign_id)
    app.config["WTF_CSRF_ENABLED"] = True
    try:
        assert client.post(f"/campaigns/{campaign_id}/cancel-held").status_code == 400
    finally:
        app.config["WTF_CSRF_ENABLED"] = False
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(Message.campaign_id == campaign_id,
                                                            Message.status == MessageStatus.CANCELLED)) == 0


def test_a_cancelled_campaign_counts_what_was_sent_and_its_in_flight_message_drains(app, client, setup):
    """Cancelled with 2 accepted, 1 in flight and 1 queued: 3 of 4 sent (75%, on the page and the dashboard, not
    100%), the message on the wire says how it ends, and once the sweep calls it unknown no in-flight figure stays."""
    campaign_id = setup["campaign"]
    _launch(client, campaign_id)
    with app.app_context():
        recipients.freeze(campaign_id)
        ids = db.session.scalars(select(Message.id).where(Message.campaign_id == campaign_id)
                                 .order_by(Message.id)).all()
        db.session.execute(update(Message).where(Message.id.in_(ids[:2])).values(status=MessageStatus.ACCEPTED))
        db.session.execute(update(Message).where(Message.id == ids[2]).values(
            status=MessageStatus.SENDING, sent_at=datetime.now(UTC).replace(tzinfo=None), claim_token="gone"))
        db.session.commit()
    page = client.post(f"/campaigns/{campaign_id}/cancel", follow_redirects=True).get_data(as_text=True)
    assert "3 of 4 messages sent before it was cancelled (75%); 1 not sent." in page
    assert 'aria-valuenow="75"' in page.split('id="campaign-status"')[1]
    assert "1 message was on its way to the provider when it was cancelled" in page
    assert '<dd id="count-sending">1</dd>' in page and 'id="count-created"' not in page
    assert 'id="count-held"' not in page
    dashboard = client.get("/").get_data(as_text=True).split(f'id="campaign-{campaign_id}"')[1].split("</tr>")[0]
    assert ">75% sent</span>" in dashboard and "100%" not in dashboard
    with app.app_context():
        later = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=app.config["SEND_IN_FLIGHT_SECONDS"] + 1)
        sending.recover(later)
    page = client.get(f"/campaigns/{campaign_id}/status").get_data(as_text=True)
    assert 'id="count-sending"' not in page and 'id="in-flight-after-end"' not in page
    assert '<dd id="count-unknown">1</dd>' in page
    assert "3 of 4 messages sent before it was cancelled (75%); 1 not sent." in page
