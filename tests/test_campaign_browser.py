"""A campaign launched in a real browser, sent by a real worker through the sandbox over HTTP, watched
to completion on its page without a reload."""

from collections import Counter
from decimal import Decimal

import pytest
import requests

from tests.conftest import screenshot
from tests.factories import PASSWORD, make_campaign, make_contact, make_list, make_sender, make_team, make_user
from webapp.encryption import encrypt
from webapp.extensions import db
from webapp.models import Role
from webapp.web.money import full, money_text

pytestmark = pytest.mark.browser

RECIPIENTS = 20


@pytest.fixture
def callbacks_here(app, sandbox, live_server):
    """Send through the sandbox, with delivery reports addressed to the live server (set before `worker`)."""
    app.config["PUBLIC_BASE_URL"] = live_server.url
    return sandbox


def test_review_launch_and_watch_the_campaign_complete(app, callbacks_here, page, worker):
    """The confirmation shows the figures; Launch starts sending; the page's live fragment moves to
    'completed' in the same document with every message accepted, and the sandbox got each number once."""
    with app.app_context():
        team = make_team("Acme")
        team.api_username, team.api_password_encrypted = "sandbox", encrypt("sandbox")
        team.send_rate = Decimal(8)  # slow enough to watch it send: 20 messages take a few seconds
        team.timezone = "Europe/Paris"
        db.session.commit()
        make_user(team, Role.EDITOR, "ed@example.com")
        contacts = make_list(team, "Spring")
        for n in range(RECIPIENTS):
            make_contact(contacts, f"+1415555{n:04d}", first_name=f"Ana{n}")
        make_contact(contacts, "+14155559999", number_type="fixed_line", first_name="Desk")
        campaign_id = make_campaign(team, [contacts], body="Hi {{ first_name }}", name="Spring sale",
                                    sender=make_sender(team)).id

    page.goto("/login")
    page.get_by_label("Email").fill("ed@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")

    page.goto(f"/campaigns/{campaign_id}")
    page.get_by_role("link", name="Review and launch").click()
    assert page.locator("#launch-recipients").inner_text() == str(RECIPIENTS)
    assert page.locator("#launch-excluded-landline").inner_text() == "1"
    assert "Europe/Paris" in page.get_by_text("In the team's time zone").inner_text()
    # The suite runs at any hour: quiet hours (on by default) would hold US recipients overnight.
    page.get_by_label("Quiet hours", exact=False).uncheck()
    screenshot(page, "campaign-confirm")
    page.get_by_role("button", name="Launch").click()

    page.wait_for_url(f"**/campaigns/{campaign_id}")
    assert page.locator(".flash", has_text="Launched.").is_visible()
    assert page.locator("#campaign-state").inner_text() == "sending"
    page.evaluate("window.sameDocument = true")  # a reload would lose this
    page.locator("#campaign-state", has_text="completed").wait_for(timeout=120_000)
    assert page.evaluate("window.sameDocument") is True
    # Delivery reports flow back to the live server as it sends: each message is accepted by the provider,
    # then delivered or (the sandbox rolls its dice) undelivered; none failed or unknown.
    counts = {status: int(page.locator(f"#count-{status}").inner_text())
              for status in ("accepted", "delivered", "undelivered", "failed", "unknown")
              if page.locator(f"#count-{status}").count()}
    assert counts.get("accepted", 0) + counts.get("delivered", 0) + counts.get("undelivered", 0) == RECIPIENTS
    assert counts.get("failed", 0) == counts.get("unknown", 0) == 0
    assert page.get_by_text(f"{RECIPIENTS} of {RECIPIENTS} messages dealt with.").is_visible()
    assert page.locator("#campaign-actions").count() == 0
    log = page.locator("#audit-log").inner_text()
    assert "ed@example.com\tlaunched" in log and "the engine\tcompleted" in log
    # Completed, it polls every 10 s while reports are awaited, and stops once every message has its final state.
    page.wait_for_function("!document.querySelector('#campaign-status').hasAttribute('hx-trigger')",
                           timeout=120_000)
    assert page.evaluate("window.sameDocument") is True
    assert page.locator("#count-accepted").inner_text() == "0"
    delivered = int(page.locator("#count-delivered").inner_text())
    undelivered_count = page.locator("#count-undelivered")
    undelivered = int(undelivered_count.inner_text()) if undelivered_count.count() else 0
    assert delivered + undelivered == RECIPIENTS  # 100% delivered or failed
    assert page.locator("#delivery-rate").inner_text() == f"{delivered * 100 // RECIPIENTS}% delivered"
    assert "Reports cover 100% of the 20 sent." in page.locator("#coverage").inner_text()
    assert page.locator("#timeline polyline").count() == 3
    screenshot(page, "campaign-completed")

    sends = requests.get(f"{callbacks_here.url}/_sandbox/sends", timeout=10).json()
    billed = sum(Decimal(send["cost"]) for send in sends)
    assert page.locator("#spend-billed").inner_text() == money_text(billed, "USD")  # the provider's own total
    assert page.locator("#spend-billed .money").get_attribute("title") == f"{full(billed)} USD"
    assert page.locator("#spend-total").inner_text() == money_text(billed, "USD")
    per_number = Counter(send["to"] for send in sends)
    assert len(per_number) == RECIPIENTS and set(per_number.values()) == {1}


