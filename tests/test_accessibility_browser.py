"""Accessibility in a real browser: every page against axe-core's WCAG 2 A/AA rules, the whole path from
login to launch with the keyboard alone, a visible focus, and the phone menu folded behind one button."""

import secrets
from pathlib import Path

import pytest
from flask import url_for
from sqlalchemy import select

from tests.conftest import run_jobs, screenshot
from tests.factories import (
    PASSWORD,
    make_callback,
    make_campaign,
    make_launched_campaign,
    make_optout_import,
    make_sender,
    make_team,
    make_template,
    make_user,
)
from tests.test_browser import _record_console_errors, _seed, _sign_in
from webapp.extensions import db
from webapp.models import Campaign, ContactImport, ContactList, ImportStatus, Message, Role, Team

pytestmark = pytest.mark.browser

# Vendored for the tests only (tests/vendor/README.md): the app never serves it.
AXE = Path(__file__).parent / "vendor" / "axe-core-4.14.1" / "axe.min.js"
WCAG_A_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
COLOUR_RULES = ["color-contrast", "link-in-text-block"]
PHONE = {"width": 390, "height": 844}


def axe_violations(page, rules: list[str] | None = None) -> list[str]:
    """What axe-core finds on the page as it is now, one line per rule and element.

    Its source goes in through page.evaluate: add_script_tag(path=...) would add an inline <script>, which
    the page's CSP refuses (as it should)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    only = {"type": "rule", "values": rules} if rules else {"type": "tag", "values": WCAG_A_AA}
    return page.evaluate("""async (only) => {
        const result = await axe.run(document, {runOnly: only, resultTypes: ['violations']});
        return result.violations.flatMap(v => v.nodes.map(n => v.id + ': ' + n.target.join(' ') + ' - '
                                                       + n.failureSummary.replace(/\\s+/g, ' ')));
    }""", only)


def _seed_every_page(app) -> dict:
    """_seed's team plus what the remaining pages need: a template, a draft, a launched campaign with its
    messages, an opt-out file, a report to check and an upload waiting at the mapping step."""
    ids = _seed(app)
    with app.app_context():
        team = db.session.scalars(select(Team).where(Team.name == "Acme Marketing")).one()
        ids["template"] = make_template(team, "Spring").id
        ids["draft"] = make_campaign(team, [db.session.get(ContactList, ids["list"])], name="Spring draft",
                                     sender=make_sender(team, "+14155550199")).id
        launched = make_launched_campaign(team, 3)
        ids["launched"] = launched.id
        ids["message"] = db.session.scalar(select(Message.id).where(Message.campaign_id == launched.id).limit(1))
        ids["optout_import"] = make_optout_import(team, ImportStatus.DONE).id
        make_callback(team, reference="nobody", unique_id="u-unknown")
        stored = secrets.token_hex(16) + ".csv"
        folder = Path(app.config["UPLOAD_FOLDER"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / stored).write_text("first_name,phone\r\nAna,+14155550100\r\n", encoding="utf-8")
        upload = ContactImport(team_id=team.id, filename="new.csv", stored_name=stored, size_bytes=37,
                               encoding="utf-8", encoding_label="UTF-8", delimiter=",",
                               headers=["first_name", "phone"], phone_column=1)
        db.session.add(upload)
        db.session.commit()
        ids["upload"] = upload.id
    return ids


def _every_page(app, ids: dict) -> list[str]:
    with app.test_request_context():
        return [
            url_for("dashboard.index"), url_for("auth.account"),
            url_for("contacts.lists"), url_for("contacts.show", list_id=ids["list"]),
            url_for("imports.index"), url_for("imports.new"), url_for("imports.show", import_id=ids["import"]),
            url_for("imports.show", import_id=ids["running"]), url_for("imports.show", import_id=ids["upload"]),
            url_for("optouts.index"), url_for("optouts.show_import", optout_import_id=ids["optout_import"]),
            url_for("compose.index"), url_for("compose.new"), url_for("compose.edit", template_id=ids["template"]),
            url_for("campaigns.index"), url_for("campaigns.new"), url_for("campaigns.show", campaign_id=ids["draft"]),
            url_for("campaigns.confirm", campaign_id=ids["draft"]),
            url_for("campaigns.show", campaign_id=ids["launched"]),
            url_for("messages.index", campaign_id=ids["launched"]),
            url_for("messages.show", message_id=ids["message"]),
            url_for("callback_review.index"), url_for("settings.index"), url_for("users.index"),
            "/no-such-page",
        ]


# A page is read once htmx runs and what it loads by itself (hx-trigger="load": the draft's audience preview)
# has replaced its "Loading…" placeholder.
SETTLED = """() => typeof htmx === 'object' && !document.querySelector('.htmx-request')
    && ![...document.querySelectorAll('[hx-trigger=load]')].some(e => e.textContent.includes('Loading'))"""


def test_every_page_passes_axe_wcag_a_and_aa(app, page):
    """Every page, signed out and in, in the light and the dark scheme, with what htmx loads in it, has no
    axe-core WCAG 2 A/AA violation; each status badge's colours reach 4.5:1 in both schemes."""
    ids = _seed_every_page(app)
    errors = _record_console_errors(page)
    found: dict[str, list[str]] = {}
    page.goto("/login")
    found["/login"] = axe_violations(page)
    _sign_in(page, "owner@example.com")
    page.wait_for_url("**/")
    for path in _every_page(app, ids):
        page.emulate_media(color_scheme="light")
        page.goto(path)
        page.wait_for_function(SETTLED)
        if path == "/":  # every badge kind, whichever the seeded pages happen to show
            page.evaluate("""() => document.querySelector('main').insertAdjacentHTML('beforeend',
                ['', 'ok', 'warn', 'bad', 'muted'].map(kind => `<span class="badge badge-${kind}">sending</span>`)
                .join(' '))""")
        found[path] = axe_violations(page)
        page.emulate_media(color_scheme="dark")  # only colours change: only the colour rules run again
        found[path + " (dark)"] = axe_violations(page, COLOUR_RULES)
    assert {path: lines for path, lines in found.items() if lines} == {}
    assert [error for error in errors if "status of 404" not in error] == []  # the last page is a 404


