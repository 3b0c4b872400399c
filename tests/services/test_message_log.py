"""The messages table's queries: keyset pages both ways, status filters, number-prefix search, the bounded
scan of filters the index can't apply, callback history, and the streamed export."""

from datetime import datetime
from decimal import Decimal

import pytest
from sqlalchemy import insert

from tests.factories import make_callback, make_campaign, make_message, make_team
from webapp.extensions import db
from webapp.models import Message, MessageKind, MessageStatus
from webapp.provider.delivery_reports import DeliveryState
from webapp.provider.segments import Encoding
from webapp.services import message_log
from webapp.services.message_log import PAGE_SIZE, number_prefix


def add_messages(team, campaign, rows: list[dict]) -> list[int]:
    """Insert campaign messages in one statement (defaults: queued, 1 part at 0.015); their ids in order."""
    base = {"team_id": team.id, "campaign_id": campaign.id, "kind": MessageKind.CAMPAIGN, "text": "Hi",
            "encoding": Encoding.GSM7, "parts": 1, "estimated_cost": Decimal("0.015"), "sender": "",
            "status": MessageStatus.CREATED, "held": False, "attempts": 0, "resent": False, "sent_twice": False,
            "is_mms": False, "created_at": datetime(2026, 3, 1), "updated_at": datetime(2026, 3, 1, 12, 0)}
    start = db.session.query(Message).count()
    db.session.execute(insert(Message), [{**base, "reference": f"ref-{campaign.id}-{start + i}", **row}
                                         for i, row in enumerate(rows)])
    db.session.commit()
    return [message.id for message in db.session.query(Message).filter_by(campaign_id=campaign.id)
            .order_by(Message.id)][-len(rows):]


def walk(campaign_id: int, **filters) -> list[int]:
    """Every id the Next links reach from the first page."""
    seen, result = [], message_log.page(campaign_id, **filters)
    while True:
        seen += [message.id for message in result.messages]
        if result.next_after is None:
            return seen
        result = message_log.page(campaign_id, after=result.next_after, **filters)


def walk_back(campaign_id: int, last: int, **filters) -> list[int]:
    """Every id the Previous links reach from the page before message `last`, in the order pages show them
    (start where a forward page starts: the page before the first is the first page, full)."""
    pages, result = [], message_log.page(campaign_id, before=last, **filters)
    while True:
        pages.insert(0, [message.id for message in result.messages])
        if result.prev_before is None:
            return [message_id for shown in pages for message_id in shown]
        result = message_log.page(campaign_id, before=result.prev_before, **filters)


@pytest.fixture
def team(app):
    with app.app_context():
        yield make_team("Acme")


def test_number_prefix_keeps_digits_after_a_plus():
    """What people type becomes an E.164 prefix: punctuation dropped, 00 read as +, wildcards never kept."""
    assert number_prefix("+1 (415) 555-01") == "+141555501"
    assert number_prefix("1415") == "+1415"
    assert number_prefix("0044 7700") == "+447700"
    assert number_prefix("'+14155550123") == "+14155550123"
    assert number_prefix("+1%5") == "+15" and number_prefix("1_4") == "+14"
    assert number_prefix("Anna") == "" and number_prefix("") == "" and number_prefix(None) == ""
    assert number_prefix("١٢٣") == ""  # Arabic-Indic digits are not in any stored number
    assert number_prefix("9" * 100_000) == "+" + "9" * 15


def test_cursor_ids_are_positive_bigints():
    """Anything but a positive id that fits a BIGINT is no cursor (so it can't make the database fail)."""
    assert message_log.cursor_id("42") == 42
    for typed in (None, "", "0", "-3", "4.2", "x", "9" * 19, "9" * 30, "１２"):
        assert message_log.cursor_id(typed) is None, typed


def test_pages_forward_and_back_cover_every_message_once(team):
    """120 messages: pages of 50 by id, Next to the end and Previous back to the start, each row once."""
    campaign = make_campaign(team)
    ids = add_messages(team, campaign, [{"phone": f"+1415555{1000 + i}"} for i in range(120)])
    first = message_log.page(campaign.id)
    assert [m.id for m in first.messages] == ids[:PAGE_SIZE] and first.prev_before is None
    assert first.next_after == ids[PAGE_SIZE - 1]
    assert walk(campaign.id) == ids
    last = message_log.page(campaign.id, after=ids[99])
    assert [m.id for m in last.messages] == ids[100:] and last.next_after is None and last.prev_before == ids[100]
    assert walk_back(campaign.id, ids[100]) == ids[:100]
    # The page before the second one is the first page, full, with no Previous.
    back = message_log.page(campaign.id, before=ids[10])
    assert [m.id for m in back.messages] == ids[:PAGE_SIZE] and back.prev_before is None


