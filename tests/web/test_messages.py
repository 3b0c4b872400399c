"""The messages table of a campaign: pages both ways, filter, number search (htmx and plain GET), callback
history, team scoping, viewers, and the streamed CSV export."""

import csv
import io
import re
import secrets
from datetime import datetime
from decimal import Decimal

import pytest
from sqlalchemy import insert, select, update

from tests.factories import make_callback, make_campaign, make_team, make_user
from webapp.extensions import db
from webapp.models import Campaign, Message, MessageKind, MessageStatus, Role
from webapp.provider.delivery_reports import DeliveryState
from webapp.provider.segments import Encoding

NEXT = re.compile(r'id="page-next" href="([^"]+)"')
PREVIOUS = re.compile(r'id="page-previous" href="([^"]+)"')
NUMBER = re.compile(r'<td class="mono">(\+[0-9_%]+)</td>')


def add_messages(team_id: int, campaign_id: int, rows: list[dict]) -> None:
    base = {"team_id": team_id, "campaign_id": campaign_id, "kind": MessageKind.CAMPAIGN, "text": "Hi",
            "encoding": Encoding.GSM7, "parts": 1, "estimated_cost": Decimal("0.015"), "sender": "",
            "status": MessageStatus.DELIVERED, "held": False, "attempts": 0, "resent": False, "sent_twice": False,
            "is_mms": False, "created_at": datetime(2026, 3, 1), "updated_at": datetime(2026, 3, 1, 12, 0)}
    db.session.execute(insert(Message), [{**base, "reference": secrets.token_hex(8), **row}
                                         for i, row in enumerate(rows)])
    db.session.commit()


@pytest.fixture
def campaign_id(app):
    """Team Acme (zone New York) with a 120-message campaign: 3 held, a few special rows; its users and a rival."""
    with app.app_context():
        team = make_team("Acme")
        team.timezone = "America/New_York"
        make_user(team, Role.EDITOR, "ed@example.com")
        make_user(team, Role.VIEWER, "viewer@example.com")
        make_user(make_team("Rival"), Role.OWNER, "rival@example.com")
        campaign = make_campaign(team, name="Spring")
        rows = [{"phone": f"+1415555{1000 + i}"} for i in range(114)]
        rows += [
            {"phone": "+14155552000", "status": MessageStatus.CREATED, "held": True,
             "not_before": datetime(2026, 3, 2, 13, 0)},
            {"phone": "+14155552001", "status": MessageStatus.CREATED, "held": True},
            {"phone": "+14155552002", "status": MessageStatus.CREATED, "held": True},
            {"phone": "+14155552003", "status": MessageStatus.CREATED},
            {"phone": "+14155552004", "status": MessageStatus.SENDING},
            {"phone": "+447700900123", "status": MessageStatus.FAILED, "error": "=HYPERLINK(\"http://evil\")",
             "unique_id": "@SUM(1)", "billed_parts": 2, "billed_cost": Decimal("0.03"), "reply_parts": 1,
             "reply_cost": Decimal("0.015"), "updated_at": datetime(2026, 7, 1, 16, 5, 30)},
        ]
        add_messages(team.id, campaign.id, rows)
        return campaign.id


def _message_id(phone: str) -> int:
    return db.session.scalar(select(Message.id).where(Message.phone == phone))


def _add_callbacks(message_id: int, *states: DeliveryState) -> None:
    """Callbacks applied to the message, oldest first, each with its own status word (SENT-WORD, ...)."""
    from webapp.models import Team

    team = db.session.get(Team, db.session.get(Message, message_id).team_id)
    for state in states:
        callback = make_callback(team, reference="r", state=state)
        callback.message_id, callback.raw_status = message_id, state.value.upper() + "-WORD"
    db.session.commit()


def numbers(html: str) -> list[str]:
    return NUMBER.findall(html)


def follow(client, url: str, link: re.Pattern) -> list[list[str]]:
    """The numbers on each page reached by following one link (Next or Previous) from `url`."""
    pages = []
    while url:
        html = client.get(url.replace("&amp;", "&")).get_data(as_text=True)
        pages.append(numbers(html))
        found = link.search(html)
        url = found.group(1) if found else None
    return pages


def pages_html(client, url: str) -> str:
    """Every page Next reaches from `url`, one after the other."""
    html = ""
    while url:
        page = client.get(url.replace("&amp;", "&")).get_data(as_text=True)
        html += page
        found = NEXT.search(page)
        url = found.group(1) if found else None
    return html


