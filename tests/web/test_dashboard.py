"""The dashboard as the team's overview: campaigns with state, progress and spend, what runs now, spend per month
and per sender number; figures from the tallies and the timeline, never from the message table."""

import itertools
import re
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, text, update

from tests.conftest import screenshot, statements_run
from tests.factories import PASSWORD, make_campaign, make_list, make_message, make_sender, make_team, make_user
from webapp.extensions import db
from webapp.models import Campaign, CampaignStatus, Message, MessageKind, MessageStatus, Role, Team, utcnow
from webapp.services import overview, tallies

_numbers = itertools.count(5_550_000)
POSTED = {MessageStatus.SENDING, MessageStatus.ACCEPTED, MessageStatus.DELIVERED, MessageStatus.UNDELIVERED,
          MessageStatus.UNKNOWN}
TAKEN = {MessageStatus.ACCEPTED, MessageStatus.DELIVERED, MessageStatus.UNDELIVERED}


def _team(name: str | None = None, timezone: str = "UTC", currency: str = "USD"):
    team = make_team(name)
    team.timezone, team.currency = timezone, currency
    db.session.commit()
    return team


def _campaign(team, status: CampaignStatus, sender=None, name: str | None = None, **fields):
    """A campaign in this state (its messages are added by _message)."""
    campaign = make_campaign(team, [make_list(team)], name=name, sender=sender)
    campaign.status = status
    if status is not CampaignStatus.DRAFT and status is not CampaignStatus.SCHEDULED:
        fields = {"launched_at": utcnow(), "prepared_at": utcnow(), **fields}
    for key, value in fields.items():
        setattr(campaign, key, value)
    db.session.commit()
    return campaign


def _message(campaign, status: MessageStatus, estimated: str = "0.015", billed: str | None = None,
             at: str | None = None, **fields) -> Message:
    """One campaign message; `at` ("YYYY-MM-DD HH:MM:SS" UTC, as the triggers write it) dates the delta it made."""
    team = db.session.get(Team, campaign.team_id)
    message = make_message(team, phone=f"+1415{next(_numbers):07d}", campaign=campaign,
                           kind=MessageKind.CAMPAIGN, status=status, estimated_cost=Decimal(estimated),
                           billed_cost=Decimal(billed) if billed else None, **fields)
    if at is not None:  # the newest delta is this insert's own (one message per statement)
        db.session.execute(text("UPDATE tally_delta SET at = :at WHERE id = (SELECT max(id) FROM tally_delta)"),
                           {"at": at})
        db.session.commit()
    return message


def _sign_in(client, team, role: Role = Role.EDITOR) -> None:
    user = make_user(team, role)
    client.post("/login", data={"email": user.email, "password": PASSWORD})


def _said_by_messages(campaign_id: int) -> dict:
    """What the campaign's own messages say, counted the slow way (the figures the dashboard must match)."""
    messages = db.session.scalars(select(Message).where(Message.campaign_id == campaign_id)).all()
    waiting = [m for m in messages if m.status in (MessageStatus.CREATED, MessageStatus.SENDING)]
    return {
        "total": len(messages),
        "percent": int((len(messages) - len(waiting)) * 100 / len(messages)),
        "sent": sum(m.status in POSTED - {MessageStatus.SENDING} for m in messages),
        "delivered": sum(m.status is MessageStatus.DELIVERED for m in messages),
        # billed, else estimated where the provider took it; in flight or unknown: only what was billed
        "spend": sum((m.billed_cost if m.billed_cost is not None else m.estimated_cost if m.status in TAKEN else 0
                      for m in messages if m.status in POSTED), Decimal(0)),
    }


def _mixed(campaign) -> None:
    """Messages in every state, some billed differently from the estimate."""
    _message(campaign, MessageStatus.DELIVERED, billed="0.0075")
    _message(campaign, MessageStatus.DELIVERED)
    _message(campaign, MessageStatus.UNDELIVERED, billed="0.015", error="UNDELIV")
    _message(campaign, MessageStatus.ACCEPTED, estimated="0.03")
    _message(campaign, MessageStatus.UNKNOWN)
    _message(campaign, MessageStatus.FAILED, error="refused")
    _message(campaign, MessageStatus.SENDING)
    _message(campaign, MessageStatus.CREATED)
    _message(campaign, MessageStatus.CREATED, held=True)


