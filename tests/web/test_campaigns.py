"""Campaign draft pages: create, edit, footer choice, image, preview, summary, test send, settings."""

import io
import re
from decimal import ROUND_HALF_UP, Decimal

import pytest
from sqlalchemy import select

from tests.conftest import run_jobs
from tests.factories import make_contact, make_list, make_sender, make_team, make_template, make_user
from tests.services.test_campaign_drafts import png_bytes
from webapp.encryption import encrypt
from webapp.extensions import db
from webapp.models import Campaign, Message, MessageKind, Role, Team
from webapp.web.forms import timezone_choices

NO_LISTS = {f"lists-{i}": "0" for i in range(5)}


@pytest.fixture
def setup(app, auth):
    """An admin of a team with two lists, a template, a sender and sandbox credentials."""
    with app.app_context():
        team = make_team("Acme")
        make_user(team, Role.ADMIN, "admin@example.com")
        first, second = make_list(team, "Spring"), make_list(team, "Autumn")
        make_contact(first, "+14155550001", first_name="Ana")
        make_contact(first, "+14155550002", number_type="fixed_line", first_name="Desk")
        make_contact(second, "+14155550001", first_name="Ana again")
        make_contact(second, "+14155550003", first_name="Zoé 😀")
        template = make_template(team, "Welcome", body="Hi {{ first_name }}")
        sender = make_sender(team)
        team.api_username, team.api_password_encrypted = "sandbox", encrypt("sandbox")
        team.test_numbers = ["+14155550901"]
        db.session.commit()
        ids = {"team": team.id, "first": first.id, "second": second.id, "template": template.id, "sender": sender.id}
    auth.login("admin@example.com")
    return ids


def create(client, setup, **fields):
    data = {"name": "Spring sale", **NO_LISTS, "lists-0": setup["first"], "lists-1": setup["second"],
            "template_id": setup["template"], "sender_number_id": setup["sender"], "footer": "on", **fields}
    response = client.post("/campaigns/", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)
    return int(response.headers["Location"].rstrip("/").split("/")[-1])


def save(client, campaign_id, setup, **fields):
    data = {"name": "Spring sale", **NO_LISTS, "lists-0": setup["first"], "lists-1": setup["second"],
            "sender_number_id": setup["sender"], "body": "Hi {{ first_name }}", "footer": "on", **fields}
    return client.post(f"/campaigns/{campaign_id}", data=data)


def test_a_new_draft_copies_the_template_and_opens_the_composer(app, client, setup):
    """The draft has the template's text, its lists in order, and the composer with counts."""
    campaign_id = create(client, setup)
    page = client.get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    assert "Hi {{ first_name }}</textarea>" in page and 'id="counts"' in page
    assert 'hx-trigger="input changed delay:300ms, change"' in page
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        assert campaign.list_ids == [setup["first"], setup["second"]] and campaign.include_footer


def test_leaving_the_footer_off_is_recorded_and_shown(app, client, setup):
    """Choosing 'leave the footer off' is saved on the campaign and said on its page."""
    campaign_id = create(client, setup)
    assert save(client, campaign_id, setup, footer="off").status_code == 302
    with app.app_context():
        assert db.session.get(Campaign, campaign_id).include_footer is False
    page = client.get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    assert 'id="footer-off"' in page and "Reply STOP to opt out" not in page.split('id="preview-text"')[1][:300]


def test_a_refused_body_is_not_saved(app, client, setup):
    """Saving {% for %} answers 400 with the location; the stored body is unchanged."""
    campaign_id = create(client, setup)
    response = save(client, campaign_id, setup, body="{% for x in y %}")
    assert response.status_code == 400 and "Line 1, column 1" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Campaign, campaign_id).body == "Hi {{ first_name }}"


