"""The audience summary and preview: every figure measured on each recipient's own rendered text."""

from decimal import Decimal

import pytest

from tests.conftest import run_jobs
from tests.factories import make_campaign, make_contact, make_list, make_suppression, make_team
from webapp.extensions import db
from webapp.models import AudienceSummary, Campaign, SummaryStatus
from webapp.services import audience


@pytest.fixture
def team(app):
    with app.app_context():
        yield make_team("Acme")


def _two_lists(team):
    """List A: five sendable contacts and one of each exclusion; list B repeats one of A's numbers."""
    first = make_list(team, "A")
    make_contact(first, "+14155550001", first_name="Ana")
    make_contact(first, "+14155550002", first_name="Bo")
    make_contact(first, "+14155550003", first_name="")  # missing: renders as nothing
    make_contact(first, "+14155550004", first_name="Zoé 😀")  # her own data forces UCS-2
    make_contact(first, "+14155550005", first_name="X" * 160)  # long: 2 parts
    make_contact(first, "+14155550006", first_name="Opted")
    make_suppression(team, "+14155550006")
    make_contact(first, "+14155550007", number_type="fixed_line", first_name="Desk")
    make_contact(first, "12345", first_name="Broken")
    second = make_list(team, "B")
    make_contact(second, "+14155550001", first_name="Ana from B")  # duplicate: A supplies the fields
    make_contact(second, "+442079460000", region="GB", first_name="Liz")
    return first, second


def test_summary_counts_every_recipient_and_exclusion(team):
    """Recipients, parts histogram, UCS-2, cost and exclusions with reasons, over two ordered lists."""
    first, second = _two_lists(team)
    campaign = make_campaign(team, [first, second], body="Hi {{ first_name }}!")
    result = audience.summarize(campaign)

    assert result["audience"] == 10
    assert result["recipients"] == 6
    assert result["excluded"] == {"opted_out": 1, "landline": 1, "invalid": 1, "duplicate": 1}
    assert result["excluded_total"] == 4
    # "Hi Ana!\nReply STOP to opt out" is 1 part; "X"*160 + footer is 2; Zoë's emoji makes hers UCS-2 (1 part).
    assert result["parts_histogram"] == {"1": 5, "2": 1}
    assert result["total_parts"] == 7
    assert result["ucs2"] == 1 and result["gsm7"] == 5
    assert result["data_ucs2"] == 1
    assert result["data_ucs2_sample"][0]["phone"] == "+14155550004"
    assert result["data_ucs2_sample"][0]["chars"] == "😀"  # é is GSM-7; only the emoji is named
    assert result["missing_fields"] == {"first_name": 1} and result["missing_contacts"] == 1
    assert Decimal(result["total_cost"]) == 7 * Decimal("0.015")
    assert result["worst_parts"] == 2 and result["worst_text"].startswith("Hi XXX")


def test_the_first_list_supplies_the_fields_of_a_duplicate(team):
    """With B first, B's copy of the number is sent and A's is the duplicate."""
    first, second = _two_lists(team)
    campaign = make_campaign(team, [second, first], body="{{ first_name }}")
    page = audience.preview_page(campaign, 1, per_page=20)
    by_phone = {}
    for item in page.items:
        by_phone.setdefault(item.phone, []).append(item)
    ana_b, ana_a = by_phone["+14155550001"]
    assert ana_b.list_name == "B" and ana_b.exclusion is None and ana_b.text.startswith("Ana from B")
    assert ana_a.list_name == "A" and ana_a.exclusion is audience.Exclusion.DUPLICATE


def test_the_footer_is_counted_and_leaving_it_off_is_explicit(team):
    """A 150-character text is 1 part alone and 2 with the footer; the footer is in the rendered text."""
    contacts = make_list(team)
    make_contact(contacts, "+14155550001")
    with_footer = make_campaign(team, [contacts], body="x" * 150)
    without = make_campaign(team, [contacts], body="x" * 150, include_footer=False)
    assert audience.summarize(with_footer)["parts_histogram"] == {"2": 1}
    assert audience.summarize(with_footer)["footer"] == "Reply STOP to opt out"
    assert audience.summarize(without)["parts_histogram"] == {"1": 1}
    assert audience.preview_page(with_footer).items[0].text == "x" * 150 + "\nReply STOP to opt out"


def test_country_prices_split_the_cost_and_one_price_warns(team):
    """Cost is split by destination country; an audience spanning countries at one price is warned about."""
    first, second = _two_lists(team)
    campaign = make_campaign(team, [first, second], body="Hi {{ first_name }}!")
    result = audience.summarize(campaign)
    assert [entry["region"] for entry in result["by_country"]] == ["US", "GB"]
    assert "spans 2 countries (US, GB) at one price" in result["price_warning"]

    team.country_prices = {"GB": "0.04"}
    db.session.commit()
    result = audience.summarize(campaign)
    gb = next(entry for entry in result["by_country"] if entry["region"] == "GB")
    assert gb == {"region": "GB", "recipients": 1, "parts": 1, "billed": 1, "price": "0.04", "cost": "0.04",
                  "country_price": True}
    assert result["price_warning"] is None
    assert Decimal(result["total_cost"]) == 6 * Decimal("0.015") + Decimal("0.04")