def test_campaign_figures_match_their_messages_folded_or_not(app, client):
    """Progress, sent, delivered and spend of each listed campaign equal a recount of its messages, before and
    after the deltas are folded, and the months add up to the same spend."""
    with app.app_context():
        team = _team()
        sending = _campaign(team, CampaignStatus.SENDING, name="Spring sale")
        done = _campaign(team, CampaignStatus.COMPLETED, name="Winter sale")
        _mixed(sending)
        _message(done, MessageStatus.DELIVERED, billed="0.02")
        _message(done, MessageStatus.DELIVERED, estimated="0.01")
        for fold in (False, True):
            if fold:
                tallies.fold()
            view = overview.overview(team.id)
            lines = {line.campaign.id: line for line in view.recent}
            assert set(lines) == {sending.id, done.id}
            for campaign_id, line in lines.items():
                said = _said_by_messages(campaign_id)
                got = {"total": line.total, "percent": line.percent, "sent": line.sent,
                       "delivered": line.delivered, "spend": line.spend}
                assert got == said, (fold, got, said)
            assert view.spend == lines[sending.id].spend + lines[done.id].spend == Decimal("0.0975")
            assert [line.campaign.id for line in view.running.campaigns] == [sending.id]
        _sign_in(client, team)
        sending_id = sending.id
    page = client.get("/").get_data(as_text=True)
    row = page.split(f'id="campaign-{sending_id}"')[1].split("</tr>")[0]
    assert "Spring sale" in row and f'href="/campaigns/{sending_id}"' in row and ">sending<" in row
    # 9 messages, 3 waiting (created, held, in flight): 6 dealt with; 5 sent (unknown included), 2 delivered;
    # spend: billed where known, else estimated where the provider took it (not the one in flight nor unknown)
    cells = [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r'<td class="num[^"]*">(.*?)</td>', row)]
    assert cells == ["66%", "9", "5", "2", "0.07 USD"]  # 0.0675: cents on the page, the full figure in the title
    assert 'title="0.0675 USD"' in row
    assert "6 of 9 dealt with (66%)" in page.split('id="running-now"')[1]


def test_months_are_the_teams_months(app):
    """Spend counts in the month of the team's zone: 03:00 UTC on Feb 1 is still January in New York, 05:00 UTC
    (midnight EST) is February; 23:30 UTC on Jan 31 is January there but February in Tokyo. A report billing more
    than the estimate adds the difference to the month it arrived in. Only the 12 months up to now count, the
    same before and after the deltas are folded."""
    with app.app_context():
        york = _team(timezone="America/New_York")
        campaign = _campaign(york, CampaignStatus.COMPLETED)
        _message(campaign, MessageStatus.DELIVERED, "1", at="2025-01-31 23:30:00")  # 18:30 EST: January
        _message(campaign, MessageStatus.DELIVERED, "2", at="2025-02-01 03:00:00")  # 22:00 on the 31st: January
        _message(campaign, MessageStatus.DELIVERED, "4", at="2025-02-01 04:59:59")  # 23:59:59: January
        _message(campaign, MessageStatus.DELIVERED, "8", at="2025-02-01 05:00:00")  # midnight EST: February
        _message(campaign, MessageStatus.DELIVERED, "16", at="2024-03-01 04:30:00")  # Feb 29 23:30: too old
        _message(campaign, MessageStatus.DELIVERED, "32", at="2024-04-01 04:00:00")  # midnight EDT: April 2024
        _message(campaign, MessageStatus.DELIVERED, "256", at="2024-04-01 03:59:59")  # March 31: too old
        tallies.fold()  # the rest stay unfolded deltas
        _message(campaign, MessageStatus.DELIVERED, "64", at="2025-03-10 04:30:00")  # 23:30 EST on the 9th: March
        _message(campaign, MessageStatus.FAILED, "128", at="2025-03-10 12:00:00")  # never posted: no spend

        tokyo = _team(timezone="Asia/Tokyo")
        other = _campaign(tokyo, CampaignStatus.COMPLETED)
        _message(other, MessageStatus.DELIVERED, "1", at="2025-01-31 23:30:00")  # 08:30 on Feb 1 in Tokyo
        tallies.fold()
        _message(other, MessageStatus.DELIVERED, "2", at="2025-01-31 14:59:59")  # 23:59:59 on Jan 31 in Tokyo

        # A campaign wholly in January whose late report, billed higher, arrives on February 3.
        january = _campaign(york, CampaignStatus.COMPLETED)
        late = _message(january, MessageStatus.DELIVERED, "1000", at="2025-01-15 12:00:00")
        tallies.fold()
        late.billed_cost = Decimal(1500)
        db.session.commit()
        db.session.execute(text("UPDATE tally_delta SET at = '2025-02-03 12:00:00' WHERE campaign_id = :id"),
                           {"id": january.id})
        db.session.commit()

        now = datetime(2025, 3, 15, 12, 0)
        unfolded = {line.month.strftime("%Y-%m"): line.spend
                    for line in overview.spend_by_month(york.id, now) if line.spend}
        tallies.fold()
        months = overview.spend_by_month(york.id, now)
        assert [line.month.isoformat() for line in months] == [f"{year}-{month:02d}-01" for year, month in (
            (2024, 4), (2024, 5), (2024, 6), (2024, 7), (2024, 8), (2024, 9), (2024, 10), (2024, 11), (2024, 12),
            (2025, 1), (2025, 2), (2025, 3))]
        spend = {line.month.strftime("%Y-%m"): line.spend for line in months if line.spend}
        assert spend == unfolded == {"2024-04": 32, "2025-01": 1007, "2025-02": 508, "2025-03": 64}
        tokyo_spend = {line.month.strftime("%Y-%m"): line.spend
                       for line in overview.spend_by_month(tokyo.id, now) if line.spend}
        assert tokyo_spend == {"2025-01": 2, "2025-02": 1}
        # A month later, April 2024 has left the window.
        assert overview.spend_by_month(york.id, datetime(2025, 4, 15))[0].month.isoformat() == "2024-05-01"
        assert sum(line.spend for line in overview.spend_by_month(york.id, datetime(2025, 4, 15))) == 1579