def test_pages_forward_and_back(client, auth, campaign_id):
    """50 to a page: Next reaches all 120 messages once, Previous comes back the same way."""
    auth.login("ed@example.com")
    forward = follow(client, f"/campaigns/{campaign_id}/messages", NEXT)
    assert [len(page) for page in forward] == [50, 50, 20]
    everything = [number for page in forward for number in page]
    assert len(everything) == 120 == len(set(everything))
    html = client.get(f"/campaigns/{campaign_id}/messages").get_data(as_text=True)
    last_url = NEXT.search(client.get(NEXT.search(html).group(1).replace("&amp;", "&")).get_data(as_text=True))
    backward = follow(client, last_url.group(1).replace("&amp;", "&"), PREVIOUS)
    assert backward == forward[::-1]


def test_status_words_costs_and_flags(client, auth, campaign_id):
    """Held and queued, in flight, the billed figure beside the estimate, both flags, time in the team's zone."""
    auth.login("ed@example.com")
    html = pages_html(client, f"/campaigns/{campaign_id}/messages")
    for word in ("held", "queued", "in flight", "failed", "delivered"):
        assert f">{word}</span>" in html, word
    assert "until 2026-03-02 08:00:00" in html  # 13:00 UTC in New York
    failed = html[html.index("+447700900123"):]
    failed = failed[:failed.index("</tr>")]
    assert 'data-flag="estimate"' in failed and 'data-flag="reply"' in failed
    assert 'send reply said <span class="money" title="0.015 USD">0.015 USD</span> · 1 part' in failed
    assert "2026-07-01 12:05:30" in failed and "America/New_York" in html


@pytest.mark.parametrize("status, expected", [("held", 3), ("queued", 1), ("in_flight", 1), ("failed", 1),
                                              ("delivered", 114), ("undelivered", 0)])
def test_filter_by_status(client, auth, campaign_id, status, expected):
    """The status select narrows the table, through every page."""
    auth.login("ed@example.com")
    pages = follow(client, f"/campaigns/{campaign_id}/messages?status={status}", NEXT)
    assert sum(len(page) for page in pages) == expected


def test_htmx_gets_the_table_fragment(client, auth, campaign_id):
    """An htmx filter (HX-Target: div#messages-table) gets just the table; its page links stay filtered."""
    auth.login("ed@example.com")
    response = client.get(f"/campaigns/{campaign_id}/messages?status=delivered",
                          headers={"HX-Request": "true", "HX-Target": "div#messages-table"})
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith('<div id="messages-table">') and "<html" not in html
    assert {"HX-Request", "HX-Target"} <= set(response.vary)
    assert "status=delivered" in NEXT.search(html).group(1) and 'hx-target="#messages-table"' in html
    page = client.get(f"/campaigns/{campaign_id}/messages", headers={"HX-Request": "true", "HX-Target": "body"})
    assert "<html" in page.get_data(as_text=True)


def test_search_by_number_prefix(client, auth, campaign_id):
    """A search matches numbers from the start, however they are typed; the links keep the search."""
    auth.login("ed@example.com")
    for typed in ("+44 7700", "0044-7700", "447700"):
        html = client.get(f"/campaigns/{campaign_id}/messages", query_string={"q": typed}).get_data(as_text=True)
        assert numbers(html) == ["+447700900123"], typed
    html = client.get(f"/campaigns/{campaign_id}/messages", query_string={"q": "+1 415 555 20"}).get_data(as_text=True)
    assert numbers(html) == [f"+14155552{i:03d}" for i in range(5)]
    assert numbers(client.get(f"/campaigns/{campaign_id}/messages?q=7700").get_data(as_text=True)) == []
    pages = follow(client, f"/campaigns/{campaign_id}/messages?q=%2B1415555", NEXT)
    assert sum(len(page) for page in pages) == 119 and "q=%2B1415555" in "".join(
        NEXT.findall(client.get(f"/campaigns/{campaign_id}/messages?q=%2B1415555").get_data(as_text=True)))


def test_wildcards_typed_in_the_search_match_nothing_extra(app, client, auth, campaign_id):
    """% and _ are not wildcards: '+1%5' is the prefix +15, '+1_1' the prefix +11 (no number here starts so)."""
    with app.app_context():
        add_messages(db.session.scalar(select(Message.team_id).limit(1)), campaign_id,
                     [{"phone": "+15005550000"}])
    auth.login("ed@example.com")
    html = client.get(f"/campaigns/{campaign_id}/messages", query_string={"q": "+1%5"}).get_data(as_text=True)
    assert numbers(html) == ["+15005550000"]
    for typed in ("+1_1", "%", "_", "+4%0"):
        html = client.get(f"/campaigns/{campaign_id}/messages", query_string={"q": typed}).get_data(as_text=True)
        assert numbers(html) == [], typed
    html = client.get(f"/campaigns/{campaign_id}/messages", query_string={"q": "Anna"}).get_data(as_text=True)
    assert 'id="search-no-digits"' in html and numbers(html) == []


