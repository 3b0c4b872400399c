"""The launched campaign's live fragment: figures from the tallies, bounded queries, chart and reasons."""

import html
import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from tests.conftest import statements_run
from tests.factories import PASSWORD, make_launched_campaign, make_team, make_user
from webapp.extensions import db
from webapp.models import Campaign, Message, MessageStatus, Team, Waiting, utcnow
from webapp.services import batches, sending, tallies


def _signed_in(app, client, recipients: int) -> int:
    with app.app_context():
        team = make_team()
        user = make_user(team)
        campaign_id = make_launched_campaign(team, recipients).id
        email = user.email
    client.post("/login", data={"email": email, "password": PASSWORD})
    return campaign_id


def _move(app, campaign_id: int, start: int, stop: int, **values) -> None:
    with app.app_context():
        ids = db.session.scalars(select(Message.id).where(Message.campaign_id == campaign_id)
                                 .order_by(Message.id)).all()
        db.session.execute(update(Message).where(Message.id.in_(ids[start:stop])).values(**values))
        db.session.commit()


def test_the_status_fragment_never_counts_the_messages(app, client):
    """Every statement the live fragment runs against `message` is bounded by a LIMIT (no scan, no GROUP BY)."""
    campaign_id = _signed_in(app, client, 30)
    two_hours_ago = utcnow() - timedelta(hours=2)
    _move(app, campaign_id, 0, 10, status=MessageStatus.ACCEPTED, sent_at=two_hours_ago)
    _move(app, campaign_id, 10, 12, status=MessageStatus.UNKNOWN, sent_at=two_hours_ago)
    _move(app, campaign_id, 12, 14, held=True, not_before=utcnow() + timedelta(hours=3))
    with statements_run(app) as statements:
        response = client.get(f"/campaigns/{campaign_id}/status")
    page = response.get_data(as_text=True)
    assert response.status_code == 200, page
    assert '<dd id="count-accepted">10</dd>' in page and '<dd id="count-held">2</dd>' in page
    assert '<dd id="count-created">16</dd>' in page and '<dd id="count-unknown">2</dd>' in page
    assert "10 sent messages have had no final report for over 15 minutes" in page
    assert "2 messages unconfirmed." in page
    touching = [s for s in statements if " FROM message" in s or "JOIN message" in s]
    assert touching and all(" LIMIT " in s for s in touching), touching
    assert not any("GROUP BY" in s and " FROM message" in s for s in statements)


def test_delivery_rate_coverage_failure_reasons_and_the_chart(app, client):
    campaign_id = _signed_in(app, client, 10)
    _move(app, campaign_id, 0, 10, status=MessageStatus.SENDING, sent_at=utcnow())
    _move(app, campaign_id, 0, 6, status=MessageStatus.DELIVERED, billed_cost=0.0075)
    _move(app, campaign_id, 6, 8, status=MessageStatus.UNDELIVERED,
          error="Not delivered: the provider reported UNDELIV (cause 34)")
    _move(app, campaign_id, 8, 9, status=MessageStatus.FAILED, error="MultiTEL refused the message (HTTP 400)")
    _move(app, campaign_id, 9, 10, status=MessageStatus.ACCEPTED)
    with app.app_context():
        tallies.fold()
    page = client.get(f"/campaigns/{campaign_id}/status").get_data(as_text=True)
    assert '<strong id="delivery-rate">75% delivered</strong> of the 8 messages with a final report.' in page
    assert "Reports cover 88% of the 9 sent." in page
    reasons = page.split('id="failure-reasons"')[1].split("</table>")[0]
    assert "Not delivered: number unreachable (UNDELIV, cause 34)</td><td class=\"num\">2<" in reasons
    assert "(HTTP 400)</td><td class=\"num\">1<" in reasons  # not a delivery state: as it was
    chart = page.split('id="timeline"')[1].split("</figure>")[0]
    assert chart.count("<polyline") == 3 and "Posts (retries too) 10" in chart
    assert "Delivered 6" in chart and "Failed 3" in chart
    assert "<script" not in chart