def test_spend_per_sender_number_over_the_same_months(app, client):
    """Each sender's spend over the 12 months; a removed number is kept as such; they add up to the months."""
    with app.app_context():
        team = _team(currency="EUR")
        main, spare = make_sender(team, "+14155550100", "Main line"), make_sender(team, "+14155550101")
        first = _campaign(team, CampaignStatus.COMPLETED, sender=main)
        second = _campaign(team, CampaignStatus.COMPLETED, sender=main)
        third = _campaign(team, CampaignStatus.COMPLETED, sender=spare)
        gone = _campaign(team, CampaignStatus.COMPLETED)
        _message(first, MessageStatus.DELIVERED, "0.5")
        _message(second, MessageStatus.DELIVERED, "0.25", billed="0.045")
        _message(third, MessageStatus.DELIVERED, "2")
        _message(gone, MessageStatus.DELIVERED, "0.125")
        long_ago = (utcnow() - timedelta(days=400)).strftime("%Y-%m-%d %H:%M:%S")
        _message(first, MessageStatus.DELIVERED, "100", at=long_ago)
        tallies.fold()
        senders = overview.spend_by_sender(team.id)
        assert [(line.sender.number if line.sender else None, line.spend) for line in senders] == [
            ("+14155550101", Decimal(2)), ("+14155550100", Decimal("0.545")), (None, Decimal("0.125"))]
        assert sum(line.spend for line in senders) == sum(line.spend for line in overview.spend_by_month(team.id))
        _sign_in(client, team, Role.VIEWER)
    page = client.get("/").get_data(as_text=True)
    by_sender = page.split('id="spend-by-sender"')[1].split("</section>")[0]
    assert "+14155550100</span> <span class=\"muted\">Main line</span>" in by_sender
    assert '<span class="money" title="0.545 EUR">0.55 EUR</span>' in by_sender  # rounded half-up, not to even
    assert "2.00 EUR" in by_sender and "A number removed since" in by_sender
    assert '<td class="num nowrap" id="spend-total"><span class="money" title="2.67 EUR">2.67 EUR</span></td>' in page


def test_another_teams_campaigns_never_appear(app, client):
    """Campaigns, running ones, months and senders are the team's own, even with another team busy at the same
    moments through the same number."""
    with app.app_context():
        ours, theirs = _team("Ours"), _team("Theirs")
        mine = _campaign(ours, CampaignStatus.COMPLETED, sender=make_sender(ours), name="Our campaign")
        _message(mine, MessageStatus.DELIVERED, "1")
        same_number = make_sender(theirs)  # the number ours uses: numbers are unique per team only
        for status in (CampaignStatus.SENDING, CampaignStatus.PAUSED, CampaignStatus.COMPLETED):
            campaign = _campaign(theirs, status, sender=same_number, name=f"Their {status.value}")
            _message(campaign, MessageStatus.DELIVERED, "100")
        _campaign(theirs, CampaignStatus.SCHEDULED, name="Their scheduled",
                  scheduled_at=utcnow() + timedelta(minutes=1))
        _campaign(theirs, CampaignStatus.DRAFT, name="Their draft")
        tallies.fold()
        view = overview.overview(ours.id)
        assert [line.campaign.name for line in view.recent] == ["Our campaign"]
        assert view.running.campaigns == [] and not view.running.live and view.running.more == 0
        assert view.spend == 1 and [line.spend for line in view.senders] == [1]
        assert (view.launched, view.drafts) == (1, 0)
        _sign_in(client, ours)
    for url in ("/", "/running"):
        page = client.get(url).get_data(as_text=True)
        assert "Their" not in page and "100.00" not in page
        assert "hx-trigger" not in page.split('id="running-now"')[1].split(">")[0]