def test_a_long_search_is_cut_and_bad_cursors_are_ignored(client, auth, campaign_id):
    """100,000 characters are cut to the search limit (and not echoed back); a malformed cursor is no cursor."""
    auth.login("ed@example.com")
    response = client.get(f"/campaigns/{campaign_id}/messages", query_string={"q": "4" * 100_000})
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and 'id="search-cut"' in html and len(html) < 60_000
    assert numbers(html) == []
    for cursor in ("after=abc", "after=-5", "before=99999999999999999999999", "after=0"):
        response = client.get(f"/campaigns/{campaign_id}/messages?{cursor}")
        assert response.status_code == 200 and len(numbers(response.get_data(as_text=True))) == 50, cursor


def test_callback_history_fragment_and_page(app, client, auth, campaign_id):
    """A message's callbacks, newest first: as the row htmx swaps in, and as a page without JavaScript."""
    with app.app_context():
        message_id = _message_id("+447700900123")
        _add_callbacks(message_id, DeliveryState.SENT, DeliveryState.FAILED)
    auth.login("ed@example.com")
    response = client.get(f"/messages/{message_id}", headers={"HX-Request": "true",
                                                               "HX-Target": f"tr#history-{message_id}"})
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith(f'<tr id="history-{message_id}">') and "<html" not in html
    assert html.index("FAILED-WORD") < html.index("SENT-WORD")
    page = client.get(f"/messages/{message_id}").get_data(as_text=True)
    assert "<html" in page and "FAILED-WORD" in page and "differs from what the provider billed" in page
    table = pages_html(client, f"/campaigns/{campaign_id}/messages")
    assert f'hx-get="/messages/{message_id}"' in table and f'<tr id="history-{message_id}" hidden></tr>' in table


def test_export_streams_every_message_once_neutralised(client, auth, campaign_id):
    """The CSV is streamed, has every message once, and neutralises formula-looking cells, numbers included."""
    auth.login("ed@example.com")
    response = client.get(f"/campaigns/{campaign_id}/messages.csv")
    assert response.status_code == 200 and response.is_streamed and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data().decode("utf-8-sig"))))
    assert len(rows) == 120 and len({row["Our reference"] for row in rows}) == 120
    zone = "America/New_York"
    assert list(rows[0]) == ["Phone number", "Status", "Reason", "Parts", "Estimated cost (USD)", "Billed parts",
                             "Billed cost (USD)", "Cost in the send reply (USD)", f"Sent at ({zone})",
                             f"Last change ({zone})", "Provider message ID", "Our reference"]
    assert all(row["Phone number"].startswith("'+") for row in rows)
    failed = next(row for row in rows if row["Phone number"] == "'+447700900123")
    assert failed["Reason"] == "'=HYPERLINK(\"http://evil\")" and failed["Provider message ID"] == "'@SUM(1)"
    assert failed["Status"] == "failed" and failed["Billed cost (USD)"] == "0.03"
    assert failed["Cost in the send reply (USD)"] == "0.015"
    assert failed[f"Last change ({zone})"] == "2026-07-01 12:05:30"
    assert sorted({row["Status"] for row in rows}) == ["delivered", "failed", "held", "in flight", "queued"]


def test_export_has_contact_fields_and_the_uploads_separator(client, auth, campaign_id, app):
    """With a list imported from a ";" file, the export is ";"-separated (unless ?separator= says otherwise)
    and carries each recipient's fields under the uploaded column names; only cells that start like a formula
    get the apostrophe."""
    from tests.factories import make_contact, make_import, make_list
    from webapp.models import Campaign, CampaignList, ImportStatus, Team

    with app.app_context():
        team = db.session.scalar(select(Team).where(Team.name == "Acme"))
        contact_list = make_list(team)
        upload = make_import(team, ImportStatus.DONE, contact_list, headers=["Mobile", "Prénom", "Note"])
        upload.delimiter, upload.field_columns, upload.accepted = ";", [1, 2], 2
        noel = make_contact(contact_list, "+14155550001", prénom="Noël", note="-5% off; today")
        ann = make_contact(contact_list, "+14155550002", prénom="Ann", note="'quoted")
        db.session.add(CampaignList(campaign_id=campaign_id, list_id=contact_list.id, position=0))
        db.session.execute(update(Message).where(Message.phone == "+14155551000").values(contact_id=noel.id))
        db.session.execute(update(Message).where(Message.phone == "+14155551001").values(contact_id=ann.id))
        db.session.commit()
        assert db.session.get(Campaign, campaign_id).list_ids == [contact_list.id]
    auth.login("ed@example.com")
    text = client.get(f"/campaigns/{campaign_id}/messages.csv").get_data().decode("utf-8-sig")
    assert text.startswith("Phone number;Prénom;Note;Status;")
    rows = list(csv.DictReader(io.StringIO(text), delimiter=";"))
    by_number = {row["Phone number"]: row for row in rows}
    assert (by_number["'+14155551000"]["Prénom"], by_number["'+14155551000"]["Note"]) == ("Noël", "'-5% off; today")
    assert (by_number["'+14155551001"]["Prénom"], by_number["'+14155551001"]["Note"]) == ("Ann", "'quoted")
    assert by_number["'+14155551002"]["Prénom"] == "" and by_number["'+14155551002"]["Status"] == "delivered"
    comma = client.get(f"/campaigns/{campaign_id}/messages.csv?separator=comma").get_data().decode("utf-8-sig")
    assert comma.startswith("Phone number,Prénom,Note,Status,")
    tab = client.get(f"/campaigns/{campaign_id}/messages.csv?separator=tab").get_data().decode("utf-8-sig")
    assert tab.startswith("Phone number\tPrénom\tNote\tStatus\t")
    odd = client.get(f"/campaigns/{campaign_id}/messages.csv?separator=x").get_data().decode("utf-8-sig")
    assert odd.startswith("Phone number;Prénom;")  # an unknown name is the uploads' separator