def test_the_send_rate_and_time_left_while_sending(app, client):
    """The rate is what was posted over the current minute and the one before; time left is the queue at that rate."""
    campaign_id = _signed_in(app, client, 20)
    with app.app_context():
        db.session.execute(update(Campaign).where(Campaign.id == campaign_id)
                           .values(launched_at=utcnow() - timedelta(minutes=10)))
        db.session.commit()
    _move(app, campaign_id, 0, 12, status=MessageStatus.SENDING, sent_at=utcnow())
    page = client.get(f"/campaigns/{campaign_id}/status").get_data(as_text=True)
    found = re.search(r'<span id="send-rate">Sending ([0-9.]+) a second; about (\d+) (s|min) left at this rate.</span>',
                      page)
    assert found, page
    assert 0.1 <= float(found[1]) <= 0.2  # 12 posted over 60 to 120 seconds
    left = int(found[2]) * (60 if found[3] == "min" else 1)
    assert 40 <= left <= 80  # 8 queued at that rate


def test_the_chart_has_labelled_axes_in_the_team_zone_and_no_script(app, client):
    """Counts on gridlines and the times in the team's zone, drawn by the server: labels in an outer svg without
    viewBox (their size holds on a phone), the lines in a plot that stretches."""
    from zoneinfo import ZoneInfo

    campaign_id = _signed_in(app, client, 10)
    launched = utcnow().replace(microsecond=0) - timedelta(minutes=30)
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        campaign.launched_at = launched
        db.session.get(Team, campaign.team_id).timezone = "Asia/Kolkata"
        db.session.commit()
    _move(app, campaign_id, 0, 10, status=MessageStatus.SENDING, sent_at=utcnow())
    _move(app, campaign_id, 0, 6, status=MessageStatus.DELIVERED)
    chart = client.get(f"/campaigns/{campaign_id}/status").get_data(as_text=True)
    chart = chart.split('id="timeline"')[1].split("</figure>")[0]
    frame = chart.split("<svg")[1].split(">")[0]
    assert "viewBox" not in frame and 'role="img"' in frame
    assert 'viewBox="0 0 640 150" preserveAspectRatio="none"' in chart.split("<svg")[2]
    counts = re.findall(r"<text x=\"4\" [^>]*>([^<]+)</text>", chart)
    assert counts == ["5", "10 messages"]
    times = re.findall(r'<text x="[0-9.]+%"[^>]*>([^<]+)</text>', chart)
    kolkata = ZoneInfo("Asia/Kolkata")
    assert times[0] == f"{launched.replace(tzinfo=UTC).astimezone(kolkata):%H:%M}"
    assert all(re.fullmatch(r"\d\d:\d0", label) for label in times[1:-1]) and len(times) >= 3, times
    assert "<script" not in chart and " style=" not in chart


def test_a_waiting_campaign_says_for_what_and_since_when(app, client):
    """What the engine noted (here the send rate), then a stalled batch, which comes first; nothing once it posts."""
    campaign_id = _signed_in(app, client, 4)
    since = datetime(2026, 12, 7, 20, 3)
    with app.app_context():
        db.session.execute(update(Campaign).where(Campaign.id == campaign_id)
                           .values(waiting_for=Waiting.RATE, waiting_since=since))
        db.session.commit()
    page = html.unescape(client.get(f"/campaigns/{campaign_id}/status").get_data(as_text=True))
    assert "Waiting for the team's send rate since 2026-12-07 20:03 (UTC)." in page
    with app.app_context():
        silent_since = utcnow() - timedelta(minutes=2)
        sending.claim(campaign_id, "silent", 2, silent_since)
    page = client.get(f"/campaigns/{campaign_id}/status").get_data(as_text=True)
    assert f"Waiting for a batch that stopped (its messages not posted yet are released and sent again) since " \
           f"{silent_since:%Y-%m-%d %H:%M} (UTC)." in page
    with app.app_context():
        sending.recover()  # releases the silent batch's claims
        batches.clear_waiting(campaign_id)
        db.session.commit()
    assert 'id="waiting"' not in client.get(f"/campaigns/{campaign_id}/status").get_data(as_text=True)