def test_running_now_polls_only_while_something_runs(app, client):
    """The section asks for itself every 5 s while a campaign sends or is due within minutes, and renders without
    its trigger once nothing does; scheduled ones show their time in the team's zone, paused ones their reason."""
    with app.app_context():
        team = _team(timezone="Europe/Paris")
        _sign_in(client, team)
        team_id = team.id
        later = _campaign(team, CampaignStatus.SCHEDULED, name="Next week",
                          scheduled_at=datetime(2031, 7, 1, 7, 30))  # 09:30 in Paris (CEST)
        paused = _campaign(team, CampaignStatus.PAUSED, name="On hold", paused_reason="The budget cap is reached.")
        later_id, paused_id = later.id, paused.id
    trigger = 'hx-get="/running" hx-trigger="every 5s" hx-swap="outerHTML"'

    def section(url: str) -> str:
        page = client.get(url).get_data(as_text=True)
        return page[page.index('<section id="running-now"'):].split("</section>")[0]

    idle = section("/running")
    assert "hx-trigger" not in idle and "Starts 2031-07-01 09:30</span> (Europe/Paris)" in idle
    assert "The budget cap is reached." in idle
    assert idle.index("Next week") < idle.index("On hold")  # scheduled before paused
    with app.app_context():
        sending = _campaign(db.session.get(Team, team_id), CampaignStatus.SENDING, name="Going out")
        _message(sending, MessageStatus.DELIVERED)
        _message(sending, MessageStatus.CREATED)
        sending_id = sending.id
    for url in ("/", "/running"):
        live = section(url)
        assert trigger in live and live.index("Going out") < live.index("Next week")
        assert "1 of 2 dealt with (50%)" in live
    with app.app_context():
        db.session.get(Campaign, sending_id).status = CampaignStatus.COMPLETED
        db.session.commit()
    assert "hx-trigger" not in section("/running")
    with app.app_context():
        db.session.get(Campaign, later_id).scheduled_at = utcnow() + timedelta(minutes=3)
        db.session.commit()
    assert trigger in section("/running")
    with app.app_context():
        db.session.get(Campaign, later_id).status = CampaignStatus.CANCELLED
        db.session.get(Campaign, paused_id).status = CampaignStatus.CANCELLED
        db.session.commit()
    done = section("/running")
    assert "hx-trigger" not in done and "Nothing is sending, scheduled or paused." in done


def test_the_dashboard_never_reads_the_message_table(app, client):
    """No statement of the page or of its polled section names the `message` table: every figure is a tally."""
    with app.app_context():
        team = _team()
        sender = make_sender(team)
        for status in (CampaignStatus.SENDING, CampaignStatus.COMPLETED, CampaignStatus.PAUSED):
            _mixed(_campaign(team, status, sender=sender))
        tallies.fold()
        _mixed(_campaign(team, CampaignStatus.SENDING, sender=sender))  # unfolded deltas too
        _sign_in(client, team)
    with statements_run(app) as statements:
        pages = [client.get(url) for url in ("/", "/running")]
    assert all(page.status_code == 200 for page in pages)
    assert "campaign_tally" in " ".join(statements) and "campaign_minute" in " ".join(statements)
    assert not [s for s in statements if re.search(r"\bmessage\b", s)]
    figure_reads = [s for s in statements if re.search(r"GROUP BY \w+\.campaign_id, \w+\.bucket", s)]
    assert len(figure_reads) == 2  # one per request, for every listed campaign at once