def test_only_this_campaigns_campaign_messages(team):
    """Another campaign's messages and test sends made from this draft are not in its table or export."""
    campaign, other = make_campaign(team), make_campaign(team)
    ids = add_messages(team, campaign, [{"phone": "+14155550100"}])
    add_messages(team, other, [{"phone": "+14155550101"}])
    make_message(team, phone="+14155550102", campaign=campaign)  # a test send
    assert [m.id for m in message_log.page(campaign.id).messages] == ids
    assert len(list(message_log.export_rows(campaign.id, "UTC"))) == 2
    # A cursor from another campaign starts from the first page (in number order too).
    foreign = message_log.page(other.id).messages[0].id
    assert [m.id for m in message_log.page(campaign.id, prefix="+1", after=foreign).messages] == ids


def test_status_filters_use_the_words_people_read(team):
    """Each filter shows its own messages: held and queued are both CREATED, told apart by `held`."""
    campaign = make_campaign(team)
    statuses = [(MessageStatus.CREATED, False), (MessageStatus.CREATED, True), (MessageStatus.SENDING, False),
                (MessageStatus.ACCEPTED, False), (MessageStatus.DELIVERED, False), (MessageStatus.FAILED, False)]
    ids = add_messages(team, campaign, [{"phone": f"+1415555{1000 + i}", "status": statuses[i % 6][0],
                                         "held": statuses[i % 6][1]} for i in range(60)])
    expected = {"queued": 0, "held": 1, "in_flight": 2, "sent": 3, "delivered": 4, "failed": 5}
    for name, position in expected.items():
        shown = message_log.page(campaign.id, name).messages
        assert [m.id for m in shown] == ids[position::6], name
        words = {message_log.status_word(m.status, m.held) for m in shown}
        assert words == {name.replace("_", " ")}
    assert message_log.page(campaign.id, "undelivered").messages == []
    assert len(message_log.page(campaign.id, "no-such-filter").messages) == PAGE_SIZE  # unknown: every status


def test_search_is_a_prefix_in_number_order(team):
    """A number search matches from the start only, lists matches by number, and pages both ways."""
    campaign = make_campaign(team)
    phones = [f"+1415{(i * 7919) % 10_000_000:07d}" for i in range(110)] + ["+447700900123", "+33612345678"]
    add_messages(team, campaign, [{"phone": phone} for phone in phones])
    found = walk(campaign.id, prefix="+1415")
    shown = [db.session.get(Message, message_id).phone for message_id in found]
    assert shown == sorted(phones[:110])
    assert walk_back(campaign.id, found[100], prefix="+1415") == found[:100]
    # From a page that isn't aligned with the first, Previous ends on the first page, full.
    assert [m.id for m in message_log.page(campaign.id, prefix="+1415", before=found[20]).messages] == found[:50]
    assert [m.phone for m in message_log.page(campaign.id, prefix="+44").messages] == ["+447700900123"]
    assert message_log.page(campaign.id, prefix="+7700").messages == []  # never a match in the middle


def test_equal_numbers_page_by_id(team):
    """A number sent twice (a resend) appears twice, the ties broken by id, across a page boundary."""
    campaign = make_campaign(team)
    ids = add_messages(team, campaign, [{"phone": "+14155550100"} for _ in range(PAGE_SIZE + 5)])
    assert walk(campaign.id, prefix="+14155550100") == ids
    assert walk_back(campaign.id, ids[PAGE_SIZE], prefix="+14155550100") == ids[:PAGE_SIZE]


def test_like_wildcards_in_a_prefix_are_literal(team):
    """% and _ in the prefix are characters, not wildcards (number_prefix drops them first anyway)."""
    campaign = make_campaign(team)
    add_messages(team, campaign, [{"phone": "+14155550100"}, {"phone": "+1_415"}, {"phone": "+1%415"}])
    assert [m.phone for m in message_log.page(campaign.id, prefix="+1_").messages] == ["+1_415"]
    assert [m.phone for m in message_log.page(campaign.id, prefix="+1%").messages] == ["+1%415"]
    assert message_log.page(campaign.id, prefix="+1%5").messages == []