def test_an_image_is_checked_previewed_and_removed(app, client, setup):
    """A PNG makes the draft an MMS and is served back; a renamed text file is refused by its content."""
    campaign_id = create(client, setup)
    response = client.post(f"/campaigns/{campaign_id}/image",
                           data={"image": (io.BytesIO(b"not an image"), "photo.png")},
                           content_type="multipart/form-data")
    assert response.status_code == 400 and "JPEG or PNG" in response.get_data(as_text=True)
    client.post(f"/campaigns/{campaign_id}/image", data={"image": (io.BytesIO(png_bytes()), "photo.png")},
                content_type="multipart/form-data")
    page = client.get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    assert 'class="mms-image"' in page and 'id="count-parts">1<' in page and "An MMS" in page
    image = client.get(f"/campaigns/{campaign_id}/image")
    assert image.status_code == 200 and image.mimetype == "image/png" and image.data == png_bytes()
    client.post(f"/campaigns/{campaign_id}/image/delete")
    assert client.get(f"/campaigns/{campaign_id}/image").status_code == 404


def test_the_image_cap_is_configurable(app, client, setup):
    """MMS_MAX_BYTES caps the image before encoding."""
    app.config["MMS_MAX_BYTES"] = 1024
    campaign_id = create(client, setup)
    response = client.post(f"/campaigns/{campaign_id}/image",
                           data={"image": (io.BytesIO(png_bytes(4096)), "big.png")}, content_type="multipart/form-data")
    assert response.status_code == 400 and "the limit is 1 KB" in response.get_data(as_text=True)


def test_the_preview_pages_through_rendered_messages_with_exclusions(client, setup):
    """Each row is the recipient's own text; the landline and the duplicate say why they are not sent."""
    campaign_id = create(client, setup)
    page = client.get(f"/campaigns/{campaign_id}/preview").get_data(as_text=True)
    assert "Hi Ana\nReply STOP to opt out" in page
    assert "not sent: landline" in page and "not sent: duplicate" in page
    assert "their data forces UCS-2" in page and "Page 1 of 1 · 4 contacts" in page


def test_a_small_summary_is_shown_at_once(client, setup):
    """Recipients, exclusions with reasons and cost, without a job."""
    campaign_id = create(client, setup)
    page = client.post(f"/campaigns/{campaign_id}/summary").get_data(as_text=True)
    assert 'id="summary-recipients">2<' in page and 'id="summary-excluded">2<' in page
    assert 'id="summary-ucs2">1<' in page and "hx-trigger" not in page
    assert 'id="summary-data-ucs2"' in page and "+14155550003" in page


def test_a_big_summary_polls_until_its_job_is_done(app, client, setup):
    """Over the inline limit the fragment polls; once the job ran it shows the figures and stops polling."""
    app.config["AUDIENCE_INLINE_LIMIT"] = 1
    campaign_id = create(client, setup)
    queued = client.post(f"/campaigns/{campaign_id}/summary").get_data(as_text=True)
    assert 'hx-trigger="every 1s"' in queued and 'role="progressbar"' in queued
    run_jobs(app)
    done = client.get(f"/campaigns/{campaign_id}/summary").get_data(as_text=True)
    assert 'id="summary-recipients">2<' in done and "hx-trigger" not in done
    save(client, campaign_id, setup, body="Changed")
    assert 'id="summary-stale"' in client.get(f"/campaigns/{campaign_id}/summary").get_data(as_text=True)


def test_a_test_send_shows_the_outcome_inline(app, client, setup, sandbox):
    """Accepted with the provider's id, parts and cost, stored as a test Message with a reference."""
    campaign_id = create(client, setup)
    page = client.post(f"/campaigns/{campaign_id}/test-send", data={"sample_contact": "0",
                                                                      "sample_values": "first_name: Tess"}
                       ).get_data(as_text=True)
    assert 'badge-ok">accepted' in page
    with app.app_context():
        message = db.session.scalar(select(Message))
        assert message.kind is MessageKind.TEST and message.text.startswith("Hi Tess")
        assert message.reference and message.unique_id in page