def test_viewer_reads_everything(client, auth, campaign_id, app):
    """A viewer sees the table, a message's history and the export."""
    with app.app_context():
        message_id = _message_id("+14155552000")
    auth.login("viewer@example.com")
    assert client.get(f"/campaigns/{campaign_id}/messages").status_code == 200
    assert client.get(f"/messages/{message_id}").status_code == 200
    assert client.get(f"/campaigns/{campaign_id}/messages.csv").status_code == 200


def test_another_team_gets_404(client, auth, campaign_id, app):
    """A campaign or a message of another team is not found, nor exported."""
    with app.app_context():
        message_id = _message_id("+14155552000")
    auth.login("rival@example.com")
    for url in (f"/campaigns/{campaign_id}/messages", f"/campaigns/{campaign_id}/messages.csv",
                f"/messages/{message_id}", f"/campaigns/{campaign_id}/messages?q=%2B1&status=held"):
        assert client.get(url).status_code == 404, url


def test_signed_out_is_sent_to_login(client, campaign_id):
    """Nothing here is public."""
    for url in (f"/campaigns/{campaign_id}/messages", f"/campaigns/{campaign_id}/messages.csv", "/messages/1"):
        assert client.get(url).status_code in (302, 401), url


@pytest.mark.browser
def test_in_a_browser_filter_search_pages_and_history_swap_in_place(app, page, campaign_id):
    """With htmx the status select, the search box, the page links and a message's callbacks update the
    table in place (no page load), and the address keeps the filter."""
    from playwright.sync_api import expect

    from tests.conftest import screenshot
    from tests.factories import PASSWORD

    with app.app_context():
        message_id = _message_id("+447700900123")
        _add_callbacks(message_id, DeliveryState.FAILED)
    page.goto("/login")
    page.get_by_label("Email").fill("viewer@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")
    page.goto(f"/campaigns/{campaign_id}/messages")
    page.evaluate("window.loadedOnce = true")  # gone if the page reloads
    rows = page.locator("#messages tbody tr[id^=message-]")
    page.select_option("#status", "held")
    expect(rows).to_have_count(3)
    assert "status=held" in page.url
    page.select_option("#status", "")
    page.fill("#q", "+44 7700")
    expect(rows).to_have_count(1)
    page.get_by_role("link", name="Callbacks").click()
    page.wait_for_selector(f"#callbacks-{message_id}")
    assert "FAILED-WORD" in page.inner_text(f"#history-{message_id}")
    screenshot(page, "campaign-messages-history")
    page.fill("#q", "")
    expect(rows).to_have_count(50)
    page.click("#page-next")
    page.wait_for_selector("#page-previous")
    assert "after=" in page.url and page.evaluate("window.loadedOnce") is True
    screenshot(page, "campaign-messages")


def test_failure_reasons_read_plainly_in_the_table_and_on_the_message_page(app, client, auth, campaign_id):
    """A delivery state the provider reported reads in plain words with its code; other reasons as they were."""
    with app.app_context():
        team_id = db.session.get(Campaign, campaign_id).team_id
        add_messages(team_id, campaign_id, [{"phone": "+14155553000", "status": MessageStatus.UNDELIVERED,
                                             "error": "Not delivered: the provider reported UNDELIV (cause 1)"}])
        message_id = _message_id("+14155553000")
    auth.login("ed@example.com")
    plain = "Not delivered: number unreachable (UNDELIV, cause 1)"
    table = client.get(f"/campaigns/{campaign_id}/messages?status=undelivered").get_data(as_text=True)
    assert f"<td>{plain}</td>" in table
    assert plain in client.get(f"/messages/{message_id}").get_data(as_text=True)
    failed = client.get(f"/campaigns/{campaign_id}/messages?status=failed").get_data(as_text=True)
    assert "=HYPERLINK(&#34;http://evil&#34;)" in failed