def test_an_mms_is_priced_per_message(team):
    """With an image the estimate is one MMS per recipient at the team's MMS price, whatever the text."""
    contacts = make_list(team)
    make_contact(contacts, "+14155550001")
    make_contact(contacts, "+14155550002")
    campaign = make_campaign(team, [contacts], body="y" * 400)
    campaign.image_name, campaign.image_mime, campaign.image_size = "x.png", "image/png", 10
    db.session.commit()
    result = audience.summarize(campaign)
    assert result["is_mms"] and result["billed_units"] == 2
    assert Decimal(result["total_cost"]) == 2 * Decimal("0.05")
    (row,) = result["by_country"]  # billed per message: 2, not the 6 parts the text would take as an SMS
    assert row["billed"] == 2 and row["parts"] == 6 and Decimal(row["cost"]) == row["billed"] * Decimal(row["price"])


def test_unknown_fields_are_flagged(team):
    """A placeholder no contact has is listed, and counted missing for everyone when it has no fallback."""
    contacts = make_list(team)
    make_contact(contacts, "+14155550001", first_name="Ana")
    campaign = make_campaign(team, [contacts], body="{{ config }} {{ first_name }}")
    result = audience.summarize(campaign)
    assert result["unknown_fields"] == ["config"]
    assert result["missing_fields"] == {"config": 1}


def test_preview_pages_through_rendered_messages(team):
    """25 contacts at 10 a page: 3 pages, each message rendered with its own fields and measured."""
    contacts = make_list(team)
    for i in range(25):
        make_contact(contacts, f"+1415555{i:04d}", first_name=f"P{i}")
    campaign = make_campaign(team, [contacts], body='Hi {{ first_name | default("you") }}')
    page = audience.preview_page(campaign, 3)
    assert (page.page, page.pages, page.total) == (3, 3, 25)
    assert [item.text.split("\n")[0] for item in page.items] == [f"Hi P{i}" for i in range(20, 25)]
    assert all(item.parts == 1 and item.cost == Decimal("0.015") for item in page.items)


def test_a_draft_without_lists_or_with_a_refused_message_is_explained(team):
    """No lists, or a message the template rules refuse: the reason, not a crash."""
    campaign = make_campaign(team, [])
    with pytest.raises(audience.AudienceProblem, match="Choose at least one list"):
        audience.summarize(campaign)
    campaign = make_campaign(team, [make_list(team)], body="{% for x in y %}")
    with pytest.raises(audience.AudienceProblem, match="block"):
        audience.request_summary(campaign)


def test_a_small_audience_is_summarized_at_once_and_reused(team):
    """Under the inline limit the summary is done in the request; asking again reuses it until the draft changes."""
    contacts = make_list(team)
    make_contact(contacts, "+14155550001")
    campaign = make_campaign(team, [contacts])
    summary = audience.request_summary(campaign)
    assert summary.status is SummaryStatus.DONE and summary.result["recipients"] == 1
    assert audience.request_summary(campaign).id == summary.id
    campaign.body = "Changed"
    db.session.commit()
    assert audience.request_summary(campaign).id != summary.id


def test_a_big_audience_is_summarized_by_a_job_with_progress(app, team):
    """Over the limit the summary is queued; the job fills in progress and the result."""
    contacts = make_list(team)
    for i in range(30):
        make_contact(contacts, f"+1415555{i:04d}")
    campaign = make_campaign(team, [contacts])
    summary = audience.request_summary(campaign, inline_limit=10)
    assert summary.status is SummaryStatus.QUEUED and summary.job_id and summary.total == 30
    summary_id, campaign_id = summary.id, campaign.id
    run_jobs(app)
    db.session.expire_all()
    summary = db.session.get(AudienceSummary, summary_id)
    assert summary.status is SummaryStatus.DONE
    assert summary.done == 30 and summary.result["recipients"] == 30
    assert db.session.get(Campaign, campaign_id).id == campaign_id


def test_a_stopped_worker_marks_the_summary_failed(team):
    """RQ's failure callback turns a queued or running summary into a visible failure."""
    contacts = make_list(team)
    make_contact(contacts, "+14155550001")
    campaign = make_campaign(team, [contacts])
    summary = AudienceSummary(team_id=team.id, campaign_id=campaign.id, fingerprint="x",
                              status=SummaryStatus.RUNNING)
    db.session.add(summary)
    db.session.commit()
    audience.mark_stopped(summary.id, "The worker stopped.")
    db.session.refresh(summary)
    assert summary.status is SummaryStatus.FAILED and summary.error == "The worker stopped."


def test_a_summary_is_redone_when_contacts_or_opt_outs_change(team):
    """The launch confirmation never shows figures from before an import or an opt-out."""
    contacts = make_list(team)
    make_contact(contacts, phone="+14155550101", first_name="Ana")
    campaign = make_campaign(team, [contacts], body="Hi {{ first_name | default(\"there\") }}")
    before = audience.fingerprint(campaign)
    make_contact(contacts, phone="+14155550102", first_name="Bo")
    after_import = audience.fingerprint(campaign)
    make_suppression(team, "+14155550101")
    assert len({before, after_import, audience.fingerprint(campaign)}) == 3