def test_the_chart_reads_on_a_phone(app, page):
    """At 390 px wide the chart fits the screen, its labels keep a legible size (12 px, not the drawing's
    scale), each time label stays inside the chart and none overlaps another."""
    from datetime import timedelta

    from sqlalchemy import select, update

    from tests.factories import make_launched_campaign
    from webapp.models import Campaign, Message, MessageStatus, utcnow

    with app.app_context():
        team = make_team("Acme")
        team.timezone = "America/New_York"
        db.session.commit()
        make_user(team, Role.VIEWER, "viewer@example.com")
        campaign = make_launched_campaign(team, 40)
        campaign.launched_at = utcnow() - timedelta(hours=2, minutes=10)
        db.session.commit()
        campaign_id = campaign.id
        ids = db.session.scalars(select(Message.id).where(Message.campaign_id == campaign_id)).all()
        db.session.execute(update(Message).where(Message.id.in_(ids[:30]))
                           .values(status=MessageStatus.DELIVERED, sent_at=utcnow()))
        db.session.execute(update(Campaign).where(Campaign.id == campaign_id).values(status="completed"))
        db.session.commit()
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/login")
    page.get_by_label("Email").fill("viewer@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")
    page.goto(f"/campaigns/{campaign_id}")
    page.locator("#timeline svg").first.scroll_into_view_if_needed()
    screenshot(page, "phone-campaign-chart")
    found = page.evaluate("""() => {
        const frame = document.querySelector('#timeline svg').getBoundingClientRect();
        const labels = document.querySelectorAll('#timeline text');
        const box = (node) => { const r = node.getBoundingClientRect(); return [r.left, r.right, r.top, r.bottom]; };
        return {frame: [frame.left, frame.right], page: [document.scrollingElement.scrollWidth, window.innerWidth],
                sizes: [...labels].map(n => parseFloat(getComputedStyle(n).fontSize)),
                heights: [...labels].map(n => n.getBoundingClientRect().height),
                times: [...document.querySelectorAll('#timeline .chart-times text')].map(box)};
    }""")
    assert found["page"][0] <= found["page"][1], found["page"]
    assert found["frame"][0] >= 0 and found["frame"][1] <= 390, found["frame"]
    assert len(found["sizes"]) >= 4 and min(found["sizes"]) >= 11 and min(found["heights"]) >= 10, found
    times = found["times"]
    assert len(times) >= 3
    assert all(found["frame"][0] <= left and right <= found["frame"][1] for left, right, _, _ in times), times
    assert all(earlier[1] < later[0] for earlier, later in zip(times, times[1:], strict=False)), times


def test_test_sends_count_down_in_the_page_and_a_click_past_the_limit_says_why(app, sandbox, page):
    """Each test send updates 'left now' in place; the click past the team's limit shows the refusal (429)
    without replacing the outcome, and nothing more reaches the sandbox."""
    app.config.update(TEST_SENDS_PER_MINUTE=1)
    with app.app_context():
        team = make_team("Acme")
        team.api_username, team.api_password_encrypted = "sandbox", encrypt("sandbox")
        team.test_numbers = ["+14155550901"]
        db.session.commit()
        make_user(team, Role.EDITOR, "ed@example.com")
        campaign_id = make_campaign(team, [], body="Hi", name="Spring sale", sender=make_sender(team)).id

    page.goto("/login")
    page.get_by_label("Email").fill("ed@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")
    page.goto(f"/campaigns/{campaign_id}")
    allowance = page.locator("#test-send-allowance")
    assert allowance.inner_text().startswith("1 test message left now")
    page.get_by_role("button", name="Send test").click()
    page.locator("#test-send-outcomes").get_by_text("accepted").wait_for()
    page.wait_for_function("document.getElementById('test-send-allowance').innerText.startsWith('0 test messages')")
    page.get_by_role("button", name="Send test").click()
    refusal = page.locator("#request-error")
    refusal.wait_for(state="visible")
    assert "Test send limit reached" in refusal.inner_text()
    assert page.locator("#test-send-outcomes").count() == 1
    assert len(requests.get(f"{sandbox.url}/_sandbox/sends", timeout=5).json()) == 1
    screenshot(page, "test-send-limit")