def test_a_status_within_a_search(team):
    """A status filter inside a number search keeps both conditions."""
    campaign = make_campaign(team)
    add_messages(team, campaign, [{"phone": f"+1415555{1000 + i}", "status": MessageStatus.FAILED if i % 3 == 0
                                   else MessageStatus.DELIVERED} for i in range(30)]
                 + [{"phone": "+447700900001", "status": MessageStatus.FAILED}])
    shown = message_log.page(campaign.id, "failed", "+1415").messages
    assert [m.phone for m in shown] == [f"+1415555{1000 + i}" for i in range(0, 30, 3)]


@pytest.mark.parametrize("prefix", ["", "+1415"])
def test_a_sparse_filter_reads_a_bounded_window_then_offers_more(team, monkeypatch, prefix):
    """Held messages scattered thinly: each page reads at most SCAN_LIMIT rows in chunks, says so, and Look further
    (forward and back) reaches every held message exactly once."""
    monkeypatch.setattr(message_log, "SCAN_LIMIT", 20)
    monkeypatch.setattr(message_log, "SCAN_FIRST_CHUNK", 3)  # 3 + 6 + 11 rows read per page
    campaign = make_campaign(team)
    ids = add_messages(team, campaign, [{"phone": f"+1415555{1000 + i}", "held": i % 45 == 44} for i in range(200)])
    held = [message_id for i, message_id in enumerate(ids) if i % 45 == 44]
    first = message_log.page(campaign.id, "held", prefix)
    assert first.partial and first.messages == [] and first.scanned == 20 and first.next_after == ids[19]
    assert walk(campaign.id, status_filter="held", prefix=prefix) == held
    assert walk_back(campaign.id, ids[-1], status_filter="held", prefix=prefix) == held


def test_cost_flags():
    """Billed against the estimate, and the send reply against billed; nothing is flagged before a figure."""
    def flags(**fields):
        values = {"parts": 1, "estimated_cost": Decimal("0.015"), "billed_parts": None, "billed_cost": None,
                  "reply_parts": None, "reply_cost": None, **fields}
        return message_log.cost_flags(Message(**values))

    assert flags() == {"estimate": False, "reply": False}
    assert flags(billed_parts=1, billed_cost=Decimal("0.015"), reply_parts=1, reply_cost=Decimal("0.015")) == \
        {"estimate": False, "reply": False}
    assert flags(billed_parts=2, billed_cost=Decimal("0.03"), reply_parts=2, reply_cost=Decimal("0.03")) == \
        {"estimate": True, "reply": False}
    assert flags(billed_parts=1, billed_cost=Decimal("0.015"), reply_parts=2, reply_cost=Decimal("0.03")) == \
        {"estimate": False, "reply": True}
    assert flags(reply_parts=2, reply_cost=Decimal("0.03")) == {"estimate": False, "reply": False}


def test_callback_history_newest_first_and_bounded(team):
    """A message's callbacks, newest first, at most the limit, and only the team's own."""
    campaign = make_campaign(team)
    (message_id,) = add_messages(team, campaign, [{"phone": "+14155550100"}])
    made = []
    for state in [DeliveryState.SENT, DeliveryState.DELIVERED, DeliveryState.SENT]:
        callback = make_callback(team, reference="r", state=state)
        callback.message_id = message_id
        made.append(callback.id)
    make_callback(team, reference="other")  # an orphan: not this message's
    db.session.commit()
    shown, more = message_log.callback_history(message_id, team.id)
    assert [c.id for c in shown] == made[::-1] and not more
    shown, more = message_log.callback_history(message_id, team.id, limit=2)
    assert [c.id for c in shown] == made[:0:-1] and more
    assert message_log.callback_history(message_id, team.id + 1) == ([], False)