def test_a_loop_of_test_sends_past_the_team_limit_is_refused_and_the_page_counts_down(app, client, setup, sandbox):
    """Two a minute: each send says what is left; the third click answers 429 with the reason (no 500, nothing
    posted), and the draft page says how many are left."""
    app.config.update(TEST_SENDS_PER_MINUTE=2, TEST_SENDS_PER_DAY=5)
    campaign_id = create(client, setup)
    page = client.get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    assert 'id="test-send-allowance"' in page and "<strong>2</strong> test messages left now" in page
    assert "2 of 2 in the last minute" in page and "5 of 5 in the last 24 hours" in page
    for left in ("1</strong> test message left", "0</strong> test messages left"):
        response = client.post(f"/campaigns/{campaign_id}/test-send", data={"sample_contact": "0"})
        fragment = response.get_data(as_text=True)
        assert response.status_code == 200 and 'badge-ok">accepted' in fragment
        assert left in fragment and 'hx-swap-oob="true"' in fragment
    for _ in range(3):
        response = client.post(f"/campaigns/{campaign_id}/test-send", data={"sample_contact": "0"})
        text = response.get_data(as_text=True)
        assert response.status_code == 429 and 1 <= int(response.headers["Retry-After"]) <= 60
        assert "Test send limit reached" in text and "data-error-message" in text and "Nothing was sent" in text
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(Message)) == 2
    page = client.get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    assert "<strong>0</strong> test messages left now" in page and "one more frees up in" in page


def test_a_launched_campaign_shows_its_test_sends_in_its_spend(app, client, setup, sandbox):
    """Spend on the campaign page includes the draft's billed test sends, and says how much of it they are."""
    campaign_id = create(client, setup)
    assert client.post(f"/campaigns/{campaign_id}/test-send", data={"sample_contact": "0"}).status_code == 200
    client.post(f"/campaigns/{campaign_id}/launch", data={"when": "now", "quiet_start": "08:00", "quiet_end": "21:00"})
    with app.app_context():
        assert db.session.get(Campaign, campaign_id).launched_at is not None
    page = client.get(f"/campaigns/{campaign_id}/status").get_data(as_text=True)
    shown = '<span class="money" title="0.015 USD">0.02 USD</span>'  # the usual places, the full figure in its title
    assert f'id="spend-tests">{shown}' in page and f'id="spend-total">{shown}' in page
    assert "Of which test sends (1," in page


def test_a_test_send_without_numbers_says_so(app, client, setup):
    """No test numbers: the reason, not an error page."""
    with app.app_context():
        db.session.get(Team, setup["team"]).test_numbers = []
        db.session.commit()
    campaign_id = create(client, setup)
    page = client.post(f"/campaigns/{campaign_id}/test-send", data={"sample_contact": "0"}).get_data(as_text=True)
    assert "Add test numbers in Settings first." in page


def test_message_settings_are_saved_together_or_not_at_all(app, client, setup):
    """Footer, test numbers, MMS price and country prices; a bad number refuses the whole form."""
    response = client.post("/settings/messages", data={"optout_footer": "Text STOP to end",
                                                       "test_numbers": "+1 415 555 0123\n(415) 555-0124",
                                                       "mms_price": "0.07", "country_prices": "gb 0.04\nFR: 0.05"})
    assert response.status_code == 302
    with app.app_context():
        team = db.session.get(Team, setup["team"])
        assert team.optout_footer == "Text STOP to end"
        assert team.test_numbers == ["+14155550123", "+14155550124"]
        assert str(team.mms_price).startswith("0.07") and team.country_prices == {"GB": "0.04", "FR": "0.05"}
    response = client.post("/settings/messages", data={"optout_footer": "x", "test_numbers": "555-1234",
                                                       "mms_price": "0.07", "country_prices": ""})
    assert response.status_code == 400 and "Test number “555-1234”" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Team, setup["team"]).optout_footer == "Text STOP to end"


def test_another_teams_campaign_is_not_found(app, client, setup):
    """Every campaign route answers 404 for another team's draft."""
    with app.app_context():
        other = make_team("Other")
        foreign = Campaign(team_id=other.id, name="Theirs")
        db.session.add(foreign)
        db.session.commit()
        foreign_id = foreign.id
    for path in ("", "/preview", "/summary", "/image"):
        assert client.get(f"/campaigns/{foreign_id}{path}").status_code == 404
    assert client.post(f"/campaigns/{foreign_id}/test-send").status_code == 404


# --- what a new user meets on the draft pages -------------------------------------------------------------


def test_excluded_preview_rows_show_no_parts_or_cost(client, setup):
    """The landline and the duplicate are not sent: a dash for their parts and cost, figures for the rest."""
    campaign_id = create(client, setup)
    page = client.get(f"/campaigns/{campaign_id}/preview").get_data(as_text=True)
    rows = page.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
    excluded = [row for row in rows if "not sent:" in row]
    sent = [row for row in rows if "not sent:" not in row]
    assert len(excluded) == 2 and len(sent) == 2
    assert all(row.count('<td class="num">—</td>') == 2 for row in excluded)
    assert all("—" not in row.split('class="num"')[1] and "0.0" in row for row in sent)


