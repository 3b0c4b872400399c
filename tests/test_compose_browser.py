"""The composer in a real browser: live counts while typing, the UCS-2 culprit replaced, another sample
contact, and the audience summary."""

import pytest

from tests.conftest import screenshot
from tests.factories import PASSWORD, make_campaign, make_contact, make_list, make_sender, make_team, make_user
from webapp.models import Role

pytestmark = pytest.mark.browser


def _sign_in(page, email):
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")


def test_type_fix_a_curly_quote_switch_contact_and_summarize(app, page):
    """Typing shows UCS-2 and its culprit without losing the caret; one click replaces it and the parts drop;
    another sample contact changes the rendered text and the count; the summary covers the whole audience."""
    with app.app_context():
        team = make_team("Acme")
        make_user(team, Role.EDITOR, "ed@example.com")
        contacts = make_list(team, "Spring")
        make_contact(contacts, "+14155550001", first_name="Ana")
        long_name = make_contact(contacts, "+14155550002", first_name="Maximiliana-Theodora " * 3).id
        make_contact(contacts, "+14155550003", number_type="fixed_line", first_name="Desk")
        campaign_id = make_campaign(team, [contacts], body="", sender=make_sender(team)).id

    _sign_in(page, "ed@example.com")
    page.goto(f"/campaigns/{campaign_id}")
    message = page.get_by_label("Message", exact=True)
    message.click()
    text = "Hi {{ first_name }}, it’s our spring sale: 20% off everything in store and online until Sunday."
    message.press_sequentially(text, delay=5)

    encoding = page.locator("#count-encoding")
    encoding.filter(has_text="UCS-2").wait_for()
    page.locator("#preview-text", has_text="Hi Ana, it").wait_for()
    assert page.locator("#template-culprits mark.culprit").first.inner_text() == "’"
    assert page.locator("#preview-text mark.culprit").inner_text() == "’"
    # The counts were swapped beside the textarea: focus and caret stayed where the typing left them.
    assert page.evaluate("document.activeElement.id") == "body"
    assert page.evaluate("document.activeElement.selectionStart") == len(text)
    ucs2_parts = int(page.locator("#count-parts").inner_text())
    assert ucs2_parts == 2  # 96 characters + the footer in UCS-2
    screenshot(page, "compose-ucs2")

    page.get_by_role("button", name="Replace with GSM equivalents").click()
    encoding.filter(has_text="GSM-7").wait_for()
    assert message.input_value() == text.replace("’", "'")
    assert int(page.locator("#count-parts").inner_text()) == 1 < ucs2_parts
    assert page.locator("#template-culprits").count() == 0
    assert page.evaluate("document.activeElement.id") == "body"  # compose.js put the cursor back

    page.get_by_label("Sample contact").select_option(value=str(long_name))
    page.locator("#preview-text", has_text="Hi Maximiliana-Theodora Maximiliana").wait_for()
    assert int(page.locator("#count-parts").inner_text()) == 2
    screenshot(page, "compose-sample-contact")

    page.get_by_role("button", name="Save draft").click()
    page.get_by_text("Draft saved.").wait_for()
    assert page.get_by_label("Message", exact=True).input_value() == text.replace("’", "'")
    page.get_by_role("button", name="Summarize the audience").click()
    page.locator("#summary-recipients").wait_for()
    assert page.locator("#summary-recipients").inner_text() == "2"
    assert page.locator("#summary-excluded").inner_text() == "1"
    assert page.locator("#parts-histogram tbody tr").count() == 2
    screenshot(page, "compose-summary")