def test_a_new_team_is_told_what_to_do_next(app, client):
    """With no campaign, an editor gets the steps (import a list, create a campaign); a viewer is told who does."""
    with app.app_context():
        team = _team()
        _sign_in(client, team)
        team_id = team.id
    page = client.get("/").get_data(as_text=True)
    start = page.split('id="getting-started"')[1].split("</section>")[0]
    assert 'href="/imports/new"' in start and 'href="/campaigns/new" id="create-campaign"' in start
    assert 'id="running-now"' not in page and "Latest imports" in page
    client.post("/logout")
    with app.app_context():
        _sign_in(client, db.session.get(Team, team_id), Role.VIEWER)
    start = client.get("/").get_data(as_text=True).split('id="getting-started"')[1].split("</section>")[0]
    assert "create-campaign" not in start and "Editors and admins of your team create" in start


def test_drafts_only_and_more_campaigns_than_listed(app, client):
    """Drafts are counted, not listed; beyond the 20 latest launched campaigns the page says how many there are."""
    with app.app_context():
        team = _team()
        _campaign(team, CampaignStatus.DRAFT)
        _sign_in(client, team, Role.VIEWER)
        team_id = team.id
    page = client.get("/").get_data(as_text=True)
    assert "None launched yet: 1 draft waits in" in page and 'id="getting-started"' not in page
    with app.app_context():
        start = utcnow() - timedelta(days=30)
        for day in range(overview.RECENT + 2):
            _campaign(db.session.get(Team, team_id), CampaignStatus.COMPLETED, name=f"Day {day}",
                      launched_at=start + timedelta(days=day))
    page = client.get("/").get_data(as_text=True)
    listed = re.findall(r">Day (\d+)</a>", page.split('id="recent-campaigns"')[1])
    assert listed == [str(day) for day in range(overview.RECENT + 1, 1, -1)]  # the latest first
    assert "The 20 latest of 22 launched campaigns. 1 draft not launched yet." in page


@pytest.mark.browser
def test_running_now_refreshes_itself_in_the_browser(app, page):
    """In Chromium, under the CSP: the section follows a sending campaign without a reload and stops polling once
    it has completed."""
    with app.app_context():
        team = _team(timezone="America/New_York")
        user = make_user(team, Role.VIEWER)
        sender = make_sender(team, "+14155550100", "Main line")
        sending = _campaign(team, CampaignStatus.SENDING, sender=sender, name="Going out")
        _mixed(sending)
        done = _campaign(team, CampaignStatus.COMPLETED, sender=sender, name="Last week")
        _message(done, MessageStatus.DELIVERED, billed="0.02")
        _campaign(team, CampaignStatus.SCHEDULED, name="Next week", scheduled_at=utcnow() + timedelta(days=7))
        tallies.fold()
        sending_id, email = sending.id, user.email
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")
    assert page.get_by_text("6 of 9 dealt with (66%)").is_visible()
    screenshot(page, "dashboard-overview")
    with app.app_context():
        db.session.execute(update(Message).where(Message.campaign_id == sending_id, Message.status.in_(
            (MessageStatus.CREATED, MessageStatus.SENDING))).values(status=MessageStatus.DELIVERED, held=False))
        db.session.commit()
    page.get_by_text("9 of 9 dealt with (100%)").wait_for(timeout=15_000)  # a poll or two, no reload
    with app.app_context():
        db.session.get(Campaign, sending_id).status = CampaignStatus.COMPLETED
        db.session.commit()
    page.wait_for_function("() => !document.querySelector('#running-now').hasAttribute('hx-trigger')",
                           timeout=15_000)
    assert page.locator("#running-now").get_by_text("Going out").count() == 0
    assert errors == []


def test_spend_per_month_skips_months_with_nothing(app, client):
    """Only months something was spent in are listed; the total is unchanged, and rounded for the page."""
    with app.app_context():
        team = _team()
        campaign = _campaign(team, CampaignStatus.COMPLETED)
        long_ago = (utcnow() - timedelta(days=100)).strftime("%Y-%m-%d %H:%M:%S")
        _message(campaign, MessageStatus.DELIVERED, "26.215", at=long_ago)
        tallies.fold()
        month = overview.spend_by_month(team.id)
        spent = [line.month.strftime("%Y-%m") for line in month if line.spend]
        assert len(month) == overview.MONTHS and len(spent) == 1
        _sign_in(client, team, Role.VIEWER)
    by_month = client.get("/").get_data(as_text=True).split('id="spend-by-month"')[1].split("</section>")[0]
    assert re.findall(r'<tr id="month-([\d-]+)"', by_month) == spent
    assert '<span class="money" title="26.215 USD">26.22 USD</span>' in by_month