# The focused element as a person reads it: its label, else its own words; and whether the focus shows.
FOCUSED = """() => {
    const el = document.activeElement;
    if (!el || el === document.body) return {name: '', tag: 'body', outline: false};
    const label = (el.labels && el.labels.length ? el.labels[0].textContent : '') || el.getAttribute('aria-label')
                  || el.textContent || el.value || '';
    const style = getComputedStyle(el);
    return {name: label.replace(/\\s+/g, ' ').trim(), tag: el.tagName.toLowerCase(), href: el.getAttribute('href'),
            outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2};
}"""


def tab_to(page, name: str, href: str | None = None, limit: int = 80) -> None:
    """Press Tab until the focus is on the control named `name` (its label or words start with it; a link
    to `href` when given), checking that every control the focus passes shows it (the :focus-visible outline)."""
    passed = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        if focused["tag"] == "body":  # past the last control, before the first one again
            continue
        assert focused["outline"], f"no visible focus on {focused}"
        passed.append(focused["name"])
        if focused["name"].startswith(name) and href in (None, focused["href"]):
            return
    raise AssertionError(f"Tab never reached {name!r}; it passed {passed}")


def test_keyboard_alone_signs_in_imports_composes_and_launches(app, page, tmp_path):
    """With Tab, Enter, Space (and arrows in a menu) only: sign in, upload and import a file, write a campaign
    from it, review it and launch it; the focus is visible at every stop."""
    with app.app_context():
        team = make_team("Acme")
        make_user(team, Role.EDITOR, "ed@example.com")
        make_sender(team, "+14155550199")
    path = tmp_path / "spring.csv"
    path.write_text("first_name,phone\r\nAna,+14155550101\r\nBo,+14155550102\r\n", encoding="utf-8")

    page.goto("/login")
    tab_to(page, "Email")
    page.keyboard.type("ed@example.com")
    tab_to(page, "Password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/")

    tab_to(page, "Imports")
    page.keyboard.press("Enter")
    page.wait_for_url("**/imports/")
    tab_to(page, "Import a file")
    page.keyboard.press("Enter")
    page.wait_for_url("**/imports/new")
    tab_to(page, "CSV or TSV file")
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Space")
    chooser.value.set_files(str(path))
    tab_to(page, "Upload and preview")
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Import contacts").wait_for()
    tab_to(page, "Import contacts")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    run_jobs(app)
    page.locator("#import-status", has_text="done").wait_for(timeout=30_000)

    tab_to(page, "Campaigns", href="/campaigns/")  # the menu's, not the brand's link home
    page.keyboard.press("Enter")
    page.wait_for_url("**/campaigns/")
    tab_to(page, "New campaign")
    page.keyboard.press("Enter")
    page.wait_for_url("**/campaigns/new")
    tab_to(page, "Campaign name")
    page.keyboard.type("Spring by keyboard")
    tab_to(page, "List")
    page.keyboard.press("ArrowDown")  # the first list: the one just imported
    tab_to(page, "Sender number")
    page.keyboard.press("ArrowDown")
    tab_to(page, "Create draft")
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Save draft").wait_for()
    tab_to(page, "Message")
    page.keyboard.type("Hi {{ first_name }}, spring is here")
    tab_to(page, "Save draft")
    page.keyboard.press("Enter")
    page.locator(".flash").first.wait_for()
    tab_to(page, "Review and launch")
    page.keyboard.press("Enter")
    page.wait_for_url("**/launch")
    tab_to(page, "Quiet hours")
    page.keyboard.press("Space")
    assert not page.get_by_label("Quiet hours", exact=False).is_checked()
    tab_to(page, "Launch")
    page.keyboard.press("Enter")
    page.locator(".flash", has_text="Launched.").wait_for()
    screenshot(page, "keyboard-launched")
    with app.app_context():
        campaign = db.session.scalars(select(Campaign).where(Campaign.name == "Spring by keyboard")).one()
        assert campaign.status == "sending" and campaign.body == "Hi {{ first_name }}, spring is here"
        imported = db.session.scalars(select(ContactList).where(ContactList.team_id == campaign.team_id)).one()
        assert campaign.list_ids == [imported.id] and campaign.quiet_hours is False