def test_export_rows_every_message_once_in_chunks(team, monkeypatch):
    """The export reads in keyset chunks (7 here) and yields the header and each message once, its times
    in the team's zone and its status in words."""
    monkeypatch.setattr(message_log, "EXPORT_CHUNK", 7)
    campaign = make_campaign(team)
    add_messages(team, campaign, [{"phone": f"+1415555{1000 + i}"} for i in range(29)]
                 + [{"phone": "+14155559999", "status": MessageStatus.UNDELIVERED, "unique_id": "u-1",
                     "billed_parts": 2, "billed_cost": Decimal("0.03"), "reply_cost": Decimal("0.015"),
                     "sent_at": datetime(2026, 7, 1, 16, 0), "updated_at": datetime(2026, 7, 1, 16, 5, 30),
                     "error": "UNDELIV 1"}])
    rows = list(message_log.export_rows(campaign.id, "America/New_York", "USD"))
    assert rows[0] == ["Phone number", "Status", "Reason", "Parts", "Estimated cost (USD)", "Billed parts",
                       "Billed cost (USD)", "Cost in the send reply (USD)", "Sent at (America/New_York)",
                       "Last change (America/New_York)", "Provider message ID", "Our reference"]
    assert [row[0] for row in rows[1:]] == [f"+1415555{1000 + i}" for i in range(29)] + ["+14155559999"]
    assert rows[1][1:4] == ["queued", "", 1] and rows[1][4] == Decimal("0.015") and rows[1][5] is None
    last = dict(zip(rows[0], rows[-1], strict=True))
    assert last["Status"] == "undelivered" and last["Billed cost (USD)"] == Decimal("0.03")
    assert last["Cost in the send reply (USD)"] == Decimal("0.015") and last["Provider message ID"] == "u-1"
    assert last["Reason"] == "UNDELIV 1"
    assert last["Sent at (America/New_York)"] == "2026-07-01 12:00:00"  # EDT
    assert last["Last change (America/New_York)"] == "2026-07-01 12:05:30"


def test_export_has_each_recipients_contact_fields_under_their_uploaded_names(team, monkeypatch):
    """Every field the lists' imports kept is a column named as it was uploaded, between the number and the
    status, filled from the message's contact (read CONTACT_CHUNK contacts at a time, 2 here); a name that
    clashes with ours or repeats is told apart, and a contact deleted since leaves its cells empty."""
    from tests.factories import make_contact, make_import, make_list
    from webapp.models import ImportStatus

    monkeypatch.setattr(message_log, "CONTACT_CHUNK", 2)
    first, second = make_list(team), make_list(team)
    for contact_list, headers, columns in ((first, ["Mobile", "First Name", "Status", "Email", "Email"], [1, 2, 3, 4]),
                                           (second, ["phone", "first name", "City"], [1, 2])):
        done = make_import(team, ImportStatus.DONE, contact_list, headers=headers)
        done.field_columns, done.accepted = columns, 1
    make_import(team, ImportStatus.DISCARDED, first, headers=["phone", "Never imported"]).field_columns = [1]
    db.session.commit()
    ann = make_contact(first, "+14155550001", first_name="Ann", status="VIP", email="a@x", email_2="=1+1")
    bo = make_contact(second, "+14155550002", first_name="Bo", city="Paris")
    gone = make_contact(second, "+14155550003", first_name="Cy")
    campaign = make_campaign(team, lists=[first, second])
    add_messages(team, campaign, [{"phone": contact.phone, "contact_id": contact.id} for contact in (ann, bo, gone)]
                 + [{"phone": "+14155550004"}])
    db.session.delete(gone)
    db.session.commit()
    rows = list(message_log.export_rows(campaign.id, "UTC", "EUR"))
    assert rows[0][:6] == ["Phone number", "First Name", "Status (contact)", "Email", "Email (2)", "City"]
    assert rows[0][6] == "Status" and "Never imported" not in rows[0]
    assert [row[:7] for row in rows[1:]] == [
        ["+14155550001", "Ann", "VIP", "a@x", "=1+1", "", "queued"],
        ["+14155550002", "Bo", "", "", "", "Paris", "queued"],
        ["+14155550003", "", "", "", "", "", "queued"],
        ["+14155550004", "", "", "", "", "", "queued"],
    ]


def test_plain_numbers():
    """Money loses the column's trailing zeros only."""
    assert message_log.plain_number(Decimal("0.01500")) == Decimal("0.015")
    assert str(message_log.plain_number(Decimal("2.00000"))) == "2"
    assert str(message_log.plain_number(Decimal("100"))) == "100"
    assert message_log.plain_number(None) is None


def test_export_clock_matches_local_time_across_daylight_saving():
    """The export's cached clock gives the zone's wall time on both sides of a DST change, to the second."""
    from datetime import timedelta

    zone = message_log.zone_of("America/New_York")
    clock = message_log._Clock(zone)
    assert clock(datetime(2026, 3, 8, 6, 59, 59)) == "2026-03-08 01:59:59"  # EST
    assert clock(datetime(2026, 3, 8, 7, 0, 0)) == "2026-03-08 03:00:00"  # EDT from 07:00 UTC
    moment = datetime(2026, 11, 1, 4, 0, 0, 123456)
    for step in range(0, 4 * 3600, 97):
        at = moment + timedelta(seconds=step)
        assert clock(at) == message_log.local_time(at, zone), at
    assert clock(None) == "" and message_log.zone_of("Not/AZone").key == "UTC"