def test_the_only_sender_is_preselected_and_the_settings_hint_is_for_a_team_without_one(app, client, setup):
    """One sender: chosen already, no 'add sender numbers' hint; a second sender: nothing preselected."""
    page = client.get("/campaigns/new").get_data(as_text=True)
    assert f'<option selected value="{setup["sender"]}">' in page and "sender number yet" not in page
    with app.app_context():
        make_sender(db.session.get(Team, setup["team"]), "+14155550112")
    page = client.get("/campaigns/new").get_data(as_text=True)
    assert '<option selected value="0">— choose a sender —' in page.split('id="sender_number_id"')[1]


def test_a_team_without_senders_is_told_where_to_add_one(app, client, auth):
    """No sender at all: the hint says an admin adds them in Settings."""
    with app.app_context():
        team = make_team("Empty")
        make_user(team, Role.EDITOR, "new@example.com")
    auth.login("new@example.com")
    page = client.get("/campaigns/new").get_data(as_text=True)
    assert "The team has no sender number yet: an admin adds them in Settings." in page


def test_the_saved_draft_has_no_save_first_nag_until_the_text_changes(app, client, setup):
    """A saved draft's page doesn't tell you to save it; the live counts do once the text differs."""
    campaign_id = create(client, setup)
    page = client.get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    assert "Save the draft first" not in page and 'id="unsaved"' not in page
    same = client.post("/compose/measure", data={"body": "Hi {{ first_name }}", "footer": "on",
                                                 "campaign_id": campaign_id}).get_data(as_text=True)
    assert 'id="unsaved"' not in same
    changed = client.post("/compose/measure", data={"body": "Hi {{ first_name }}!", "footer": "on",
                                                    "campaign_id": campaign_id}).get_data(as_text=True)
    assert 'id="unsaved"' in changed and "save the draft before you review or test it" in changed
    footer_off = client.post("/compose/measure", data={"body": "Hi {{ first_name }}", "footer": "off",
                                                       "campaign_id": campaign_id}).get_data(as_text=True)
    assert 'id="unsaved"' in footer_off


def test_the_test_send_picker_names_contacts_like_the_sample_picker(client, setup):
    """'Render for contact' shows the same 'name · number' labels as the sample contact picker."""
    campaign_id = create(client, setup)
    page = client.get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    picker = page.split('id="test-sample-contact"')[1].split("</select>")[0]
    sample = page.split('id="sample_contact"')[1].split("</select>")[0]
    assert "Ana · +14155550001</option>" in picker and "Ana · +14155550001</option>" in sample


def test_a_viewer_reads_a_draft_without_forms(app, client, auth, setup):
    """A viewer's draft page: the text, audience and counts, and no form or button that would answer 403."""
    campaign_id = create(client, setup)
    client.post(f"/campaigns/{campaign_id}/image", data={"image": (io.BytesIO(png_bytes()), "photo.png")},
                content_type="multipart/form-data")
    save(client, campaign_id, setup, body="Hi {{ first_name }} ’")  # a curly quote: 'Replace with GSM' for editors
    with app.app_context():
        make_user(db.session.get(Team, setup["team"]), Role.VIEWER, "viewer@example.com")
    client.post(f"/campaigns/{campaign_id}/summary")
    auth.logout()
    auth.login("viewer@example.com")
    page = client.get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    main = page.split('<main id="main"')[1].split("</main>")[0]
    assert 'id="draft-body">Hi {{ first_name }} ’<' in main and 'id="counts"' in main and 'class="mms-image"' in main
    assert "Spring, Autumn" in main and "+14155550111" in main
    assert "<form" not in main and "hx-post" not in main and "<textarea" not in main
    for label in ("Attach image", "Replace the image", "Send test", "Summarize again", "Replace with GSM",
                  "Save draft", "Delete draft", "Review and launch"):
        assert label not in main, label
    assert 'id="read-only"' in main and 'id="template-culprits"' in main  # the culprit is still explained