def test_phone_menu_folds_behind_one_button(app, page):
    """At 390 px the top bar is one line (at most 60 px) with a Menu button; Enter and Space open and close it,
    Escape closes it and gives the focus back; on a desktop the button is hidden and the menu shown."""
    _seed(app)
    errors = _record_console_errors(page)
    page.set_viewport_size(PHONE)
    _sign_in(page, "owner@example.com")
    page.wait_for_url("**/")
    bar = page.locator("header.topbar")
    menu_button = page.get_by_role("button", name="Menu")
    imports = page.get_by_role("link", name="Imports")
    assert bar.evaluate("bar => bar.getBoundingClientRect().height") <= 60
    assert menu_button.get_attribute("aria-expanded") == "false" and not imports.is_visible()
    screenshot(page, "phone-menu-closed")

    menu_button.focus()
    page.keyboard.press("Enter")
    assert menu_button.get_attribute("aria-expanded") == "true" and imports.is_visible()
    assert page.get_by_role("button", name="Sign out").is_visible()
    screenshot(page, "phone-menu-open")
    page.keyboard.press("Tab")  # into the menu
    assert page.evaluate("document.activeElement.closest('#nav-menu') !== null")
    page.keyboard.press("Escape")
    assert menu_button.get_attribute("aria-expanded") == "false" and not imports.is_visible()
    assert page.evaluate("document.activeElement.classList.contains('nav-toggle')")
    page.keyboard.press("Space")
    assert imports.is_visible()
    page.keyboard.press("Space")
    assert not imports.is_visible()
    menu_button.click()
    imports.click()
    page.wait_for_url("**/imports/")
    assert not page.get_by_role("link", name="Lists").is_visible()  # a new page starts folded

    page.set_viewport_size({"width": 1280, "height": 800})
    assert not menu_button.is_visible() and page.get_by_role("link", name="Lists").is_visible()
    assert errors == []