def test_a_viewer_gets_no_create_draft_form(app, client, auth, setup):
    """/campaigns/new for a viewer says who creates campaigns instead of a form that answers 403."""
    with app.app_context():
        make_user(db.session.get(Team, setup["team"]), Role.VIEWER, "viewer@example.com")
    auth.logout()
    auth.login("viewer@example.com")
    page = client.get("/campaigns/new").get_data(as_text=True)
    main = page.split('<main id="main"')[1].split("</main>")[0]
    assert "Create draft" not in main and "<form" not in main and 'id="read-only"' in main


def test_the_time_zone_list_is_canonical_and_readable(app, client, setup):
    """Settings offers UTC and Area/Location zones only (no Asia/Calcutta, US/…, Etc/…, EST5EDT), shown
    with spaces and submitted with underscores."""
    values = [choice.value for choice in timezone_choices()]
    assert values[0] == "UTC" and all("/" in value for value in values[1:])
    assert "Asia/Kolkata" in values and "America/Los_Angeles" in values and "Europe/Oslo" in values
    for legacy in ("Asia/Calcutta", "US/Pacific", "Etc/GMT+5", "EST5EDT", "Europe/Kiev", "GB", "Factory"):
        assert legacy not in values, legacy
    assert not any(value.startswith(("US/", "Etc/", "SystemV/", "Brazil/", "Canada/")) for value in values)
    page = client.get("/settings/").get_data(as_text=True)
    assert '<option value="America/Los_Angeles">America/Los Angeles</option>' in page
    assert "Asia/Calcutta" not in page


def _cost_rows(page: str) -> list[tuple[int, Decimal, Decimal]]:
    """(billed count, price shown, cost shown) of each row of the cost-by-country table."""
    table = page.split('id="cost-by-country"')[1].split("</table>")[0]
    rows = []
    for row in table.split("<tbody>")[1].split("</tr>")[:-1]:
        cells = [re.sub(r"<[^>]+>|[×=,]|[A-Z]{3}\b", "", cell).strip()
                 for cell in re.findall(r'<td class="num">(.*?)</td>', row, re.S)]
        rows.append((int(cells[1]), Decimal(cells[2]), Decimal(cells[3])))
    return rows


def _shown_total(page: str, cost_id: str) -> Decimal:
    return Decimal(re.search(rf'id="{cost_id}"><span class="money" title="[^"]*">([\d.,]+) ', page)[1]
                   .replace(",", ""))


@pytest.mark.parametrize("mms", [False, True], ids=["sms", "mms"])
def test_every_cost_row_multiplies_out_and_adds_up_to_what_is_billed(app, client, setup, mms):
    """On the summary and the review page, each country's row is billed count x price shown = cost shown (an MMS
    counts messages, not the parts its text would take as an SMS), and the counts and costs add up to the totals."""
    campaign_id = create(client, setup)
    assert save(client, campaign_id, setup, body="x" * 200 + " {{ first_name }}").status_code == 302
    if mms:
        client.post(f"/campaigns/{campaign_id}/image", data={"image": (io.BytesIO(png_bytes()), "photo.png")},
                    content_type="multipart/form-data")
    summary = client.post(f"/campaigns/{campaign_id}/summary").get_data(as_text=True)
    review = client.get(f"/campaigns/{campaign_id}/launch").get_data(as_text=True)
    with app.app_context():
        team = db.session.get(Team, setup["team"])
        price = team.mms_price if mms else team.price_per_part
    units = 2 if mms else 2 + 4  # Ana: 2 GSM-7 parts, Zoé 😀: 4 UCS-2 parts (229 units); an MMS: one message each
    pages = ((summary, "summary-parts", "summary-cost"), (review, "launch-parts", "launch-cost"))
    for page, parts_id, cost_id in pages:
        rows = _cost_rows(page)
        assert rows == [(units, Decimal(str(price)).normalize(), rows[0][2])]
        for count, shown_price, cost in rows:
            assert cost == (count * shown_price).quantize(Decimal("0.01"), ROUND_HALF_UP)
        assert f'id="{parts_id}">{units}<' in page
        assert _shown_total(page, cost_id) == (units * price).quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert ("Messages by number of parts" in summary) is not mms and ('id="mms-billing"' in summary) is mms
